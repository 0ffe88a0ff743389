"""Benchmark sweep sized for the 2-core shared CPU (< ~15 min with peers), see BENCHMARKS.md.

  python -m launch.benchmark --config experiments/benchmark_cpu.py --workdir runs/benchmark
  python -m launch.benchmark --config experiments/benchmark_cpu.py:variant=smoke \
      --workdir runs/benchmark_smoke --parts=sweep

The full factorial (clients 100/1000/10000 x steps 1/5 x images 8/32 x 2 models x 1/8 devices
= 48 rows, several strategies each) takes hours on 2 cores, so the CPU sweep is one-factor-at-a-
time around a base row (100 clients, 1 step, 8 images, small CNN, 1 device), plus the scale rows
(1000 and 10000 clients) and the 8-device rows. `benchmark_gpu.py` runs the full factorial.

Row fields: name, clients, steps, images (per client = local batch), model (small|large),
devices, strategies, chunks (clients per vmapped chunk, per device; compiled engine only), reps
(timed rounds). Strategies:
  engine_host     the engine's host-loop round: what `federated.execution="auto"` runs on CPU
  engine          the engine's compiled round (scan over chunks, vmap within; im2col convs)
  engine_laxconv  the same with native convolutions (grouped under vmap)
  sequential_steps  a bare Python loop of jitted SGD steps (FedJAX's jit backend, no engine)
  sequential      a Python loop of jitted whole client updates (lax.scan over steps)
  centralised     the same images through the same model in one large batch (the ceiling)
"""

import ml_collections as mlc

from fedface_jax import config_utils


def base_config():
  config = mlc.ConfigDict()
  config.image_size = (32, 32)
  config.embedding_dim = 128
  config.lr = 0.1
  config.seed = 0
  config.peak_matmul_size = 2048
  config.timed_rounds = 2
  config.default_chunk = 50
  # The sequential loop is timed on this many clients (rate = clients / time); running 10k
  # clients one by one would take longer than the whole sweep and measures the same rate.
  config.sequential_max_clients = 50
  # The centralised ceiling: plain SGD on the round's images (at most centralised_max_images)
  # at each batch size (0 = all of them) and stream count (0 = the host loop's default, one per
  # core); the best images/s at the compared row's stream count is the ceiling.
  config.centralised_batches = (8, 32, 128, 512, 0)
  config.centralised_streams = (1, 0)
  config.centralised_max_images = 1024
  config.worker_timeout_s = 3600
  config.append = False
  config.report_path = "BENCHMARKS.md"
  config.class_table = mlc.ConfigDict(dict(
      enabled=True, rows=1_000_000, dim=512, devices=8, batch=256, queries=100,
      block_size=4096, reps=2))
  return config


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, variant="default")
  config = base_config()
  seq_eng = ("sequential", "sequential_steps", "engine_host", "engine")
  if arg.variant == "smoke":
    config.runs = (
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 50)),
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=8,
             strategies=("engine",), chunks=(13,)),
    )
    config.class_table.rows = 100_000
    config.peers = (dict(run="base", venv="fedjax", rounds=2),)
  elif arg.variant == "default":
    config.runs = (
        # 1 device: strategies and chunk sizes on the base row.
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=1,
             strategies=("sequential", "sequential_steps", "engine_host", "engine",
                         "engine_laxconv", "centralised"),
             chunks=(1, 2, 10, 25, 50, 100)),
        dict(name="steps5", clients=100, steps=5, images=8, model="small", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 50)),
        dict(name="images32", clients=100, steps=1, images=32, model="small", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 25)),
        dict(name="large", clients=100, steps=1, images=8, model="large", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 50)),
        dict(name="c1000", clients=1000, steps=1, images=8, model="small", devices=1,
             strategies=("engine_host", "engine"), chunks=(1, 50), reps=1),
        dict(name="c10000", clients=10000, steps=1, images=8, model="small", devices=1,
             strategies=("engine_host", "engine"), chunks=(100,), reps=1),
        # 8 fake devices (one process, 2 cores): same rows, client axis sharded.
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=8,
             strategies=("engine",), chunks=(1, 4, 13)),
        dict(name="c1000", clients=1000, steps=1, images=8, model="small", devices=8,
             strategies=("engine",), chunks=(25,), reps=1),
    )
    config.peers = (
        dict(run="base", venv="fedjax", rounds=2),
        dict(run="steps5", venv="fedjax", rounds=2),
        dict(run="images32", venv="fedjax", rounds=2),
        dict(run="large", venv="fedjax", rounds=2),
        dict(run="base", venv="flower", rounds=2, timeout_s=900),
    )
  elif arg.variant == "seqsteps":
    # The FedJAX-style loop (Python loop over jitted steps) and the engine with chunks of 1-2
    # clients on the four 100-client rows: a supplement to a default run that predates both.
    config.runs = tuple(
        dict(r, strategies=("sequential_steps", "engine_host", "engine"), chunks=(1, 2))
        for r in get_config("variant=default").runs
        if r["clients"] == 100 and r["devices"] == 1)
    config.peers = ()
    config.class_table.enabled = False
  else:
    raise ValueError(f"unknown variant {arg.variant!r}; valid: default, smoke, seqsteps")
  return config
