"""The pieces of the FedFace study (`launch.fedface_study`) that the demo shares: runs, tables.

A study is a set of named runs under one root, each trained at most once (a finished run
has its exported backbone and is reused), scored by a bootstrap over identities
(`evaluation.bootstrap`), and written as `results/<block>.json` plus a RESULTS.md section.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os

from absl import logging

# FedFace variants compared on validation (seed 0). The name is the row's "variant".
VARIANTS = {
    "frozen+row_sum": "method=fedface,class_embedding=frozen,reduction=row_sum",
    "frozen+pair_mean": "method=fedface,class_embedding=frozen,reduction=pair_mean",
    "frozen+nosp": "method=fedface_nosp,class_embedding=frozen",
    "reestimate+row_sum": "method=fedface,class_embedding=reestimate,reduction=row_sum",
    "client_trained+row_sum": "method=fedface,class_embedding=client_trained,reduction=row_sum",
    "frozen+row_sum+public": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                             "public_negatives=1",
    # The server step: FedAvgM (momentum on the averaged delta), as in FedFace's own server
    # optimiser choice and Hsu et al. 2019; the baselines then get the same server step.
    "frozen+row_sum+m0.9": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                           "server_momentum=0.9",
    "frozen+row_sum+public+m0.9": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                  "public_negatives=1,server_momentum=0.9",
    "client_trained+row_sum+m0.9": "method=fedface,class_embedding=client_trained,"
                                   "reduction=row_sum,server_momentum=0.9",
}
BASELINES = {"fedavg": "method=fedavg", "fedaws": "method=fedaws"}


def server_args(variant_arg: str) -> str:
  """The `server_*` run arguments of a variant, so every method gets the same server step."""
  return ",".join(kv for kv in variant_arg.split(",") if kv.startswith("server_"))


METRICS = ("tar@1e-3", "tar@1e-2", "auc")
FARS = (1e-3, 1e-2)


def load_config_module(path: str):
  spec = importlib.util.spec_from_file_location("study_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class Study:
  """The runs of one study, each a (name, config) pair trained at most once."""

  def __init__(self, config_path: str, workroot: str, variant: str = "study"):
    self.module = load_config_module(config_path)
    self.variant = variant
    self.workroot = workroot
    self.pretrain_dir = os.path.join(workroot, "pretrain")
    base = self.config("")
    from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    self.splits = pretrain.load_splits(base)

  def config(self, arg: str):
    parts = [f"variant={self.variant}", arg, f"pretrained={self.pretrain_dir}"]
    return self.module.get_config(",".join(p for p in parts if p))

  def pretrain(self, name: str, cfg) -> str:
    from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(self.workroot, name)
    if not _finished(workdir):
      pretrain.train_and_evaluate(cfg, workdir)
    return workdir

  def theta0(self) -> str:
    return self.pretrain("pretrain", self.config(""))

  def oracle_central(self) -> str:
    """From scratch on pretrain + federated identities, same steps and schedule as theta_0."""
    return self.pretrain("oracle_central", self.config("train_split=pretrain+federated"))

  def oracle_finetune(self, seed: int) -> str:
    """theta_0 fine-tuned on the pooled client images, head = the same mean features.

    Same image-gradient budget as one federated run (rounds x clients x local steps x
    batch), so the oracle is a ceiling at equal compute, not at more passes over the data.
    """
    cfg = self.config("")
    f = cfg.federated
    images = f.num_rounds * f.clients_per_round * f.client.local_steps * f.client.batch_size
    cfg.train_split = "federated"
    cfg.init_backbone = os.path.join(self.pretrain_dir, "backbone")
    cfg.init_head = "mean_feature"
    cfg.seed = seed
    cfg.num_steps = max(1, images // cfg.batch_size)
    cfg.optimizer.learning_rate = f.client.optimizer.learning_rate
    cfg.optimizer.warmup_steps = 0
    cfg.checkpoint_every_steps = max(1, cfg.num_steps // 2)
    return self.pretrain(f"oracle_finetune/seed{seed}", cfg)

  def federated(self, name: str, arg: str, seed: int) -> str:
    from fedface_jax.federated import engine  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(self.workroot, name, f"seed{seed}")
    if not _finished(workdir):
      engine.run(self.config(f"{arg},seed={seed}"), workdir, splits=self.splits)
    return workdir

  def embeddings(self, workdir: str, split: str):
    """Flip-test embeddings of `split`'s images under the backbone exported in `workdir`."""
    # pylint: disable=g-import-not-at-top
    from fedface_jax import models
    from fedface_jax.evaluation import embeddings as emb_lib
    from fedface_jax.federated import engine
    from fedface_jax.training import pretrain
    # pylint: enable=g-import-not-at-top
    cfg = self.config("")
    model = models.create_model(cfg.model.name, cfg.model.embedding_dim,
                                **cfg.model.get("kwargs", {}))
    faces = self.splits[split]
    params = engine.load_backbone(model, faces.image_shape, os.path.join(workdir, "backbone"))
    return emb_lib.compute_embeddings(pretrain.make_embed_fn(model, params), faces.images,
                                      flip=cfg.eval.flip, mode="sum", progress=False)


