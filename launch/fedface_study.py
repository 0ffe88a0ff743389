"""The FedFace study of RESULTS.md: headroom, variants chosen on validation, seeds and 95% CIs.

  python -m launch.fedface_study --config experiments/fedface_study_synthetic.py \
      --workroot runs/study --stage=all
  # --stage=gate: theta_0 and the central oracle only (the headroom check)
  # --stage=select: + every FedFace variant on seed 0, scored on the validation identities
  # --stage=all: + the final table (every method x --seeds) on the evaluation identities

Why it is built this way (docs/FEDFACE.md, issue 9):
  * headroom first: theta_0 sees 100 public identities, and a central model on those plus
    the 1,000 federated ones must be clearly better, or no federated method can show a gain;
  * every choice (which FedFace variant is "FedFace") is made on the validation identities;
    the evaluation identities are embedded only for the final tables;
  * the independent units of a verification test are identities: every number carries a 95%
    CI from a bootstrap over evaluation identities (`evaluation.bootstrap`), pooled over the
    seeds of sampling and local training; a difference is a paired bootstrap on the same
    resamples.

Each run lives in its own workdir under --workroot and is reused when finished (its config is
checked on resume), so an interrupted study finishes only what is missing. Outputs:
`results/<block>.json`, `<workroot>/<block>_tar_vs_round.png` (copied to `results/`), and the
`<block>` section of RESULTS.md with --update_results_md.
"""

from __future__ import annotations

import importlib.util
import json
import os

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string("config", "experiments/fedface_study_synthetic.py",
                    "Study config file; its get_config(arg) takes the run arguments.")
flags.DEFINE_string("workroot", "runs/study", "Root of every run of the study.")
flags.DEFINE_enum("stage", "all", ["gate", "select", "all"], "How far to go.")
flags.DEFINE_list("seeds", "0,1,2", "Federated seeds (client sampling and local training).")
flags.DEFINE_integer("num_resamples", 1000, "Bootstrap resamples over identities.")
flags.DEFINE_string("block", "fedface-study-synthetic", "RESULTS.md block / results JSON name.")
flags.DEFINE_bool("update_results_md", False, "Write the block(s) into RESULTS.md.")
flags.DEFINE_string("results_dir", "results", "Where the block JSON files and the PNG go.")
flags.DEFINE_list("variants", None, "FedFace variants to select from (default: all).")
FLAGS = flags.FLAGS

# FedFace variants compared on validation (seed 0). The name is the row's "variant".
VARIANTS = {
    "frozen+row_sum": "method=fedface,class_embedding=frozen,reduction=row_sum",
    "frozen+pair_mean": "method=fedface,class_embedding=frozen,reduction=pair_mean",
    "frozen+nosp": "method=fedface_nosp,class_embedding=frozen",
    "reestimate+row_sum": "method=fedface,class_embedding=reestimate,reduction=row_sum",
    "client_trained+row_sum": "method=fedface,class_embedding=client_trained,reduction=row_sum",
    "frozen+row_sum+public": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                             "public_negatives=1",
}
BASELINES = {"fedavg": "method=fedavg", "fedaws": "method=fedaws"}
METRICS = ("tar@1e-3", "tar@1e-2", "auc")
FARS = (1e-3, 1e-2)


