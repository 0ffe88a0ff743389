"""Recounts FLOPs per client update (and MFU) in a GPU benchmark JSON on this machine's CPU.

Why: on a GPU the compiled program's convolutions and matmuls are cuDNN / cuBLAS custom-calls,
which XLA's cost analysis counts as zero, so a GPU worker that counted FLOPs on the GPU-compiled
step reported MFUs ~100x too low (the first GPU lease of 2026-12-04 did, before
`measure.step_flops` compiled the step for the host CPU). The FLOPs of a step do not depend on
where it runs: this script compiles each row's client step for the CPU, exactly as the fixed
worker does on the GPU machine's host, and rewrites `flops_per_update` and `mfu` of every round
row whose count did not come from a CPU compile. Rows the fixed worker counted are recounted
too and must agree (else the script fails): that checks the recount against the device's own.

  JAX_PLATFORMS=cpu python scripts/recount_benchmark_flops.py benchmarks/gpu.json
  python scripts/write_benchmarks_md.py       # then re-render BENCHMARKS.md
"""

import argparse
import dataclasses
import json
import math
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

RECOUNT_SOURCE = "recounted on the CPU (scripts/recount_benchmark_flops.py)"


def step_flops_on_cpu(workload_dict: dict, cache: dict) -> float:
  """FLOPs of one local step of the row's workload, counted as the worker counts them
  (`measure.step_flops` with the same step and arguments, on the CPU; cached per shape)."""
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import strategies  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import workload as wl  # pylint: disable=g-import-not-at-top
  # Two clients: the step's cost does not depend on the round's client count.
  w = dataclasses.replace(wl.Workload.from_dict(workload_dict), num_clients=2)
  key = json.dumps(dataclasses.asdict(w), sort_keys=True)
  if key not in cache:
    data = wl.synthetic_client_data(w)
    params = wl.init_params(w)
    step = strategies.client_step_fn(w)
    cache[key], _ = measure.step_flops(step, params, data.images[0], data.class_embeddings[0])
  return cache[key]


def recount(results: dict, rtol: float = 0.01) -> tuple[int, int, float]:
  """Rewrites the round rows of `results` in place.

  Returns (rows recounted, rows checked, largest relative difference of a checked row). The
  tolerance allows for another XLA version and CPU on the GPU machine's host (its fusion
  choices move the count by ~0.1%); a custom-call count is off by ~100x.
  """
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  cache: dict = {}
  recounted = checked = 0
  worst = 0.0
  for row in results["rows"]:
    if row.get("kind") != "round" or "workload" not in row:
      continue
    wd = row["workload"]
    flops_update = step_flops_on_cpu(wd, cache) * int(wd["local_steps"])
    old = row.get("flops_per_update")
    # CPU counts (and an earlier recount's) are checked, never rewritten: a second run must
    # not overwrite the device's original count kept in `flops_per_update_device`.
    cpu_counted = (measure.FLOPS_COMPILED_CPU, measure.FLOPS_COMPILED_HOST_CPU, RECOUNT_SOURCE)
    if row.get("flops_source") in cpu_counted and old is not None and math.isfinite(old):
      worst = max(worst, abs(old - flops_update) / flops_update)
      if abs(old - flops_update) > rtol * flops_update:
        raise ValueError(f"row {row['name']}/{row.get('strategy')}: the device's host count "
                         f"{old:.6g} differs from this recount {flops_update:.6g}")
      checked += 1
      continue
    row["flops_per_update_device"] = old
    row["flops_source_device"] = row.get("flops_source", "compiled for the gpu (custom-calls "
                                                         "count zero)")
    row["flops_per_update"] = flops_update
    row["flops_source"] = RECOUNT_SOURCE
    if row.get("strategy") == "centralised":
      per_image = flops_update / (int(wd["local_steps"]) * int(wd["batch_size"]))
      row["mfu"] = per_image * row["images_per_s"] / row["peak_flops"]
    else:
      row["mfu"] = flops_update * row["client_updates_per_s"] / row["peak_flops"]
    recounted += 1
  return recounted, checked, worst


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("results_json")
  args = parser.parse_args(argv)
  with open(args.results_json) as f:
    results = json.load(f)
  recounted, checked, worst = recount(results)
  results["meta"]["flops_recount"] = (
      f"{recounted} rows recounted by scripts/recount_benchmark_flops.py on the CPU; {checked} "
      f"rows already counted on a CPU (the device's host, or an earlier recount) agree with the "
      f"recount to {worst:.2%}")
  with open(args.results_json, "w") as f:
    json.dump(results, f, indent=0)
    f.write("\n")
  print(f"{args.results_json}: {results['meta']['flops_recount']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
