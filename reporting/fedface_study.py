"""The FedFace study (`launch.fedface_study`, `run_study`) and the pieces the demo shares.

A study is a set of named runs under one root, each trained at most once (a finished run
has its exported backbone and is reused), scored by a bootstrap over identities
(`evaluation.bootstrap`), and written as `results/<block>.json` plus a RESULTS.md section.
"""

from __future__ import annotations

import functools
import importlib.util
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
    # The server step: FedAvgM (Hsu et al. 2019, momentum on the averaged client delta); the
    # baselines and the no-spreadout row then get the chosen variant's server step.
    "frozen+row_sum+m0.9": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                           "server_momentum=0.9",
    "frozen+row_sum+public+m0.9": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                  "public_negatives=1,server_momentum=0.9",
    "client_trained+row_sum+m0.9": "method=fedface,class_embedding=client_trained,"
                                   "reduction=row_sum,server_momentum=0.9",
    # The server learning rate of FedAvgM on a doubling grid, at the same client compute: with
    # lr 1 the curves still rise at the last round, with an update norm of ~0.03 per round.
    "frozen+row_sum+m0.9+lr2": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                               "server_momentum=0.9,server_lr=2.0",
    "frozen+row_sum+m0.9+lr4": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                               "server_momentum=0.9,server_lr=4.0",
    "frozen+row_sum+m0.9+lr8": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                               "server_momentum=0.9,server_lr=8.0",
    "frozen+row_sum+m0.9+lr16": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                "server_momentum=0.9,server_lr=16.0",
    # The client learning rate (0.03 in the config): at lr 8 only 0.6-0.8% of client images end
    # inside the positive-only margin after 5 local steps, so clients stop far from their optimum.
    # Same image budget; the baselines and oracle_finetune then get the chosen client lr too.
    "frozen+row_sum+m0.9+lr1+clr0.3": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                      "server_momentum=0.9,server_lr=1.0,client_lr=0.3",
    "frozen+row_sum+m0.9+lr2+clr0.1": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                      "server_momentum=0.9,server_lr=2.0,client_lr=0.1",
    "frozen+row_sum+m0.9+lr4+clr0.1": "method=fedface,class_embedding=frozen,reduction=row_sum,"
                                      "server_momentum=0.9,server_lr=4.0,client_lr=0.1",
    # The schedule at the same 2,000 client participations: each client joins ~2 times and the
    # curves still rise at round 40, so more, smaller rounds; and the class table re-estimated
    # under the current model, since frozen theta_0 centres go stale as the backbone moves.
    "frozen+row_sum+m0.9+lr2+clr0.1+r80": "method=fedface,class_embedding=frozen,"
                                          "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                          "client_lr=0.1,num_rounds=80,clients_per_round=25",
    "frozen+row_sum+m0.9+lr2+clr0.1+r200": "method=fedface,class_embedding=frozen,"
                                           "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                           "client_lr=0.1,num_rounds=200,clients_per_round=10",
    "reestimate+row_sum+m0.9+lr2+clr0.1": "method=fedface,class_embedding=reestimate,"
                                          "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                          "client_lr=0.1",
    # The two margins at the chosen steps: spreadout at 0.3 leaves only 2.6% of class-table pairs
    # in violation, so a lower margin pushes more rows apart; a client hinge at 0.7 stops pulling
    # images that already sit near their centre (none are inside 0.9 after 5 local steps).
    "frozen+row_sum+m0.9+lr2+clr0.1+sm0.1": "method=fedface,class_embedding=frozen,"
                                            "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                            "client_lr=0.1,spread_margin=0.1",
    "frozen+row_sum+m0.9+lr2+clr0.1+sm0.0": "method=fedface,class_embedding=frozen,"
                                            "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                            "client_lr=0.1,spread_margin=0.0",
    "frozen+row_sum+m0.9+lr2+clr0.1+cm0.7": "method=fedface,class_embedding=frozen,"
                                            "reduction=row_sum,server_momentum=0.9,server_lr=2.0,"
                                            "client_lr=0.1,margin=0.7",
}
BASELINES = {"fedavg": "method=fedavg", "fedaws": "method=fedaws"}