def _finished(workdir: str) -> bool:
  return os.path.isdir(os.path.join(workdir, "backbone"))


def bootstrap_runs(study: Study, runs: dict[str, list[str]], split: str, baseline: str | None,
                   num_resamples: int = 1000) -> dict:
  """`evaluation.bootstrap.bootstrap_models` over the backbones of `runs` (name -> one per seed)."""
  from fedface_jax.evaluation import bootstrap  # pylint: disable=g-import-not-at-top
  emb = {name: [study.embeddings(w, split) for w in dirs] for name, dirs in runs.items()}
  return bootstrap.bootstrap_models(emb, study.splits[split].labels, baseline=baseline,
                                    fars=FARS, num_resamples=num_resamples, seed=0)


def summary(s: dict) -> dict:
  return {"mean": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def table_rows(result: dict, names: dict[str, tuple[str, str]]) -> list[dict]:
  rows = []
  for key, (method, variant) in names.items():
    r = result[key]
    row = {"method": method, "variant": variant, "seeds": r["seeds"],
           "metrics": {m: summary(r["metrics"][m]) for m in METRICS}}
    if "delta" in r:
      row["delta_vs_pretrained"] = {m: summary(r["delta"][m]) for m in METRICS}
    rows.append(row)
  return rows


def cell(s: dict, digits: int) -> str:
  return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def markdown_table(rows: list[dict]) -> str:
  head = ("| Method | Variant | Seeds | TAR@1e-3 (%) | TAR@1e-2 (%) | AUC | "
          "Δ TAR@1e-3 | Δ TAR@1e-2 | Δ AUC |")
  lines = [head, "|" + "---|" * 9]
  for r in rows:
    m, d = r["metrics"], r.get("delta_vs_pretrained")
    delta = ([cell(d[k], 4 if k == "auc" else 1) for k in METRICS] if d else ["-"] * 3)
    lines.append(f"| {r['method']} | {r['variant']} | {r['seeds']} | "
                 f"{cell(m['tar@1e-3'], 1)} | {cell(m['tar@1e-2'], 1)} | "
                 f"{cell(m['auc'], 4)} | " + " | ".join(delta) + " |")
  return "\n".join(lines)


def tar_curve_png(curves: dict[str, str], lines: dict[str, float], path: str):
  """TAR@FAR=1e-3 (validation identities) against round, one series per method (seed 0)."""
  # pylint: disable=g-import-not-at-top
  from fedface_jax import metrics_io
  from fedface_jax.evaluation import plots
  # pylint: enable=g-import-not-at-top
  xs, ys = {}, {}
  for name, workdir in curves.items():
    rows = metrics_io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    pts = sorted({int(r["step"]): r["eval/tar@far=1e-3"] for r in rows
                  if r.get("eval/tar@far=1e-3") is not None}.items())
    if pts:
      xs[name], ys[name] = [p[0] for p in pts], [100 * p[1] for p in pts]
  last = max((max(x) for x in xs.values()), default=1)
  for name, value in lines.items():   # theta_0 and the oracles: flat reference lines
    xs[name], ys[name] = [0, last], [value, value]
  plots.save_metric_curve_png(xs, ys, path, xlabel="round",
                              ylabel="TAR@FAR=1e-3 (%), validation identities")
  return path


def write_block(block: str, *, command: str, rows: list[dict], note: str, results_dir: str,
                num_resamples: int, update_results_md: bool, extra: dict | None = None) -> str:
  """`<results_dir>/<block>.json` and the RESULTS.md section (printed; written if asked)."""
  from reporting import results_md as results_lib  # pylint: disable=g-import-not-at-top
  payload = {"block": block, "command": command, "date": datetime.date.today().isoformat(),
             "machine": results_lib.machine_line(), "note": note, "rows": rows, **(extra or {})}
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, f"{block}.json")
  with open(path, "w") as f:
    json.dump(payload, f, indent=1)
  table = markdown_table(rows)
  section = results_lib.section(
      block, command, f"{table}\n\n{note}\n\nMean over seeds [95% CI from a bootstrap over "
      f"identities, {num_resamples} resamples]; Δ = paired difference to theta_0 on "
      f"the same resamples. Source: `{path}`.")
  print(section)
  logging.info("wrote %s", path)
  if update_results_md:
    results_lib.update_results_md("RESULTS.md", block, section)
  return section