def load_config_module(path: str):
  spec = importlib.util.spec_from_file_location("study_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class Study:
  """The runs of one study, each a (name, config) pair trained at most once."""

  def __init__(self, config_path: str, workroot: str):
    self.module = load_config_module(config_path)
    self.workroot = workroot
    self.pretrain_dir = os.path.join(workroot, "pretrain")
    base = self.config("")
    from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    self.splits = pretrain.load_splits(base)

  def config(self, arg: str):
    extra = f"pretrained={self.pretrain_dir}"
    return self.module.get_config(f"{arg},{extra}" if arg else extra)

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


def _bootstrap(study: Study, runs: dict[str, list[str]], split: str, baseline: str | None):
  from fedface_jax.evaluation import bootstrap  # pylint: disable=g-import-not-at-top
  emb = {name: [study.embeddings(w, split) for w in dirs] for name, dirs in runs.items()}
  return bootstrap.bootstrap_models(emb, study.splits[split].labels, baseline=baseline,
                                    fars=FARS, num_resamples=FLAGS.num_resamples, seed=0)


def _summary(s: dict) -> dict:
  return {"mean": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def _rows(result: dict, names: dict[str, tuple[str, str]]) -> list[dict]:
  rows = []
  for key, (method, variant) in names.items():
    r = result[key]
    row = {"method": method, "variant": variant, "seeds": r["seeds"],
           "metrics": {m: _summary(r["metrics"][m]) for m in METRICS}}
    if "delta" in r:
      row["delta_vs_pretrained"] = {m: _summary(r["delta"][m]) for m in METRICS}
    rows.append(row)
  return rows


def _cell(s: dict, digits: int) -> str:
  return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def markdown_table(rows: list[dict]) -> str:
  head = ("| Method | Variant | Seeds | TAR@1e-3 (%) | TAR@1e-2 (%) | AUC | "
          "Δ TAR@1e-3 | Δ TAR@1e-2 | Δ AUC |")
  lines = [head, "|" + "---|" * 9]
  for r in rows:
    m, d = r["metrics"], r.get("delta_vs_pretrained")
    delta = ([_cell(d[k], 4 if k == "auc" else 1) for k in METRICS] if d else ["-"] * 3)
    lines.append(f"| {r['method']} | {r['variant']} | {r['seeds']} | "
                 f"{_cell(m['tar@1e-3'], 1)} | {_cell(m['tar@1e-2'], 1)} | "
                 f"{_cell(m['auc'], 4)} | " + " | ".join(delta) + " |")
  return "\n".join(lines)


def tar_curve_png(study: Study, curves: dict[str, str], lines: dict[str, float], path: str):
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


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from fedface_jax import results as results_lib
  from launch import common
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  study = Study(FLAGS.config, FLAGS.workroot)
  command = common.invocation("launch.fedface_study")
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  variants = {v: VARIANTS[v] for v in (FLAGS.variants or VARIANTS)}
  seeds = [int(s) for s in FLAGS.seeds]

  with common.exit_on_config_mismatch(hint="use a new --workroot, or delete that run"):
    theta0, central = study.theta0(), study.oracle_central()
    # Gate: does more identities help at all? Evaluation identities, both models fixed.
    gate = _bootstrap(study, {"pretrained": [theta0], "oracle_central": [central]},
                      "evaluation", baseline="pretrained")
    gate_rows = _rows(gate, {"pretrained": ("pretrained", "theta_0: 100 public ids"),
                             "oracle_central": ("oracle_central", "pretrain + federated ids")})
    _write(f"{FLAGS.block}-gate", command, gate_rows, study, results_lib,
           "Gate: theta_0 against a model trained centrally on every identity (1 seed each).")
    if FLAGS.stage == "gate":
      return

    # Selection on validation: each FedFace variant, seed 0, against theta_0.
    sel_runs = {"pretrained": [theta0]}
    sel_runs.update({v: [study.federated(f"fedface/{v}", a, seeds[0])]
                     for v, a in variants.items()})
    selection = _bootstrap(study, sel_runs, "validation", baseline="pretrained")
    ranked = sorted(variants, key=lambda v: (selection[v]["metrics"]["tar@1e-3"]["mean"],
                                             selection[v]["metrics"]["auc"]["mean"]),
                    reverse=True)
    best_sp = next(v for v in ranked if "nosp" not in v)
    sel_rows = _rows(selection, {"pretrained": ("pretrained", "theta_0"),
                                 **{v: ("fedface", v) for v in ranked}})
    _write(f"{FLAGS.block}-selection", command, sel_rows, study, results_lib,
           f"Selection on the 100 validation identities, seed {seeds[0]}; chosen: "
           f"`{best_sp}` (highest TAR@1e-3, then AUC).")
    if FLAGS.stage == "select":
      return

    # Final table on the evaluation identities.
    embedding_mode = best_sp.split("+")[0]
    nosp_arg = f"method=fedface_nosp,class_embedding={embedding_mode}"
    if "public" in best_sp:
      nosp_arg += ",public_negatives=1"
    runs = {
        "pretrained": [theta0],
        "fedavg": [study.federated("fedavg", BASELINES["fedavg"], s) for s in seeds],
        "fedaws": [study.federated("fedaws", BASELINES["fedaws"], s) for s in seeds],
        "fedface": [study.federated(f"fedface/{best_sp}", VARIANTS[best_sp], s)
                    for s in seeds],
        "fedface_nosp": [study.federated(f"fedface_nosp/{embedding_mode}", nosp_arg, s)
                         for s in seeds],
        "oracle_central": [central],
        "oracle_finetune": [study.oracle_finetune(s) for s in seeds],
    }
    final = _bootstrap(study, runs, "evaluation", baseline="pretrained")
    vs_fedavg = _bootstrap(study, {k: runs[k] for k in ("fedavg", "fedface")}, "evaluation",
                           baseline="fedavg")["fedface"]["delta"]
  names = {"pretrained": ("pretrained", "theta_0"),
           "fedavg": ("fedavg", "random init, no spreadout"),
           "fedaws": ("fedaws", "random init, row_sum spreadout"),
           "fedface": ("fedface", best_sp),
           "fedface_nosp": ("fedface_nosp", nosp_arg.split(",", 1)[1]),
           "oracle_central": ("oracle_central", "central, pretrain + federated ids"),
           "oracle_finetune": ("oracle_finetune", "theta_0 fine-tuned on pooled client images")}
  rows = _rows(final, names)
  gap = (final["oracle_finetune"]["delta"]["tar@1e-3"]["mean"])
  gain = final["fedface"]["delta"]["tar@1e-3"]["mean"]
  facts = (f"FedFace - FedAvg, TAR@1e-3: {_cell(vs_fedavg['tar@1e-3'], 1)} points; "
           f"TAR@1e-2: {_cell(vs_fedavg['tar@1e-2'], 1)}; AUC: {_cell(vs_fedavg['auc'], 4)}. "
           f"FedFace recovers {100 * gain / gap:.0f}% of the oracle_finetune gain at 1e-3."
           if gap > 0 else "oracle_finetune does not beat theta_0 at 1e-3.")
  png = tar_curve_png(study, {k: v[0] for k, v in runs.items()
                              if k not in ("pretrained", "oracle_central", "oracle_finetune")},
                      {k: final[k]["metrics"]["tar@1e-3"]["mean"]
                       for k in ("pretrained", "oracle_central", "oracle_finetune")},
                      os.path.join(FLAGS.results_dir, f"{FLAGS.block}_tar_vs_round.png"))
  _write(FLAGS.block, command, rows, study, results_lib,
         f"{len(seeds)} seeds per federated row; 400 evaluation identities; {facts} "
         f"Curves: `{png}` (validation identities, seed {seeds[0]}; flat lines are evaluated "
         "on the evaluation identities).",
         extra={"fedface_minus_fedavg": {m: _summary(vs_fedavg[m]) for m in METRICS},
                "tar_vs_round_png": png})


def _write(block: str, command: str, rows: list[dict], study: Study, results_lib, note: str,
           extra: dict | None = None):
  import datetime  # pylint: disable=g-import-not-at-top
  payload = {"block": block, "command": command, "date": datetime.date.today().isoformat(),
             "machine": results_lib.machine_line(), "note": note, "rows": rows, **(extra or {})}
  path = os.path.join(FLAGS.results_dir, f"{block}.json")
  with open(path, "w") as f:
    json.dump(payload, f, indent=1)
  table = markdown_table(rows)
  section = results_lib.section(
      block, command, f"{table}\n\n{note}\n\nMean over seeds [95% CI from a bootstrap over "
      f"identities, {FLAGS.num_resamples} resamples]; Δ = paired difference to theta_0 on "
      f"the same resamples. Source: `{path}`.")
  print(section)
  logging.info("wrote %s", path)
  if FLAGS.update_results_md:
    results_lib.update_results_md("RESULTS.md", block, section)
  del study


if __name__ == "__main__":
  app.run(main)
