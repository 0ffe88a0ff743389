"""The bare jitted-step loop in plain JAX, run under any JAX version (issue 14's fairness split).

Why this script exists: the FedJAX peer runs in its own venv with JAX 0.4.35, ours with the
project's JAX, so "ours ÷ FedJAX" mixes the engine's own advantage with XLA's progress between
the two versions. This script is the same bare loop (a Python loop over clients and local steps
of one jitted SGD step, FedJAX's `jit` backend without FedJAX) written with `jax.lax` and
`jax.numpy` only, so it runs unchanged in the FedJAX venv and in ours:

  bare loop (ours) ÷ bare loop (FedJAX venv)   = the JAX/XLA version share
  bare loop (FedJAX venv) ÷ FedJAX              = FedJAX's framework overhead
  engine ÷ bare loop (ours)                     = the engine's own advantage at equal JAX

It cannot import fedface_jax (the FedJAX venv lacks it), so the workload, data and init come
from `_common.py`, and the model is the benchmark CNN written out in `jax.lax`. `--reference`
checks bit-equal init and round-1 params against our reference round, like every peer.

Usage:
  <venv>/bin/python scripts/peers/bare_loop_bench.py --workload w.json [--rounds 3]
      [--reference ref.npz]
Prints one JSON line on stdout (see scripts/peers/README.md).
"""

import argparse
import os
import sys
import time
from importlib import metadata

import numpy as np

from _common import add_common_args  # pylint: disable=g-import-not-at-top
from _common import batch_indices  # pylint: disable=g-import-not-at-top
from _common import check_round1  # pylint: disable=g-import-not-at-top
from _common import load_inputs  # pylint: disable=g-import-not-at-top
from _common import print_result  # pylint: disable=g-import-not-at-top
from _common import NORM_EPS  # pylint: disable=g-import-not-at-top
from _common import PARAM_NAMES  # pylint: disable=g-import-not-at-top
from _common import POSITIVE_MARGIN  # pylint: disable=g-import-not-at-top
from _common import throughput  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def _conv(x, kernel, bias):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y + bias)


def _avg_pool2(x):
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  return s / 4.0


def forward(p, images_u8):
  """The benchmark CNN (workload.BenchCNN): 3 conv+relu (2 avg-pools), mean, linear, L2."""
  x = (images_u8.astype(jnp.float32) - 127.5) / 128.0
  x = _avg_pool2(_conv(x, p["conv1/kernel"], p["conv1/bias"]))
  x = _avg_pool2(_conv(x, p["conv2/kernel"], p["conv2/bias"]))
  x = _conv(x, p["conv3/kernel"], p["conv3/bias"])
  return _l2_normalize(jnp.mean(x, axis=(1, 2)) @ p["embed/kernel"])


def make_step(lr):
  """jit of one SGD step of FedFace's positive-only loss (one call per local step)."""

  def loss(p, images_u8, class_embedding):
    cos = forward(p, images_u8) @ _l2_normalize(class_embedding)
    return jnp.mean(jnp.square(jax.nn.relu(POSITIVE_MARGIN - cos)))

  def step(p, images_u8, class_embedding):
    g = jax.grad(loss)(p, images_u8, class_embedding)
    return {k: p[k] - lr * g[k] for k in p}
  return jax.jit(step)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_args(parser)
  args = parser.parse_args(argv)

  t_setup = time.perf_counter()
  w, images, class_emb, flat0, ref, check = load_inputs(args)
  step = make_step(w["lr"])
  idx = batch_indices(w)
  batches = [[jnp.asarray(images[c][i]) for i in idx] for c in range(w["num_clients"])]
  embs = [jnp.asarray(class_emb[c]) for c in range(w["num_clients"])]
  # Every client holds images_per_client images, so FedAvg's image-count weights are equal.
  weight = 1.0 / w["num_clients"]
  params = {k: jnp.asarray(v) for k, v in flat0.items()}
  setup_s = time.perf_counter() - t_setup

  def one_round(server):
    acc = {k: jnp.zeros_like(v) for k, v in server.items()}
    for c in range(w["num_clients"]):
      p = server
      for b in batches[c]:
        p = step(p, b, embs[c])
      acc = {k: acc[k] + weight * p[k] for k in acc}
    jax.block_until_ready(acc)
    return acc

  t0 = time.perf_counter()
  params = one_round(params)
  first_round_s = time.perf_counter() - t0
  if ref is not None:
    check_round1(check, ref, {k: np.asarray(params[k], np.float32) for k in PARAM_NAMES})

  round_s = []
  for _ in range(args.rounds):
    t0 = time.perf_counter()
    params = one_round(params)
    round_s.append(time.perf_counter() - t0)

  out = {
      "peer": "bare_loop",
      "version": "scripts/peers/bare_loop_bench.py",
      **throughput(w, round_s),
      "round_s": round_s,
      "first_round_s": first_round_s,
      "setup_s": setup_s,
      "jax": jax.__version__,
      "jaxlib": metadata.version("jaxlib"),
      "devices": [str(d) for d in jax.devices()],
      "executable": sys.executable,
      "cpu_count": os.cpu_count(),
  }
  print_result(out, w, check)
  return 0


if __name__ == "__main__":
  sys.exit(main())
