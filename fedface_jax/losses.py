"""Margin losses for face embeddings and FedFace's client / server objectives, as pure functions.

Pure `jnp` functions of (embeddings, class weights, labels) rather than modules, so that the same
code serves centralised pretraining, the per-client loss under `jax.vmap`, the server's spreadout
step and the class-sharded CosFace in `sharding.py` (which reuses the `*_logits` helpers on its
shard of cosines).

Conventions (see docs/FEDFACE.md 2.1 and 5.5):
* Embeddings are expected L2-normalised (the models do it), class weights are raw; both are
  (re-)normalised here. Re-normalising a unit vector is the identity, and its Jacobian is the same
  tangent projection the model's own normalisation already applied, so callers lose nothing, and
  un-normalised inputs cannot silently give wrong cosines. FedFace's TF code normalises both as
  well.
* Everything is computed in float32, and cosine matmuls use `Precision.HIGHEST`: at scale 64 a
  reduced-precision (bf16/TF32) cosine error of 1e-3 is a 0.06 logit error, comparable to what the
  margin is trying to teach. The class head is a small fraction of a step's FLOPs.
* Losses return scalar means. `mask` arguments ([B] bool/0-1) drop padded examples from the mean; a
  batch with no valid example gives 0, never NaN.
* Labels must lie in [0, C); out-of-range labels cannot be checked under `jit` and give meaningless
  values.
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
# Floor for sin^2(theta) in ArcFace: sqrt has an infinite derivative at 0 (cos = +-1).
_ARCFACE_SIN2_FLOOR = 1e-12
# Stands in for -inf when a logit is excluded, so that logsumexp over an all-excluded row stays
# finite.
_EXCLUDED_LOGIT = -1e30


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-10) -> jax.Array:
  """Returns `x / ||x||` along `axis`, with `||x||^2` floored at `eps`.

  The one definition the models, losses and the sharded class table share. Flooring the squared
  norm (as `tf.nn.l2_normalize` does) keeps both the value and the gradient finite for an all-zero
  vector, e.g. a padded row of a class-embedding table.
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def _masked_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Mean of `values` [B] over the examples where `mask` is true (all of them when None)."""
  if mask is None:
    return jnp.mean(values)
  weights = jnp.asarray(mask).astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy [B] with integer labels."""
  target = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  return jax.nn.logsumexp(logits, axis=-1) - target


def cosine_logits(embeddings: jax.Array, class_weights: jax.Array) -> jax.Array:
  """Cosines `[B, C]` between embeddings `[B, D]` and the rows of `class_weights` `[C, D]`.

  Both inputs are L2-normalised here (rows of `class_weights`; embeddings again, see module
  docstring).
  """
  e = l2_normalize(embeddings.astype(jnp.float32))
  w = l2_normalize(class_weights.astype(jnp.float32))
  return jnp.matmul(e, w.T, precision=_HIGHEST)


def cosface_logits(cosines: jax.Array, labels: jax.Array, scale: float = 64.0,
                   margin: float = 0.35) -> jax.Array:
  """CosFace logits `s * (cos_j - m [j = y])` from cosines `[B, C]`.

  A label outside [0, C) leaves its row without margin (one-hot of zeros), which is what a class
  shard needs for examples whose class lives on another shard (pass `labels - shard_offset`).
  """
  one_hot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=cosines.dtype)
  return scale * (cosines - margin * one_hot)


def arcface_target(cos_y: jax.Array, margin: float = 0.5) -> jax.Array:
  """ArcFace's target cosine: cos(theta + m); cos(theta) - m sin(pi - m) if theta >= pi - m.

  The fallback (insightface's `easy_margin=False` branch) keeps the target logit monotonically
  decreasing in theta once theta + m would pass pi. sin(theta) = sqrt(max(1 - cos^2, 1e-12)): finite
  value and gradient at cos = +-1 (the floor's gradient is 0 there, leaving d/dcos = cos m), and an
  error of at most 1e-6 * sin m elsewhere.
  """
  cos_m, sin_m = math.cos(margin), math.sin(margin)
  threshold = math.cos(math.pi - margin)
  fallback_shift = math.sin(math.pi - margin) * margin
  sin_y = jnp.sqrt(jnp.maximum(1.0 - jnp.square(cos_y), _ARCFACE_SIN2_FLOOR))
  cos_y_plus_m = cos_y * cos_m - sin_y * sin_m
  return jnp.where(cos_y > threshold, cos_y_plus_m, cos_y - fallback_shift)


