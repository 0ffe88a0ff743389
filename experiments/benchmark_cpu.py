"""Benchmark sweep for a 2-core CPU (~2 h with peers and the real FedFace rows), see BENCHMARKS.md.

Publish only from a quiet machine: the default run writes benchmarks/cpu.json (commit it with
BENCHMARKS.md); smoke and seqsteps write only their workdir.

  python -m launch.benchmark --config experiments/benchmark_cpu.py --workdir runs/benchmark
  python -m launch.benchmark --config experiments/benchmark_cpu.py:variant=smoke \
      --workdir runs/benchmark_smoke --parts=sweep

The published run (`scripts/run_benchmarks.sh`) is three invocations into one workdir, each of
which rewrites benchmarks/cpu.json and BENCHMARKS.md when it ends:

  python -m launch.benchmark --config experiments/benchmark_cpu.py:rows=toy \
      --workdir runs/benchmark
  python -m launch.benchmark --config experiments/benchmark_cpu.py:variant=fairness \
      --workdir runs/benchmark
  python -m launch.benchmark --config experiments/benchmark_cpu.py:rows=fedface \
      --workdir runs/benchmark --parts=sweep --config.append=True

The full factorial (clients 100/1000/10000 x steps 1/5 x images 8/32 x 2 models x 1/8 devices
= 48 rows, several strategies each) takes hours on 2 cores, so the CPU sweep is one-factor-at-a-
time around a base row (100 clients, 1 step, 8 images, small CNN, 1 device), plus the scale rows
(1000 and 10000 clients) and the 8-device rows. `benchmark_gpu.py` runs the full factorial.

The real FedFace workload (`fedface_runs`: resnet_small 64x64 and sphere20 112x96, 20 photos
per client, 5 local steps, positive-only loss, 100 and 1,000 clients) is in the default sweep;
its sizes are config args (`fedface_clients=4,fedface_photos=2,fedface_steps=1,
fedface_scale=0.25` makes it tiny) and `variant=fedface` runs only those rows.

Row fields: name, clients, steps, images (per client), model (small|large, or an engine model:
resnet_small|sphere20), devices, strategies, chunks (clients per vmapped chunk, per device;
compiled engine only), reps (minimum timed rounds, raises timed_rounds), and optionally
image_size, batch (default: images), embedding_dim, timed_clients (time the round on the first
N clients; the row says so), centralised_max_images. Strategies:
  engine_host     the engine's host-loop round: what `federated.execution="auto"` runs on CPU
  engine_host_1stream  the same with 1 stream (the 2-stream share of its lead)
  engine_host_fused  the host loop with all local steps fused into one jitted call per client
                  (`federated.host_loop_fused_steps` = steps; the multi-step A/B)
  engine          the engine's compiled round (scan over chunks, vmap within) with the model's
                  own convolutions (grouped under vmap): what launch.fedface compiles
  engine_im2col   the same with the models' im2col option (model.conv_impl=im2col,
                  models/im2col.py: shifted slices @ kernel, batched matmuls under vmap)
  centralised_im2col  the centralised ceiling with the models' im2col option
  engine_patchconv  the same with the benchmark-only PatchConv (conv_general_dilated_patches;
                  bench CNN only, not an engine model: labelled as such)
  sequential_steps  a bare Python loop of jitted SGD steps (FedJAX's jit backend, no engine)
  sequential      a Python loop of jitted whole client updates (lax.scan over steps)
  centralised     the same images and model as plain SGD at each batch size (the ceiling)
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
  # Timed repetitions per row: at least timed_rounds, more while they total < min_timed_s (fast
  # rows), at most max_timed_rounds; tables show the median and interquartile range.
  config.timed_rounds = 5
  config.min_timed_s = 5.0
  config.max_timed_rounds = 30
  config.default_chunk = 50
  # The sequential loop is timed on this many clients (rate = clients / time); running 10k
  # clients one by one would take longer than the whole sweep and measures the same rate.
  config.sequential_max_clients = 50
  # The centralised ceiling: plain SGD on the round's images (at most centralised_max_images)
  # at each batch size (0 = all of them) and stream count (0 = the host loop's default, one per
  # core); the best images/s at the compared row's stream count is the ceiling.
  config.centralised_batches = (8, 32, 128, 512, 0)
  config.centralised_streams = (1, 0)
  # Consecutive batches per jitted call (the baseline's counterpart of the host loop's
  # `federated.host_loop_fused_steps`); each value is its own set of rows.
  config.centralised_fused = (1,)
  config.centralised_max_images = 1024
  # One worker process runs every 1-device row (toy CNN and real FedFace rows: ~1.5-2 h on 2
  # quiet cores), so its limit is generous; a worker past it becomes an error row.
  config.worker_timeout_s = 5 * 3600
  # glibc malloc in every process of the run, ours and the peers' alike: "keep" is what the
  # launchers run (`--host_malloc`, fedface_jax/host_memory.py), "system" glibc's defaults.
  # Rows record it; rows from before the setting existed ran with "system".
  config.host_malloc = "keep"
  config.append = False
  # Where this run's results JSON goes (committed: BENCHMARKS.md cites only benchmarks/*.json)
  # and which section of BENCHMARKS.md it is; the other sections come from their JSONs.
  config.results_json = "benchmarks/cpu.json"
  config.results_role = "cpu"
  config.cpu_results_json = "benchmarks/cpu.json"
  config.gpu_results_json = "benchmarks/gpu.json"
  config.roofline_json = "benchmarks/roofline.json"
  config.report_path = "BENCHMARKS.md"
  # The peers' round-1 params must equal our reference round to this relative tolerance (max
  # |diff| over max |param|), else the peer row is not published.
  config.peer_reference_rtol = 1e-4
  # Ours and each peer interleaved (ours, peer, ours, peer, ...): peer_blocks blocks, each one
  # process of ours (paired_strategies on the peer's run) and one of the peer, each timing
  # peer_rounds_per_block rounds after a warm-up round, so load drift hits both sides alike.
  config.peer_blocks = 3
  config.peer_rounds_per_block = 2
  config.paired_strategies = ("engine_host",)
  # Internal (set by the suite on the paired worker's command line): the run and block.
  config.paired_run = ""
  config.paired_block = -1
  config.paired_peer = ""   # the peer label the block is interleaved with (its rows carry it)
  config.class_table = mlc.ConfigDict(dict(
      enabled=True, rows=1_000_000, dim=512, devices=8, batch=256, queries=100,
      block_size=4096, reps=5))
  return config


# The plain-JAX bare loop (scripts/peers/bare_loop_bench.py) in our venv and in FedJAX's: the
# pair splits ours / FedJAX into the engine's own share and the JAX-version share.
FAIRNESS_PEERS = tuple(dict(run=run, venv=venv, script="bare_loop")
                       for run in ("base", "steps5") for venv in ("ours", "fedjax"))


def fedface_runs(arg) -> tuple[dict, ...]:
  """The real FedFace workload rows (issue 14): the engine's own backbones on face-sized inputs.

  resnet_small at 64x64 and sphere20 at 112x96 (`sphere20_image_size`, e.g. "112x112" on a
  GPU; both scaled by `fedface_scale`, for smoke tests),
  `fedface_photos` photos per client (one identity each), `fedface_steps` full-batch local
  steps, FedFace's positive-only loss, embedding 512, `fedface_clients` clients per round
  (e.g. "100+1000"). Strategies: the engine's host loop, the compiled vmapped round with the
  model's own convolutions, the centralised ceiling; MFU is in every row.

  Rounds this size take long on 2 CPU cores (sphere20 at 112x96: ~1 TFLOP per client update,
  XLA's count), so a run may be timed on its first `timed_clients` clients
  (`fedface_timed_clients`, `sphere20_timed_clients`; 0 = all): the row keeps the nominal
  client count in its workload and says how many clients were timed (`clients_timed`);
  updates/s is per timed client. The ceiling's image pool is capped per model
  (`fedface_centralised_max_images`, `sphere20_centralised_max_images`: sphere20's activations
  at 112x96 limit the batch on a 24 GiB machine).
  """
  runs = []
  sphere_hw = tuple(int(x) for x in str(arg.get("sphere20_image_size", "112x96")).split("x"))
  for model, (h, w) in (("resnet_small", (64, 64)), ("sphere20", sphere_hw)):
    caps = set()
    size = (max(8, round(h * arg.fedface_scale)), max(8, round(w * arg.fedface_scale)))
    sphere = model == "sphere20"
    timed = arg.sphere20_timed_clients if sphere else arg.fedface_timed_clients
    for i, clients in enumerate(int(c) for c in str(arg.fedface_clients).split("+")):
      common = dict(name=f"fedface_{model}_c{clients}", clients=clients,
                    steps=arg.fedface_steps, images=arg.fedface_photos, model=model,
                    image_size=size, embedding_dim=512, devices=1,
                    centralised_max_images=(arg.sphere20_centralised_max_images if sphere
                                            else arg.fedface_centralised_max_images))
      cap = min(clients, timed) if timed else clients
      if cap in caps:
        continue   # timed on as many clients as a smaller count: nothing new to measure
      caps.add(cap)
      # The ceiling once per model (at the first client count: it does not depend on it). A
      # compiled round's rate per client does not depend on the client count either (a scan
      # over chunks), so past the first count it is timed on <= 100 clients.
      if i == 0:
        runs.append((i, dict(common, strategies=("engine_host", "engine", "centralised"),
                             timed_clients=cap,
                             chunks=(1,) if sphere else tuple(sorted({1, min(10, cap)})))))
      else:
        runs.append((i, dict(common, strategies=("engine_host",), timed_clients=cap)))
        runs.append((i, dict(common, strategies=("engine",), timed_clients=min(cap, 100),
                             chunks=(1,) if sphere else (min(10, cap),))))
  # Both models at the first client count before either at the next: a run cut short keeps
  # one row of each backbone rather than the larger counts of the first.
  return tuple(r for _, r in sorted(runs, key=lambda ir: ir[0]))


def _one_device_toy_rows() -> dict[str, dict]:
  """The default run's 1-device toy CNN rows by name: what the supplements re-measure."""
  return {r["name"]: r for r in get_config("variant=default,rows=toy").runs
          if r["devices"] == 1}


def _timed_supplement(config) -> None:
  """A supplement appended to a default run's workdir: its rows only (no peers, no class table),
  5 timed rounds each however slow (the real FedFace rows take minutes per round)."""
  config.timed_rounds = 5
  config.min_timed_s = 0.0
  config.peers = ()
  config.class_table.enabled = False
  config.append = True


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="default", fedface_clients="100+1000", fedface_photos=20, fedface_steps=5,
      fedface_scale=1.0, fedface_timed_clients=0, sphere20_timed_clients=4,
      fedface_centralised_max_images=512, sphere20_centralised_max_images=64, rows="all",
      fairness_rows="base+steps5", im2col_strategies="engine_im2col+centralised_im2col")
  config = base_config()
  seq_eng = ("sequential", "sequential_steps", "engine_host", "engine")
  if arg.variant == "smoke":
    # Tiny sizes everywhere, written to the workdir only (never benchmarks/ or BENCHMARKS.md):
    # it checks that every part runs, not how fast.
    config.runs = (
        dict(name="base", clients=8, steps=1, images=4, model="small", devices=1,
             strategies=seq_eng + ("engine_host_1stream", "engine_im2col", "engine_patchconv",
                                   "centralised"),
             chunks=(1, 4)),
        dict(name="base", clients=8, steps=1, images=4, model="small", devices=8,
             strategies=("engine",), chunks=(1,)),
    ) + fedface_runs(mlc.ConfigDict(dict(
        arg.to_dict(), fedface_clients="2+4", fedface_photos=2, fedface_steps=2,
        fedface_scale=0.25, fedface_centralised_max_images=8,
        sphere20_centralised_max_images=8)))
    config.timed_rounds = 5
    config.min_timed_s = 0.0
    config.centralised_batches = (2, 8, 0)
    config.class_table.update(dict(rows=4096, dim=32, batch=16, queries=8, block_size=512,
                                   reps=5))
    config.peers = (dict(run="base", venv="fedjax"),
                    dict(run="base", venv="ours", script="bare_loop"),
                    dict(run="base", venv="fedjax", script="bare_loop"))
    config.peer_blocks = 2
    config.results_json = config.cpu_results_json = config.report_path = ""
  elif arg.variant == "default":
    config.runs = (
        # 1 device: strategies and chunk sizes on the base row.
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=1,
             strategies=("sequential", "sequential_steps", "engine_host",
                         "engine_host_1stream", "engine", "engine_patchconv", "centralised"),
             chunks=(1, 2, 10, 25, 50, 100)),
        dict(name="steps5", clients=100, steps=5, images=8, model="small", devices=1,
             strategies=seq_eng + ("engine_host_fused", "centralised"), chunks=(1, 50)),
        dict(name="images32", clients=100, steps=1, images=32, model="small", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 25)),
        dict(name="large", clients=100, steps=1, images=8, model="large", devices=1,
             strategies=seq_eng + ("centralised",), chunks=(1, 50)),
        dict(name="c1000", clients=1000, steps=1, images=8, model="small", devices=1,
             strategies=("engine_host", "engine"), chunks=(1, 50)),
        dict(name="c10000", clients=10000, steps=1, images=8, model="small", devices=1,
             strategies=("engine_host",)),
        # The compiled round runs ~25-40 clients/s here, so 10,000 clients cost ~400 s per round
        # (~45 min for the row); its rate per client does not depend on the count (a scan over
        # chunks), so it is timed on the first 1,000 clients and the row says so.
        dict(name="c10000", clients=10000, steps=1, images=8, model="small", devices=1,
             strategies=("engine",), chunks=(100,), timed_clients=1000),
        # 8 fake devices (one process, 2 cores): same rows, client axis sharded.
        dict(name="base", clients=100, steps=1, images=8, model="small", devices=8,
             strategies=("engine",), chunks=(1, 4, 13)),
        dict(name="c1000", clients=1000, steps=1, images=8, model="small", devices=8,
             strategies=("engine",), chunks=(25,)),
    ) + fedface_runs(arg)
    # `rows` splits the ~2 h run into two that each land on their own: `rows=toy` (the toy CNN
    # rows, then the class table and the peers) and `rows=fedface --parts=sweep
    # --config.append=True` into the same workdir (the real FedFace rows, added to the same
    # results JSON); a kill in the second keeps the first's rows.
    if arg.rows == "toy":
      config.runs = tuple(r for r in config.runs if not r["name"].startswith("fedface_"))
    elif arg.rows == "fedface":
      config.runs = tuple(r for r in config.runs if r["name"].startswith("fedface_"))
    elif arg.rows != "all":
      raise ValueError(f"rows must be all, toy or fedface, got {arg.rows!r}")
    config.peers = (
        dict(run="base", venv="fedjax"),
        dict(run="steps5", venv="fedjax"),
        dict(run="images32", venv="fedjax"),
        dict(run="large", venv="fedjax"),
        dict(run="base", venv="flower", timeout_s=900),
    ) + FAIRNESS_PEERS
  elif arg.variant == "fairness":
    # A supplement appended to a default run's workdir (`--config.append=True`): the bare loop
    # in both venvs (the JAX-version share of ours / FedJAX) and the fused-steps A/B on steps5.
    # `fairness_rows=images32+large` runs the same split on the two workloads that miss 3x
    # (with the host loop at 1 and at its default streams, for the streams' share).
    default = _one_device_toy_rows()
    names = [x for x in str(arg.fairness_rows).split("+") if x]
    unknown = sorted(set(names) - set(default))
    if unknown or not names:
      raise ValueError(f"fairness_rows names unknown rows {unknown}; valid: {sorted(default)}")
    extra = {"base": (), "steps5": ("engine_host", "engine_host_fused", "sequential_steps")}
    config.runs = tuple(
        dict(default[n], strategies=extra.get(n, ("engine_host", "engine_host_1stream")))
        for n in names)
    config.peers = tuple(dict(run=n, venv=v, script="bare_loop")
                         for n in names for v in ("ours", "fedjax"))
    config.class_table.enabled = False
    config.append = True   # never wipes the default run's rows it supplements
  elif arg.variant == "fused":
    # A supplement (appends): FedJAX on steps5 interleaved with the host loop with all 5 local
    # steps fused into one jitted call per client (`federated.host_loop_fused_steps=5`), the
    # issue's multi-step remedy, so its ratio to FedJAX is measured side by side.
    config.runs = (dict(_one_device_toy_rows()["steps5"], strategies=()),)
    config.peers = (dict(run="steps5", venv="fedjax", paired_strategies=("engine_host_fused",)),)
    config.class_table.enabled = False
    config.append = True
  elif arg.variant == "sphere20_compiled":
    # A supplement (appends): sphere20's compiled round and centralised ceiling at 100 clients,
    # which the reduced real-FedFace part left out (its host loop row is there). A compiled
    # client update costs ~1.5 min on 2 cores, so it is timed on `sphere20_timed_clients`.
    row = next(r for r in fedface_runs(arg) if r["name"] == "fedface_sphere20_c100")
    config.runs = (dict(row, strategies=("engine", "centralised"),
                        timed_clients=int(arg.sphere20_timed_clients), chunks=(1,)),)
    _timed_supplement(config)
  elif arg.variant == "im2col":
    # A supplement (appends): the compiled round with the models' im2col option
    # (model.conv_impl=im2col: batched matmuls where vmap makes every convolution a grouped one)
    # on the base toy row and on resnet_small's real FedFace row, next to the rows with the
    # models' own convolutions already in the JSON. Timed on `fedface_timed_clients` clients.
    # `im2col_strategies` ("+"-separated) picks the parts; centralised_im2col is the ceiling with
    # the same convolutions, so the engine's im2col rows are bounded by their own best.
    toy = _one_device_toy_rows()["base"]
    real = next(r for r in fedface_runs(arg) if r["name"] == "fedface_resnet_small_c100")
    timed = int(arg.fedface_timed_clients) or 20
    strats = tuple(x for x in str(arg.im2col_strategies).split("+") if x)
    unknown = sorted(set(strats) - {"engine_im2col", "centralised_im2col"})
    if unknown:
      raise ValueError(f"im2col_strategies names unknown strategies {unknown}")
    config.runs = (dict(toy, strategies=strats, chunks=(1, 10, 100)),
                   dict(real, strategies=strats, timed_clients=timed,
                        chunks=(1, min(10, timed))))
    _timed_supplement(config)
  elif arg.variant == "fedface_rest":
    # A supplement (appends): the real FedFace rows the reduced morning part left out, now that
    # the im2col option makes sphere20's compiled round affordable on 2 cores: sphere20 at 100
    # clients (compiled round with im2col, timed on `sphere20_timed_clients`; the centralised
    # ceiling), and resnet_small at 1,000 clients (the host loop over all 1,000; the compiled
    # round with im2col, timed on 100: a scan over chunks runs at the same rate per client).
    rows = {r["name"]: r for r in fedface_runs(mlc.ConfigDict(dict(
        arg.to_dict(), fedface_clients="100+1000")))}
    sphere = rows["fedface_sphere20_c100"]
    resnet = dict(rows["fedface_resnet_small_c100"], name="fedface_resnet_small_c1000",
                  clients=1000)
    config.runs = (
        dict(sphere, strategies=("engine_im2col", "centralised"),
             timed_clients=int(arg.sphere20_timed_clients), chunks=(1,)),
        dict(resnet, strategies=("engine_im2col",), timed_clients=100, chunks=(1,)),
        dict(resnet, strategies=("engine_host",), timed_clients=1000),
    )
    _timed_supplement(config)
  elif arg.variant == "fused_real":
    # A supplement (appends): the real FedFace rows with all 5 local steps fused into one jitted
    # call per client (`federated.host_loop_fused_steps`), next to the host loop with one step
    # per call and, for resnet_small, the centralised ceiling again (now also at the client's
    # own batch of 20), all in one process so the ratios are side by side. resnet_small is
    # timed on `fedface_timed_clients` (default 20), sphere20 on `sphere20_timed_clients`.
    rows = {r["name"]: r for r in fedface_runs(arg)}
    timed = int(arg.fedface_timed_clients) or 20
    config.runs = (
        dict(rows["fedface_resnet_small_c100"], timed_clients=timed,
             strategies=("engine_host", "engine_host_fused", "centralised")),
        dict(rows["fedface_sphere20_c100"], timed_clients=int(arg.sphere20_timed_clients),
             strategies=("engine_host", "engine_host_fused")),
    )
    _timed_supplement(config)
  elif arg.variant == "fused_ceiling":
    # A supplement (appends): the centralised ceiling with 5 consecutive batches per jitted call
    # (`centralised_fused`), on every 1-device toy row and both real FedFace rows: the baseline
    # given the same one-dispatch-per-5-steps trick the fused host loop uses, so the ceiling
    # stays the best setting of either kind (the report takes the best row).
    toy = _one_device_toy_rows()
    rows = {r["name"]: r for r in fedface_runs(arg)}
    config.runs = tuple(dict(toy[n], strategies=("centralised",))
                        for n in ("base", "steps5", "images32", "large")) + (
        dict(rows["fedface_resnet_small_c100"], strategies=("centralised",),
             timed_clients=int(arg.fedface_timed_clients) or 20),
        dict(rows["fedface_sphere20_c100"], strategies=("centralised",),
             timed_clients=int(arg.sphere20_timed_clients)))
    config.centralised_fused = (5,)
    _timed_supplement(config)
  elif arg.variant == "malloc_keep":
    # A supplement (appends), every process with `host_malloc="keep"` (glibc keeps freed memory:
    # fedface_jax/host_memory.py), ours and the peers alike: the 1-device toy rows (host loop,
    # fused host loop on steps5, the bare loop) with their ceilings (1 and 5 batches per call),
    # the real FedFace rows' host loops and ceilings, and FedJAX interleaved with ours on the
    # four toy workloads (reference-checked). The earlier rows, with glibc's defaults, stay.
    toy = _one_device_toy_rows()
    rows = {r["name"]: r for r in fedface_runs(arg)}
    strategies = {"base": ("engine_host", "engine_host_1stream", "sequential_steps"),
                  "steps5": ("engine_host", "engine_host_fused", "sequential_steps"),
                  "images32": ("engine_host", "sequential_steps"),
                  "large": ("engine_host", "sequential_steps")}
    config.runs = tuple(dict(toy[n], strategies=s + ("centralised",))
                        for n, s in strategies.items()) + (
        dict(rows["fedface_resnet_small_c100"],
             strategies=("engine_host", "engine_host_fused", "centralised"),
             timed_clients=int(arg.fedface_timed_clients) or 20),
        dict(rows["fedface_sphere20_c100"], strategies=("engine_host", "centralised"),
             timed_clients=int(arg.sphere20_timed_clients)))
    config.centralised_fused = (1, 5)
    config.host_malloc = "keep"
    config.timed_rounds = 5
    config.peers = tuple(
        dict(run=n, venv="fedjax",
             paired_strategies=("engine_host_fused",) if n == "steps5" else ("engine_host",))
        for n in strategies)
    config.class_table.enabled = False
    config.append = True
  elif arg.variant == "sphere20_rest":
    # A supplement (appends): the sphere20 rows still missing, cheapest first so a stopped run
    # keeps them: 1,000 clients per round (the host loop timed on `sphere20_timed_clients`, the
    # compiled round with im2col timed on 1: rates per client do not depend on the count), then
    # the compiled round with the model's own (XLA) convolutions at 100 clients, timed on 1
    # client (~2 min per client update on 2 cores; the morning's run, timed on 2, was stopped
    # while still warming up).
    rows = {r["name"]: r for r in fedface_runs(mlc.ConfigDict(dict(
        arg.to_dict(), fedface_clients="100+1000")))}
    sphere = rows["fedface_sphere20_c100"]
    big = dict(sphere, name="fedface_sphere20_c1000", clients=1000)
    config.runs = (
        dict(big, strategies=("engine_host",), timed_clients=int(arg.sphere20_timed_clients)),
        dict(big, strategies=("engine_im2col",), timed_clients=1, chunks=(1,)),
        dict(sphere, strategies=("engine",), timed_clients=1, chunks=(1,)),
    )
    _timed_supplement(config)
  elif arg.variant == "seqsteps":
    # The FedJAX-style loop (Python loop over jitted steps) and the engine with chunks of 1-2
    # clients on the four 100-client rows: a supplement to a default run that predates both.
    config.runs = tuple(
        dict(r, strategies=("sequential_steps", "engine_host", "engine"), chunks=(1, 2))
        for r in get_config("variant=default").runs
        if r["clients"] == 100 and r["devices"] == 1 and r["model"] in ("small", "large"))
    config.peers = ()
    config.class_table.enabled = False
    config.results_json = config.cpu_results_json = config.report_path = ""
  elif arg.variant == "fedface":
    # Only the real FedFace workload rows (a supplement; its own results JSON).
    config.runs = fedface_runs(arg)
    config.peers = ()
    config.class_table.enabled = False
    config.results_json = "benchmarks/cpu_fedface.json"
    config.cpu_results_json = config.report_path = ""
  else:
    raise ValueError(f"unknown variant {arg.variant!r}; valid: default, smoke, fairness, "
                     "fused, sphere20_compiled, im2col, fedface_rest, fused_real, fused_ceiling, "
                     "malloc_keep, sphere20_rest, seqsteps, fedface")
  return config
