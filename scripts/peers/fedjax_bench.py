"""FedJAX side of the throughput benchmark: the shared workload with FedJAX's own FedAvg.

Why this script exists: our engine's client-updates/s only means something next to a peer
framework running the same workload. This runs `fedface_jax/benchmark/workload.py`'s workload
(same CNN, same data, same positive-only loss, same SGD steps, same FedAvg weights) through the
unmodified FedJAX 0.0.17 machinery: `InMemoryFederatedData` -> `ClientDataset.shuffle_repeat_batch`
-> `fedjax.algorithms.fed_avg.federated_averaging` (whose clients run through `for_each_client`,
default `jit` backend: a Python loop over clients and batches of jitted steps).

It runs in `.peer_venvs/fedjax` (scripts/setup_peer_venvs.sh) and cannot import fedface_jax,
so the data and init generators below re-implement `synthetic_client_data` / `init_flat_params`
(NumPy only). `--reference` (an .npz from `workload.write_reference`) checks both that they
match and that one FedJAX round gives our reference round's params.

Usage:
  .peer_venvs/fedjax/bin/python scripts/peers/fedjax_bench.py --workload w.json [--rounds 3]
      [--reference ref.npz] [--backend jit]
Prints one JSON line on stdout (see scripts/peers/README.md).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from importlib import metadata

warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # pylint: disable=g-import-not-at-top

# ---- Workload and data (kept in sync with fedface_jax/benchmark/workload.py) ----------------
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


# ---- FedJAX / Haiku --------------------------------------------------------------------------
import fedjax  # pylint: disable=g-import-not-at-top
from fedjax.algorithms import fed_avg  # pylint: disable=g-import-not-at-top
import haiku as hk  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def make_forward(w):
  """The benchmark CNN in Haiku (init scheme = flax/Haiku LeCun normal for every kernel)."""
  c1, c2, c3 = BENCH_MODELS[w["model"]]
  lecun = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")

  def forward(x):
    x = jax.nn.relu(hk.Conv2D(c1, 3, padding="SAME", w_init=lecun, name="conv1")(x))
    x = hk.avg_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    x = jax.nn.relu(hk.Conv2D(c2, 3, padding="SAME", w_init=lecun, name="conv2")(x))
    x = hk.avg_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    x = jax.nn.relu(hk.Conv2D(c3, 3, padding="SAME", w_init=lecun, name="conv3")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = hk.Linear(w["embedding_dim"], with_bias=False, w_init=lecun, name="embed")(x)
    return _l2_normalize(x)

  return hk.without_apply_rng(hk.transform(forward))


def flat_to_haiku(flat):
  return {
      "conv1": {"w": jnp.asarray(flat["conv1/kernel"]), "b": jnp.asarray(flat["conv1/bias"])},
      "conv2": {"w": jnp.asarray(flat["conv2/kernel"]), "b": jnp.asarray(flat["conv2/bias"])},
      "conv3": {"w": jnp.asarray(flat["conv3/kernel"]), "b": jnp.asarray(flat["conv3/bias"])},
      "embed": {"w": jnp.asarray(flat["embed/kernel"])},
  }


def haiku_to_flat(params):
  flat = {}
  for name in PARAM_NAMES:
    module, leaf = name.split("/")
    flat[name] = np.asarray(params[module]["w" if leaf == "kernel" else "b"], np.float32)
  return flat


def make_grad_fn(w, forward):
  """(params, batch, rng) -> grads of FedFace's positive-only loss (FedJAX's grad_fn contract)."""

  def loss(params, batch):
    x = (batch["x"].astype(jnp.float32) - 127.5) / 128.0
    emb = forward.apply(params, x)
    cos = jnp.sum(emb * _l2_normalize(batch["w"]), axis=-1)
    return jnp.mean(jnp.square(jax.nn.relu(POSITIVE_MARGIN - cos)))

  grad = jax.grad(loss)
  return lambda params, batch, rng: grad(params, batch)


def _max_diff(flat_a, flat_b):
  abs_d = max(float(np.max(np.abs(flat_a[k] - flat_b[k]))) for k in PARAM_NAMES)
  scale = max(float(np.max(np.abs(flat_b[k]))) for k in PARAM_NAMES)
  return abs_d, abs_d / max(scale, 1e-30)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workload", required=True, help="workload JSON (Workload.save)")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
  parser.add_argument("--reference", default=None,
                      help=".npz from fedface_jax.benchmark.workload.write_reference")
  parser.add_argument("--backend", default="jit", choices=("jit", "pmap", "debug"),
                      help="fedjax for_each_client backend (default: FedJAX's default, jit)")
  args = parser.parse_args(argv)
  if args.rounds < 1:
    raise ValueError("--rounds must be >= 1")

  w = load_workload(args.workload)
  t_setup = time.perf_counter()
  images, class_emb = synthetic_client_data(w)
  flat0 = init_flat_params(w)
  check = None
  ref = None
  if args.reference:
    if not os.path.isfile(args.reference):
      raise FileNotFoundError(f"reference not found: {args.reference}")
    ref = np.load(args.reference)
    ref_w = json.loads(str(ref["workload"]))
    ref_w["image_size"] = tuple(ref_w["image_size"])
    if ref_w != w:
      raise ValueError(f"reference workload {ref_w} != --workload {w}")
    ref_init = {k: ref[f"init/{k}"] for k in PARAM_NAMES}
    check = {"init_max_abs_diff": _max_diff(flat0, ref_init)[0]}
    flat0 = ref_init

  fedjax.set_for_each_client_backend(args.backend)
  forward = make_forward(w)
  n = w["images_per_client"]
  fd = fedjax.InMemoryFederatedData({
      f"client{c:06d}": {"x": images[c], "w": np.tile(class_emb[c], (n, 1))}
      for c in range(w["num_clients"])})
  client_ids = list(fd.client_ids())
  algorithm = fed_avg.federated_averaging(
      grad_fn=make_grad_fn(w, forward),
      client_optimizer=fedjax.optimizers.sgd(w["lr"]),
      # Server SGD with lr 1 on the weighted mean delta == weighted mean of client models.
      server_optimizer=fedjax.optimizers.sgd(1.0),
      client_batch_hparams=fedjax.ShuffleRepeatBatchHParams(
          batch_size=w["batch_size"], num_epochs=None, num_steps=w["local_steps"],
          skip_shuffle=True))
  state = algorithm.init(flat_to_haiku(flat0))
  setup_s = time.perf_counter() - t_setup

  def one_round(state, round_num):
    rngs = jax.random.split(jax.random.PRNGKey(round_num), len(client_ids))
    clients = [(cid, fd.get_client(cid), rng) for cid, rng in zip(client_ids, rngs)]
    state, _ = algorithm.apply(state, clients)
    jax.block_until_ready(state.params)
    return state

  t0 = time.perf_counter()
  state = one_round(state, 0)
  first_round_s = time.perf_counter() - t0
  if ref is not None:
    ref1 = {k: ref[f"round1/{k}"] for k in PARAM_NAMES}
    abs_d, rel_d = _max_diff(haiku_to_flat(state.params), ref1)
    check.update(round1_max_abs_diff=abs_d, round1_max_rel_diff=rel_d,
                 ok=bool(rel_d < 1e-4 and check["init_max_abs_diff"] == 0.0))

  round_s = []
  for r in range(1, args.rounds + 1):
    t0 = time.perf_counter()
    state = one_round(state, r)
    round_s.append(time.perf_counter() - t0)

  mean_s = sum(round_s) / len(round_s)
  images_per_round = w["num_clients"] * w["local_steps"] * w["batch_size"]
  out = {
      "peer": "fedjax",
      "version": metadata.version("fedjax"),
      "client_updates_per_s": w["num_clients"] / mean_s,
      "images_per_s": images_per_round / mean_s,
      "round_s": round_s,
      "first_round_s": first_round_s,
      "setup_s": setup_s,
      "jax": jax.__version__,
      "jaxlib": metadata.version("jaxlib"),
      "dm_haiku": metadata.version("dm-haiku"),
      "backend": args.backend,
      "devices": [str(d) for d in jax.devices()],
      "python": platform.python_version(),
      "cpu_count": os.cpu_count(),
      "workload": {**w, "image_size": list(w["image_size"])},
  }
  if check is not None:
    out["check"] = check
  print(json.dumps(out), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
