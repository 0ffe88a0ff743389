"""The main job on the embedded synthetic faces: pretrain -> FedFace -> evaluate -> attack.

  make demo                                   # = python -m launch.demo --workdir=runs/demo
  python -m launch.demo --workdir=runs/demo --variant=tiny   # seconds, for smoke tests
  python -m launch.demo --workdir=runs/demo --noattack       # skip the inversion attack

Every stage resumes from its checkpoints, so an interrupted demo re-run only finishes what is
missing. The closing table compares the pretrained model (theta_0) with FedFace on held-out
synthetic identities that neither pretraining nor the federated clients ever saw, then the curious-
client attack reconstructs some FedFace clients' faces from two consecutive global models.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string("workdir", "runs/demo", "Root of the demo's runs.")
flags.DEFINE_enum("variant", "demo", ["demo", "tiny"], "Config size.")
flags.DEFINE_bool("attack", True, "End with a small curious-client inversion attack.")
flags.DEFINE_bool("update_results_md", False, "Also write the demo block of RESULTS.md.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from experiments import fedface_synthetic
  from experiments import pretrain_synthetic
  from fedface_jax import results
  from launch import common
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  pre_cfg = pretrain_synthetic.get_config(f"variant={FLAGS.variant}")
  fed_cfg = lambda m: fedface_synthetic.get_config(f"variant={FLAGS.variant},method={m}")
  with common.exit_on_config_mismatch(hint="use a new --workdir, or delete that run to redo it"):
    result = results.run_comparison(pre_cfg, fed_cfg, FLAGS.workdir, methods=("fedface",),
                                    with_oracle=False)
  results.save_json(os.path.join(FLAGS.workdir, "results.json"), result)
  command = common.invocation("launch.demo")
  section = results.markdown_section(
      f"Demo: synthetic faces ({FLAGS.variant})", command, result,
      notes="Held-out synthetic identities (disjoint from pretraining and from the clients).")
  attack_table = ""
  if FLAGS.attack:
    from fedface_jax.attack import pipeline  # pylint: disable=g-import-not-at-top
    out = pipeline.run_attack_demo(os.path.join(FLAGS.workdir, "attack"),
                                   pretrained_dir=os.path.join(FLAGS.workdir, "pretrain"),
                                   variant=FLAGS.variant)
    attack_table = "### Curious-client attack (demo)\n\n" + out["table"] + "\n"
    with open(os.path.join(FLAGS.workdir, "attack", "summary.json"), "w") as f:
      json.dump({k: v for k, v in out.items() if k != "table"}, f, indent=1, default=str)
  print("\n" + section + "\n" + attack_table)
  logging.info("Outputs under %s: pretrain/, fedface/ (tb/, metrics.jsonl, tar_vs_round.png, "
               "eval/*.png), attack/", os.path.abspath(FLAGS.workdir))
  if FLAGS.update_results_md:
    results.update_results_md("RESULTS.md", f"demo-{FLAGS.variant}", section + "\n" + attack_table)


if __name__ == "__main__":
  app.run(main)
