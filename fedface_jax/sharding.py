"""Device meshes and the class-embedding table sharded over devices.

Face recognition heads grow with the number of identities: 100k-1M rows of 512
floats. The table is therefore sharded row-wise over the "classes" mesh axis,
and every computation that touches it (CosFace logits, softmax, spreadout) runs
inside `jax.shard_map`, exchanging only per-example scalars (max, sum of exps,
target logit) across shards. No device ever holds the whole table or a C x C
matrix.

Mesh axes used throughout the codebase:
  "data":    the batch in pretraining, the client axis in federated rounds;
  "classes": rows of the class-embedding table.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import numpy as np

from fedface_jax import losses

P = jax.sharding.PartitionSpec
DATA = "data"
CLASSES = "classes"
# As in losses.py: at scale 64 a TF32/bf16 cosine error of 1e-3 (JAX's default f32 matmul on recent
# GPUs / TPUs) is a 0.06 logit error, comparable to the margin, and would make these sharded losses
# disagree with the dense references.
_HIGHEST = jax.lax.Precision.HIGHEST


def make_mesh(data: int | None = None, classes: int = 1,
              devices: list[Any] | None = None) -> jax.sharding.Mesh:
  """Builds a ("data", "classes") mesh; `data=None` takes all remaining devices."""
  devices = list(devices) if devices is not None else jax.devices()
  if data is None:
    if len(devices) % classes:
      raise ValueError(f"{len(devices)} devices do not split into classes={classes}")
    data = len(devices) // classes
  if data * classes > len(devices):
    raise ValueError(
        f"mesh data={data} x classes={classes} needs {data * classes} devices, "
        f"only {len(devices)} available")
  return jax.make_mesh(
      (data, classes), (DATA, CLASSES),
      axis_types=(jax.sharding.AxisType.Auto,) * 2,
      devices=devices[:data * classes])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  """Leading axis over "data" (a batch, or the clients of a round)."""
  return NamedSharding(mesh, P(DATA))


def table_sharded(mesh) -> NamedSharding:
  """Rows of a [C, D] class table over "classes"."""
  return NamedSharding(mesh, P(CLASSES, None))


def state_sharding(abstract_state, mesh):
  """Where each leaf of a training state lives: the one placement rule of pretraining and rounds.

  The class table (`state["table"]`) and every leaf shaped like it whose path names "table" (its
  optimiser moments in pretraining) split their rows over "classes"; a per-client store
  (`state["clients"]`, [num clients, ...]) splits its leading axis over "classes"; everything else
  (backbone, server optimiser, step, rng) is replicated.
  """
  table_shape = abstract_state["table"].shape

  def rule(path, leaf):
    keys = jax.tree_util.keystr(path)
    if jax.tree_util.keystr(path[:1]) == "['clients']":
      return NamedSharding(mesh, P(CLASSES))
    if "table" in keys and getattr(leaf, "shape", None) == table_shape:
      return table_sharded(mesh)
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(rule, abstract_state)


def padded_num_classes(num_classes: int, mesh) -> int:
  """Row count rounded up so the table splits evenly over the classes axis.

  Padding rows are never labels of any example; they take part in the softmax
  denominator only if `num_valid` is not passed, so the losses below mask them.
  """
  shards = mesh.shape[CLASSES]
  return int(-(-num_classes // shards) * shards)


def _normalize(x, axis=-1, eps=1e-10):
  # losses.l2_normalize's formula, written with x * x: jnp.square compiles to different bits here,
  # and this form is what the published runs (RESULTS.md) were trained with.
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis, keepdims=True), eps))


def _local_margin_logits(emb, table_local, labels, num_valid, scale, margin):
  """CosFace logits for this shard's rows, with padding rows masked to -inf."""
  rows = table_local.shape[0]
  offset = jax.lax.axis_index(CLASSES) * rows
  cos = jnp.matmul(emb, _normalize(table_local).T, precision=_HIGHEST)  # [b, rows]
  row_ids = offset + jnp.arange(rows)
  onehot = (row_ids[None, :] == labels[:, None]).astype(cos.dtype)
  logits = scale * (cos - margin * onehot)
  logits = jnp.where(row_ids[None, :] < num_valid, logits, -jnp.inf)
  return logits, onehot, row_ids


