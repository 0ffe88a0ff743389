"""Runs the method comparison of RESULTS.md and writes its tables.

Every number in RESULTS.md comes from here: pretrain once, then every
federated method from the same theta_0 with the same rounds and clients, plus
the centralised fine-tuning oracle on the same federated identities, all
evaluated on the same held-out identities. Runs resume from their checkpoints,
so re-running after an interruption only finishes what is missing.
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
import ml_collections as mlc

from fedface_jax.evaluation import api as eval_api

FED_METHODS = ("fedavg", "fedaws", "fedface_nosp", "fedface")
LABELS = {
    "pretrained": "Pretrained only (theta_0)",
    "fedavg": "FedAvg (random init, no spreadout)",
    "fedaws": "FedAwS (random init + spreadout)",
    "fedface_nosp": "FedFace without spreadout (mean init)",
    "fedface": "FedFace (mean init + spreadout)",
    "oracle": "Centralised fine-tuning oracle (CosFace on pooled federated images)",
}


def oracle_config(pre_cfg: mlc.ConfigDict, fed_cfg: mlc.ConfigDict, pretrain_dir: str):
  """CosFace fine-tuning of theta_0 on the federated identities, pooled.

  Same number of image-gradient evaluations as the federated runs
  (rounds x clients x local steps x batch), so the oracle is a ceiling at equal
  compute, not at more data passes.
  """
  cfg = mlc.ConfigDict(pre_cfg.to_dict())
  f = fed_cfg.federated
  images = f.num_rounds * f.clients_per_round * f.client.local_steps * f.client.batch_size
  cfg.train_split = "federated"
  cfg.init_backbone = os.path.join(pretrain_dir, "backbone")
  cfg.num_steps = max(1, images // cfg.batch_size)
  cfg.optimizer.learning_rate = cfg.optimizer.learning_rate * 0.1
  cfg.optimizer.warmup_steps = min(cfg.optimizer.warmup_steps, cfg.num_steps // 10)
  cfg.checkpoint_every_steps = max(1, cfg.num_steps // 2)
  return cfg


def run_comparison(pre_cfg, fed_cfg_fn, workroot: str, methods=FED_METHODS,
                   with_oracle: bool = True) -> dict:
  """Returns {name: evaluation report}; `fed_cfg_fn(method)` gives each config."""
  from fedface_jax.federated import engine  # pylint: disable=g-import-not-at-top
  from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
  pretrain_dir = os.path.join(workroot, "pretrain")
  rows = {"pretrained": pretrain.train_and_evaluate(pre_cfg, pretrain_dir)}
  splits = pretrain.load_splits(pre_cfg)
  rounds = None
  for method in methods:
    cfg = fed_cfg_fn(method)
    cfg.pretrained_backbone = os.path.join(pretrain_dir, "backbone")
    out = engine.run(cfg, os.path.join(workroot, method), splits=splits)
    rows[method] = out["final"]
    rounds = cfg.federated.num_rounds
  if with_oracle:
    cfg = oracle_config(pre_cfg, fed_cfg_fn("fedface"), pretrain_dir)
    rows["oracle"] = pretrain.train_and_evaluate(cfg, os.path.join(workroot, "oracle"))
  return {"rows": rows, "rounds": rounds}


def machine_line() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
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


def markdown_section(title: str, command: str, result: dict, notes: str = "") -> str:
  rows = {LABELS.get(k, k): v for k, v in result["rows"].items() if v is not None}
  table = eval_api.format_results_table(rows, fars=(1e-3, 1e-2))
  return section(title, command, f"{table}\n\n{notes}",
                 (f"Federated rounds: {result['rounds']}",))


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


def save_json(path: str, result: dict):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  slim = {k: {m: {kk: vv for kk, vv in (r or {}).items() if kk not in ("roc", "kfold")}
              for m, r in v.items()} if k == "rows" else v for k, v in result.items()}
  with open(path, "w") as f:
    json.dump(slim, f, indent=1, default=str)
