"""Roofline estimate of the compiled vmapped FedFace round on named GPUs, with no GPU at hand.

Why this script exists: BENCHMARKS.md may cite GPU figures only from a GPU run; until one exists
its GPU section shows this estimate instead, clearly labelled as one. For each real FedFace
workload (`experiments/benchmark_cpu.py` `fedface_runs`: resnet_small 64x64 and sphere20 112x96,
20 photos per client, 5 local steps, positive-only loss) and each chunk size (clients vmapped
together, as in the engine's compiled round), it lowers ONE vmapped client SGD step over a
chunk, takes FLOPs and bytes accessed from XLA's cost analysis of the compiled program (per
client step = total / chunk), and bounds the time per step by
max(FLOPs / peak compute, bytes / peak bandwidth) for each GPU in `GPUS`. One step, not the
round's `lax.scan`: XLA's cost analysis counts a loop body once.

Caveats, written into the JSON: the program is compiled for the backend this runs on (CPU
here), so "bytes accessed" follows XLA:CPU's fusion, not XLA:GPU's; the peaks are the
datasheet's (no real kernel reaches them); the round's data transfer, server step and Python
overhead are not counted. The estimate is an upper bound on updates/s, not a prediction.

Usage:
  python scripts/benchmark_roofline.py --out benchmarks/roofline.json
  python scripts/benchmark_roofline.py --tiny --out /tmp/roofline.json      # seconds; tests
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from importlib import metadata

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from experiments import benchmark_cpu
from fedface_jax.benchmark import measure
from fedface_jax.benchmark import strategies
from fedface_jax.benchmark import worker
from fedface_jax.benchmark import workload as wl
# pylint: enable=g-import-not-at-top,wrong-import-position

# Published peaks (dense: the datasheets' Tensor Core figures are "with sparsity", i.e. twice the
# dense rate, so they are halved here). The workload is f32: its convolutions run on the FP32
# units, or on TF32 Tensor Cores where XLA:GPU's default precision allows it. (A bf16 peak would
# need a bf16 program's byte counts too, so it is not used.)
GPUS = {
    "H100 SXM": {
        "tflops": {"fp32": 67.0, "tf32_tensor": 494.7},
        "bandwidth_tb_s": 3.35,
        "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column: FP32 67 TFLOPS, "
                  "TF32 Tensor Core 989 TFLOPS with sparsity (494.7 dense), GPU memory "
                  "bandwidth 3.35 TB/s"},
    "H200 SXM": {
        "tflops": {"fp32": 67.0, "tf32_tensor": 494.7},
        "bandwidth_tb_s": 4.8,
        "source": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column: FP32 67 TFLOPS, "
                  "TF32 Tensor Core 989 TFLOPS with sparsity (494.7 dense), GPU memory "
                  "bandwidth 4.8 TB/s"},
}
CHUNKS = (1, 16, 128, 1024)


def workloads(tiny: bool) -> list[wl.Workload]:
  """The real FedFace workloads of the CPU benchmark config, one per model (tiny: shrunk)."""
  arg = ("variant=fedface" if not tiny else
         "variant=fedface,fedface_clients=2,fedface_photos=2,fedface_steps=2,fedface_scale=0.25")
  cfg = benchmark_cpu.get_config(arg)
  out, seen = [], set()
  for run in cfg.runs:
    if run["model"] not in seen:
      seen.add(run["model"])
      out.append(worker.make_workload(cfg, dict(run)))
  return out


def chunk_cost(w: wl.Workload, chunk: int) -> dict[str, float]:
  """Cost analysis of one vmapped client SGD step over `chunk` clients (abstract inputs)."""
  step = strategies.client_step_fn(w)
  params = jax.eval_shape(lambda: wl.init_params(w))
  stacked = jax.tree.map(lambda p: jax.ShapeDtypeStruct((chunk,) + p.shape, p.dtype), params)
  h, wd = w.image_size
  images = jax.ShapeDtypeStruct((chunk, w.batch_size, h, wd, 3), jnp.uint8)
  embs = jax.ShapeDtypeStruct((chunk, w.embedding_dim), jnp.float32)
  t0 = time.perf_counter()
  compiled = jax.jit(jax.vmap(step)).lower(stacked, images, embs).compile()
  cost = measure.compiled_cost(compiled)
  flops, nbytes = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)
  if not (flops > 0 and nbytes > 0):
    raise ValueError(f"cost analysis gave no flops/bytes for {w.model} chunk {chunk}: {cost}")
  return {"flops": flops, "bytes": nbytes, "compile_s": time.perf_counter() - t0}


def estimates(flops_step: float, bytes_step: float, local_steps: int) -> list[dict]:
  """Roofline bound per GPU and peak: time per client step, updates/s, MFU bound."""
  out = []
  for gpu, g in GPUS.items():
    bw = g["bandwidth_tb_s"] * 1e12
    for peak_name, tflops in g["tflops"].items():
      peak = tflops * 1e12
      t_compute, t_memory = flops_step / peak, bytes_step / bw
      t = max(t_compute, t_memory)
      out.append({"gpu": gpu, "peak": peak_name, "peak_flops": peak, "bandwidth": bw,
                  "bound": "compute" if t_compute >= t_memory else "memory",
                  "step_s": t, "client_updates_per_s": 1.0 / (t * local_steps),
                  "mfu_bound": t_compute / t})
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="where the roofline JSON goes")
  parser.add_argument("--tiny", action="store_true", help="tiny workloads (tests)")
  parser.add_argument("--models", default=None,
                      help="comma-separated subset of the workloads' models (default: all)")
  parser.add_argument("--chunks", default=None,
                      help="comma-separated chunk sizes (default 1,16,128,1024; tiny 1,2)")
  args = parser.parse_args(argv)
  chunks = (tuple(int(c) for c in args.chunks.split(",")) if args.chunks else
            ((1, 2) if args.tiny else CHUNKS))
  entries = []
  wanted = set(args.models.split(",")) if args.models else None
  for w in workloads(args.tiny):
    if wanted is not None and w.model not in wanted:
      continue
    for chunk in chunks:
      c = chunk_cost(w, chunk)
      fs, bs = c["flops"] / chunk, c["bytes"] / chunk
      entries.append({"workload": w.to_dict(), "chunk": chunk, "flops_per_client_step": fs,
                      "bytes_per_client_step": bs, "compile_s": c["compile_s"],
                      "estimates": estimates(fs, bs, w.local_steps)})
      print(f"{w.model} {w.image_size} chunk {chunk}: {fs / 1e9:.3f} GFLOP, "
            f"{bs / 1e6:.1f} MB per client step", flush=True)
  out = {
      "kind": "roofline_estimate",
      "note": "ESTIMATE, not a measurement: XLA cost analysis of one vmapped client SGD step "
              "(compiled for the backend below, so bytes follow its fusion) against datasheet "
              "peaks; an upper bound on client updates/s that ignores data transfer, the "
              "server step and dispatch.",
      "command": "python scripts/benchmark_roofline.py " + " ".join(
          argv if argv is not None else sys.argv[1:]),
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "compiled_on": jax.default_backend(),
      "versions": {p: metadata.version(p) for p in ("jax", "jaxlib", "flax")},
      "gpus": GPUS, "entries": entries}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
