"""Where our Inverting Gradients spends its time next to breaching's, on one peer case.

  python scripts/ig_speed_probe.py --case runs/attack_peer/celeba/seed0/case.npz \
      --iterations 200 --out benchmarks/ig_speed_probe.json [--peer] [--single_thread]

The case is one `launch.attack_peer` writes (`reporting/attack_peer.CASE_LAYOUT`). Each variant runs
our Inverting Gradients with the settings `attack_peer.ours_inverting_gradients` uses
(`attack_peer.invert_like_breaching`), changing one knob (remat, the loop, the LeNet's
convolution: `nn.Conv` or `models/im2col.Conv`); the time is the steady per-iteration time after
the first chunk (compile excluded) and the compile is reported apart. `--peer` also runs breaching
on the same case for the same iterations (its own venv) and records its wall time. Each row records
its final matching loss and the JSON their spread: variants with XLA's convolutions agree to the
digit; im2col rounds differently, which signed Adam amplifies over the iterations.
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

from reporting import attack_peer  # pylint: disable=wrong-import-position


def run_ours(case: dict, iterations: int, remat: bool, loop: str, chunk: int, conv: str) -> dict:
  t0 = time.perf_counter()
  res = attack_peer.invert_like_breaching(
      attack_peer.case_tree(case, "w_t"), attack_peer.case_tree(case, "target"),
      num_clients=int(case["num_clients"]), images_per_client=int(case["images_per_client"]),
      tau=int(case["tau"]), eta=float(case["eta"]), image_size=int(case["image_size"]),
      iterations=iterations, seed=0, conv_impl=conv, remat=remat, loop=loop, chunk=chunk)
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
