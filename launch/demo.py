"""The main job on the embedded synthetic faces: pretrain -> FedFace -> evaluate with CIs -> attack.

  make demo                                   # = python -m launch.demo --workdir=runs/demo
  python -m launch.demo --workdir=runs/demo --variant=tiny   # seconds, for smoke tests
  python -m launch.demo --workdir=runs/demo --noattack       # skip the inversion attack

The setting is the FedFace study's (`experiments/fedface_study_synthetic.py`): theta_0 is CosFace
on 100 public identities, 1,000 phones each hold one other identity. FedFace runs the variant that
the committed study chose on its *validation* identities (`results/<block>-selection.json`; the
default variant if that file is absent), for one seed. The closing table compares theta_0 with
FedFace on 400 evaluation identities that neither pretraining nor the clients saw, with 95% CIs
from a bootstrap over those identities; the curious-client attack then reconstructs some clients'
faces from two consecutive global models. `launch.fedface_study` is the full study (every method,
three seeds, oracles). Every stage resumes from its checkpoints.
"""

import json
import os

from absl import flags
from absl import logging

flags.DEFINE_string("workdir", "runs/demo", "Root of the demo's runs.")
flags.DEFINE_enum("variant", "study", ["study", "tiny"], "Config size (tiny: smoke tests).")
flags.DEFINE_bool("attack", True, "End with a small curious-client inversion attack.")
flags.DEFINE_bool("update_results_md", False, "Also write the demo block of RESULTS.md.")
flags.DEFINE_string("selection", "results/fedface-study-synthetic-selection.json",
                    "The study's selection on validation identities (which FedFace variant).")
FLAGS = flags.FLAGS

CONFIG = "experiments/fedface_study_synthetic.py"


def chosen_variant(path: str, default: str) -> str:
  """The FedFace variant the study chose on validation identities (first non-theta_0 row)."""
  if not os.path.exists(path):
    logging.warning("%s not found: FedFace runs its default variant %s", path, default)
    return default
  with open(path) as f:
    rows = json.load(f)["rows"]
  return next(r["variant"] for r in rows if r["method"] == "fedface" and "nosp" not in r["variant"])


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from experiments import attack_synthetic
  from launch import common
  from reporting import attack_tables
  from reporting import fedface_study as study_lib
  from reporting import results_md
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  study = study_lib.Study(CONFIG, FLAGS.workdir, variant=FLAGS.variant)
  variant = chosen_variant(FLAGS.selection, "frozen+row_sum")
  with common.exit_on_config_mismatch(hint="use a new --workdir, or delete that run to redo it"):
    theta0 = study.theta0()
    fedface = study.federated(f"fedface/{variant}", study_lib.VARIANTS[variant], seed=0)
  table = study_lib.bootstrap_runs(study, {"pretrained": [theta0], "fedface": [fedface]},
                                   "evaluation", baseline="pretrained")
  rows = study_lib.table_rows(table, {"pretrained": ("pretrained", "theta_0"),
                                      "fedface": ("fedface", variant)})
  command = common.invocation("launch.demo")
  section = results_md.section(
      f"Demo: synthetic faces ({FLAGS.variant})", command,
      study_lib.markdown_table(rows) + "\n\nOne seed; evaluation identities disjoint from "
      "pretraining and from the clients; mean [95% CI, bootstrap over identities]; "
      f"Δ = paired difference to theta_0. FedFace variant `{variant}` was chosen by the study "
      "on its validation identities.")
  attack_table = ""
  if FLAGS.attack:
    # The closing attack: attack_synthetic.py's demo (tiny) variant on theta_0's backbone.
    attack_variant = "tiny" if FLAGS.variant == "tiny" else "demo"
    config = attack_synthetic.get_config(f"variant={attack_variant}")
    config.pretrained_backbone = os.path.join(theta0, "backbone")
    out = attack_tables.run_attack(config, os.path.join(FLAGS.workdir, "attack"))
    attack_table = "### Curious-client attack (demo)\n\n" + out["table"] + "\n"
    with open(os.path.join(FLAGS.workdir, "attack", "summary.json"), "w") as f:
      json.dump({k: v for k, v in out.items() if k != "table"}, f, indent=1, default=str)
  print("\n" + section + "\n" + attack_table)
  logging.info("Outputs under %s: pretrain/, fedface/ (tb/, metrics.jsonl, tar_vs_round.png, "
               "eval/*.png), attack/", os.path.abspath(FLAGS.workdir))
  if FLAGS.update_results_md:
    results_md.update_results_md("RESULTS.md", f"demo-{FLAGS.variant}",
                                 section + "\n" + attack_table)


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
