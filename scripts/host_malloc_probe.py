"""Page faults and time per client of the CPU host loop, glibc's malloc defaults vs `keep`.

Why: the profile behind `--host_malloc=keep` (fedface_jax/host_memory.py). XLA:CPU allocates
each jitted call's buffers with malloc; under glibc's defaults large ones come from fresh mmap
pages that the kernel zero-fills on first touch, once per call. This script counts the minor
page faults (getrusage) and times the engine's host loop (2 streams, the benchmark's
`EngineRound`) with one local step per call and with all 5 fused, on the real resnet_small
workload and on the toy steps5 workload, each setting in its own process (glibc reads its
settings when a process starts):

  PYTHONPATH=. JAX_PLATFORMS=cpu python scripts/host_malloc_probe.py \
      --out=benchmarks/host_malloc_probe.json

The settings' rounds must give the same params (checked: the allocator cannot change a number).
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

_OUT = flags.DEFINE_string("out", "", "Write the rows to this JSON.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed rounds per row (after one untimed).")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one workload in this process.")

WORKLOADS = {
    "resnet_small": dict(num_clients=10, images_per_client=20, local_steps=5, batch_size=20,
                         model="resnet_small", image_size=(64, 64), embedding_dim=512),
    "steps5": dict(num_clients=100, images_per_client=8, local_steps=5, batch_size=8,
                   model="bench_cnn_small"),
}


def child(name: str, reps: int) -> list[dict]:
  """This process's rows: one per fused setting (the process's malloc is fixed at start)."""
  import resource  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fedface_jax import host_memory  # pylint: disable=g-import-not-at-top
  from fedface_jax import sharding as sh  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import strategies  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import workload as wl  # pylint: disable=g-import-not-at-top
  w = wl.Workload(**WORKLOADS[name])
  data = wl.synthetic_client_data(w)
  params = wl.init_params(w)
  rows = []
  for fused in (1, w.local_steps):
    eng = strategies.EngineRound(w, sh.make_mesh(1), 1, execution="host_loop", streams=2,
                                 fused_steps=fused)
    inputs = eng.round_inputs(data.images, np.arange(w.num_clients))
    state = eng.init_state(params, data.class_embeddings)
    first, _, _ = eng(state, inputs)   # compile + warm-up, awaited; its params are checked
    first_params = jax.device_get(first["params"])
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(reps):
      state = eng.init_state(params, data.class_embeddings)
      t0 = time.perf_counter()
      jax.block_until_ready(eng(state, inputs)[0]["params"])
      times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    leaves = jax.tree.leaves(first_params)
    rows.append(dict(workload=name, host_malloc=host_memory.current_mode(), fused_steps=fused,
                     clients=w.num_clients, round_s=times,
                     ms_per_client=1e3 * float(np.median(times)) / w.num_clients,
                     minor_faults_per_client=faults / (reps * w.num_clients),
                     # A fingerprint of round 1's params, compared across settings.
                     params_sum=float(sum(np.sum(np.asarray(x, np.float64)) for x in leaves))))
  return rows


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(child(_CHILD.value, _REPS.value)), flush=True)
    return
  # pylint: disable=g-import-not-at-top
  from fedface_jax import host_memory
  from reporting import results_md
  # pylint: enable=g-import-not-at-top
  rows = []
  for name in WORKLOADS:
    for mode in ("system", "keep"):
      env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
      if mode == "keep":
        env.update(host_memory.malloc_env())
      proc = subprocess.run([sys.executable, __file__, f"--child={name}", f"--reps={_REPS.value}"],
                            env=env, capture_output=True, text=True, check=True)
      got = json.loads(proc.stdout.strip().splitlines()[-1])
      assert all(r["host_malloc"] == mode for r in got), got
      for r in got:
        print(json.dumps({k: r[k] for k in ("workload", "host_malloc", "fused_steps",
                                            "ms_per_client", "minor_faults_per_client")}),
              flush=True)
      rows += got
  for name in WORKLOADS:
    sums = [r["params_sum"] for r in rows if r["workload"] == name]
    if max(sums) - min(sums) > 1e-4 * max(1.0, abs(sums[0])):
      raise SystemExit(f"{name}: round-1 params differ across settings: {sums}")
    base = next(r for r in rows if r["workload"] == name and r["host_malloc"] == "system"
                and r["fused_steps"] == 1)
    for r in rows:
      if r["workload"] == name:
        r["speedup_vs_system_unfused"] = base["ms_per_client"] / r["ms_per_client"]
  result = dict(
      command="PYTHONPATH=. JAX_PLATFORMS=cpu python scripts/host_malloc_probe.py "
              f"--reps={_REPS.value}",
      date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      machine=results_md.machine_line(), settings=host_memory.malloc_env(),
      workloads=WORKLOADS, rows=rows)
  if _OUT.value:
    results_md.save_json(_OUT.value, result)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
