"""Pairwise-mask secure aggregation: masks cancel in the sum, hide single updates,
and leave the federated round (hence what a curious client sees) unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.federated import run as run_lib
from fedface_jax.federated import secure_aggregation as sa
from tests import federated_fixtures as ff


def _updates(k=6, d=4000, scale=1e-3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(0, scale, (k, d)), jnp.float32)


def _corr(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return float(np.corrcoef(a, b)[0, 1])


def test_float_masks_cancel_and_hide_each_update():
  x = _updates()
  ids = jnp.array([3, 17, 5, 40, 2, 9])
  key = jax.random.key(0)
  masked = sa.mask_updates(x, ids, key)
  np.testing.assert_allclose(sa.secure_sum(x, ids, key), x.sum(0), rtol=0, atol=2e-6)
  for k in range(x.shape[0]):
    assert abs(_corr(masked[k], x[k])) < 0.05         # masked update ~ noise
    assert float(jnp.std(masked[k])) > 100 * float(jnp.std(x[k]))
  # Other seeds give other masks, same sum.
  other = sa.mask_updates(x, ids, jax.random.key(1))
  assert abs(_corr(masked[0], other[0])) < 0.05
  np.testing.assert_allclose(other.sum(0), x.sum(0), atol=2e-6)


def test_pairwise_masks_sum_to_zero_and_skip_padding():
  like = {"a": jnp.zeros((3, 5)), "b": jnp.zeros((7,))}
  participants = jnp.array([4, 1, 8, -1, -1])          # two padding slots
  key = jax.random.key(3)
  masks = jax.vmap(lambda c: sa.client_mask(key, c, participants, like))(participants)
  for leaf in jax.tree.leaves(masks):
    np.testing.assert_allclose(leaf.sum(0), 0.0, atol=1e-5)
    assert not np.any(np.asarray(leaf[3:]))             # padding: no mask
    assert np.all(np.abs(np.asarray(leaf[:3])) > 0)


def test_fixed_point_masks_cancel_exactly():
  x = _updates(k=5, d=3000, scale=0.01, seed=1)
  ids = jnp.array([0, 7, 3, 11, 5])
  key = jax.random.key(2)
  frac = 20
  total = sa.secure_sum_fixed_point(x, ids, key, frac_bits=frac)
  quantised = np.round(np.asarray(x) * 2.0 ** frac).astype(np.int64).sum(0) / 2.0 ** frac
  np.testing.assert_array_equal(np.asarray(total), quantised.astype(np.float32))
  np.testing.assert_allclose(total, x.sum(0), atol=5 * 2.0 ** -frac)
  masked = np.asarray(sa.masked_fixed_point(x, ids, key, frac_bits=frac))
  for k in range(x.shape[0]):
    assert abs(_corr(masked[k].astype(np.float64), x[k])) < 0.05
    # Uniform on Z_{2^32}: mean ~ 2^31.
    assert abs(masked[k].astype(np.float64).mean() / 2.0 ** 31 - 1) < 0.05
  with pytest.raises(ValueError, match="overflows"):
    sa.secure_sum_fixed_point(x * 1e5, ids, key, frac_bits=frac)


def _round(mesh, cfg, poison=()):
  faces = ff.tiny_faces()
  model = ff.tiny_model()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  algo = run_lib.build_run(cfg, model, faces, mesh)
  state = algo.init(params0, jax.random.key(1))
  state, metrics, _ = algo.apply(state, 0, poison_clients=poison)
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
def test_engine_round_with_secure_aggregation_equals_plain_round():
  """What every client receives, w_{t+1}, is the same with or without masking.

  Slow (two 8-device compiles); the default suite covers the engine's masking in
  tests/test_privacy.py (DP + SA on 8 devices == DP on 1 device).
  """
  mesh = sh.make_mesh(4, 2, jax.devices()[:8])
  plain = ff.tiny_cfg("fedface")
  masked = ff.tiny_cfg("fedface")
  masked.secure_aggregation = True
  # A NaN client: excluded from the average, but its masks must still cancel.
  bad = (5,)
  s_plain, m_plain = _round(mesh, plain, bad)
  s_sa, m_sa = _round(mesh, masked, bad)
  assert m_sa["clients_excluded"] == m_plain["clients_excluded"] == 1
  for a, b in zip(jax.tree.leaves(s_plain["params"]), jax.tree.leaves(s_sa["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)
  np.testing.assert_allclose(s_plain["table"], s_sa["table"], rtol=1e-4, atol=2e-6)
  assert float(m_sa["update_norm"]) > 0
