"""The server's spreadout step moves a realistic class table, with either reduction.

"Realistic": mean features of a pretrained face model are not isotropic; they
share a common direction, so many pairs sit above the 0.3 margin (measured
on the synthetic demo: about a fifth of pairs). The table here is built the
same way: a shared component plus per-identity noise.
"""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from experiments import common as config_common
from fedface_jax import optim
from fedface_jax import sharding as sh
from fedface_jax.federated import rounds

ROWS, DIM, QUERIES = 150, 32, 30


def _table(seed=0, shared=0.55):
  rng = np.random.default_rng(seed)
  common = rng.normal(size=DIM)
  common /= np.linalg.norm(common)
  noise = rng.normal(size=(ROWS, DIM)) / np.sqrt(DIM)
  rows = shared * common + np.sqrt(1 - shared ** 2) * noise
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _spread_cfg(reduction, enabled=True):
  return mlc.ConfigDict(dict(
      enabled=enabled, margin=0.3, weight=1.0, reduction=reduction, steps=10, block_size=64,
      optimizer=config_common.optimizer("momentum", 0.1, momentum=0.9)))


def _run(reduction, mesh_shape=(1, 1), enabled=True):
  cfg = _spread_cfg(reduction, enabled)
  mesh = sh.make_mesh(*mesh_shape, devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  table = np.zeros((sh.padded_num_classes(ROWS, mesh), DIM), np.float32)
  table[:ROWS] = _table()
  spreadout = rounds.make_spreadout(cfg, mesh, optim.create_optimizer(cfg.optimizer, 1), ROWS)
  ids = jnp.asarray(np.r_[np.arange(0, ROWS, ROWS // QUERIES)[:QUERIES], [0, 0]])
  real = jnp.arange(ids.shape[0]) < QUERIES      # two padding slots
  new_table, loss, stats = jax.jit(spreadout)(sh.put_table(table, mesh), ids, real)
  return np.asarray(new_table), float(loss), jax.device_get(stats)


def test_row_sum_halves_violations_in_ten_steps_pair_mean_barely_moves():
  _, _, row_sum = _run("row_sum")
  _, _, pair_mean = _run("pair_mean")
  before = float(row_sum["spreadout_violations_before"])
  assert before > 0.1                       # the table starts crowded
  assert float(pair_mean["spreadout_violations_before"]) == before
  assert float(row_sum["spreadout_violations_after"]) <= 0.5 * before, row_sum
  # The mean over Q (C - 1) pairs divides each row's push by ~C: almost inert.
  assert float(pair_mean["spreadout_violations_after"]) >= 0.9 * before, pair_mean
  assert float(row_sum["spreadout_max_cos_after"]) < float(row_sum["spreadout_max_cos_before"])


def test_disabled_spreadout_leaves_the_table_and_still_reports():
  table, loss, stats = _run("row_sum", enabled=False)
  np.testing.assert_array_equal(table[:ROWS], _table().astype(np.float32))
  assert loss == 0.0
  assert float(stats["spreadout_violations_after"]) == float(stats["spreadout_violations_before"])


@pytest.mark.parametrize("mesh_shape", [(2, 4), (1, 8)])
def test_sharded_table_gives_the_same_step(mesh_shape):
  """150 rows do not split over 4 or 8 shards: padding rows must stay out of it."""
  t1, l1, s1 = _run("row_sum")
  t8, l8, s8 = _run("row_sum", mesh_shape)
  np.testing.assert_allclose(t8[:ROWS], t1[:ROWS], rtol=1e-4, atol=1e-5)
  assert not np.any(t8[ROWS:])
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for k in s1:
    np.testing.assert_allclose(s8[k], s1[k], rtol=1e-5, err_msg=k)


def test_unknown_reduction_is_an_error():
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  with pytest.raises(ValueError, match="reduction"):
    rounds.make_spreadout(_spread_cfg("sum"), mesh, None, ROWS)
