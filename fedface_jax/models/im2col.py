"""A stride-1 convolution written as shifted slices and one matmul (im2col), same params as nn.Conv.

Why: gradient inversion differentiates *through* a gradient (second order). XLA:CPU runs one of the
convolutions that second derivative produces (the weight gradient's transpose, a convolution with
batch and feature dimensions swapped and the kernel reversed) on its slow generic emitter rather
than its fast Eigen path. On the attack's LeNet the second-order gradient of a 5x5 convolution ran
3-6x faster written as kh * kw shifted slices of the padded input concatenated on the channel axis
and multiplied by the flattened kernel (`scripts/ig_speed_probe.py`, `benchmarks/ig_speed_probe.json`):
every derivative of that form is a slice, a pad or a matmul. `lax.conv_general_dilated_patches`
is no help here: it is itself a grouped convolution and was slower still.

The function is `nn.Conv`'s (same HWIO kernel and bias, same outputs to float rounding; tested),
so a model can switch between the two without touching its parameters. The cost is memory: the
patch matrix holds kh * kw copies of the input (16 photos at 128 px, 32 channels, 5x5: ~210 MB).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("xla", "im2col")


def conv2d(x: jax.Array, kernel: jax.Array, padding: tuple[int, int]) -> jax.Array:
  """NHWC stride-1 convolution of `x` with an HWIO `kernel`, zero `padding` (rows, cols)."""
  kh, kw, cin, cout = kernel.shape
  if x.ndim != 4 or x.shape[-1] != cin:
    raise ValueError(f"conv2d expects NHWC input with {cin} channels, got {x.shape}")
  ph, pw = padding
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  # Channel-last patches ordered (kh, kw, cin): the order of kernel.reshape(kh * kw * cin, cout).
  patches = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)],
                            axis=-1)
  return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, padding=padding)` for stride 1, computed by `conv2d`.

  The parameter names, shapes and initialisers are `nn.Conv`'s, so params move between the two.
  """

  features: int
  kernel_size: tuple[int, int]
  padding: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    return conv2d(x, kernel, (self.padding, self.padding)) + bias