def arcface_logits(cosines: jax.Array, labels: jax.Array, scale: float = 64.0,
                   margin: float = 0.5) -> jax.Array:
  """ArcFace logits: `s * cos_j` for j != y and `s * arcface_target(cos_y)` for j = y.

  Labels outside [0, C) leave their row unchanged (see `cosface_logits`).
  """
  one_hot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=jnp.bool_)
  target = arcface_target(cosines, margin)
  # Only the label column's target is used; computing it elementwise keeps the shard-friendly form
  # and costs one sqrt per logit.
  return scale * jnp.where(one_hot, target, cosines)


def cosface_loss(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
                 scale: float = 64.0, margin: float = 0.35,
                 mask: Optional[jax.Array] = None) -> jax.Array:
  """CosFace / LMCL: mean cross-entropy of `s * (cos_j - m [j = y])` (FEDFACE.md 5.5).

  Args:
    embeddings: `[B, D]` embeddings.
    class_weights: `[C, D]` raw class weights (rows normalised here).
    labels: `[B]` int class indices in [0, C).
    scale: s.
    margin: m (cosine units).
    mask: optional `[B]` validity mask for padded batches.

  Returns:
    Scalar mean loss over (valid) examples.
  """
  logits = cosface_logits(cosine_logits(embeddings, class_weights), labels, scale, margin)
  return _masked_mean(_cross_entropy(logits, labels), mask)


def arcface_loss(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
                 scale: float = 64.0, margin: float = 0.5,
                 mask: Optional[jax.Array] = None) -> jax.Array:
  """ArcFace: mean cross-entropy with target logit `s * cos(theta_y + m)` (see `arcface_target`).

  Arguments as `cosface_loss`; `margin` is in radians.
  """
  logits = arcface_logits(cosine_logits(embeddings, class_weights), labels, scale, margin)
  return _masked_mean(_cross_entropy(logits, labels), mask)


def am_softmax_hinge_loss(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
                          scale: float = 30.0, margin: float = 10.0,
                          mask: Optional[jax.Array] = None) -> jax.Array:
  """The AM-softmax variant in FedFace's baseline config (FEDFACE.md 2.1(c), `losses.am_softmax`).

  `mean_x max(0, m + logsumexp_{j != y}(s cos_j) - s cos_y)`: a hinge on the log-sum-exp of the
  negative logits, with the margin in *logit* units (m = 10 at s = 30 is a cosine gap of 1/3), not
  textbook CosFace. With a single class there are no negatives and the loss is 0.

  Arguments as `cosface_loss`.
  """
  cosines = cosine_logits(embeddings, class_weights)
  one_hot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=jnp.bool_)
  logits = scale * cosines
  positive = jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1)
  negative = jax.nn.logsumexp(jnp.where(one_hot, _EXCLUDED_LOGIT, logits), axis=-1)
  return _masked_mean(jax.nn.relu(margin + negative - positive), mask)


def accuracy(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
             mask: Optional[jax.Array] = None) -> jax.Array:
  """Fraction of (valid) examples whose nearest class by cosine is their label (no margin)."""
  predictions = jnp.argmax(cosine_logits(embeddings, class_weights), axis=-1)
  return _masked_mean((predictions == labels).astype(jnp.float32), mask)


