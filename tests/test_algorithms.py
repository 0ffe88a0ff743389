"""The algorithm plug-ins (federated/algorithms/): FedProx and SCAFFOLD in both execution paths.

FedProx with mu = 0 must be FedAvg; with mu > 0 its clients are pulled back towards the global
model, so the round moves the backbone less. SCAFFOLD is checked against a numpy reference of
option II (Karimireddy et al. 2020) on a quadratic, over rounds with partial participation, so
the per-client control variates must be stored, fetched and written back by client id.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.data.faces import FaceArrays
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import client_data
from fedface_jax.federated import run as run_lib
from fedface_jax.federated.algorithms import scaffold

from tests import federated_fixtures as ff

# (mesh shape, execution): the host loop on one CPU device, the compiled round on 1 and 8.
PATHS = (((1, 1), "host_loop"), ((1, 1), "compiled"), ((4, 2), "compiled"))


def _mesh(shape):
  return sh.make_mesh(*shape, devices=jax.devices()[:shape[0] * shape[1]])


def _cfg(method, execution, mu=None, **kw):
  cfg = common.federated_section(
      method=method, num_rounds=3, clients_per_round=8, embedding_dim=16, local_steps=3,
      batch_size=3, clients_per_chunk=2, client_lr=0.05, **kw)
  cfg.execution = execution
  cfg.host_loop_streams = 2
  if mu is not None:
    cfg.fedprox = dict(mu=mu)
  return alg_lib.apply_method(cfg)


def _run(cfg, mesh_shape, rounds=2, model=None, faces=None, hooks=None):
  faces = ff.tiny_faces() if faces is None else faces
  model = ff.tiny_model() if model is None else model
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  run = run_lib.build_run(cfg, model, faces, _mesh(mesh_shape), hooks=hooks)
  state = run.init(params0, jax.random.key(1))
  metrics = []
  for r in range(rounds):
    state, m, _ = run.apply(state, r)
    metrics.append(jax.device_get(m))
  return jax.device_get(params0), jax.device_get(state), metrics, run


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _dist(a, b):
  return float(np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))))


@pytest.mark.parametrize("mesh_shape,execution", PATHS)
def test_fedprox_mu_zero_is_fedavg(mesh_shape, execution):
  _, avg, m_avg, _ = _run(_cfg("fedavg", execution), mesh_shape)
  _, prox, m_prox, _ = _run(_cfg("fedprox", execution, mu=0.0), mesh_shape)
  assert avg.keys() == prox.keys()              # FedProx keeps no extra state
  assert _max_diff(avg, prox) < 1e-6
  assert m_avg[-1]["clients_valid"] == m_prox[-1]["clients_valid"] == 8


def test_fedprox_pulls_clients_back_and_runs_the_same_in_both_paths():
  params0, avg, _, _ = _run(_cfg("fedavg", "host_loop"), (1, 1), rounds=1)
  _, prox, m_prox, _ = _run(_cfg("fedprox", "host_loop", mu=5.0), (1, 1), rounds=1)
  assert _max_diff(avg["params"], prox["params"]) > 1e-4
  assert _dist(prox["params"], params0) < 0.9 * _dist(avg["params"], params0)
  assert m_prox[0]["client_delta_norm"] > 0
  # The compiled round on 8 devices computes the same FedProx round.
  _, prox8, _, _ = _run(_cfg("fedprox", "compiled", mu=5.0), (4, 2), rounds=1)
  prox["table"], prox8["table"] = prox["table"][:11], prox8["table"][:11]
  assert _max_diff(prox, prox8) < 5e-5


def test_fedprox_and_scaffold_config_errors():
  with pytest.raises(ValueError, match="fedprox.mu"):
    _run(_cfg("fedprox", "host_loop"), (1, 1), rounds=0)
  with pytest.raises(ValueError, match="mu must be >= 0"):
    _run(_cfg("fedprox", "host_loop", mu=-1.0), (1, 1), rounds=0)
  with pytest.raises(ValueError, match="plain SGD"):
    _run(_cfg("scaffold", "host_loop"), (1, 1), rounds=0)     # momentum client optimiser
  cfg = _cfg("scaffold", "host_loop")
  cfg.client.optimizer.name = "sgd"
  cfg.dp.enabled = True
  with pytest.raises(ValueError, match="uploads more than the backbone delta"):
    _run(cfg, (1, 1), rounds=0)


# --- SCAFFOLD against numpy on a quadratic -------------------------------------------------

NUM_CLIENTS, PER_CLIENT, PER_ROUND, STEPS, LR, ROUNDS = 6, 4, 3, 3, 0.3, 4


class Point(nn.Module):
  """The model is one point x in R^3; the quadratic loss below never calls it."""

  @nn.compact
  def __call__(self, x):
    w = self.param("w", nn.initializers.normal(1.0), (3,))
    return jnp.broadcast_to(w, (x.shape[0], 3))


class QuadraticScaffold(scaffold.Scaffold):
  """SCAFFOLD on f_i(x) = mean_images 1/2 ||x - m(image)||^2, m = per-channel pixel mean."""

  def client_loss(self, default_loss):
    del default_loss

    def loss(trainable, x, public):
      del public
      targets = x.mean((1, 2))                               # [batch, 3]
      value = 0.5 * jnp.mean(jnp.sum((trainable["params"]["w"] - targets) ** 2, -1))
      return value, jnp.zeros((), jnp.float32)
    return loss


def _quadratic_faces():
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(NUM_CLIENTS), PER_CLIENT).astype(np.int32)
  # Client-dependent brightness: heterogeneous optima, so the control variates matter.
  base = rng.integers(0, 200, (NUM_CLIENTS, 1, 1, 3))[labels]
  images = (base + rng.integers(0, 56, (labels.size, 4, 4, 3))).astype(np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(NUM_CLIENTS)))


def _scaffold_reference(x0, faces, seed):
  """Option II in float64: K corrected SGD steps per client; c_i, c, x updates of the paper."""
  pre = (faces.images.astype(np.float64) - 127.5) / 128.0
  targets = np.stack([pre[faces.labels == i].mean((0, 1, 2)) for i in range(NUM_CLIENTS)])
  x, c = np.asarray(x0, np.float64), np.zeros(3)
  c_i = np.zeros((NUM_CLIENTS, 3))
  for r in range(ROUNDS):
    ids = client_data.sample_clients(seed, r, NUM_CLIENTS, PER_ROUND)
    deltas, dcs = [], []
    for i in ids:
      y = x.copy()
      for _ in range(STEPS):
        y = y - LR * ((y - targets[i]) - c_i[i] + c)
      new_ci = c_i[i] - c + (x - y) / (STEPS * LR)
      deltas.append(y - x)
      dcs.append(new_ci - c_i[i])
      c_i[i] = new_ci
    x = x + np.mean(deltas, 0)                      # server lr 1, equal image counts
    c = c + np.sum(dcs, 0) / NUM_CLIENTS
  return x, c, c_i


@pytest.mark.parametrize("mesh_shape,execution", PATHS)
def test_scaffold_matches_numpy_reference_on_a_quadratic(mesh_shape, execution):
  cfg = common.federated_section(
      method="scaffold", num_rounds=ROUNDS, clients_per_round=PER_ROUND, embedding_dim=4,
      local_steps=STEPS, batch_size=PER_CLIENT, clients_per_chunk=1, client_lr=LR)
  cfg.client.optimizer = common.optimizer("sgd", LR)
  cfg.client.augment_flip = False
  cfg.execution, cfg.host_loop_streams = execution, 2
  cfg = alg_lib.apply_method(cfg)
  faces = _quadratic_faces()
  params0, state, metrics, _ = _run(cfg, mesh_shape, rounds=ROUNDS, model=Point(),
                                    faces=faces, hooks=QuadraticScaffold(LR))
  x, c, c_i = _scaffold_reference(params0["w"], faces, cfg.seed)
  np.testing.assert_allclose(state["params"]["w"], x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["algo"]["c"]["w"], c, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["clients"]["c"]["w"][:NUM_CLIENTS], c_i, rtol=1e-5,
                             atol=1e-5)
  assert np.abs(c_i).max() > 0.05 and metrics[-1]["clients_valid"] == PER_ROUND
