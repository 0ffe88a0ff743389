"""FedFace rounds (and the FedAvg / FedAwS / ablation baselines) from theta_0.

  python -m launch.fedface --config experiments/fedface_synthetic.py:method=fedface \
      --workdir runs/synthetic/fedface
  # several devices on one host (clients over all devices, table over "classes"):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m launch.fedface \
      --config experiments/fedface_synthetic.py --config.mesh.classes=2 --workdir ...
  # several hosts: the same command on each host, plus
  #   --coordinator_address=HOST0:1234 --num_processes=N --process_id=i
"""

import time

from absl import flags

from launch import common

common.define_flags("experiments/fedface_synthetic.py")
flags.DEFINE_integer("stop_after_rounds", None,
                     "Exit after this many rounds (simulates an interruption).")
flags.DEFINE_float("test_sleep_after_round_s", 0.0,
                   "TEST ONLY: sleep this long after each round's checkpoint, so that a "
                   "test can kill the process mid-run (tests/test_federated_resume.py).")
common.define_allow_config_change_flag()
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  from fedface_jax.evaluation import api as eval_api  # pylint: disable=g-import-not-at-top
  from fedface_jax.federated import engine  # pylint: disable=g-import-not-at-top
  sleep_s = FLAGS.test_sleep_after_round_s
  after_round = (lambda _: time.sleep(sleep_s)) if sleep_s > 0 else None
  with common.exit_on_config_mismatch():
    out = engine.run(FLAGS.config, FLAGS.workdir, stop_after_rounds=FLAGS.stop_after_rounds,
                     after_round=after_round, allow_config_change=FLAGS.allow_config_change)
  rows = {f"round {r}": rep for r, rep in out["history"]}
  if rows:
    print(eval_api.format_results_table(rows))


if __name__ == "__main__":
  common.run(main)
