"""The benchmark suite: sweep workers, class-table worker and peers, then BENCHMARKS.md.

Why this module exists: every figure in BENCHMARKS.md must come from one command on one machine
state. `run_suite` is that command's body (`launch.benchmark`). It runs each device count in its
own subprocess (a fake-device count is fixed when JAX starts), whose rows come from
`fedface_jax/benchmark/worker.py`, runs the peer frameworks in their own venvs, and writes
`results.jsonl` plus BENCHMARKS.md (`reporting/benchmark_report.py`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import ml_collections as mlc

from fedface_jax.benchmark import worker
from reporting import benchmark_report
from reporting import results_md

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_peers(cfg: mlc.ConfigDict, workdir: str, out_path: str) -> None:
  """Runs each configured peer on its workload in its own venv; failures become error rows."""
  for peer in cfg.peers:
    peer = dict(peer)
    run = next((dict(r) for r in cfg.runs if r["name"] == peer["run"]), None)
    if run is None:
      raise ValueError(f"peer {peer} names unknown run {peer['run']!r}")
    w = worker.make_workload(cfg, run)
    wpath = os.path.join(workdir, f"workload_{run['name']}.json")
    w.save(wpath)
    py = os.path.join(REPO_ROOT, ".peer_venvs", peer["venv"], "bin", "python")
    script = os.path.join(REPO_ROOT, "scripts", "peers", f"{peer['venv']}_bench.py")
    base = {"kind": "peer", "name": run["name"], "peer": peer["venv"], "workload": w.to_dict()}
    if not os.path.isfile(py):
      worker.emit(out_path, {**base, "kind": "error", "error": f"{py} missing: run "
                             "scripts/setup_peer_venvs.sh"})
      continue
    cmd = [py, script, "--workload", wpath, "--rounds", str(peer.get("rounds", 2))]
    cmd += list(peer.get("args", ()))
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    t0 = time.perf_counter()
    with open(os.path.join(workdir, f"peer_{peer['venv']}_{run['name']}.log"), "w") as log:
      proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                            timeout=float(peer.get("timeout_s", 900)), check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
      worker.emit(out_path, {**base, "kind": "error", "error": f"rc={proc.returncode}; see "
                             f"peer_{peer['venv']}_{run['name']}.log", "cmd": " ".join(cmd)})
      continue
    res = json.loads(lines[-1])
    worker.emit(out_path, {**base, "result": res, "wall_s": time.perf_counter() - t0,
                           "client_updates_per_s": res["client_updates_per_s"],
                           "images_per_s": res["images_per_s"], "cmd": " ".join(cmd)})


def _subprocess(args: list[str], devices: int, log_path: str, timeout_s: float) -> int:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env.setdefault("JAX_PLATFORMS", "cpu")
  with open(log_path, "w") as log:
    proc = subprocess.run([sys.executable, "-m", "launch.benchmark"] + args, cwd=REPO_ROOT,
                          env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                          check=False)
  return proc.returncode


def config_args(argv: list[str]) -> list[str]:
  """`--config=<file>` and every `--config.<key>=<value>` override, as the workers need them."""
  out, i = [], 0
  while i < len(argv):
    a = argv[i]
    if a == "--config" or (a.startswith("--config.") and "=" not in a):
      out.append(f"{a}={argv[i + 1]}" if i + 1 < len(argv) else a)
      i += 2
      continue
    if a.startswith(("--config=", "--config.")):
      out.append(a)
    i += 1
  if not any(a.startswith("--config=") for a in out):
    out.insert(0, "--config=experiments/benchmark_cpu.py")
  return out


def run_suite(cfg: mlc.ConfigDict, workdir: str, config_args: list[str], command: str,
              parts: tuple[str, ...]) -> str:
  """Runs the selected parts (sweep, class_table, peers) and writes BENCHMARKS.md.

  `config_args` (`--config=<file[:arg]>` and every `--config.<key>=<value>` override) are passed
  on to each worker, so the workers measure the config the parent was given.
  """
  # Workers run from the repository root: a relative --workdir would land elsewhere for them.
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  out_path = os.path.join(workdir, "results.jsonl")
  if not cfg.get("append", False) and os.path.exists(out_path):
    os.remove(out_path)
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  t0 = time.perf_counter()
  if "sweep" in parts:
    for devices in sorted({int(dict(r).get("devices", 1)) for r in cfg.runs}):
      rc = _subprocess(config_args + [f"--worker_devices={devices}",
                        f"--worker_out={out_path}"], devices,
                       os.path.join(workdir, f"worker_{devices}dev.log"), cfg.worker_timeout_s)
      if rc:
        worker.emit(out_path, {"kind": "error", "name": f"worker_{devices}dev",
                               "error": f"worker exited with {rc}; see worker_{devices}dev.log"})
  if "class_table" in parts and cfg.class_table.enabled:
    rc = _subprocess(config_args + ["--worker_class_table",
                      f"--worker_out={out_path}"], int(cfg.class_table.devices),
                     os.path.join(workdir, "class_table.log"), cfg.worker_timeout_s)
    if rc:
      worker.emit(out_path, {"kind": "error", "name": "class_table",
                             "error": f"class-table worker exited with {rc}; see class_table.log"})
  if "peers" in parts:
    run_peers(cfg, workdir, out_path)
  meta = {"started": started, "wall_s": time.perf_counter() - t0, "command": command,
          "config": " ".join(config_args), "parts": list(parts), "machine": machine_info(),
          "versions": versions()}
  meta_path = os.path.join(workdir, "meta.json")
  if cfg.get("append", False) and os.path.isfile(meta_path):
    # Appended invocations: keep the first start time and list every command.
    with open(meta_path) as f:
      old = json.load(f)
    meta["started"] = old["started"]
    meta["wall_s"] += old["wall_s"]
    meta["command"] = old["command"] + "` then `" + command
  with open(meta_path, "w") as f:
    json.dump(meta, f, indent=1)
  return benchmark_report.write_report(cfg, workdir, meta)


def machine_info() -> dict[str, Any]:
  info = {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "load_avg_end": list(os.getloadavg())}
  info["cpu"] = results_md.cpu_name()
  try:
    with open("/proc/meminfo") as f:
      info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  return info


def versions() -> dict[str, str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for p in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections"):
    try:
      out[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      out[p] = "missing"
  return out
