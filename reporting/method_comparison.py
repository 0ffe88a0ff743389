"""Runs the method comparison of RESULTS.md (`launch.results`) and writes its tables.

Pretrain once, then every federated method from the same theta_0 with the same rounds and
clients, plus the centralised fine-tuning oracle on the same federated identities, all evaluated
on the same held-out identities. Runs resume from their checkpoints, so re-running after an
interruption only finishes what is missing.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from fedface_jax import data as data_lib
from fedface_jax.evaluation import api as eval_api
from fedface_jax.federated import engine
from fedface_jax.training import pretrain
from reporting import results_md

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
  pretrain_dir = os.path.join(workroot, "pretrain")
  rows = {"pretrained": pretrain.train_and_evaluate(pre_cfg, pretrain_dir)}
  splits = data_lib.load_splits(pre_cfg)
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


def markdown_section(title: str, command: str, result: dict, notes: str = "") -> str:
  """The `fedface-<dataset>` block: one TAR@FAR row per method, labelled for readers."""
  rows = {LABELS.get(k, k): v for k, v in result["rows"].items() if v is not None}
  table = eval_api.format_results_table(rows, fars=(1e-3, 1e-2))
  return results_md.section(title, command, f"{table}\n\n{notes}",
                            (f"Federated rounds: {result['rounds']}",))


def slim_result(result: dict) -> dict:
  """What `results.json` keeps: every report without its ROC curve and k-fold details."""
  return {k: {m: {kk: vv for kk, vv in (r or {}).items() if kk not in ("roc", "kfold")}
               for m, r in v.items()} if k == "rows" else v for k, v in result.items()}
