"""Where our Inverting Gradients spends its time next to breaching's, on one peer case.

  python scripts/ig_speed_probe.py --case runs/attack_peer/celeba/seed0/case.npz \
      --iterations 200 --out benchmarks/ig_speed_probe.json [--peer] [--single_thread]

The case is one `launch.attack_peer` writes (`reporting/attack_peer.CASE_LAYOUT`). Each variant runs
our `inversion.invert_inverting_gradients` with the settings `attack_peer.ours_inverting_gradients`
uses, changing one knob (remat, the loop, the LeNet's convolution: `nn.Conv` or
`models/im2col.Conv`); the
time is the steady per-iteration time after the first chunk (compile excluded) and the compile is
reported apart. `--peer` also runs breaching on the same case for the same iterations (its own venv)
and records its wall time. Every variant must reach the same final matching loss to float rounding,
or the probe says so.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# breaching runs torch on one thread (`attack_peer --threads`, default 1); `--single_thread` runs
# XLA on one too, so the comparison is thread for thread. It must be set before jax is imported.
SINGLE_THREAD = "--single_thread" in sys.argv
if SINGLE_THREAD:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1").strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from fedface_jax.attack import inversion  # pylint: disable=wrong-import-position
from fedface_jax.attack import lenet as lenet_lib  # pylint: disable=wrong-import-position
from reporting import attack_peer  # pylint: disable=wrong-import-position


def _tree(case: dict, name: str) -> dict:
  out: dict = {}
  for key, value in case.items():
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == name:
      out.setdefault(parts[1], {})[parts[2]] = jnp.asarray(value)
  return out


def _config(case: dict, iterations: int, remat: bool, loop: str, chunk: int):
  c = inversion.inverting_gradients_config()
  c.tau, c.eta = int(case["tau"]), float(case["eta"])
  c.image_size, c.iterations, c.seed = int(case["image_size"]), iterations, 0
  scale = float(inversion.fedface_input(jnp.ones(())) - inversion.fedface_input(jnp.zeros(())))
  c.init_std, c.tv_weight, c.lr, c.restarts = 1.0 / scale, 0.2 * scale, 0.1 / scale, 1
  c.remat, c.loop, c.chunk = remat, loop, chunk
  return c


def run_ours(case: dict, iterations: int, remat: bool, loop: str, chunk: int, conv: str) -> dict:
  k, n = int(case["num_clients"]), int(case["images_per_client"])
  model = lenet_lib.LeNet5(num_classes=k, conv_impl=conv)
  labels = inversion.onehot(np.repeat(np.arange(1, k), n), k)
  c = _config(case, iterations, remat, loop, chunk)
  t0 = time.perf_counter()
  res = inversion.invert_inverting_gradients(
      lambda p, x: model.apply({"params": p}, x), _tree(case, "w_t"), _tree(case, "target"),
      labels, c, input_transform=inversion.fedface_input, progress=False)
  wall = time.perf_counter() - t0
  return {"conv": conv, "remat": remat, "loop": loop, "chunk": chunk, "wall_s": wall,
          "first_chunk_s": res.timing["first_chunk_s"],
          "per_iteration_ms": 1e3 * res.timing["per_iteration_s"],
          "final_matching": float(res.final_matching)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--case", required=True)
  p.add_argument("--iterations", type=int, default=200)
  p.add_argument("--out", default="benchmarks/ig_speed_probe.json")
  p.add_argument("--peer", action="store_true")
  p.add_argument("--single_thread", action="store_true", help="XLA on one thread (see above).")
  p.add_argument("--peer_python", default=attack_peer.DEFAULT_PEER_PYTHON)
  args = p.parse_args()
  case = attack_peer.read_case(args.case)
  rows = []
  # The first row is what `attack_peer` ran (the CPU defaults); each other row changes one knob.
  for conv, remat, loop in [("xla", True, "host"), ("xla", False, "host"), ("xla", True, "scan"),
                            ("im2col", True, "host"), ("im2col", False, "host")]:
    rows.append(run_ours(case, args.iterations, remat, loop, 10, conv))
    print(json.dumps(rows[-1]), flush=True)
  peer = None
  if args.peer:
    out = os.path.join(os.path.dirname(os.path.abspath(args.out)), "_ig_probe_peer.npz")
    t0 = time.perf_counter()
    _, result = attack_peer.run_peer(args.peer_python, args.case, out, args.iterations, 0, 1)
    peer = {"process_s": time.perf_counter() - t0,
            **{k: v for k, v in result.items() if isinstance(v, (int, float, str))}}
    print(json.dumps(peer), flush=True)
    for f in (out, out + ".log"):
      if os.path.exists(f):
        os.remove(f)
  spread = max(r["final_matching"] for r in rows) - min(r["final_matching"] for r in rows)
  doc = {"command": "python " + " ".join(sys.argv),
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
         "jax": jax.__version__, "load_1min": os.getloadavg()[0],
         "xla_threads": 1 if SINGLE_THREAD else os.cpu_count(), "breaching_torch_threads": 1,
         "case": {k: int(case[k]) for k in ("num_clients", "images_per_client", "image_size",
                                            "tau")},
         "iterations": args.iterations, "ours": rows, "breaching": peer,
         "final_matching_spread": spread}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(doc, f, indent=1)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
