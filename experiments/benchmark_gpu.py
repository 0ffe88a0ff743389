"""Full factorial benchmark sweep for one GPU (or several), see BENCHMARKS.md.

  python -m launch.benchmark --config experiments/benchmark_gpu.py --workdir runs/benchmark_gpu

clients/round 100/1000/10000 x local steps 1/5 x images 8/32 x small/large CNN, on 1 device and
on all local devices (`devices=8` rows need 8 GPUs; on one GPU drop them with
`:devices=1`; both: `:devices=1+8`). Device memory comes from `device.memory_stats()`.
"""

import itertools

import ml_collections as mlc

from experiments import benchmark_cpu
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, devices="1+8")
  config = benchmark_cpu.base_config()
  config.peak_matmul_size = 8192
  config.timed_rounds = 5
  config.sequential_max_clients = 200
  config.centralised_batches = (8, 32, 128, 512, 2048, 0)
  config.centralised_streams = (1,)
  config.centralised_max_images = 8192
  device_counts = tuple(int(d) for d in arg.devices.split("+"))
  runs = []
  for clients, steps, images, model, devices in itertools.product(
      (100, 1000, 10000), (1, 5), (8, 32), ("small", "large"), device_counts):
    per_dev = -(-clients // devices)
    strategies = ("engine",)
    if clients == 100 and devices == 1:
      strategies = ("sequential", "engine_host", "engine", "engine_patchconv", "centralised")
    runs.append(dict(name=f"c{clients}_s{steps}_i{images}_{model}", clients=clients,
                     steps=steps, images=images, model=model, devices=devices,
                     strategies=strategies,
                     chunks=tuple(sorted({min(c, per_dev) for c in (50, 250, 1000)}))))
  # The real FedFace workload (issue 14): sphere20 at 112x112 and resnet_small at 64x64, 20
  # photos, 5 steps, up to 10,000 clients per round, every client timed; the compiled round at
  # several chunk sizes, the host loop and the ceiling at the smallest client count.
  fedface = benchmark_cpu.fedface_runs(mlc.ConfigDict(dict(
      fedface_clients="100+1000+10000", fedface_photos=20, fedface_steps=5, fedface_scale=1.0,
      fedface_timed_clients=0, sphere20_timed_clients=0, fedface_centralised_max_images=8192,
      sphere20_centralised_max_images=4096, sphere20_image_size="112x112")))
  runs += [dict(r, timed_clients=0,
                chunks=tuple(sorted({min(c, r["clients"]) for c in (10, 100, 500)})),
                strategies=tuple(s for s in r["strategies"] if s != "engine_host"
                                 or r["clients"] <= 100))
           for r in fedface]
  config.runs = tuple(r for r in runs if r["strategies"])
  config.class_table.devices = max(device_counts)
  config.results_json = "benchmarks/gpu.json"
  config.results_role = "gpu"
  config.peers = (dict(run="c100_s1_i8_small", venv="fedjax"),)
  return config
