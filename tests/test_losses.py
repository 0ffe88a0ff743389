"""Tests for fedface_jax.losses against hand-computed values on 2-D unit vectors of known angles."""

import math

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import losses


def unit(degrees):
  """2-D unit vector at the given angle (degrees)."""
  radians = math.radians(degrees)
  return [math.cos(radians), math.sin(radians)]


def arr(x):
  return jnp.asarray(x, jnp.float32)


def test_cosine_logits_normalises_class_rows():
  embeddings = arr([[1.0, 0.0], [0.0, 1.0]])
  class_weights = arr([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
  expected = [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 1 / math.sqrt(2), -1.0]]
  np.testing.assert_allclose(losses.cosine_logits(embeddings, class_weights), expected, atol=1e-6)


def test_cosface_hand_computed_small_scale():
  # s = 2, m = 0.5. Example 1 at 0 deg, label 0: cosines [1, 0] -> logits [1, 0].
  # Example 2 at 60 deg, label 1: cosines [0.5, sqrt(3)/2] -> logits [1, 2 (sqrt(3)/2 - 0.5)].
  embeddings = arr([unit(0), unit(60)])
  class_weights = arr([[3.0, 0.0], [0.0, 0.5]])
  labels = jnp.array([0, 1])
  loss1 = math.log(1 + math.exp(-1.0))
  target2 = 2 * (math.sqrt(3) / 2 - 0.5)
  loss2 = math.log(math.exp(1.0) + math.exp(target2)) - target2
  got = losses.cosface_loss(embeddings, class_weights, labels, scale=2.0, margin=0.5)
  np.testing.assert_allclose(got, (loss1 + loss2) / 2, rtol=1e-6)
  # The mask keeps only the second example.
  got = losses.cosface_loss(embeddings, class_weights, labels, scale=2.0, margin=0.5,
                            mask=jnp.array([False, True]))
  np.testing.assert_allclose(got, loss2, rtol=1e-6)


def test_cosface_defaults_wrong_class():
  # Defaults s = 64, m = 0.35; the embedding sits on the wrong class: logits [64 (0 - 0.35), 64].
  embeddings = arr([unit(0)])
  class_weights = arr([unit(90), unit(0)])
  got = losses.cosface_loss(embeddings, class_weights, jnp.array([0]))
  expected = 64 + 22.4 + math.log1p(math.exp(-86.4))
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_arcface_hand_computed_regular_branch():
  # Target at 60 deg, other class at 90 deg, s = 1, m = 0.5: logits [cos(pi/3 + 0.5), 0].
  embeddings = arr([unit(0)])
  class_weights = arr([unit(60), unit(90)])
  target = math.cos(math.pi / 3 + 0.5)
  expected = math.log(math.exp(target) + 1.0) - target
  got = losses.arcface_loss(embeddings, class_weights, jnp.array([0]), scale=1.0, margin=0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_arcface_fallback_branch():
  # theta_y = 170 deg: cos = -0.985 <= cos(pi - 0.5) = -0.878, so the target is cos - m sin(pi - m).
  embeddings = arr([unit(0)])
  class_weights = arr([unit(170), unit(90)])
  cos_y = math.cos(math.radians(170))
  assert cos_y <= math.cos(math.pi - 0.5)
  target = cos_y - 0.5 * math.sin(math.pi - 0.5)
  expected = math.log(math.exp(2 * target) + 1.0) - 2 * target
  got = losses.arcface_loss(embeddings, class_weights, jnp.array([0]), scale=2.0, margin=0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_arcface_defaults_on_target():
  # cos_y = 1 with defaults s = 64, m = 0.5: logits [64 cos(0.5), 0].
  embeddings = arr([unit(0)])
  class_weights = arr([unit(0), unit(90)])
  target = 64 * math.cos(0.5)
  expected = math.log1p(math.exp(-target))
  got = losses.arcface_loss(embeddings, class_weights, jnp.array([0]))
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-20)


@pytest.mark.parametrize("target_degrees", [0.0, 180.0])
def test_arcface_gradients_finite_at_cos_plus_minus_one(target_degrees):
  embeddings = arr([unit(0), unit(0)])
  class_weights = arr([unit(target_degrees), unit(90)])
  labels = jnp.array([0, 0])
  grads = jax.grad(losses.arcface_loss, argnums=(0, 1))(embeddings, class_weights, labels)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))
  # d target / d cos at cos = 1 is cos(m) (the sin floor contributes nothing).
  slope = jax.grad(losses.arcface_target)(jnp.float32(1.0), 0.5)
  np.testing.assert_allclose(slope, math.cos(0.5), rtol=1e-6)


