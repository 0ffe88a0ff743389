"""Full factorial benchmark sweep for one GPU (or several), see BENCHMARKS.md.

  python -m launch.benchmark --config experiments/benchmark_gpu.py --workdir runs/benchmark_gpu

clients/round 100/1000/10000 x local steps 1/5 x images 8/32 x small/large CNN, on 1 device and
on all local devices (`devices=8` rows need 8 GPUs; on one GPU drop them with
`:devices=1`; both: `:devices=1+8`). Device memory comes from `device.memory_stats()`.

`:variant=lease` is the cut for one short lease of one GPU (`lease_config`): the real FedFace
rows first, then the toy CNN; `scripts/gpu_lease.sh` runs it with the class table.
"""

import itertools

import ml_collections as mlc

from experiments import benchmark_cpu
from fedface_jax import config_utils


def lease_config(arg) -> mlc.ConfigDict:
  """The GPU sweep cut to one short lease of one GPU (~6 min of running, one process).

  The rows the issue's GPU targets need, most important first, so a run stopped at its limit
  keeps them: the real FedFace workload (sphere20 at 112x112, then resnet_small at 64x64; 20
  photos, 5 local steps, positive-only loss) with the compiled vmapped round at several chunk
  sizes, the host loop and the centralised ceiling at 100 clients, and the compiled round at
  10,000 clients per round (sphere20 timed on its first `sphere20_timed_clients`: a scan over
  chunks runs at the same rate per client at any count, and the row says how many were timed);
  then the toy CNN at 100 and 10,000 clients. The class table runs in its own process
  (`--parts=class_table`), 1M x 512 on the one device. `scale` < 1 shrinks every size for a
  dry run on a CPU (written to the workdir only).
  """
  scale = float(arg.scale)
  tiny = scale < 1.0

  def n(x, least=1):
    return max(least, int(round(x * scale)))
  config = benchmark_cpu.base_config()
  config.peak_matmul_size = 8192 if not tiny else 256
  config.timed_rounds = 5
  config.min_timed_s = 2.0 if not tiny else 0.0
  config.max_timed_rounds = 20
  config.sequential_max_clients = 100
  config.centralised_batches = (32, 128, 512, 0)
  config.centralised_streams = (1,)
  config.worker_timeout_s = int(arg.worker_timeout_s)
  small, large = n(100, 2), n(10000, 4)
  # The real FedFace rows at the small count; the 10,000-client rows are those rows re-timed.
  fedface = {r["name"]: r for r in benchmark_cpu.fedface_runs(mlc.ConfigDict(dict(
      fedface_clients=str(small), fedface_photos=n(20, 2),
      fedface_steps=5 if not tiny else 2, fedface_scale=scale, fedface_timed_clients=0,
      sphere20_timed_clients=0, fedface_centralised_max_images=n(2000, 8),
      sphere20_centralised_max_images=n(2000, 8), sphere20_image_size="112x112")))}
  rows = {}
  for model in ("sphere20", "resnet_small"):
    first = fedface[f"fedface_{model}_c{small}"]
    rows[f"fedface_{model}_c{small}"] = dict(
        first, timed_clients=0, strategies=("engine", "engine_host", "centralised"),
        # chunk 1: dense convolutions (vmap over one client); wider chunks turn every
        # convolution into a grouped one (BENCHMARKS.md, the GPU reading).
        chunks=tuple(sorted({1, n(10), small})))
    timed = arg.sphere20_timed_clients if model == "sphere20" else arg.resnet_timed_clients
    rows[f"fedface_{model}_c{large}"] = dict(
        first, name=f"fedface_{model}_c{large}", clients=large, timed_clients=n(timed, 4),
        strategies=("engine",), chunks=(n(100, 2) if model == "sphere20" else n(500, 2),))
  # The same sphere20 row with the model's im2col option (model.conv_impl=im2col): the compiled
  # round's convolutions as batched matmuls instead of grouped convolutions (the first lease's
  # MFU miss, BENCHMARKS.md). Chunk 100 holds ~9 copies of the activations (the patches).
  # With it, the host loop with a client's 5 local steps in one call (host_loop_fused_steps):
  # the first lease's fastest sphere20 strategy was the host loop, whose launches this cuts 5x.
  first = fedface[f"fedface_sphere20_c{small}"]
  rows[f"fedface_sphere20_c{small}_im2col"] = dict(
      first, timed_clients=0, strategies=("engine_im2col", "engine_host_fused"),
      chunks=tuple(sorted({n(10), small})))
  toy = dict(steps=1, images=8, model="small", devices=1)
  rows[f"c{small}_s1_i8_small"] = dict(
      toy, name=f"c{small}_s1_i8_small", clients=small, chunks=(small,),
      strategies=("sequential_steps", "engine_host", "engine", "centralised"))
  rows[f"c{large}_s1_i8_small"] = dict(toy, name=f"c{large}_s1_i8_small", clients=large,
                                       strategies=("engine",), chunks=(n(1000, 2), large))
  # Most important first: a run stopped at its limit keeps the real FedFace rows.
  order = (f"fedface_sphere20_c{small}_im2col", f"fedface_sphere20_c{small}",
           f"fedface_resnet_small_c{small}",
           f"fedface_sphere20_c{large}", f"c{small}_s1_i8_small",
           f"fedface_resnet_small_c{large}", f"c{large}_s1_i8_small")
  # `skip` ("+"-separated row names) leaves out rows an earlier lease already measured; the
  # second lease appends to the first one's results (`scripts/gpu_lease.sh`, SEED_WORKDIR).
  skip = {x for x in str(arg.skip).split("+") if x}
  unknown = skip - set(order)
  if unknown:
    raise ValueError(f"skip names unknown rows {sorted(unknown)}; valid: {list(order)}")
  config.runs = tuple(rows[k] for k in order if k not in skip)
  config.class_table.devices = 1
  config.class_table.rows = n(1_000_000, 4096)
  config.class_table.dim = 512 if not tiny else 32
  config.peers = ()
  config.results_role = "gpu"
  if tiny:
    config.results_json = config.gpu_results_json = config.report_path = ""
  else:
    config.results_json = "benchmarks/gpu.json"
  return config


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, devices="1+8", variant="full", scale=1.0,
                                      sphere20_timed_clients=500, resnet_timed_clients=2000,
                                      worker_timeout_s=6 * 3600, skip="")
  if arg.variant == "lease":
    return lease_config(arg)
  if arg.variant != "full":
    raise ValueError(f"unknown variant {arg.variant!r}; valid: full, lease")
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
