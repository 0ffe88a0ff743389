"""models/im2col: the same function as nn.Conv, to float rounding, down to second derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.attack import lenet
from fedface_jax.models import im2col


def _lax_conv(x, kernel, padding, strides):
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return jax.lax.conv_general_dilated(x, kernel, (strides, strides), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kernel_shape,padding,strides", [
    ((2, 9, 7, 3), (5, 5, 3, 4), 2, 1),               # LeNet's 5x5, pad 2
    ((1, 6, 6, 2), (3, 3, 2, 5), "VALID", 1),
    ((3, 8, 8, 4), (3, 1, 4, 2), ((1, 1), (0, 0)), 1),   # non-square kernel
    ((2, 8, 6, 3), (3, 3, 3, 4), "SAME", 2),          # the backbones' stride-2 'SAME' (even size)
    ((2, 7, 9, 3), (3, 3, 3, 4), "SAME", 2),          # ... odd size: XLA pads (1, 1) here
    ((2, 8, 8, 4), (1, 1, 4, 6), "SAME", 2),          # a 1x1 strided projection
])
def test_conv2d_matches_lax_conv_and_its_second_derivative(shape, kernel_shape, padding, strides):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel_shape)
  np.testing.assert_allclose(im2col.conv2d(x, w, padding, strides),
                             _lax_conv(x, w, padding, strides), rtol=1e-5, atol=1e-5)

  # What the attack differentiates: d/dx of a function of the weight gradient.
  def second_order(conv):
    def weight_grad_norm(x):
      return jnp.sum(jax.grad(lambda w: jnp.sum(jnp.sin(conv(x, w, padding, strides))))(w) ** 2)
    return jax.grad(weight_grad_norm)(x)

  ref = second_order(_lax_conv)
  np.testing.assert_allclose(second_order(im2col.conv2d), ref, rtol=1e-4,
                             atol=1e-4 * float(jnp.max(jnp.abs(ref))))


def test_conv2d_refuses_a_channel_mismatch():
  with pytest.raises(ValueError, match="3 channels"):
    im2col.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 1)), 1)


def test_lenet_gives_the_same_logits_and_update_with_either_convolution():
  model_xla, params = lenet.init_lenet(jax.random.key(0), 32, num_classes=5)
  model_im2col, params_im2col = lenet.init_lenet(jax.random.key(0), 32, num_classes=5,
                                                 conv_impl="im2col")
  # Same parameter tree and values: the switch never touches the parameters.
  jax.tree.map(np.testing.assert_array_equal, params, params_im2col)
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  y = jax.nn.one_hot(jnp.arange(4), 5)

  def grads(model):
    return jax.grad(lambda p: -jnp.mean(jnp.sum(
        y * jax.nn.log_softmax(model.apply({"params": p}, x)), -1)))(params)

  np.testing.assert_allclose(model_im2col.apply({"params": params}, x),
                             model_xla.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads(model_im2col), grads(model_xla))


def test_lenet_refuses_an_unknown_convolution():
  with pytest.raises(ValueError, match="conv_impl"):
    lenet.LeNet5(num_classes=2, conv_impl="fft").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("name,kwargs,shape", [
    ("resnet_small", {"widths": (8, 8, 16, 16)}, (2, 32, 32, 3)),
    ("sphere20", {"width_multiplier": 0.0625}, (2, 48, 40, 3)),   # odd sizes after 3 stages
])
def test_backbones_give_the_same_embeddings_and_gradients_with_either_convolution(
    name, kwargs, shape):
  from fedface_jax import models  # pylint: disable=g-import-not-at-top
  ref = models.create_model(name, embedding_dim=16, **kwargs)
  alt = models.create_model(name, embedding_dim=16, conv_impl="im2col", **kwargs)
  x = jax.random.normal(jax.random.key(0), shape)
  init = lambda model: jax.jit(model.init)(jax.random.key(1), x)["params"]
  params = init(ref)
  # The same parameter tree (names, shapes, initial values).
  jax.tree.map(np.testing.assert_array_equal, params, init(alt))
  # Perturb so no residual branch is still at its zero init (it would hide a wrong conv there).
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(treedef, [l + 0.05 * jax.random.normal(k, l.shape)
                                        for l, k in zip(leaves, keys)])

  def loss(model, p):
    return jnp.sum(model.apply({"params": p}, x) * jnp.arange(16.0))

  embed = lambda model: jax.jit(lambda p: model.apply({"params": p}, x))(params)
  np.testing.assert_allclose(embed(alt), embed(ref), rtol=1e-4, atol=1e-5)
  grad = lambda model: jax.jit(jax.grad(lambda p: loss(model, p)))(params)
  g_ref, g_alt = grad(ref), grad(alt)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-3, atol=1e-4 * float(np.max(np.abs(b))) + 1e-7), g_alt, g_ref)
