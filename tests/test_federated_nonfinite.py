"""Clients whose update has NaN or Inf are left out of the round, and only they are.

The expected model is computed here, independently of the round's own summation: every client
is re-run alone with the same client update, and the weighted mean is taken in float64 over
the valid clients only. The poisoned client's clean update is checked to be far from zero, so a
round that kept its weight (or its clean update) would fail, not pass by accident.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from fedface_jax.federated import client_data
from fedface_jax.federated import client_update as cu
from fedface_jax.federated import rounds
from tests import federated_fixtures as ff

_BAD_SLOT = 3  # Which of round 0's sampled clients is poisoned.


def _config(execution):
  cfg = ff.tiny_cfg("fedface_nosp")  # Server SGD(lr=1): the new params are theta_0 + mean delta.
  # With the default margin 0.9 most clients of this fixture start inside it (their row is their
  # own mean feature) and send an update of exactly 0: excluding one of them proves nothing.
  cfg.client.margin = 0.999
  cfg.execution = execution
  cfg.host_loop_streams = 2
  return cfg


def _poison_with(monkeypatch, value):
  """Makes a poisoned client's delta `value` (e.g. +Inf) instead of the built-in NaN.

  The real contribution function then sees that delta unchanged, through whichever loop runs the
  round (both build it with `rounds.make_client_contribution`)."""
  original = rounds.make_client_contribution

  def make(cfg):
    contribution = original(cfg)

    def poisoned(params, result, n, poison, *rest):
      delta = jax.tree.map(lambda d: jnp.where(poison, jnp.asarray(value, d.dtype), d),
                           result.delta)
      return contribution(params, result._replace(delta=delta), n, False, *rest)
    return poisoned

  monkeypatch.setattr(rounds, "make_client_contribution", make)


def _clean_deltas(cfg, model, params0, algo, state, ids):
  """Each sampled client's update run alone (float64), with its image count."""
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  upd = jax.jit(cu.make_client_update(apply_fn, cfg.client, algo.clients.max_images))
  data = algo.clients.round_data(ids)
  round_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 0)
  table0 = np.asarray(state["table"])
  deltas = []
  for k, c in enumerate(ids):
    delta, _, _ = upd(params0, table0[c], data.images[k], data.num_images[k],
                      jax.random.fold_in(round_key, c))
    deltas.append(jax.tree.map(lambda d: np.asarray(d, np.float64), delta))
  return deltas, data.num_images.astype(np.float64)


def _weighted_mean(params0, deltas, weights):
  total = jax.tree.map(lambda *ds: sum(w * d for w, d in zip(weights, ds)), *deltas)
  return jax.tree.map(lambda p, t: np.asarray(p, np.float64) + t / weights.sum(), params0, total)


def _max_abs_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _norm(tree):
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize("execution,value", [
    ("compiled", "builtin_nan"), ("compiled", np.inf), ("host_loop", "builtin_nan"),
    ("host_loop", -np.inf)])
def test_bad_client_excluded_equals_average_of_valid_clients(monkeypatch, execution, value):
  if value != "builtin_nan":
    _poison_with(monkeypatch, value)
  cfg = _config(execution)
  model, params0, algo, state = ff.initialised(cfg)
  ids = client_data.sample_clients(cfg.seed, 0, algo.clients.num_clients, cfg.clients_per_round)
  bad = int(ids[_BAD_SLOT])
  state1, metrics, round_ids = algo.apply(jax.tree.map(jnp.copy, state), 0, poison_clients=(bad,))
  np.testing.assert_array_equal(np.asarray(round_ids), ids)
  metrics = jax.device_get(metrics)

  deltas, weights = _clean_deltas(cfg, model, params0, algo, state, ids)
  keep = np.arange(len(ids)) != _BAD_SLOT
  expected = _weighted_mean(params0, [d for d, k in zip(deltas, keep) if k], weights[keep])
  with_bad = _weighted_mean(params0, deltas, weights)
  # The fixture can tell the two apart: the poisoned client's clean update is far from zero, and
  # keeping it would move the model by much more than the tolerance below.
  norms = [_norm(d) for d in deltas]
  assert min(norms) > 0 and norms[_BAD_SLOT] > 0.3 * np.mean(norms)
  atol = 1e-6
  assert _max_abs_diff(expected, with_bad) > 100 * atol

  got = jax.device_get(state1["params"])
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b, np.float64), a, rtol=1e-4, atol=atol)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state1)))
  assert metrics["clients_excluded"] == 1 and metrics["clients_valid"] == len(ids) - 1
  assert metrics["images"] == weights[keep].sum()


@pytest.mark.parametrize("method,execution", [
    ("fedface", "compiled"), ("fedaws", "compiled"), ("fedaws", "host_loop")])
def test_round_with_every_client_bad_leaves_the_model_unchanged(method, execution):
  """No usable update: params, class table and server optimiser state stay as they were (server
  momentum and the table's spreadout step included), and the metrics say why."""
  cfg = ff.tiny_cfg(method)
  cfg.execution = execution
  cfg.host_loop_streams = 2
  # FedAvgM: a state that could drift.
  cfg.server.optimizer = common.optimizer("momentum", 1.0, momentum=0.9)
  _, _, algo, state = ff.initialised(cfg)
  # Round 0 with all clients valid first, so that the server momentum is non-zero.
  state, _, _ = algo.apply(state, 0)
  before = jax.device_get(state)
  assert _norm(before["server_opt"]) > 0
  ids = client_data.sample_clients(cfg.seed, 1, algo.clients.num_clients, cfg.clients_per_round)
  after, metrics, _ = algo.apply(state, 1, poison_clients=tuple(int(c) for c in ids))
  after, metrics = jax.device_get((after, metrics))
  for key in ("params", "table", "server_opt"):
    for a, b in zip(jax.tree.leaves(before[key]), jax.tree.leaves(after[key])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=key)
  assert int(after["round"]) == int(before["round"]) + 1
  assert metrics["clients_valid"] == 0 and metrics["clients_excluded"] == len(ids)
  assert metrics["images"] == 0 and metrics["update_norm"] == 0
