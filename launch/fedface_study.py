"""The FedFace study of RESULTS.md: headroom, variants chosen on validation, seeds and 95% CIs.

  python -m launch.fedface_study --config experiments/fedface_study_synthetic.py \
      --workroot runs/study --stage=all
  # --stage=gate: theta_0 and the central oracle only (the headroom check)
  # --stage=select: + every FedFace variant on seed 0, scored on the validation identities
  # --stage=all: + the final table (every method x --seeds) on the evaluation identities
  # --stage=budget: + the chosen variant and the fine-tune oracle at 2x the participations

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

from absl import flags

flags.DEFINE_string("config", "experiments/fedface_study_synthetic.py",
                    "Study config file; its get_config(arg) takes the run arguments.")
flags.DEFINE_string("workroot", "runs/study", "Root of every run of the study.")
flags.DEFINE_enum("stage", "all", ["gate", "select", "all", "budget"],
                  "How far to go (budget: selection, then the 2x-budget pilot).")
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
  # pylint: disable=g-import-not-at-top
  from launch import common
  from reporting import fedface_study
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  with common.exit_on_config_mismatch(hint="use a new --workroot, or delete that run"):
    fedface_study.run_study(
        FLAGS.config, FLAGS.workroot, command=common.invocation("launch.fedface_study"),
        stage=FLAGS.stage, seeds=FLAGS.seeds, num_resamples=FLAGS.num_resamples,
        block=FLAGS.block, update_results_md=FLAGS.update_results_md,
        results_dir=FLAGS.results_dir, variants=FLAGS.variants, variant=FLAGS.variant)


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
