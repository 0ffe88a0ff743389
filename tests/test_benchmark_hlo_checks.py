"""`benchmark.worker.hlo_checks`: the counts behind "no C x C matrix, no all-gather of the table".

The claims in BENCHMARKS.md rest on this parser reading compiled HLO correctly, so it is tested
on two real programs over a table sharded by rows on 4 devices: one that gathers the table and
builds the C x C Gram matrix (everything must be flagged), one that stays shard-local and only
psums a [D] vector (nothing may be flagged).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fedface_jax import sharding as sh
from fedface_jax.benchmark import worker

ROWS, DIM, SHARDS = 64, 8, 4  # Local table [16, 8]: D < C / shards, as in real runs.


def _mesh_and_table():
  mesh = sh.make_mesh(1, SHARDS, jax.devices()[:SHARDS])
  table = jax.device_put(np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32),
                         NamedSharding(mesh, P(sh.CLASSES, None)))
  return mesh, table


def _hlo(fn, mesh, table):
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P())).lower(table).compile().as_text()


def test_gather_and_cxc_are_flagged():
  mesh, table = _mesh_and_table()

  def gram(t):
    full = jax.lax.with_sharding_constraint(t, NamedSharding(mesh, P()))  # all-gather
    return jnp.sum(jnp.maximum(full @ full.T, 0.0), axis=0)  # [C, C] then [C]

  checks = worker.hlo_checks(_hlo(gram, mesh, table), ROWS, DIM, SHARDS)
  assert checks["all_gathers"] >= 1 and checks["all_gather_table"] >= 1, checks
  assert checks["cxc_shapes"] >= 1 and checks["full_table_shapes"] >= 1, checks


def test_shard_local_program_is_clean():
  mesh, table = _mesh_and_table()

  def column_sums(t):
    local = lambda x: jax.lax.psum(jnp.sum(x * x, axis=0), sh.CLASSES)  # [D] crosses devices
    return jax.shard_map(local, mesh=mesh, in_specs=P(sh.CLASSES, None), out_specs=P())(t)

  hlo = _hlo(column_sums, mesh, table)
  checks = worker.hlo_checks(hlo, ROWS, DIM, SHARDS)
  assert checks["all_gathers"] == checks["all_gather_table"] == 0, checks
  assert checks["cxc_shapes"] == checks["full_table_shapes"] == 0, checks
  assert checks["local_table_shape_present"], checks
  assert checks["all_reduces"] >= 1 and checks["largest_cross_device_all_reduce_elems"] == DIM


def test_parser_on_hand_written_hlo():
  """The text rules alone: result shapes before the op name, singleton replica groups skipped."""
  hlo = "\n".join([
      "  %p = f32[16,8]{1,0} parameter(0)",
      "  %ag = f32[64,8]{1,0} all-gather(f32[16,8]{1,0} %p), replica_groups={{0,1,2,3}}",
      "  %small = f32[4,8]{1,0} all-gather(f32[1,8]{1,0} %q), replica_groups={{0,1,2,3}}",
      "  %g = f32[64,64]{1,0} dot(f32[64,8]{1,0} %ag, f32[64,8]{1,0} %ag)",
      "  %ar1 = f32[16,8]{1,0} all-reduce(f32[16,8]{1,0} %p), replica_groups={{0},{1},{2},{3}}",
      "  %ar2 = f32[7]{0} all-reduce(f32[7]{0} %v), replica_groups={{0,1},{2,3}}",
  ])
  checks = worker.hlo_checks(hlo, ROWS, DIM, SHARDS)
  assert checks["all_gathers"] == 2 and checks["all_gather_table"] == 1  # Only %ag is the table.
  assert checks["cxc_shapes"] == 1  # f32[64,64].
  assert checks["full_table_shapes"] == 3  # f32[64,8]: %ag's result and the dot's two operands.
  assert checks["all_reduces"] == 2 and checks["largest_cross_device_all_reduce_elems"] == 7