def sharded_cosface_loss(embeddings, table, labels, mesh, *, scale=64.0,
                         margin=0.35, num_valid: int | None = None):
  """CosFace loss and accuracy with the class table sharded over "classes".

  Args:
    embeddings: [B, D] L2-normalised features, sharded (or shardable) on "data".
    table: [C, D] class weights (normalised inside), sharded on "classes".
    labels: [B] int labels in [0, num_valid).
    mesh: the ("data", "classes") mesh.
    num_valid: real classes; rows >= num_valid are padding and never compete.

  Returns:
    (mean loss, accuracy), both replicated scalars. Only [B]-sized vectors
    cross shards: a log-sum-exp assembled from per-shard max and sum.
  """
  num_valid = table.shape[0] if num_valid is None else num_valid
  global_batch = embeddings.shape[0]

  def local(emb, table_local, lab):
    logits, onehot, row_ids = _local_margin_logits(
        emb, table_local, lab, num_valid, scale, margin)
    # The shift only stabilises exp(); log-sum-exp does not depend on it.
    shift = jax.lax.pmax(
        jax.lax.stop_gradient(jnp.max(logits, axis=-1)), CLASSES)
    sum_exp = jax.lax.psum(jnp.sum(jnp.exp(logits - shift[:, None]), -1), CLASSES)
    target = jax.lax.psum(jnp.sum(jnp.where(onehot > 0, logits, 0.0), -1), CLASSES)
    per_example = jnp.log(sum_exp) + shift - target
    # Accuracy: an example is right when the target logit is the global max of
    # the un-margined cosines; compare against the best of the other rows.
    plain = jax.lax.stop_gradient(logits + scale * margin * onehot)
    best_other = jax.lax.pmax(
        jnp.max(jnp.where(onehot > 0, -jnp.inf, plain), -1), CLASSES)
    target_plain = jax.lax.psum(jnp.sum(jnp.where(onehot > 0, plain, 0.0), -1),
                                CLASSES)
    correct = (target_plain > best_other).astype(jnp.float32)
    loss = jax.lax.psum(jnp.sum(per_example), DATA) / global_batch
    acc = jax.lax.psum(jnp.sum(correct), DATA) / global_batch
    # Identical on every "classes" shard already; pmean makes that visible to
    # the varying-manual-axes check.
    return jax.lax.pmean(loss, CLASSES), jax.lax.pmean(acc, CLASSES)

  fn = jax.shard_map(
      local, mesh=mesh,
      in_specs=(P(DATA, None), P(CLASSES, None), P(DATA)),
      out_specs=(P(), P()))
  return fn(embeddings, table, labels)


def sharded_spreadout_rows(table, query_ids, mesh, *, margin=0.3,
                           block_size: int = 4096, num_valid: int | None = None,
                           query_mask=None) -> losses.SpreadoutSums:
  """Spreadout of a few query rows against every row of a sharded table.

  FedFace's server pushes class embeddings apart with hinges
  max(0, cos_ij - margin)^2. Over 1M rows the full C x C matrix is out of the
  question, so a round only regularises the rows of its own clients
  (`query_ids`, Q of them) against all C rows: each "classes" shard scores the
  replicated [Q, D] query block against its local rows block by block
  (`losses.spreadout_rows_loss`, at most [Q, block_size] live), and only the
  partial sums cross shards.

  `query_mask` [Q] marks the real queries: a round padded to split evenly over
  devices keeps its static shape and masks its padding slots here, rather than
  slicing them away inside a sharded program.

  Returns:
    `losses.SpreadoutSums` over ordered pairs (q, j), q a valid query,
    j != q, j < num_valid (rows past it are padding), replicated. The gradient
    of `hinge_sum` flows into `table` both through the queries and through the
    rows they are compared against, exactly like the dense loss restricted to
    those pairs.
  """
  num_rows = table.shape[0]
  num_valid = num_rows if num_valid is None else num_valid
  shards = mesh.shape[CLASSES]
  rows_per_shard = num_rows // shards
  if num_rows % shards:
    raise ValueError(f"table rows {num_rows} not divisible by classes={shards}")
  if query_mask is None:
    query_mask = jnp.ones(query_ids.shape, jnp.bool_)

  def local(table_local, q_ids, q_mask):
    queries = gather_rows_local(table_local, q_ids, rows_per_shard)
    offset = jax.lax.axis_index(CLASSES) * rows_per_shard
    sums = losses.spreadout_rows_loss(
        queries, table_local, q_ids, margin=margin, block_size=block_size,
        row_offset=offset, query_mask=q_mask,
        row_mask=offset + jnp.arange(rows_per_shard) < num_valid)
    return losses.SpreadoutSums(*jax.lax.psum(tuple(sums[:3]), CLASSES),
                                jax.lax.pmax(sums.max_cos, CLASSES))

  fn = jax.shard_map(
      local, mesh=mesh,
      in_specs=(P(CLASSES, None), P(), P()),
      out_specs=losses.SpreadoutSums(P(), P(), P(), P()), check_vma=False)
  return fn(table, query_ids, query_mask)


def gather_rows_local(table_local, row_ids, rows_per_shard):
  """Inside shard_map: the rows `row_ids` of the sharded table, on every shard.

  Each shard contributes the rows it owns (zeros elsewhere) and a psum over
  "classes" assembles the [Q, D] block, so only Q rows ever cross devices, never
  the table.
  """
  offset = jax.lax.axis_index(CLASSES) * rows_per_shard
  local_ids = row_ids - offset
  owned = (local_ids >= 0) & (local_ids < rows_per_shard)
  rows = table_local[jnp.clip(local_ids, 0, rows_per_shard - 1)]
  return jax.lax.psum(jnp.where(owned[:, None], rows, 0.0), CLASSES)


def put_table(table: np.ndarray, mesh) -> jax.Array:
  """Places a host [C, D] table (C divisible by the classes axis) on the mesh."""
  return jax.device_put(table, table_sharded(mesh))
