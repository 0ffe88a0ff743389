"""A CPU-sized residual face-embedding network for the demo and the tests.

SphereNet-64 and iResNet-50 need a GPU to train in reasonable time; the demo must pretrain, run
FedFace and attack on a laptop CPU in minutes. This net keeps the ingredients that matter for the
algorithm -- residual blocks, a flatten-to-bottleneck head that keeps the layout of aligned faces,
an L2-normalised embedding -- at a width and depth that trains at 64x64 on two cores.

It has no BatchNorm: the federated engine vmaps over clients, and a model with batch statistics
would need a mutable collection per client. GroupNorm normalises each example on its own, so the
model is a pure function of its params.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedface_jax.models import common
from fedface_jax.models import im2col

Dtype = Any

# He-normal (fan-in) for ReLU convs; the residual branch's last norm starts at zero scale instead.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class BasicBlock(nn.Module):
  """Post-activation basic residual block: conv3x3-norm-relu-conv3x3-norm, + shortcut, relu.

  The second norm's scale starts at zero (Goyal et al., 2017), so every block is the identity at
  initialisation; with no BatchNorm this is what keeps the signal scale stable through the stages.
  With `norm="none"` the second conv itself starts at zero for the same reason.
  """
  features: int
  strides: int = 1
  norm: str = "group"
  dtype: Dtype = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = im2col.conv_class(self.conv_impl)
    residual = x
    y = conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False,
                kernel_init=_CONV_INIT, dtype=self.dtype, name="conv1")(x)
    y = common.make_norm(self.norm, dtype=self.dtype, name="norm1")(y)
    y = nn.relu(y)
    last_init = nn.initializers.zeros if self.norm == "none" else _CONV_INIT
    y = conv(self.features, (3, 3), padding="SAME", use_bias=False, kernel_init=last_init,
                dtype=self.dtype, name="conv2")(y)
    y = common.make_norm(self.norm, dtype=self.dtype, scale_init=nn.initializers.zeros,
                         name="norm2")(y)
    if residual.shape != y.shape:
      residual = conv(self.features, (1, 1), strides=self.strides, use_bias=False,
                         kernel_init=_CONV_INIT, dtype=self.dtype, name="proj_conv")(residual)
      residual = common.make_norm(self.norm, dtype=self.dtype, name="proj_norm")(residual)
    return nn.relu(residual + y)


class ResNetSmall(nn.Module):
  """Small ResNet: stem conv3x3 -> 4 stages of basic blocks -> flatten -> Dense -> L2 normalise.

  With the defaults a 64x64 input is reduced 64 -> 32 -> 16 -> 8 -> 4, and the 4x4x128 map is
  flattened into the bottleneck (flattening, not pooling, keeps which-part-of-the-face information,
  as SphereFace and iResNet do).

  Attributes:
    embedding_dim: output dimension D.
    widths: channels of the four (or any number of) stages.
    blocks: residual blocks per stage.
    strides: stride of each stage's first block.
    stem_width: channels of the stem conv (default: widths[0]).
    norm: "group" (default, stateless), "layer" or "none". "batch" is rejected: see module
      docstring.
    pooling: "flatten" (default) or "avg" before the bottleneck.
    dtype: compute dtype (e.g. jnp.bfloat16); params are always float32 and the output is float32.
    remat: recompute each block's activations in the backward pass (`nn.remat`) instead of
      storing them: less activation memory for many clients per chunk, ~1/3 more compute.
    conv_impl: "xla" (`nn.Conv`) or "im2col" (`models/im2col.py`: the same function and params as
      batched matmuls, for clients vmapped with their own weights, where XLA makes every
      convolution a grouped one).
  """
  embedding_dim: int = 512
  widths: Sequence[int] = (16, 32, 64, 128)
  blocks: Sequence[int] = (1, 1, 1, 1)
  strides: Sequence[int] = (1, 2, 2, 2)
  stem_width: int | None = None
  stem_stride: int = 2
  norm: str = "group"
  pooling: str = "flatten"
  dtype: Dtype = jnp.float32
  remat: bool = False
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Embeds NHWC images (already `preprocess`ed) into `[B, embedding_dim]` float32 unit vectors.

    `train` is accepted for a uniform model signature; this net behaves identically either way.
    """
    del train
    if not len(self.widths) == len(self.blocks) == len(self.strides):
      raise ValueError(f"widths {self.widths}, blocks {self.blocks} and strides {self.strides} "
                       "must have the same length")
    if self.norm == "batch":
      raise ValueError("ResNetSmall is stateless by design; use norm='group', 'layer' or 'none'")
    x = x.astype(self.dtype)
    stem = self.stem_width or self.widths[0]
    x = im2col.conv_class(self.conv_impl)(stem, (3, 3), strides=self.stem_stride, padding="SAME", use_bias=False,
                kernel_init=_CONV_INIT, dtype=self.dtype, name="stem_conv")(x)
    x = common.make_norm(self.norm, dtype=self.dtype, name="stem_norm")(x)
    x = nn.relu(x)
    block_cls = nn.remat(BasicBlock) if self.remat else BasicBlock
    for stage, (width, num_blocks, stride) in enumerate(
        zip(self.widths, self.blocks, self.strides)):
      for block in range(num_blocks):
        x = block_cls(width, strides=stride if block == 0 else 1, norm=self.norm,
                       dtype=self.dtype, conv_impl=self.conv_impl,
                       name=f"stage{stage + 1}_block{block + 1}")(x)
    return common.EmbeddingHead(self.embedding_dim, pooling=self.pooling, use_bias=False,
                                dtype=self.dtype, name="head")(x)
