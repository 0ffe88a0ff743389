"""Centralised CosFace pretraining (theta_0 for FedFace).

  python -m launch.pretrain --config experiments/pretrain_synthetic.py \
      --workdir runs/pretrain_synthetic
  python -m launch.pretrain --config experiments/pretrain_celeba.py \
      --workdir runs/pretrain_celeba --config.num_steps=3000
"""

import json

from absl import flags

from launch import common

common.define_flags("experiments/pretrain_synthetic.py")
flags.DEFINE_integer("stop_after_steps", None,
                     "Exit after this many steps (checkpointed; simulates an interruption).")
common.define_allow_config_change_flag()
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  from fedface_jax.evaluation import api as eval_api  # pylint: disable=g-import-not-at-top
  from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
  with common.exit_on_config_mismatch():
    report = pretrain.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                                         stop_after_steps=FLAGS.stop_after_steps,
                                         allow_config_change=FLAGS.allow_config_change)
  if report is None:
    return
  print(eval_api.format_results_table({"pretrained": report}))
  print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)},
                   default=str))


if __name__ == "__main__":
  common.run(main)