def positive_only_loss(embeddings: jax.Array, class_embedding: jax.Array, margin: float = 0.9,
                       mask: Optional[jax.Array] = None) -> jax.Array:
  """FedFace's client loss: mean of `max(0, m - cos(e, w_c))^2` (FEDFACE.md 2.1(a)).

  A client only holds positives of its own identity, so it can only pull its embeddings towards its
  class embedding; the server's spreadout keeps the classes apart.

  Args:
    embeddings: `[B, D]` embeddings.
    class_embedding: `[D]` class embedding of the client (or `[B, D]`, one per example); normalised
      here.
    margin: m_pos (cosine units; FedFace code: 0.9).
    mask: optional `[B]` validity mask (padded client batches); the mean is over valid examples
      only.

  Returns:
    Scalar loss.
  """
  e = l2_normalize(embeddings.astype(jnp.float32))
  w = l2_normalize(class_embedding.astype(jnp.float32))
  cosines = jnp.sum(e * w, axis=-1)
  return _masked_mean(jnp.square(jax.nn.relu(margin - cosines)), mask)


def spreadout_loss(class_weights: jax.Array, margin: float = 0.3) -> jax.Array:
  """Dense spreadout regulariser: mean over ordered pairs i != j of `max(0, cos_ij - m)^2`.

  FEDFACE.md 2.1(b) (`spreadout_regularizer(margin=-0.3)` on row-normalised W). Materialises the
  C x C cosine matrix, so it is the reference for `spreadout_rows_loss` and fine for small C only.
  Fewer than two classes give 0.
  """
  w = l2_normalize(class_weights.astype(jnp.float32))
  num_classes = w.shape[0]
  cosines = jnp.matmul(w, w.T, precision=_HIGHEST)
  off_diagonal = ~jnp.eye(num_classes, dtype=jnp.bool_)
  hinge = jnp.where(off_diagonal, jnp.square(jax.nn.relu(cosines - margin)), 0.0)
  return jnp.sum(hinge) / max(num_classes * (num_classes - 1), 1)


class SpreadoutSums(NamedTuple):
  """Additive pieces of the spreadout over (query, row) pairs, so shards can `psum` (`pmax`) them.

  `hinge_sum` is the regulariser's numerator; how it is normalised (per pair, or per query row) is
  the caller's choice. `violations` (pairs with cos > margin) and `max_cos` explain what the
  regulariser sees: a table whose pairs all sit below the margin gets no push at all.
  """
  hinge_sum: jax.Array   # sum of max(0, cos - m)^2
  pairs: jax.Array       # number of (query, row) pairs compared
  violations: jax.Array  # pairs with cos > m
  max_cos: jax.Array     # largest cosine over the pairs (-inf when there are none)