SHARED_KEYS = ("server_", "client_lr=", "num_rounds=", "clients_per_round=", "margin=",
               "spread_margin=")


def step_args(variant_arg: str) -> str:
  """A variant's steps, schedule and margins, so every method gets the same steps and rounds."""
  return ",".join(kv for kv in variant_arg.split(",") if kv.startswith(SHARED_KEYS))


def client_args(variant_arg: str) -> str:
  """A variant's client-side step size, which oracle_finetune shares (it has no server)."""
  return ",".join(kv for kv in variant_arg.split(",") if kv.startswith("client_lr="))


def _tag(args: str) -> str:
  return "".join(f"+{kv}" for kv in args.split(",") if kv)


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
    from fedface_jax import data as data_lib  # pylint: disable=g-import-not-at-top
    self.splits = data_lib.load_splits(base)

  def config(self, arg: str):
    parts = [f"variant={self.variant}", arg, f"pretrained={self.pretrain_dir}"]
    return self.module.get_config(",".join(p for p in parts if p))

  def pretrain(self, name: str, cfg) -> str:
    from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(self.workroot, name)
    if not _finished(workdir, cfg):
      pretrain.train_and_evaluate(cfg, workdir)
    return workdir

  def theta0(self) -> str:
    return self.pretrain("pretrain", self.config(""))

  def oracle_central(self) -> str:
    """From scratch on pretrain + federated identities, same steps and schedule as theta_0."""
    return self.pretrain("oracle_central", self.config("train_split=pretrain+federated"))

  def oracle_finetune(self, seed: int, arg: str = "") -> str:
    """theta_0 fine-tuned on the pooled client images, head = the same mean features.

    Same image-gradient budget as one federated run (rounds x clients x local steps x
    batch), so the oracle is a ceiling at equal compute, not at more passes over the data;
    `arg` (e.g. `client_lr=0.1`) gives it the federated runs' client learning rate.
    """
    cfg = self.config(arg)
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
    return self.pretrain(f"oracle_finetune{_tag(arg)}/seed{seed}", cfg)

  def federated(self, name: str, arg: str, seed: int) -> str:
    from fedface_jax.federated import engine  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(self.workroot, name, f"seed{seed}")
    config = self.config(f"{arg},seed={seed}")
    if not _finished(workdir, config):
      engine.run(config, workdir, splits=self.splits)
    return workdir

  def embeddings(self, workdir: str, split: str):
    """Flip-test embeddings of `split`'s images under the backbone exported in `workdir`."""
    # pylint: disable=g-import-not-at-top
    from fedface_jax import checkpoint as ckpt_lib
    from fedface_jax import evaluation
    from fedface_jax import models
    # pylint: enable=g-import-not-at-top
    cfg = self.config("")
    model = models.from_config(cfg.model)
    faces = self.splits[split]
    params = ckpt_lib.load_backbone(model, faces.image_shape, os.path.join(workdir, "backbone"))
    return evaluation.compute_embeddings(evaluation.make_embed_fn(model, params), faces.images,
                                         flip=cfg.eval.flip, mode="sum", progress=False)


def _finished(workdir: str, config) -> bool:
  """Whether `workdir` holds a finished run of `config`; a finished run of another config raises.

  Reusing a run by its name alone would silently put another experiment in a table row (two
  variants that map to one workdir name, or a config edited since).
  """
  from fedface_jax import config_utils  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(workdir, "backbone")):
    return False
  config_utils.check_resume_config(workdir, config)   # raises ConfigMismatchError
  return True


def class_table_stats(workdirs: list[str]) -> dict[str, float]:
  """The class table at the last round, mean over seeds: share of row pairs with cos above the
  spreadout margin, and the largest cos (logged by every run, with or without spreadout)."""
  tables = [_class_table(_train_rows(w)[-1]) for w in workdirs]
  return {name: sum(t[name] for t in tables) / len(tables) for name in tables[0]}


def _class_table(last_row: dict) -> dict[str, float]:
  return {"violations": float(last_row["train/spreadout_violations_after"]),
          "max_cos": float(last_row["train/spreadout_max_cos_after"])}


