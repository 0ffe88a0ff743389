"""SphereFace/CosFace-style residual networks (SphereNet-20 / -64), FedFace's backbone.

FedFace pretrains and federates the 64-layer net of its `nets/sphere_net_rec.py` (Yichun Shi's TF
code), and this module follows that file rather than the Caffe SphereFace prototxt where they
differ:

* 4 stages with [1, 2, 4, 1] (20 layers) or [3, 8, 16, 3] (64 layers) residual units and
  [64, 128, 256, 512] channels.
* Each stage starts with a 3x3 stride-2 SAME conv (+bias, Glorot-uniform, zero bias) and a PReLU.
* Each residual unit is two 3x3 convs without bias, each followed by a PReLU, added to the unit's
  input with no activation after the sum. Their kernels start from a truncated normal with stddev
  0.01, which keeps every unit close to the identity at initialisation -- the net has no
  normalisation layers.
* PReLU slopes are per channel and start at 0 (i.e. the net starts as a ReLU net).
* The 7x6x512 map (for 112x96 input) is flattened into a Glorot-uniform Dense(512, no bias), then
  L2-normalised.

No BatchNorm anywhere, which is also what the federated engine needs (pure function of the params).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedface_jax.models import common
from fedface_jax.models import im2col

Dtype = Any

SPHERE_BLOCKS = {
    20: (1, 2, 4, 1),
    64: (3, 8, 16, 3),
}
SPHERE_WIDTHS = (64, 128, 256, 512)
# FedFace's input: 112 rows x 96 columns, RGB.
SPHERE_INPUT_SHAPE = (112, 96, 3)


class SphereStage(nn.Module):
  """One stage: stride-2 transition conv + PReLU, then `num_units` two-conv residual units."""
  features: int
  num_units: int
  residual_init_stddev: float = 0.01
  prelu_init: float = 0.0
  dtype: Dtype = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv_cls = im2col.conv_class(self.conv_impl)
    x = conv_cls(self.features, (3, 3), strides=2, padding="SAME", use_bias=True,
                kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros,
                dtype=self.dtype, name="transition")(x)
    x = common.PReLU(self.prelu_init, dtype=self.dtype, name="transition_prelu")(x)
    residual_init = nn.initializers.truncated_normal(self.residual_init_stddev)
    for unit in range(self.num_units):
      y = x
      for conv in range(2):
        y = conv_cls(self.features, (3, 3), padding="SAME", use_bias=False,
                    kernel_init=residual_init, dtype=self.dtype,
                    name=f"unit{unit + 1}_conv{conv + 1}")(y)
        y = common.PReLU(self.prelu_init, dtype=self.dtype,
                         name=f"unit{unit + 1}_prelu{conv + 1}")(y)
      x = x + y
    return x


class SphereNet(nn.Module):
  """SphereFace-style residual net without normalisation layers (see module docstring).

  Attributes:
    blocks: residual units per stage ((1, 2, 4, 1) for 20 layers, (3, 8, 16, 3) for 64).
    embedding_dim: output dimension (FedFace: 512).
    widths: stage channels before `width_multiplier`.
    width_multiplier: scales every stage's channels (tests use e.g. 1/16).
    residual_init_stddev: stddev of the truncated-normal init of residual-unit convs (FedFace:
      0.01).
    prelu_init: initial PReLU slope (FedFace: 0.0).
    dtype: compute dtype; params and output stay float32.
    conv_impl: "xla" (`nn.Conv`) or "im2col" (`models/im2col.py`: the same function and params as
      batched matmuls, for clients vmapped with their own weights).
  """
  blocks: Sequence[int] = SPHERE_BLOCKS[64]
  embedding_dim: int = 512
  widths: Sequence[int] = SPHERE_WIDTHS
  width_multiplier: float = 1.0
  residual_init_stddev: float = 0.01
  prelu_init: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False   # recompute each stage's activations in the backward pass (nn.remat)
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Embeds NHWC images (default 112x96, already `preprocess`ed) into `[B, D]` unit vectors.

    `train` is accepted for a uniform model signature; this net behaves identically either way.
    """
    del train
    if len(self.blocks) != len(self.widths):
      raise ValueError(f"blocks {self.blocks} and widths {self.widths} must have the same length")
    x = x.astype(self.dtype)
    stage_cls = nn.remat(SphereStage) if self.remat else SphereStage
    for stage, (num_units, width) in enumerate(zip(self.blocks, self.widths)):
      x = stage_cls(common.scaled_width(width, self.width_multiplier), num_units,
                      residual_init_stddev=self.residual_init_stddev, prelu_init=self.prelu_init,
                      dtype=self.dtype, conv_impl=self.conv_impl, name=f"stage{stage + 1}")(x)
    return common.EmbeddingHead(self.embedding_dim, pooling="flatten", use_bias=False,
                                kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
                                name="head")(x)


Sphere20 = functools.partial(SphereNet, blocks=SPHERE_BLOCKS[20])
Sphere64 = functools.partial(SphereNet, blocks=SPHERE_BLOCKS[64])
