"""Device checks (`make test-gpu`, marker `gpu`): the properties the CPU suite shows, on a GPU.

Each test skips cleanly without a GPU. They run the same tiny rounds as the CPU tests, so a
failure here is a device-specific numerical or placement difference, not a new workload.
Tolerances are those of the CPU equality tests with XLA optimisations on, loosened 10x for the
GPU's reassociated reductions (TF32 matmuls are disabled below so the comparison is float32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import sharding as sh

pytestmark = pytest.mark.gpu


def _gpus():
  try:
    return jax.devices("gpu")
  except RuntimeError:
    return []


@pytest.fixture(autouse=True)
def _need_gpu():
  if not _gpus():
    pytest.skip("no GPU visible to JAX (install with `make venv ACCEL=cuda12`)")
  with jax.default_matmul_precision("float32"):
    yield


def _max_abs_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("method", ["fedface", "fedaws"])
def test_compiled_round_equals_host_loop_on_gpu(method):
  from tests import federated_fixtures as ff  # pylint: disable=g-import-not-at-top
  mesh = sh.make_mesh(1, 1, _gpus()[:1])
  results = {}
  for execution in ("compiled", "host_loop"):
    cfg = ff.tiny_cfg(method)
    cfg.execution = execution
    results[execution], _, _ = ff.run_rounds(mesh, cfg)
  compiled, host = results["compiled"], results["host_loop"]
  assert _max_abs_diff(compiled["params"], host["params"]) < 1e-5
  assert _max_abs_diff(compiled["table"], host["table"]) < 1e-5


def test_one_vs_all_gpus_round_is_equal():
  from tests import federated_fixtures as ff  # pylint: disable=g-import-not-at-top
  gpus = _gpus()
  if len(gpus) < 2:
    pytest.skip("needs >= 2 GPUs")
  one, _, algo = ff.run_rounds(sh.make_mesh(1, 1, gpus[:1]), ff.tiny_cfg())
  n = algo.clients.num_clients   # the sharded table is padded to a multiple of its shards
  # Clients over the GPUs, the class table over 2 of them when there are 4 or more.
  classes = 2 if len(gpus) >= 4 else 1
  mesh = sh.make_mesh(len(gpus) // classes, classes, gpus[:len(gpus) // classes * classes])
  many, _, _ = ff.run_rounds(mesh, ff.tiny_cfg())
  assert _max_abs_diff(one["params"], many["params"]) < 1e-4
  assert _max_abs_diff(one["table"][:n], many["table"][:n]) < 1e-4


def test_bfloat16_training_step_on_gpu_keeps_float32_state():
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  from fedface_jax import losses  # pylint: disable=g-import-not-at-top
  from fedface_jax import models  # pylint: disable=g-import-not-at-top
  cfg = mlc.ConfigDict(dict(name="resnet_small", embedding_dim=32, dtype="bfloat16", remat=True,
                            kwargs=dict(widths=(8, 16, 16, 32)), pretrained=""))
  model = models.from_config(cfg)
  shape = (32, 32, 3)
  params = models.init_params(model, jax.random.key(0), shape)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(16,) + shape).astype(np.float32))
  table = jnp.asarray(rng.normal(size=(4, 32)).astype(np.float32))
  labels = jnp.arange(16) % 4

  @jax.jit
  def step(p):
    loss, grads = jax.value_and_grad(
        lambda q: losses.cosface_loss(model.apply({"params": q}, images), table, labels))(p)
    return loss, jax.tree.map(lambda a, g: a - 0.1 * g, p, grads)

  loss, new_params = step(params)
  assert np.isfinite(float(loss))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_params))
  assert all(leaf.devices() <= set(_gpus()) for leaf in jax.tree.leaves(new_params))


def test_sharded_class_table_spreadout_is_shard_local_on_gpu():
  """The server's spreadout over a row-sharded table: no all-gather of it, no C x C matrix."""
  gpus = _gpus()
  if len(gpus) < 2:
    pytest.skip("needs >= 2 GPUs to shard the class table")
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import worker  # pylint: disable=g-import-not-at-top
  shards, dim = len(gpus), 64
  rows = 4096 * shards
  mesh = sh.make_mesh(1, shards, gpus)
  table = jax.device_put(np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32),
                         NamedSharding(mesh, P(sh.CLASSES, None)))
  query_ids = jnp.arange(32) * (rows // 32)

  def loss(t):
    return sh.sharded_spreadout_rows(t, query_ids, mesh, block_size=1024).hinge_sum

  hlo = jax.jit(jax.grad(loss)).lower(table).compile().as_text()
  checks = worker.hlo_checks(hlo, rows, dim, shards)
  assert checks["all_gather_table"] == 0 and checks["cxc_shapes"] == 0, checks
  assert checks["full_table_shapes"] == 0, checks