def spreadout_rows_loss(query_rows: jax.Array,
                        all_rows: jax.Array,
                        query_ids: jax.Array,
                        margin: float = 0.3,
                        block_size: int = 1024,
                        row_offset: int | jax.Array = 0,
                        query_mask: Optional[jax.Array] = None,
                        row_mask: Optional[jax.Array] = None) -> SpreadoutSums:
  """Blockwise spreadout of some query rows against all rows, as `SpreadoutSums`.

  The server regularises the class embeddings touched this round against the whole table. With C in
  the thousands to millions a `[Q, C]` (let alone `C x C`) cosine matrix is too big, so `all_rows`
  is visited in blocks of `block_size` rows with `lax.scan`; the largest intermediate is
  `[Q, block]`, and the block body is rematerialised (`jax.checkpoint`) so reverse mode does not
  store one per block.

  Convention: ordered pairs (q, j) with q a query and j any row of `all_rows` other than q itself
  (identified by id: `query_ids[q] != row_offset + j`), contributing `max(0, cos_qj - m)^2`. Two
  queries contribute both (q1, q2) and (q2, q1), as in the dense formula. Hence with
  `query_rows = all_rows`, `query_ids = arange(C)`: `sum / count == spreadout_loss(all_rows)` and
  `count == C (C - 1)`. `sum` is not divided by anything, so shards of the table can each call this
  on their rows (with their `row_offset`) and `psum` the sums (`pmax` the max); the mean over pairs
  is `sum / max(count, 1)`.

  Gradients flow to both `query_rows` and `all_rows`; when the queries are gathered from the table
  (`W[ids]`) inside the differentiated function, the table gradient is the total one.

  Args:
    query_rows: `[Q, D]` raw rows (normalised here).
    all_rows: `[C, D]` raw rows (normalised here); may be one shard of a larger table.
    query_ids: `[Q]` int global row index of each query (its self-pair is excluded). An id that is
      not in `all_rows` (e.g. another shard's) simply excludes nothing.
    margin: cosine margin m.
    block_size: rows of `all_rows` per scan step (clipped to C; C is zero-padded to a multiple).
    row_offset: global index of `all_rows[0]` (shard offset); may be traced.
    query_mask: optional `[Q]` validity mask (padded query lists).
    row_mask: optional `[C]` validity mask (padded table rows).

  Returns:
    `SpreadoutSums` of float32 scalars: the summed hinge, the number of pairs and of violating
    pairs (counts exact below 2^24), and the largest cosine (no gradient).
  """
  if query_rows.ndim != 2 or all_rows.ndim != 2 or query_rows.shape[1] != all_rows.shape[1]:
    raise ValueError(f"need query_rows [Q, D] and all_rows [C, D], got {query_rows.shape} and "
                     f"{all_rows.shape}")
  if query_ids.shape != query_rows.shape[:1]:
    raise ValueError(f"query_ids must be [Q]={query_rows.shape[:1]}, got {query_ids.shape}")
  if block_size < 1:
    raise ValueError(f"block_size must be >= 1, got {block_size}")
  num_rows, dim = all_rows.shape
  block = min(block_size, max(num_rows, 1))
  num_blocks = -(-num_rows // block)
  padded = num_blocks * block

  queries = l2_normalize(query_rows.astype(jnp.float32))
  query_ids = query_ids.astype(jnp.int32)
  query_valid = (jnp.ones(query_ids.shape, jnp.bool_) if query_mask is None
                 else jnp.asarray(query_mask).astype(jnp.bool_))
  row_valid = (jnp.ones((num_rows,), jnp.bool_) if row_mask is None
               else jnp.asarray(row_mask).astype(jnp.bool_))

  rows = jnp.pad(all_rows.astype(jnp.float32), ((0, padded - num_rows), (0, 0)))
  row_valid = jnp.pad(row_valid, (0, padded - num_rows))  # padding rows are invalid
  row_ids = jnp.asarray(row_offset, jnp.int32) + jnp.arange(padded, dtype=jnp.int32)

  @jax.checkpoint
  def body(carry, xs):
    block_rows, block_valid, block_ids = xs
    cosines = jnp.matmul(queries, l2_normalize(block_rows).T, precision=_HIGHEST)  # [Q, block]
    pairs = (query_valid[:, None] & block_valid[None, :]
             & (query_ids[:, None] != block_ids[None, :]))
    hinge = jnp.where(pairs, jnp.square(jax.nn.relu(cosines - margin)), 0.0)
    plain = jax.lax.stop_gradient(cosines)
    step = SpreadoutSums(
        jnp.sum(hinge), jnp.sum(pairs, dtype=jnp.float32),
        jnp.sum(pairs & (plain > margin), dtype=jnp.float32),
        jnp.max(jnp.where(pairs, plain, -jnp.inf), initial=-jnp.inf))
    return SpreadoutSums(*(a + b for a, b in zip(carry[:3], step[:3])),
                         jnp.maximum(carry.max_cos, step.max_cos)), None

  zero = jnp.zeros((), jnp.float32)
  init = SpreadoutSums(zero, zero, zero, jnp.full((), -jnp.inf, jnp.float32))
  sums, _ = jax.lax.scan(
      body, init, (rows.reshape(num_blocks, block, dim), row_valid.reshape(num_blocks, block),
                   row_ids.reshape(num_blocks, block)))
  return sums
