"""The reference attack's victim model: an untrained LeNet-5 variant (ATTACK.md section 5).

The curious-client reference code attacks an *untrained* LeNet whose weights come from PyTorch's
default initialisation. The initialisation matters for gradient inversion (it sets the gradient
magnitudes the attacker matches and how informative each layer is), so this module copies PyTorch's
default: weights and biases are U(-1/sqrt(fan_in), +1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``
reduces to exactly this bound).

Differences from the PyTorch original, on purpose:
- NHWC input instead of NCHW. The flatten before ``fc1`` therefore orders features (H, W, C) instead
  of (C, H, W); with random initialisation this is only a fixed permutation of ``fc1``'s rows, so
  the distribution of the model (and of its gradients) is unchanged, but weights cannot be copied
  one-to-one from a torch checkpoint without permuting them.
- The input is used as given (images in [0, 1], no normalisation), as in the reference.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedface_jax.models import im2col


def torch_default_kernel_init() -> nn.initializers.Initializer:
  """U(+-1/sqrt(fan_in)) for Dense ``[in, out]`` and Conv ``[kh, kw, in, out]`` kernels.

  variance_scaling(1/3, fan_in, uniform) draws from U(+-sqrt(3 * (1/3) / fan_in)) =
  U(+-1/sqrt(fan_in)), the bound PyTorch's ``kaiming_uniform_(a=sqrt(5))`` gives.
  """
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """U(+-1/sqrt(fan_in)) for a bias.

  fan_in is the layer's, so it must be passed in (a bias alone does not know it).
  """
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


class LeNet5(nn.Module):
  """LeNet-5 variant of the reference: two conv / ReLU / maxpool blocks, then two dense layers.

  conv5x5(3->32, pad 2) ReLU maxpool2, conv5x5(32->64, pad 2) ReLU maxpool2, FC(512, no bias)
  ReLU, FC(C, no bias).

  Returns logits ``[B, num_classes]``. At 128x128 input ``fc1`` is 65,536x512 and the model has
  ~34.1M parameters.

  ``conv_impl``: "xla" (``nn.Conv``) or "im2col" (``models/im2col.Conv``: the same function and
  parameters, and the second-order gradients the attack takes run several times faster on CPU).
  """

  num_classes: int = 1000
  in_channels: int = 3
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(
          f"LeNet5 expects NHWC input with {self.in_channels} channels, got shape {x.shape}")
    conv = im2col.conv_class(self.conv_impl)
    kinit = torch_default_kernel_init()
    x = conv(32, (5, 5), padding=2, kernel_init=kinit,
             bias_init=torch_default_bias_init(self.in_channels * 25), name="conv1")(x)
    x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = conv(64, (5, 5), padding=2, kernel_init=kinit,
             bias_init=torch_default_bias_init(32 * 25), name="conv2")(x)
    x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512, use_bias=False, kernel_init=kinit, name="fc1")(x))
    return nn.Dense(self.num_classes, use_bias=False, kernel_init=kinit, name="fc2")(x)


@functools.partial(jax.jit, static_argnums=1)
def _uniform_pm1(key: jax.Array, size: int) -> jax.Array:
  return jax.random.uniform(key, (size,), jnp.float32, -1.0, 1.0)


def init_lenet(key: jax.Array, image_size: int | tuple[int, int] = 128, num_classes: int = 1000,
               conv_impl: str = "xla") -> tuple[LeNet5, Any]:
  """Builds the module and PyTorch-default params for ``image_size`` inputs (fc1's width needs it).

  Same distribution as ``model.init`` (every leaf U(+-1/sqrt(fan_in)) of its layer), but drawn as
  ONE uniform vector that is sliced and scaled per leaf: compiling a threefry draw per initializer
  costs ~2 s each on CPU, which dominated small attack runs. (Different numbers than
  ``model.init`` for the same key.)
  """
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  model = LeNet5(num_classes=num_classes, conv_impl=conv_impl)
  shapes = jax.eval_shape(model.init, key, jnp.zeros((1, h, w, 3), jnp.float32))["params"]
  layer_fan_in = {name: math.prod(layer["kernel"].shape[:-1]) for name, layer in shapes.items()}
  leaves = [(name, leaf, s) for name, layer in shapes.items() for leaf, s in layer.items()]
  sizes = [math.prod(s.shape) for _, _, s in leaves]
  flat = _uniform_pm1(key, sum(sizes))
  params, offset = {}, 0
  for (name, leaf, s), size in zip(leaves, sizes):
    bound = 1.0 / math.sqrt(layer_fan_in[name])
    params.setdefault(name, {})[leaf] = (flat[offset:offset + size] * bound).reshape(s.shape)
    offset += size
  return model, params
