"""The compiled FedFace round: device-count invariance, sampling, math (NaN/Inf exclusion:
test_federated_nonfinite.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from fedface_jax import losses
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import run as run_lib
from fedface_jax.federated import client_data
from tests import federated_fixtures as ff


def test_sampling_is_deterministic_and_without_replacement():
  a = client_data.sample_clients(3, 7, 100, 10)
  b = client_data.sample_clients(3, 7, 100, 10)
  c = client_data.sample_clients(3, 8, 100, 10)
  np.testing.assert_array_equal(a, b)
  assert len(set(a)) == 10 and not np.array_equal(a, c)
  with pytest.raises(ValueError):
    client_data.sample_clients(0, 0, 5, 6)


def test_clients_with_too_few_images_are_dropped_and_counted():
  clients = client_data.FederatedClients(ff.tiny_faces(), min_images=2, max_images=4)
  assert clients.num_dropped == 1 and clients.num_clients == 11
  data = clients.round_data(np.array([0, 1]))
  np.testing.assert_array_equal(data.num_images, [3, 4])  # capped at max_images
  assert not data.images[0, 3:].any()                      # padding slots are zero


@pytest.mark.parametrize("method", ["fedface", "fedaws"])
def test_one_vs_eight_devices_same_round(method):
  cfg = ff.tiny_cfg(method)
  devices = jax.devices()
  assert len(devices) >= 8, "tests/conftest.py should force 8 CPU devices"
  s1, m1, _ = ff.run_rounds(sh.make_mesh(1, 1, devices[:1]), cfg)
  s8, m8, _ = ff.run_rounds(sh.make_mesh(4, 2, devices[:8]), cfg)
  n = 11  # clients; the 2-shard table has one padding row more
  s1["table"], s8["table"] = s1["table"][:n], s8["table"][:n]
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
  assert m1[-1]["clients_valid"] == m8[-1]["clients_valid"] == 8
  # The round really moved the model and the class table.
  assert float(m1[-1]["update_norm"]) > 0


def test_fedavg_round_equals_weighted_mean_of_client_models():
  """Server SGD(lr=1) on the weighted mean delta is plain FedAvg."""
  cfg = ff.tiny_cfg("fedface_nosp")
  model, params0, algo, state = ff.initialised(cfg)
  table0 = np.asarray(state["table"])
  state1, _, ids = algo.apply(jax.tree.map(jnp.copy, state), 0)
  # Re-run each client alone with the same update function and average by hand.
  from fedface_jax.federated import client_update as cu  # pylint: disable=g-import-not-at-top
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  upd = jax.jit(cu.make_client_update(apply_fn, cfg.client, algo.clients.max_images))
  data = algo.clients.round_data(ids)
  round_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 0)
  total, weights = None, data.num_images.astype(np.float64)
  for k, c in enumerate(ids):
    delta, _, _ = upd(params0, table0[c], data.images[k], data.num_images[k],
                      jax.random.fold_in(round_key, c))
    contrib = jax.tree.map(lambda d: np.asarray(d, np.float64) * weights[k], delta)
    total = contrib if total is None else jax.tree.map(np.add, total, contrib)
  expected = jax.tree.map(lambda p, t: np.asarray(p) + t / weights.sum(), params0, total)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state1["params"])):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-6)


def test_mean_feature_init_and_spreadout_lowers_loss():
  cfg = ff.tiny_cfg("fedface", spread_weight=1.0, spread_steps=5)
  model, params0, algo, state = ff.initialised(cfg, sh.make_mesh(1, 2, jax.devices()[:2]))
  table = np.asarray(state["table"])[:algo.clients.num_clients]
  # Row c is the normalised mean feature of client c's own images.
  imgs = algo.clients.client_images(4)
  emb = np.asarray(model.apply({"params": params0}, models.preprocess(imgs)))
  mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
  np.testing.assert_allclose(table[4], mean, rtol=1e-4, atol=1e-5)
  before = float(losses.spreadout_loss(jnp.asarray(table)))
  state, _, _ = algo.apply(state, 0)
  after = float(losses.spreadout_loss(state["table"][:algo.clients.num_clients]))
  assert after < before


def test_num_class_rows_sizes_the_table_for_a_larger_population():
  """The table can hold rows for clients beyond the dataset; fewer rows than clients is an error."""
  mesh = sh.make_mesh(1, 2, jax.devices()[:2])
  faces = ff.tiny_faces()   # 11 clients after dropping one
  cfg = ff.tiny_cfg()
  model = ff.tiny_model()
  assert run_lib.build_run(cfg, model, faces, mesh).abstract_state["table"].shape == (12, 16)
  cfg.num_class_rows = 1000
  assert run_lib.build_run(cfg, model, faces, mesh).abstract_state["table"].shape == (1000, 16)
  cfg.num_class_rows = 10
  with pytest.raises(ValueError, match="num_class_rows=10 < 11 clients"):
    run_lib.build_run(cfg, model, faces, mesh)


def test_unroll_factor_settings():
  from fedface_jax.federated import loops  # pylint: disable=g-import-not-at-top
  assert loops.unroll_factor("off", 5) == 1
  assert loops.unroll_factor("on", 5) == 5
  assert loops.unroll_factor("on", 100, loops.MAX_CHUNK_UNROLL) == loops.MAX_CHUNK_UNROLL
  with pytest.raises(ValueError, match="unroll_loops"):
    loops.unroll_factor("auto", 5)


def _mean_features(model, params, clients, ids):
  out = []
  for c in ids:
    emb = np.asarray(model.apply({"params": params}, models.preprocess(clients.client_images(c))))
    out.append(emb.mean(0) / np.linalg.norm(emb.mean(0)))
  return np.stack(out)


@pytest.mark.parametrize("mode", ["frozen", "reestimate", "client_trained"])
def test_class_embedding_modes(mode):
  """frozen: rows stay theta_0's; reestimate: a participant's row becomes its mean feature
  under the global model it received (theta_0 in round 1, whatever the table held before);
  client_trained: the row is trained on the phone and uploaded."""
  cfg = ff.tiny_cfg("fedface_nosp")
  cfg.class_embedding = mode
  model, params0, algo, state = ff.initialised(cfg)
  n = algo.clients.num_clients
  # A table that is not theta_0's mean features, so re-estimation visibly replaces it.
  table0 = np.asarray(state["table"]) + 0.5
  state["table"] = sh.put_table(table0, algo.mesh)
  state, metrics, ids = algo.apply(state, 0)
  table1 = np.asarray(state["table"])[:n]
  others = np.setdiff1d(np.arange(n), ids)
  np.testing.assert_array_equal(table1[others], table0[others])   # absent clients: untouched
  if mode == "frozen":
    np.testing.assert_array_equal(table1[ids], table0[ids])
  elif mode == "reestimate":
    np.testing.assert_allclose(table1[ids], _mean_features(model, params0, algo.clients, ids),
                               rtol=1e-4, atol=1e-5)
  else:
    moved = np.abs(table1[ids] - table0[ids]).max(axis=1)
    assert np.all(moved > 1e-6)
  assert 0.0 <= float(metrics["client_inside_margin"]) <= 1.0


def test_unknown_class_embedding_and_retired_key_are_errors():
  cfg = common.federated_section(method="fedface")
  cfg.class_embedding = "trained"
  with pytest.raises(ValueError, match="class_embedding"):
    alg_lib.apply_method(cfg)
  cfg = common.federated_section(method="fedface")
  cfg.client.train_class_embedding = True
  with pytest.raises(ValueError, match="replaced by federated.class_embedding"):
    alg_lib.apply_method(cfg)


def test_public_negatives_are_public_mean_features_and_change_the_client_loss():
  faces = ff.tiny_faces()
  public = ff.tiny_faces(num_ids=6, per_id=3, seed=5)
  model = ff.tiny_model()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  runs = {}
  for enabled in (False, True):
    cfg = ff.tiny_cfg("fedface_nosp")
    cfg.client.public_negatives.enabled = enabled
    algo = run_lib.build_run(cfg, model, faces, mesh, public_faces=public)
    state = algo.init(params0, jax.random.key(1))
    runs[enabled] = (algo, state) + algo.apply(jax.tree.map(jnp.copy, state), 0)[:2]
  algo, state, _, _ = runs[True]
  assert "public" not in runs[False][1]
  pub_clients = client_data.FederatedClients(public, 1, 32)
  np.testing.assert_allclose(
      np.asarray(state["public"]),
      _mean_features(model, params0, pub_clients, range(pub_clients.num_clients)),
      rtol=1e-4, atol=1e-5)
  # CosFace over {own} + public rows vs the positive-only hinge: a different objective.
  loss_pub, loss_pos = (float(runs[e][3]["client_loss_first"]) for e in (True, False))
  assert np.isfinite(loss_pub) and abs(loss_pub - loss_pos) > 1e-3
  with pytest.raises(ValueError, match="public"):
    run_lib.build_run(cfg, model, faces, mesh)