def test_am_softmax_hinge_hand_computed():
  # s = 30, m = 10. Classes at 0, 90, 180 deg; embedding at 0 deg.
  embeddings = arr([unit(0), unit(0)])
  class_weights = arr([unit(0), unit(90), unit(180)])
  # label 0: 10 + logsumexp(0, -30) - 30 < 0 -> 0.
  # label 1: 10 + logsumexp(30, -30) - 0 = 40 + log1p(exp(-60)).
  expected = (0.0 + 40.0 + math.log1p(math.exp(-60))) / 2
  got = losses.am_softmax_hinge_loss(embeddings, class_weights, jnp.array([0, 1]))
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_am_softmax_hinge_small_scale():
  # s = 1, m = 1; embedding at 60 deg, label 0 at 0 deg, one negative at 90 deg (cos 30 deg).
  embeddings = arr([unit(60)])
  class_weights = arr([unit(0), unit(90)])
  expected = 1.0 + math.cos(math.radians(30)) - 0.5
  got = losses.am_softmax_hinge_loss(embeddings, class_weights, jnp.array([0]), scale=1.0,
                                     margin=1.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_am_softmax_hinge_single_class_is_zero_with_finite_grad():
  embeddings = arr([unit(30)])
  class_weights = arr([unit(0)])
  labels = jnp.array([0])
  assert float(losses.am_softmax_hinge_loss(embeddings, class_weights, labels)) == 0.0
  grad = jax.grad(losses.am_softmax_hinge_loss)(embeddings, class_weights, labels)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_accuracy():
  embeddings = arr([unit(0), unit(80), unit(100)])
  class_weights = arr([unit(0), unit(90)])
  np.testing.assert_allclose(losses.accuracy(embeddings, class_weights, jnp.array([0, 1, 0])),
                             2 / 3, rtol=1e-6)
  np.testing.assert_allclose(
      losses.accuracy(embeddings, class_weights, jnp.array([0, 1, 0]),
                      mask=jnp.array([1, 1, 0])), 1.0)


def test_positive_only_hand_computed_and_mask():
  # Embeddings at 0, 60, 90, 180 deg from the class: cosines 1, 0.5, 0, -1; m = 0.9.
  embeddings = arr([unit(0), unit(60), unit(90), unit(180)])
  class_embedding = arr([3.0, 0.0])  # not unit: normalised inside
  hinges = [0.0, 0.4**2, 0.9**2, 1.9**2]
  np.testing.assert_allclose(losses.positive_only_loss(embeddings, class_embedding),
                             sum(hinges) / 4, rtol=1e-6)
  mask = jnp.array([True, True, False, False])
  np.testing.assert_allclose(losses.positive_only_loss(embeddings, class_embedding, mask=mask),
                             (hinges[0] + hinges[1]) / 2, rtol=1e-6)
  empty = losses.positive_only_loss(embeddings, class_embedding, mask=jnp.zeros(4, bool))
  assert float(empty) == 0.0


def test_positive_only_vmaps_over_clients():
  key = jax.random.key(0)
  embeddings = jax.random.normal(key, (3, 5, 4))
  class_embeddings = jax.random.normal(jax.random.key(1), (3, 4))
  masks = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  batched = jax.jit(jax.vmap(losses.positive_only_loss, in_axes=(0, 0, None, 0)))(
      embeddings, class_embeddings, 0.9, masks)
  for k in range(3):
    np.testing.assert_allclose(
        batched[k],
        losses.positive_only_loss(embeddings[k], class_embeddings[k], mask=masks[k]), rtol=1e-5)


def test_spreadout_hand_computed():
  # Rows at 0, 60, 90, 180 deg. Pairs above m = 0.3: (0, 60) cos 0.5 and (60, 90) cos sqrt(3)/2.
  class_weights = arr([unit(0), unit(60), [0.0, 2.0], unit(180)])
  expected = 2 * (0.2**2 + (math.sqrt(3) / 2 - 0.3)**2) / 12
  np.testing.assert_allclose(losses.spreadout_loss(class_weights), expected, rtol=1e-6)
  assert float(losses.spreadout_loss(arr([unit(0)]))) == 0.0


def _dense_rows_reference(table, query_ids, margin):
  """sum_{q in ids} sum_{j != q} max(0, cos_qj - m)^2 with the full C x C matrix."""
  w = table / jnp.linalg.norm(table, axis=1, keepdims=True)
  cosines = jnp.matmul(w, w.T, precision=jax.lax.Precision.HIGHEST)[query_ids]
  not_self = jnp.arange(table.shape[0])[None, :] != query_ids[:, None]
  return jnp.sum(jnp.where(not_self, jnp.square(jax.nn.relu(cosines - margin)), 0.0))


def test_spreadout_rows_all_queries_equals_dense():
  table = jax.random.normal(jax.random.key(0), (37, 8))
  ids = jnp.arange(37)
  total, count, _, _ = losses.spreadout_rows_loss(table, table, ids, margin=0.3, block_size=5)
  assert float(count) == 37 * 36
  np.testing.assert_allclose(total / count, losses.spreadout_loss(table, 0.3), rtol=1e-5)
  # Gradients of the means agree too.
  g_rows = jax.grad(
      lambda w: jnp.divide(*losses.spreadout_rows_loss(w, w, ids, 0.3, block_size=5)[:2]))(table)
  g_dense = jax.grad(losses.spreadout_loss)(table, 0.3)
  np.testing.assert_allclose(g_rows, g_dense, rtol=1e-4, atol=1e-7)


def test_spreadout_rows_subset_sum_count_and_grad():
  table = jax.random.normal(jax.random.key(1), (37, 8))
  ids = jnp.array([3, 10, 36, 0])
  f_rows = lambda w: losses.spreadout_rows_loss(w[ids], w, ids, margin=0.1, block_size=8)[0]
  f_dense = lambda w: _dense_rows_reference(w, ids, 0.1)
  sums = losses.spreadout_rows_loss(table[ids], table, ids, margin=0.1, block_size=8)
  assert float(sums.pairs) == 4 * 36
  # Violations and the max cosine, against the dense [Q, C] matrix.
  w = table / jnp.linalg.norm(table, axis=1, keepdims=True)
  cos = np.array(w[ids] @ w.T)
  cos[np.arange(4), np.asarray(ids)] = -np.inf   # self-pairs are not pairs
  assert float(sums.violations) == np.sum(cos > 0.1) > 0
  np.testing.assert_allclose(float(sums.max_cos), cos.max(), rtol=1e-5)
  assert float(f_dense(table)) > 0
  np.testing.assert_allclose(jax.jit(f_rows)(table), f_dense(table), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(f_rows)(table), jax.grad(f_dense)(table), rtol=1e-4,
                             atol=1e-6)


def test_spreadout_rows_shards_and_masks_add_up():
  table = jax.random.normal(jax.random.key(2), (20, 6))
  ids = jnp.array([1, 12, 19])
  full_sum, full_count, full_viol, full_max = losses.spreadout_rows_loss(
      table[ids], table, ids, block_size=4)
  # Two shards of 10 rows with their offsets (the offset may be traced), summed as a psum would.
  shard = jax.jit(losses.spreadout_rows_loss, static_argnames=("block_size",))
  parts = [shard(table[ids], table[s:s + 10], ids, 0.3, block_size=4, row_offset=s)
           for s in (0, 10)]
  np.testing.assert_allclose(sum(p[0] for p in parts), full_sum, rtol=1e-5)
  assert float(sum(p[1] for p in parts)) == float(full_count) == 3 * 19
  assert float(sum(p.violations for p in parts)) == float(full_viol)
  np.testing.assert_allclose(float(max(p.max_cos for p in parts)), float(full_max), rtol=1e-6)
  # Padding a row and a query, then masking them out, changes nothing.
  padded_table = jnp.concatenate([table, jnp.ones((1, 6))])
  padded_ids = jnp.concatenate([ids, jnp.array([20])])
  got = losses.spreadout_rows_loss(
      padded_table[padded_ids], padded_table, padded_ids, block_size=4,
      query_mask=jnp.array([1, 1, 1, 0], bool), row_mask=jnp.arange(21) < 20)
  np.testing.assert_allclose(got[0], full_sum, rtol=1e-5)
  assert float(got[1]) == float(full_count)
  assert float(got.violations) == float(full_viol)
  np.testing.assert_allclose(float(got.max_cos), float(full_max), rtol=1e-6)


def _max_intermediate_size(jaxpr):
  """Largest number of elements of any value produced inside a (closed) jaxpr, recursively."""
  biggest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      biggest = max(biggest, int(np.prod(getattr(var.aval, "shape", ()))))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jex_core.ClosedJaxpr):
          biggest = max(biggest, _max_intermediate_size(sub.jaxpr))
        elif isinstance(sub, jex_core.Jaxpr):
          biggest = max(biggest, _max_intermediate_size(sub))
  return biggest


def test_spreadout_rows_never_materialises_query_by_table():
  num_rows, dim, num_queries, block = 1000, 4, 8, 64
  table = jnp.zeros((num_rows, dim))
  ids = jnp.arange(num_queries)
  fn = lambda w: losses.spreadout_rows_loss(w[ids], w, ids, block_size=block)[0]
  for traced in (fn, jax.grad(fn)):
    biggest = _max_intermediate_size(jax.make_jaxpr(traced)(table).jaxpr)
    # The padded table (1024 x 4) is the largest array; [Q, C] would be 8000 elements.
    assert biggest < num_queries * num_rows, biggest


def test_losses_jit_and_grad_finite():
  key1, key2 = jax.random.split(jax.random.key(3))
  embeddings = jax.random.normal(key1, (6, 16))
  embeddings = embeddings / jnp.linalg.norm(embeddings, axis=1, keepdims=True)
  class_weights = jax.random.normal(key2, (5, 16))
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  for fn in (losses.cosface_loss, losses.arcface_loss, losses.am_softmax_hinge_loss):
    value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(embeddings, class_weights,
                                                                    labels)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
