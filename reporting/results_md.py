"""The RESULTS.md block writer: provenance lines (command, machine, date) and locked rewrites.

Every table in RESULTS.md is a `<!-- BEGIN key -->` ... `<!-- END key -->` block written by one
command; the block names that command, the machine and the date, so a figure can be traced to
the run that produced it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import re
import socket

import jax


def cpu_name() -> str:
  """The CPU model (from /proc/cpuinfo where there is one), for every machine line we write."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def machine_info() -> dict:
  """The machine facts a benchmark's meta.json records (platform, CPU, cores, memory, load)."""
  info = {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "load_avg_end": list(os.getloadavg())}
  info["cpu"] = cpu_name()
  try:
    with open("/proc/meminfo") as f:
      info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  return info


def save_json(path: str, obj: dict):
  """A result file next to its run (re-read when tables are rebuilt without a rerun)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:   # atomic: a kill leaves the old file or the new one
    json.dump(obj, f, indent=1, default=str)
  os.replace(path + ".tmp", path)


def load_json(path: str) -> dict | None:
  """A result file written by `save_json`, or None when there is none yet."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def machine_line() -> str:
  cpu = cpu_name()
  return (f"{socket.gethostname()}: {cpu}, {os.cpu_count()} cores, "
          f"JAX {jax.__version__} on {jax.default_backend()} x{jax.device_count()}")


def provenance_lines(*commands: str) -> list[str]:
  """The command(s), machine and date lines that head every RESULTS.md block."""
  return ([f"- Command: `{c}`" for c in commands]
          + [f"- Machine: {machine_line()}", f"- Date: {datetime.date.today().isoformat()}"])


def section(title: str, command: str, body: str, facts: tuple[str, ...] = ()) -> str:
  """`### title`, the provenance lines, `- fact` lines, then `body`."""
  head = "\n".join(provenance_lines(command) + [f"- {f}" for f in facts])
  return f"### {title}\n\n{head}\n\n{body}\n"


def write_results_json(results_dir: str, block: str, command: str, rows: list[dict],
                       note: str = "", extra: dict | None = None) -> str:
  """`<results_dir>/<block>.json`: the machine-readable twin of a RESULTS.md block.

  Rows follow one schema across blocks: {"method", "variant", "seeds", "metrics": {name: {"mean",
  "ci_low", "ci_high"}}, optionally "delta_vs_pretrained"}; TAR in percent, AUC in [0, 1].
  """
  payload = {"block": block, "command": command, "date": datetime.date.today().isoformat(),
             "machine": machine_line(), "note": note, "rows": rows, **(extra or {})}
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, f"{block}.json")
  with open(path, "w") as f:
    json.dump(payload, f, indent=1)
  return path


def update_results_md(path: str, key: str, section: str):
  """Replaces (or appends) the block between `<!-- key -->` markers.

  Several result scripts (demo, method tables, attack sweeps) may finish at
  the same time; an exclusive lock on a side file keeps one from overwriting
  another's freshly written block.
  """
  begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
  block = f"{begin}\n{section}\n{end}"
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    text = open(path).read() if os.path.exists(path) else "# Results\n"
    if begin in text and end in text:
      text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text,
                    flags=re.S)
    else:
      text = text.rstrip() + "\n\n" + block + "\n"
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
