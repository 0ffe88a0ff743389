"""What both peer benchmark scripts share: the workload file, its data and initial parameters.

Why a separate module: the peers run in their own virtual environments (FedJAX's, Flower's) and
cannot import fedface_jax, so the data and init generators of `fedface_jax/benchmark/workload.py`
are re-implemented here in NumPy, once for both peers. `tests/test_benchmark_workload.py` checks
that they give the same bytes as the library's, and `--reference` checks it again at run time.
Imported as `_common` by the scripts next to it (their folder is first on `sys.path`).
"""

import json
import math
import os
import platform

import numpy as np

BENCH_MODELS = {"bench_cnn_small": (16, 32, 64), "bench_cnn_large": (32, 64, 128)}
POSITIVE_MARGIN = 0.9
NORM_EPS = 1e-12
PARAM_NAMES = ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias", "conv3/kernel",
               "conv3/bias", "embed/kernel")
WORKLOAD_FIELDS = ("num_clients", "images_per_client", "image_size", "local_steps", "batch_size",
                   "model", "embedding_dim", "lr", "seed")


def load_workload(path):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"workload file not found: {path}")
  with open(path) as f:
    w = json.load(f)
  missing = [k for k in WORKLOAD_FIELDS if k not in w]
  unknown = sorted(set(w) - set(WORKLOAD_FIELDS))
  if missing or unknown:
    raise ValueError(f"bad workload {path}: missing {missing}, unknown {unknown}")
  if w["model"] not in BENCH_MODELS:
    raise ValueError(f"unknown model {w['model']!r}")
  w["image_size"] = tuple(w["image_size"])
  return w


def synthetic_client_data(w):
  """Same bytes as workload.synthetic_client_data (raw PCG64 stream)."""
  h, wd = w["image_size"]
  shape = (w["num_clients"], w["images_per_client"], h, wd, 3)
  n_bytes = int(np.prod(shape))
  bits = np.random.PCG64(w["seed"])
  raw = bits.random_raw((n_bytes + 7) // 8).astype("<u8")
  images = raw.view(np.uint8)[:n_bytes].reshape(shape).copy()
  raw_e = bits.random_raw(w["num_clients"] * w["embedding_dim"])
  e = 2.0 * (raw_e >> np.uint64(11)).astype(np.float64) * 2.0**-53 - 1.0
  e = e.reshape(w["num_clients"], w["embedding_dim"])
  e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), NORM_EPS)
  return images, e.astype(np.float32)


def _truncated_normal_np(bits, n):
  out = np.empty((0,), np.float64)
  while out.size < n:
    pairs = (n - out.size) // 2 + 64
    u = ((bits.random_raw(2 * pairs) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u = u.reshape(pairs, 2)
    r = np.sqrt(-2.0 * np.log(u[:, 0]))
    z = np.stack([r * np.cos(2.0 * np.pi * u[:, 1]), r * np.sin(2.0 * np.pi * u[:, 1])], 1)
    z = z.reshape(-1)
    out = np.concatenate([out, z[np.abs(z) <= 2.0]])
  return out[:n]


def init_flat_params(w):
  """Same numbers as workload.init_flat_params (LeCun-normal kernels, zero biases)."""
  c1, c2, c3 = BENCH_MODELS[w["model"]]
  shapes = {"conv1/kernel": (3, 3, 3, c1), "conv1/bias": (c1,),
            "conv2/kernel": (3, 3, c1, c2), "conv2/bias": (c2,),
            "conv3/kernel": (3, 3, c2, c3), "conv3/bias": (c3,),
            "embed/kernel": (c3, w["embedding_dim"])}
  flat = {}
  for i, name in enumerate(PARAM_NAMES):
    shape = shapes[name]
    if name.endswith("/bias"):
      flat[name] = np.zeros(shape, np.float32)
      continue
    stddev = math.sqrt(1.0 / int(np.prod(shape[:-1]))) / 0.87962566103423978
    bits = np.random.PCG64(np.random.SeedSequence([w["seed"], i]))
    flat[name] = (_truncated_normal_np(bits, int(np.prod(shape))) * stddev).astype(
        np.float32).reshape(shape)
  return flat


def max_diff(flat_a, flat_b):
  """(max |a - b|, that over max |b|) across every parameter."""
  abs_d = max(float(np.max(np.abs(flat_a[k] - flat_b[k]))) for k in PARAM_NAMES)
  scale = max(float(np.max(np.abs(flat_b[k]))) for k in PARAM_NAMES)
  return abs_d, abs_d / max(scale, 1e-30)


def check_reference(ref, w, flat0):
  """The reference's initial params, after checking its workload and our init against it."""
  ref_w = json.loads(str(ref["workload"]))
  ref_w["image_size"] = tuple(ref_w["image_size"])
  if ref_w != w:
    raise ValueError(f"reference workload {ref_w} != --workload {w}")
  ref_init = {k: ref[f"init/{k}"] for k in PARAM_NAMES}
  return ref_init, {"init_max_abs_diff": max_diff(flat0, ref_init)[0]}


def add_common_args(parser):
  """The flags every peer script takes (`benchmark_suite.run_peers` passes them)."""
  parser.add_argument("--workload", required=True, help="workload JSON (Workload.save)")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
  parser.add_argument("--reference", default=None,
                      help=".npz from fedface_jax.benchmark.workload.write_reference")


def load_inputs(args):
  """(workload, images, class embeddings, initial params, reference or None, check or None).

  With `--reference`, the initial params are the reference's (after checking that the workload
  and our own init match it) and `check` starts with the init difference.
  """
  if args.rounds < 1:
    raise ValueError("--rounds must be >= 1")
  w = load_workload(args.workload)
  images, class_emb = synthetic_client_data(w)
  flat0 = init_flat_params(w)
  ref = check = None
  if args.reference:
    if not os.path.isfile(args.reference):
      raise FileNotFoundError(f"reference not found: {args.reference}")
    ref = np.load(args.reference)
    flat0, check = check_reference(ref, w, flat0)
  return w, images, class_emb, flat0, ref, check


def check_round1(check, ref, round1_flat):
  """Adds the first round's difference to the reference to `check`; ok = it is within 1e-4."""
  ref1 = {k: ref[f"round1/{k}"] for k in PARAM_NAMES}
  abs_d, rel_d = max_diff(round1_flat, ref1)
  check.update(round1_max_abs_diff=abs_d, round1_max_rel_diff=rel_d,
               ok=bool(rel_d < 1e-4 and check["init_max_abs_diff"] == 0.0))


def throughput(w, round_s):
  """The result row's rate fields from the timed rounds' wall times."""
  mean_s = sum(round_s) / len(round_s)
  images_per_round = w["num_clients"] * w["local_steps"] * w["batch_size"]
  return {"client_updates_per_s": w["num_clients"] / mean_s,
          "images_per_s": images_per_round / mean_s}


def batch_indices(w):
  """workload.batch_indices: the client-image indices of each local step (cyclic, no shuffle)."""
  flat = np.arange(w["local_steps"] * w["batch_size"]) % w["images_per_client"]
  return flat.reshape(w["local_steps"], w["batch_size"])


def print_result(out, w, check):
  """Prints a peer's result line (the suite reads the last JSON line of stdout).

  Adds what every peer reports the same way: the Python version, the workload, and the
  reference check when there is one.
  """
  out["python"] = platform.python_version()
  out["workload"] = {**w, "image_size": list(w["image_size"])}
  if check is not None:
    out["check"] = check
  print(json.dumps(out), flush=True)
