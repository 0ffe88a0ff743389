"""A tiny federation the round tests share: random faces, a two-conv model, a config, a run.

Why a helper module: several test files exercise the same small federation (device counts, the
host loop, privacy, secure aggregation, the algorithm plug-ins); they import it from here rather
than from each other.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.data.faces import FaceArrays
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import run as run_lib


def tiny_faces(num_ids=12, per_id=5, size=16, seed=0):
  """Random images; identity 0 has one photo (dropped with min_images=2), identity 1 three."""
  rng = np.random.default_rng(seed)
  counts = np.full(num_ids, per_id)
  counts[0] = 1            # a client with one photo: dropped with min_images=2
  counts[1] = 3
  labels = np.repeat(np.arange(num_ids), counts).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


class TinyNet(nn.Module):
  """Two convs: the engine is under test, not the backbone; compiles fast."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    x = nn.Dense(16, use_bias=False)(x.mean((1, 2)))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def tiny_model():
  return TinyNet()


def tiny_cfg(method="fedface", **kw):
  """A small `federated` section: 3 rounds of 8 clients, 2 local steps of batch 3."""
  cfg = common.federated_section(
      method=method, num_rounds=3, clients_per_round=8, embedding_dim=16,
      local_steps=2, batch_size=3, clients_per_chunk=2, client_lr=0.05, **kw)
  return alg_lib.apply_method(cfg)


def run_rounds(mesh, cfg, rounds=2, poison=()):
  """(host state, per-round metrics, algorithm) after `rounds` rounds on `tiny_faces()`."""
  faces = tiny_faces()
  model = tiny_model()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  algo = run_lib.build_run(cfg, model, faces, mesh)
  state = algo.init(params0, jax.random.key(1))
  all_metrics = []
  for r in range(rounds):
    state, metrics, _ = algo.apply(state, r, poison_clients=poison)
    all_metrics.append(jax.device_get(metrics))
  return jax.device_get(state), all_metrics, algo


def initialised(cfg, mesh=None):
  """(model, theta_0, algorithm, initial state) on `tiny_faces()`; one device by default."""
  mesh = mesh or sh.make_mesh(1, 1, jax.devices()[:1])
  model = tiny_model()
  faces = tiny_faces()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  algo = run_lib.build_run(cfg, model, faces, mesh)
  return model, params0, algo, algo.init(params0, jax.random.key(1))
