"""Throughput / FLOPs / MFU / memory benchmark of the federated round, against peers.

  python -m launch.benchmark --config experiments/benchmark_cpu.py --workdir runs/benchmark
  python -m launch.benchmark --config experiments/benchmark_cpu.py:variant=smoke  # ~2 min
  python -m launch.benchmark --config experiments/benchmark_gpu.py --workdir runs/benchmark_gpu
  make benchmark                  # peer venvs + everything, writes BENCHMARKS.md

The parent process runs no JAX itself: it spawns one worker per device count (fake CPU devices
need XLA_FLAGS before JAX starts), a class-table worker, and the peers in their own venvs, then
writes BENCHMARKS.md (reporting/benchmark_suite.py, benchmark_report.py; the workers' rows:
fedface_jax/benchmark/worker.py).
"""

from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "experiments/benchmark_cpu.py",
                                "ml_collections config file (path[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", "runs/benchmark", "Where results.jsonl, logs and HLO go.")
flags.DEFINE_list("parts", ["sweep", "class_table", "peers"],
                  "Which parts to run: sweep, class_table, peers.")
flags.DEFINE_integer("worker_devices", 0, "Internal: run the sweep rows of this device count.")
flags.DEFINE_bool("worker_class_table", False, "Internal: run the class-table step.")
flags.DEFINE_string("worker_out", "", "Internal: results.jsonl a worker appends to.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import worker
  from reporting import benchmark_suite
  # pylint: enable=g-import-not-at-top
  if FLAGS.worker_devices:
    worker.run_worker(FLAGS.config, FLAGS.worker_devices, FLAGS.worker_out)
    return
  if FLAGS.worker_class_table:
    import os  # pylint: disable=g-import-not-at-top
    worker.run_class_table(FLAGS.config, FLAGS.worker_out,
                           os.path.join(os.path.dirname(FLAGS.worker_out), "class_table_hlo.txt"))
    return
  from launch import common  # pylint: disable=g-import-not-at-top
  worker_args = benchmark_suite.config_args(config_flags.get_config_filename(FLAGS["config"]),
                                            config_flags.get_override_values(FLAGS["config"]))
  path = benchmark_suite.run_suite(FLAGS.config, FLAGS.workdir, worker_args,
                                   common.invocation("launch.benchmark"), tuple(FLAGS.parts))
  print(f"wrote {path}")


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
