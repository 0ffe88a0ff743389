"""FedJAX side of the throughput benchmark: the shared workload with FedJAX's own FedAvg.

Why this script exists: our engine's client-updates/s only means something next to a peer
framework running the same workload. This runs `fedface_jax/benchmark/workload.py`'s workload
(same CNN, same data, same positive-only loss, same SGD steps, same FedAvg weights) through the
unmodified FedJAX 0.0.17 machinery: `InMemoryFederatedData` -> `ClientDataset.shuffle_repeat_batch`
-> `fedjax.algorithms.fed_avg.federated_averaging` (whose clients run through `for_each_client`,
default `jit` backend: a Python loop over clients and batches of jitted steps).

It runs in `.peer_venvs/fedjax` (scripts/setup_peer_venvs.sh) and cannot import fedface_jax,
so `_common.py` (shared with the other peer) re-implements `synthetic_client_data` /
`init_flat_params` (NumPy only). `--reference` (an .npz from `workload.write_reference`) checks
both that they match and that one FedJAX round gives our reference round's params.

Usage:
  .peer_venvs/fedjax/bin/python scripts/peers/fedjax_bench.py --workload w.json [--rounds 3]
      [--reference ref.npz] [--backend jit]
Prints one JSON line on stdout (see scripts/peers/README.md).
"""

import argparse
import os
import sys
import time
import warnings
from importlib import metadata

warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # pylint: disable=g-import-not-at-top

# ---- Workload and data: scripts/peers/_common.py ----------------------------------------------
from _common import add_common_args  # pylint: disable=g-import-not-at-top
from _common import BENCH_MODELS  # pylint: disable=g-import-not-at-top
from _common import check_round1  # pylint: disable=g-import-not-at-top
from _common import load_inputs  # pylint: disable=g-import-not-at-top
from _common import print_result  # pylint: disable=g-import-not-at-top
from _common import NORM_EPS  # pylint: disable=g-import-not-at-top
from _common import PARAM_NAMES  # pylint: disable=g-import-not-at-top
from _common import POSITIVE_MARGIN  # pylint: disable=g-import-not-at-top
from _common import throughput  # pylint: disable=g-import-not-at-top


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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_args(parser)
  parser.add_argument("--backend", default="jit", choices=("jit", "pmap", "debug"),
                      help="fedjax for_each_client backend (default: FedJAX's default, jit)")
  args = parser.parse_args(argv)

  t_setup = time.perf_counter()
  w, images, class_emb, flat0, ref, check = load_inputs(args)

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
    check_round1(check, ref, haiku_to_flat(state.params))

  round_s = []
  for r in range(1, args.rounds + 1):
    t0 = time.perf_counter()
    state = one_round(state, r)
    round_s.append(time.perf_counter() - t0)

  out = {
      "peer": "fedjax",
      "version": metadata.version("fedjax"),
      **throughput(w, round_s),
      "round_s": round_s,
      "first_round_s": first_round_s,
      "setup_s": setup_s,
      "jax": jax.__version__,
      "jaxlib": metadata.version("jaxlib"),
      "dm_haiku": metadata.version("dm-haiku"),
      "backend": args.backend,
      "devices": [str(d) for d in jax.devices()],
      "cpu_count": os.cpu_count(),
  }
  print_result(out, w, check)
  return 0


if __name__ == "__main__":
  sys.exit(main())
