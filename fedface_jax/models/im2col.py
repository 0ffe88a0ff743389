"""A convolution written as shifted slices and one matmul (im2col), with nn.Conv's parameters.

Why, twice over. (1) Under `vmap` over clients that each hold their own weights, XLA turns every
convolution into a grouped one, and inside the compiled round's `scan` XLA:CPU runs those far from its
fast path; as slices and a batched matmul the compiled round ran 12.5x faster on the benchmark CNN and
17.9x on resnet_small (`benchmarks/cpu.json`, rows `vmap-im2col`). (2) Gradient inversion differentiates
*through* a gradient; one convolution of that second derivative (the weight gradient's transpose, batch
and feature dimensions swapped) is slow on XLA:CPU, and the attack's Inverting Gradients ran 3.3x faster
per iteration with the LeNet's convolutions written this way, the 128 px reference setting 1.8x
(`benchmarks/ig_speed_probe.json`, `benchmarks/attack_conv_probe.json`). `lax.conv_general_dilated_patches`
is no help: it is itself a convolution. Where XLA's own dense convolutions run near the matmul peak (sphere20
at 112 px, outside `vmap`) they stay faster, so this is an option, not the default.

The function is `nn.Conv`'s (same HWIO kernel and bias, same outputs to float rounding; tested),
so a model can switch between the two without touching its parameters. The cost is memory: the
patch matrix holds kh * kw copies of the input (16 photos at 128 px, 32 channels, 5x5: ~210 MB).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("xla", "im2col")
Padding = str | int | Sequence[tuple[int, int]]


def _pads(x_shape, kernel_hw, strides, padding: Padding) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    return list(jax.lax.padtype_to_pads(x_shape[1:3], kernel_hw, strides, padding.upper()))
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  return [tuple(p) for p in padding]


def conv2d(x: jax.Array, kernel: jax.Array, padding: Padding = "SAME",
           strides: int | tuple[int, int] = 1) -> jax.Array:
  """NHWC convolution of `x` with an HWIO `kernel`, as `lax.conv_general_dilated` computes it.

  `padding`: "SAME" / "VALID" (XLA's rule), an int for both sides of both axes, or
  ((top, bottom), (left, right)). No dilation, no feature groups.
  """
  kh, kw, cin, cout = kernel.shape
  if x.ndim != 4 or x.shape[-1] != cin:
    raise ValueError(f"conv2d expects NHWC input with {cin} channels, got {x.shape}")
  sh, sw = (strides, strides) if isinstance(strides, int) else tuple(strides)
  (pt, pb), (pl, pr) = _pads(x.shape, (kh, kw), (sh, sw), padding)
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  h, w = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
  if h < 1 or w < 1:
    raise ValueError(f"kernel {kh}x{kw} does not fit the padded input {xp.shape[1:3]}")
  # Channel-last patches ordered (kh, kw, cin): the order of kernel.reshape(kh * kw * cin, cout).
  patches = jnp.concatenate(
      [jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (h - 1) + 1, j + sw * (w - 1) + 1,
                                         cin), (1, sh, sw, 1))
       for i in range(kh) for j in range(kw)], axis=-1)
  return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
  """`nn.Conv` (no dilation, no groups), computed by `conv2d`.

  The attributes, parameter names, shapes and initialisers are `nn.Conv`'s, so params move between
  the two and a model switches with one attribute (`conv_class`).
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int | tuple[int, int] = 1
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.padding, self.strides)
    return y if bias is None else y + bias


def conv_class(conv_impl: str) -> type[nn.Module]:
  """The convolution module for a model's `conv_impl`: "xla" (`nn.Conv`) or "im2col" (`Conv`)."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  return nn.Conv if conv_impl == "xla" else Conv