def training_log_stats(workdir: str) -> dict[str, float]:
  """What a run's per-round log says about why it ended where it did (one seed).

  The selection block cites these, so every diagnosis in RESULTS.md comes from a committed JSON:
  the mean client update norm, the largest share of a first batch already inside the client
  margin, the last round's client loss after the local steps, and the class table at the end.
  """
  rows = _train_rows(workdir)
  norms = [float(r["train/client_delta_norm"]) for r in rows]
  return {"mean_client_delta_norm": sum(norms) / len(norms),
          "max_inside_margin": max(float(r["train/client_inside_margin"]) for r in rows),
          "last_client_loss": float(rows[-1]["train/client_loss_last"]),
          **_class_table(rows[-1])}


def _train_rows(workdir: str) -> list[dict]:
  from fedface_jax import metrics_io  # pylint: disable=g-import-not-at-top
  rows = [r for r in metrics_io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/spreadout_violations_after" in r]
  return sorted(rows, key=lambda r: int(r["step"]))


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
  path = results_lib.write_results_json(results_dir, block, command, rows, note, extra)
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


def oracle_client_arg(study: Study, score, chosen: str, seed: int) -> str:
  """The oracle's client lr: the config's or FedFace's chosen one, whichever wins on validation.

  A ceiling must be at its best setting: if FedFace's lr were only good for FedFace, a weaker
  oracle would inflate the share of its gap that FedFace recovers.
  """
  if not chosen:
    return ""
  options = {"": [study.oracle_finetune(seed)], chosen: [study.oracle_finetune(seed, chosen)]}
  result = score(options, "validation", baseline=None)
  return max(options, key=lambda a: (result[a]["metrics"]["tar@1e-3"]["mean"],
                                     result[a]["metrics"]["auc"]["mean"]))


def budget_pilot(study: Study, score, write, block: str, chosen: str, seed: int,
                 factor: int = 2) -> dict:
  """FedFace and the fine-tune oracle at `factor` x the client participations, on validation.

  Why: at the config's budget each client joins about twice and FedFace's curve still rises at
  the last round, so its share of the oracle's gain may be a matter of budget. Both get the same
  factor (the oracle's image budget follows rounds x clients), so the share stays a fair ratio.
  """
  arg = VARIANTS[chosen]
  base_rounds = int(study.config(arg).federated.num_rounds)
  rounds = base_rounds * factor
  oracle_arg = client_args(arg)
  longer_oracle = ",".join(filter(None, (oracle_arg, f"num_rounds={rounds}")))
  runs = {"pretrained": [study.theta0()],
          "fedface": [study.federated(f"fedface/{chosen}", arg, seed)],
          "fedface_long": [study.federated(f"fedface/{chosen}+x{factor}",
                                           f"{arg},num_rounds={rounds}", seed)],
          "oracle_finetune": [study.oracle_finetune(seed, oracle_arg)],
          "oracle_finetune_long": [study.oracle_finetune(seed, longer_oracle)]}
  result = score(runs, "validation", baseline="pretrained")
  def share_pct(fedface: str, oracle: str) -> float | None:   # None: the oracle gains nothing
    gap = result[oracle]["delta"]["tar@1e-3"]["mean"]
    return 100 * result[fedface]["delta"]["tar@1e-3"]["mean"] / gap if gap > 0 else None

  share = {"config_budget": share_pct("fedface", "oracle_finetune"),
           f"x{factor}_budget": share_pct("fedface_long", "oracle_finetune_long")}
  shown = {k: "n/a (the oracle gains nothing)" if v is None else f"{v:.0f}%"
           for k, v in share.items()}
  write(f"{block}-budget", rows=table_rows(result, {
      "pretrained": ("pretrained", "theta_0"),
      "fedface": ("fedface", f"{chosen}, {base_rounds} rounds"),
      "fedface_long": ("fedface", f"{chosen}, {rounds} rounds"),
      "oracle_finetune": ("oracle_finetune", f"budget of {base_rounds} rounds{_tag(oracle_arg)}"),
      "oracle_finetune_long": ("oracle_finetune", f"budget of {rounds} rounds{_tag(oracle_arg)}")}),
        note=f"Budget pilot on the validation identities, seed {seed}: FedFace's share of the "
             f"fine-tune oracle's TAR@1e-3 gain is {shown['config_budget']} at the config's "
             f"{base_rounds} rounds and {shown[f'x{factor}_budget']} when both get "
             f"{factor}x the client participations ({rounds} rounds).",
        extra={"share_of_oracle_gain_pct": share})
  return share


def run_study(config_path: str, workroot: str, *, command: str, stage: str = "all",
              seeds=(0, 1, 2), num_resamples: int = 1000, block: str = "fedface-study-synthetic",
              update_results_md: bool = False, results_dir: str = "results", variants=None,
              variant: str = "study"):
  """The study of `launch.fedface_study`: gate, then selection, then the final table.

  Every run is trained at most once (reused when finished); stage "gate" or "select" stops after
  that block; stage "budget" runs `budget_pilot` after the selection instead of the final table.
  Writes `results_dir/<block>*.json`, the TAR-vs-round PNG and (if asked) RESULTS.md. A run whose
  workdir holds a checkpoint of another config raises `ConfigMismatchError`.
  """
  study = Study(config_path, workroot, variant=variant)
  write = functools.partial(write_block, command=command, results_dir=results_dir,
                            num_resamples=num_resamples, update_results_md=update_results_md)
  # The budget pilot re-derives the chosen variant but leaves the gate and selection blocks as
  # the full study wrote them (same numbers; their command stays the study's).
  write_study = (lambda *a, **k: None) if stage == "budget" else write
  score = functools.partial(bootstrap_runs, study, num_resamples=num_resamples)
  candidates = {v: VARIANTS[v] for v in (variants or VARIANTS)}
  seeds = [int(s) for s in seeds]
  num_val = study.splits["validation"].num_identities
  num_eval = study.splits["evaluation"].num_identities

  theta0, central = study.theta0(), study.oracle_central()
  # Gate: do more identities help at all? Both models are fixed, so this is not tuning.
  gate = score({"pretrained": [theta0], "oracle_central": [central]}, "evaluation",
               baseline="pretrained")
  write_study(f"{block}-gate", rows=table_rows(gate, {
      "pretrained": ("pretrained", "theta_0: public ids only"),
      "oracle_central": ("oracle_central", "central, pretrain + federated ids")}),
        note=f"Gate: theta_0 against a model trained centrally on every identity "
             f"(one run each), on the {num_eval} evaluation identities.")
  if stage == "gate":
    return

  # Selection: each FedFace variant, first seed, on the validation identities only.
  selection_runs = {v: study.federated(f"fedface/{v}", a, seeds[0]) for v, a in candidates.items()}
  selection = score({"pretrained": [theta0], **{v: [w] for v, w in selection_runs.items()}},
                    "validation", baseline="pretrained")
  ranked = sorted(candidates, reverse=True, key=lambda v: (
      selection[v]["metrics"]["tar@1e-3"]["mean"], selection[v]["metrics"]["auc"]["mean"]))
  best = next(v for v in ranked if "nosp" not in v)
  write_study(f"{block}-selection", rows=table_rows(selection, {
      "pretrained": ("pretrained", "theta_0"), **{v: ("fedface", v) for v in ranked}}),
        note=f"Selection on the {num_val} validation identities, seed {seeds[0]}; chosen: "
             f"`{best}` (highest TAR@1e-3, then AUC, among variants with spreadout). Each "
             "run's training-log summary: `training_logs` in the JSON.",
        extra={"training_logs": {v: training_log_stats(w) for v, w in selection_runs.items()}})
  if stage == "select":
    return
  if stage == "budget":
    budget_pilot(study, score, write, block, best, seeds[0])
    return

  # Final table: every method x seeds, on the evaluation identities.
  mode = best.split("+")[0]
  server = step_args(VARIANTS[best])   # same server and client steps for all
  tag = _tag(server)
  nosp_arg = ",".join(a for a in (f"method=fedface_nosp,class_embedding={mode}",
                                  "public_negatives=1" if "public" in best else "", server) if a)
  oracle_arg = oracle_client_arg(study, score, client_args(VARIANTS[best]), seeds[0])
  fed = lambda name, arg: [study.federated(name, arg, s) for s in seeds]
  base = lambda name: fed(name + tag, ",".join(filter(None, (BASELINES[name], server))))
  runs = {
      "pretrained": [theta0],
      "fedavg": base("fedavg"),
      "fedaws": base("fedaws"),
      "fedface": fed(f"fedface/{best}", VARIANTS[best]),
      "fedface_nosp": fed(f"fedface_nosp/{mode}{tag}", nosp_arg),
      "oracle_central": [central],
      "oracle_finetune": [study.oracle_finetune(s, oracle_arg) for s in seeds],
  }
  final = score(runs, "evaluation", baseline="pretrained")
  vs_fedavg = score({k: runs[k] for k in ("fedavg", "fedface")}, "evaluation",
                    baseline="fedavg")["fedface"]["delta"]
  # Does spreadout help? The paired difference, and what it does to the class table.
  vs_nosp = score({k: runs[k] for k in ("fedface_nosp", "fedface")}, "evaluation",
                  baseline="fedface_nosp")["fedface"]["delta"]
  table = {k: class_table_stats(runs[k]) for k in ("fedface", "fedface_nosp")}

  labels = {"pretrained": "theta_0",
            "fedavg": "random init, client-trained rows, no spreadout" + tag,
            "fedaws": "random init, client-trained rows, row_sum spreadout" + tag, "fedface": best,
            "fedface_nosp": nosp_arg.split(",", 1)[1],
            "oracle_central": "central, pretrain + federated ids (1 run)",
            "oracle_finetune": "theta_0 + mean-feature head, pooled client images"
                               + _tag(oracle_arg)}
  rows = table_rows(final, {k: (k, v) for k, v in labels.items()})
  gap = final["oracle_finetune"]["delta"]["tar@1e-3"]["mean"]
  gain = final["fedface"]["delta"]["tar@1e-3"]["mean"]
  recovered = (f"FedFace's mean gain is {100 * gain / gap:.0f}% of oracle_finetune's at 1e-3."
               if gap > 0 else "oracle_finetune does not beat theta_0 at 1e-3.")
  png = tar_curve_png(
      {k: v[0] for k, v in runs.items() if k in ("fedavg", "fedaws", "fedface", "fedface_nosp")},
      {k: final[k]["metrics"]["tar@1e-3"]["mean"]
       for k in ("pretrained", "oracle_central", "oracle_finetune")},
      os.path.join(results_dir, f"{block}_tar_vs_round.png"))
  write(block, rows=rows,
        note=f"{len(seeds)} seeds per federated row and per fine-tune oracle; {num_eval} "
             f"evaluation identities. FedFace - FedAvg (paired): TAR@1e-3 "
             f"{cell(vs_fedavg['tar@1e-3'], 1)}, TAR@1e-2 {cell(vs_fedavg['tar@1e-2'], 1)}, "
             f"AUC {cell(vs_fedavg['auc'], 4)}. FedFace - fedface_nosp (paired, the effect of "
             f"spreadout): TAR@1e-3 {cell(vs_nosp['tar@1e-3'], 1)}, TAR@1e-2 "
             f"{cell(vs_nosp['tar@1e-2'], 1)}, AUC {cell(vs_nosp['auc'], 4)}; class table at the "
             f"last round (seed mean): share of row pairs above the spreadout margin "
             f"{table['fedface']['violations']:.4f} with spreadout vs "
             f"{table['fedface_nosp']['violations']:.4f} without, max cos "
             f"{table['fedface']['max_cos']:.3f} vs {table['fedface_nosp']['max_cos']:.3f}. "
             f"{recovered} Curves: `{png}` (TAR@1e-3 on the "
             f"validation identities, seed {seeds[0]}; flat lines: evaluation-identity means).",
        extra={"fedface_minus_fedavg": {m: summary(vs_fedavg[m]) for m in METRICS},
               "fedface_minus_nosp": {m: summary(vs_nosp[m]) for m in METRICS},
               "class_table_last_round": table,
               "oracle_finetune_client_arg": oracle_arg or "the config's client lr",
               "tar_vs_round_png": png})
