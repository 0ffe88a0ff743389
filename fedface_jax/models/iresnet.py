"""insightface-style iResNet-50 for 112x112 faces, with a stateless normalisation by default.

iResNet (Duta et al.; insightface `arcface_torch/backbones/iresnet.py`) is today's standard face
backbone, so it is offered as the modern alternative to FedFace's SphereNet-64. Structure as in
insightface: a 3x3 stem conv (stride 1) + norm + PReLU; four stages of [3, 4, 14, 3] IBasicBlocks
with [64, 128, 256, 512] channels, the first block of each stage strided by 2 with a 1x1-conv +
norm projection; IBasicBlock = norm -> conv3x3 -> norm -> PReLU -> conv3x3(stride) -> norm,
+ shortcut; then norm -> flatten (7x7x512) -> Dense(512, with bias) -> feature norm -> L2 normalise.

Normalisation (`norm`):
* "group" (default): GroupNorm, stateless. The federated engine vmaps the model over clients; with
  BatchNorm each client would carry (and leak, and need aggregating) its own running statistics, and
  a client holding one identity has degenerate batch statistics anyway. The final 512-d feature
  BatchNorm of insightface has no stateless counterpart that means anything before an L2
  normalisation, so it is omitted for "group" and "none".
* "batch": insightface's BatchNorm (momentum 0.9 in Flax terms = 0.1 in PyTorch terms, eps 1e-5, the
  feature BatchNorm without a scale). Train with `train=True, mutable=["batch_stats"]`; evaluate
  with `train=False` (running averages) and both `params` and `batch_stats` in the variables.
* "none": no normalisation; the last conv of every block starts at zero (Fixup-style) so that the
  50-layer stack starts as the identity.

Initialisation deviates from insightface (normal(0, 0.1) for every conv, harmless only under
BatchNorm): He-normal (fan-out) for convs, PReLU slopes 0.25 (PyTorch default, as insightface), and
the last norm's scale of each block at 0 (insightface's `zero_init_residual` option) so the stack
starts near the identity whichever norm is used.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedface_jax.models import common

Dtype = Any

IRESNET_BLOCKS = {
    50: (3, 4, 14, 3),
}
IRESNET_WIDTHS = (64, 128, 256, 512)
IRESNET_INPUT_SHAPE = (112, 112, 3)

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_PRELU_INIT = 0.25
_EPS = 1e-5


class IBasicBlock(nn.Module):
  """insightface's improved basic block (norm-conv-norm-PReLU-conv-norm + projection shortcut)."""
  features: int
  strides: int = 1
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = functools.partial(common.make_norm, self.norm, train=train, dtype=self.dtype,
                             epsilon=_EPS)
    y = norm(name="norm1")(x)
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, kernel_init=_CONV_INIT,
                dtype=self.dtype, name="conv1")(y)
    y = norm(name="norm2")(y)
    y = common.PReLU(_PRELU_INIT, dtype=self.dtype, name="prelu")(y)
    last_init = nn.initializers.zeros if self.norm == "none" else _CONV_INIT
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False,
                kernel_init=last_init, dtype=self.dtype, name="conv2")(y)
    y = norm(scale_init=nn.initializers.zeros, name="norm3")(y)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False,
                         kernel_init=_CONV_INIT, dtype=self.dtype, name="proj_conv")(x)
      shortcut = norm(name="proj_norm")(shortcut)
    return y + shortcut


class IResNet(nn.Module):
  """iResNet face-embedding backbone (see module docstring for the normalisation choices).

  Attributes:
    blocks: blocks per stage ((3, 4, 14, 3) for iResNet-50).
    embedding_dim: output dimension (512).
    widths: stage channels before `width_multiplier`.
    width_multiplier: scales every channel count (tests use e.g. 1/16).
    norm: "group" (default, stateless), "batch" or "none".
    dtype: compute dtype; params and output stay float32.
  """
  blocks: Sequence[int] = IRESNET_BLOCKS[50]
  embedding_dim: int = 512
  widths: Sequence[int] = IRESNET_WIDTHS
  width_multiplier: float = 1.0
  norm: str = "group"
  dtype: Dtype = jnp.float32
  remat: bool = False   # recompute each block's activations in the backward pass (nn.remat)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Embeds NHWC images (default 112x112, already `preprocess`ed) into `[B, D]` unit vectors.

    `train` only matters for `norm="batch"` (batch statistics vs running averages).
    """
    if len(self.blocks) != len(self.widths):
      raise ValueError(f"blocks {self.blocks} and widths {self.widths} must have the same length")
    if self.norm not in ("group", "batch", "none"):
      raise ValueError(f"unknown norm {self.norm!r}; valid: group, batch, none")
    norm = functools.partial(common.make_norm, self.norm, train=train, dtype=self.dtype,
                             epsilon=_EPS)
    x = x.astype(self.dtype)
    stem = common.scaled_width(self.widths[0], self.width_multiplier)
    x = nn.Conv(stem, (3, 3), padding="SAME", use_bias=False, kernel_init=_CONV_INIT,
                dtype=self.dtype, name="stem_conv")(x)
    x = norm(name="stem_norm")(x)
    x = common.PReLU(_PRELU_INIT, dtype=self.dtype, name="stem_prelu")(x)
    # `train` (argument 2, counting self) is a Python bool: static under remat.
    block_cls = nn.remat(IBasicBlock, static_argnums=(2,)) if self.remat else IBasicBlock
    for stage, (num_blocks, width) in enumerate(zip(self.blocks, self.widths)):
      features = common.scaled_width(width, self.width_multiplier)
      for block in range(num_blocks):
        x = block_cls(features, strides=2 if block == 0 else 1, norm=self.norm, dtype=self.dtype,
                      name=f"stage{stage + 1}_block{block + 1}")(x, train)
    x = norm(name="final_norm")(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.embedding_dim, use_bias=True, dtype=self.dtype, name="fc")(x)
    if self.norm == "batch":
      # insightface's `features` BatchNorm1d with its weight frozen at 1: no scale, learnable bias.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=_EPS, use_scale=False,
                       dtype=self.dtype, name="feature_norm")(x)
    return common.l2_normalize(x.astype(jnp.float32))


IResNet50 = functools.partial(IResNet, blocks=IRESNET_BLOCKS[50])
