"""Mixed precision and rematerialisation: `config.model.dtype` / `config.model.remat`.

bfloat16 compute must leave every parameter and gradient float32 and the losses close to float32;
remat must change memory, not the result.
"""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from fedface_jax import losses
from fedface_jax import models

# Small versions of each backbone, so the test runs in seconds on a CPU.
_BACKBONES = {
    "resnet_small": ((32, 32, 3), dict(widths=(8, 16, 16, 32))),
    "sphere20": ((56, 48, 3), dict(width_multiplier=0.125)),
    "iresnet50": ((32, 32, 3), dict(width_multiplier=0.125, blocks=(1, 1, 1, 1))),
}
# Measured on CPU (XLA, optimisations on): bf16 vs f32 CosFace loss of an untrained net differs
# by < 1% relative; the tolerances below leave ~3x room.
_LOSS_RTOL = 0.03
# The default suite checks the demo's backbone; the paper backbones compile slowly on 2 cores.
_NAMES = ["resnet_small", pytest.param("sphere20", marks=pytest.mark.slow),
          pytest.param("iresnet50", marks=pytest.mark.slow)]
_EMB_MIN_COS = 0.99


def _model_cfg(name, dtype="float32", remat=False):
  kwargs = _BACKBONES[name][1]
  return mlc.ConfigDict(dict(name=name, embedding_dim=32, dtype=dtype, remat=remat,
                             kwargs=dict(kwargs), pretrained=""))


def _loss_and_grads(model, params, images, table, labels):
  def loss_fn(p):
    emb = model.apply({"params": p}, images)
    return losses.cosface_loss(emb, table, labels), emb
  (loss, emb), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return loss, emb, grads


def _batch(shape, n=8, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(n,) + shape).astype(np.float32))
  table = rng.normal(size=(classes, 32)).astype(np.float32)
  table /= np.linalg.norm(table, axis=1, keepdims=True)
  labels = jnp.asarray(np.arange(n) % classes)
  return images, jnp.asarray(table), labels


@pytest.mark.parametrize("name", _NAMES)
def test_bfloat16_compute_keeps_float32_params_and_close_loss(name):
  shape = _BACKBONES[name][0]
  images, table, labels = _batch(shape)
  f32 = models.from_config(_model_cfg(name))
  bf16 = models.from_config(_model_cfg(name, dtype="bfloat16"))
  params = models.init_params(f32, jax.random.key(0), shape)
  params_bf16 = models.init_params(bf16, jax.random.key(0), shape)
  # Same parameters whatever the compute dtype: a bf16 model can resume a f32 checkpoint.
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params_bf16))
  np.testing.assert_array_equal(jax.tree.leaves(params)[0], jax.tree.leaves(params_bf16)[0])

  loss32, emb32, grads32 = _loss_and_grads(f32, params, images, table, labels)
  loss16, emb16, grads16 = _loss_and_grads(bf16, params, images, table, labels)
  assert emb16.dtype == jnp.float32 and loss16.dtype == jnp.float32
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=_LOSS_RTOL)
  cos = np.sum(np.asarray(emb16) * np.asarray(emb32), axis=1)
  assert cos.min() > _EMB_MIN_COS, cos
  # And bf16 really computes in bf16 (otherwise this test would pass vacuously).
  assert float(jnp.max(jnp.abs(emb16 - emb32))) > 0


@pytest.mark.parametrize("name", _NAMES)
def test_remat_changes_memory_not_results(name):
  shape = _BACKBONES[name][0]
  images, table, labels = _batch(shape)
  plain = models.from_config(_model_cfg(name))
  remat = models.from_config(_model_cfg(name, remat=True))
  params = models.init_params(plain, jax.random.key(1), shape)
  assert (jax.tree.structure(params) ==
          jax.tree.structure(models.init_params(remat, jax.random.key(1), shape)))
  loss_a, _, grads_a = _loss_and_grads(plain, params, images, table, labels)
  loss_b, _, grads_b = _loss_and_grads(remat, params, images, table, labels)
  np.testing.assert_allclose(float(loss_b), float(loss_a), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_unknown_dtype_is_a_clear_error():
  with pytest.raises(ValueError, match="model.dtype"):
    models.from_config(_model_cfg("resnet_small", dtype="float16"))
