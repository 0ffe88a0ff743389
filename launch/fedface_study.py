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
`results/<block>.json` (gate, selection, final), `results/<block>_tar_vs_round.png`, and the
`<block>` sections of RESULTS.md with --update_results_md.
"""

from __future__ import annotations

import functools
import os

from absl import flags

from launch import study_lib

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
flags.DEFINE_string("variant", "study", "Config variant passed to get_config (tiny: tests).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from launch import common  # pylint: disable=g-import-not-at-top
  common.quiet_library_logs()
  study = study_lib.Study(FLAGS.config, FLAGS.workroot, variant=FLAGS.variant)
  command = common.invocation("launch.fedface_study")
  write = functools.partial(study_lib.write_block, command=command,
                            results_dir=FLAGS.results_dir, num_resamples=FLAGS.num_resamples,
                            update_results_md=FLAGS.update_results_md)
  score = functools.partial(study_lib.bootstrap_runs, study, num_resamples=FLAGS.num_resamples)
  variants = {v: study_lib.VARIANTS[v] for v in (FLAGS.variants or study_lib.VARIANTS)}
  seeds = [int(s) for s in FLAGS.seeds]
  num_val = study.splits["validation"].num_identities
  num_eval = study.splits["evaluation"].num_identities

  with common.exit_on_config_mismatch(hint="use a new --workroot, or delete that run"):
    theta0, central = study.theta0(), study.oracle_central()
    # Gate: do more identities help at all? Both models are fixed, so this is not tuning.
    gate = score({"pretrained": [theta0], "oracle_central": [central]}, "evaluation",
                 baseline="pretrained")
    write(f"{FLAGS.block}-gate", rows=study_lib.table_rows(gate, {
        "pretrained": ("pretrained", "theta_0: public ids only"),
        "oracle_central": ("oracle_central", "central, pretrain + federated ids")}),
          note=f"Gate: theta_0 against a model trained centrally on every identity "
               f"(one run each), on the {num_eval} evaluation identities.")
    if FLAGS.stage == "gate":
      return

    # Selection: each FedFace variant, first seed, on the validation identities only.
    selection = score({"pretrained": [theta0],
                       **{v: [study.federated(f"fedface/{v}", a, seeds[0])]
                          for v, a in variants.items()}},
                      "validation", baseline="pretrained")
    ranked = sorted(variants, reverse=True, key=lambda v: (
        selection[v]["metrics"]["tar@1e-3"]["mean"], selection[v]["metrics"]["auc"]["mean"]))
    best = next(v for v in ranked if "nosp" not in v)
    write(f"{FLAGS.block}-selection", rows=study_lib.table_rows(selection, {
        "pretrained": ("pretrained", "theta_0"), **{v: ("fedface", v) for v in ranked}}),
          note=f"Selection on the {num_val} validation identities, seed {seeds[0]}; chosen: "
               f"`{best}` (highest TAR@1e-3, then AUC, among variants with spreadout).")
    if FLAGS.stage == "select":
      return

    # Final table: every method x seeds, on the evaluation identities.
    mode = best.split("+")[0]
    server = study_lib.server_args(study_lib.VARIANTS[best])   # same server step for all
    tag = "".join(f"+{kv}" for kv in server.split(",") if kv)
    nosp_arg = ",".join(a for a in (f"method=fedface_nosp,class_embedding={mode}",
                                    "public_negatives=1" if "public" in best else "", server) if a)
    fed = lambda name, arg: [study.federated(name, arg, s) for s in seeds]
    base = lambda name: fed(name + tag, ",".join(filter(None, (study_lib.BASELINES[name],
                                                                server))))
    runs = {
        "pretrained": [theta0],
        "fedavg": base("fedavg"),
        "fedaws": base("fedaws"),
        "fedface": fed(f"fedface/{best}", study_lib.VARIANTS[best]),
        "fedface_nosp": fed(f"fedface_nosp/{mode}{tag}", nosp_arg),
        "oracle_central": [central],
        "oracle_finetune": [study.oracle_finetune(s) for s in seeds],
    }
    final = score(runs, "evaluation", baseline="pretrained")
    vs_fedavg = score({k: runs[k] for k in ("fedavg", "fedface")}, "evaluation",
                      baseline="fedavg")["fedface"]["delta"]

  labels = {"pretrained": "theta_0",
            "fedavg": "random init, client-trained rows, no spreadout" + tag,
            "fedaws": "random init, client-trained rows, row_sum spreadout" + tag, "fedface": best,
            "fedface_nosp": nosp_arg.split(",", 1)[1],
            "oracle_central": "central, pretrain + federated ids (1 run)",
            "oracle_finetune": "theta_0 + mean-feature head, pooled client images"}
  rows = study_lib.table_rows(final, {k: (k, v) for k, v in labels.items()})
  gap = final["oracle_finetune"]["delta"]["tar@1e-3"]["mean"]
  gain = final["fedface"]["delta"]["tar@1e-3"]["mean"]
  recovered = (f"FedFace's mean gain is {100 * gain / gap:.0f}% of oracle_finetune's at 1e-3."
               if gap > 0 else "oracle_finetune does not beat theta_0 at 1e-3.")
  png = study_lib.tar_curve_png(
      {k: v[0] for k, v in runs.items() if k in ("fedavg", "fedaws", "fedface", "fedface_nosp")},
      {k: final[k]["metrics"]["tar@1e-3"]["mean"]
       for k in ("pretrained", "oracle_central", "oracle_finetune")},
      os.path.join(FLAGS.results_dir, f"{FLAGS.block}_tar_vs_round.png"))
  cell = study_lib.cell
  write(FLAGS.block, rows=rows,
        note=f"{len(seeds)} seeds per federated row and per fine-tune oracle; {num_eval} "
             f"evaluation identities. FedFace - FedAvg (paired): TAR@1e-3 "
             f"{cell(vs_fedavg['tar@1e-3'], 1)}, TAR@1e-2 {cell(vs_fedavg['tar@1e-2'], 1)}, "
             f"AUC {cell(vs_fedavg['auc'], 4)}. {recovered} Curves: `{png}` (TAR@1e-3 on the "
             f"validation identities, seed {seeds[0]}; flat lines: evaluation-identity means).",
        extra={"fedface_minus_fedavg": {m: study_lib.summary(vs_fedavg[m])
                                        for m in study_lib.METRICS},
               "tar_vs_round_png": png})


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
