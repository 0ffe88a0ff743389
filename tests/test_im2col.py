"""models/im2col: the same function as nn.Conv, to float rounding, down to second derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.attack import lenet
from fedface_jax.models import im2col


def _lax_conv(x, kernel, padding):
  (ph, pw) = padding
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((ph, ph), (pw, pw)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kernel_shape,padding", [
    ((2, 9, 7, 3), (5, 5, 3, 4), (2, 2)),     # LeNet's 5x5 'same'
    ((1, 6, 6, 2), (3, 3, 2, 5), (0, 0)),     # valid
    ((3, 8, 8, 4), (3, 1, 4, 2), (1, 0)),     # non-square kernel
])
def test_conv2d_matches_lax_conv_and_its_second_derivative(shape, kernel_shape, padding):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel_shape)
  np.testing.assert_allclose(im2col.conv2d(x, w, padding), _lax_conv(x, w, padding),
                             rtol=1e-5, atol=1e-5)

  # What the attack differentiates: d/dx of a function of the weight gradient.
  def second_order(conv):
    def weight_grad_norm(x):
      return jnp.sum(jax.grad(lambda w: jnp.sum(jnp.sin(conv(x, w, padding))))(w) ** 2)
    return jax.grad(weight_grad_norm)(x)

  ref = second_order(_lax_conv)
  np.testing.assert_allclose(second_order(im2col.conv2d), ref, rtol=1e-4,
                             atol=1e-4 * float(jnp.max(jnp.abs(ref))))


def test_conv2d_refuses_a_channel_mismatch():
  with pytest.raises(ValueError, match="3 channels"):
    im2col.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 1)), (1, 1))


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
