"""Building blocks shared by every face-embedding network.

All backbones in this package end the same way (features -> linear bottleneck -> L2 normalisation)
and all of them must stay *stateless* by default: the federated engine `jax.vmap`s a model over a
leading client axis of its params, and per-client batch statistics would be both a privacy leak and
an extra mutable collection to thread through every round. The helpers here keep those choices in
one place.
"""

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax.losses import l2_normalize  # one definition, re-exported as models.l2_normalize

Dtype = Any
Initializer = Callable[..., jax.Array]

# Normalisation kinds understood by `make_norm`. "batch" is the only one that needs mutable state.
NORM_KINDS = ("batch", "group", "layer", "none")


def preprocess(images_u8):
  """Maps uint8 pixels to FedFace's network input range, `(x - 127.5) / 128`.

  Kept as a free function (not a layer) so that the host-side input pipeline and the jitted step
  agree on one definition. NumPy input gives a NumPy float32 array (no device transfer), JAX input
  (including tracers) gives a JAX array. Float input is accepted as pixel values in [0, 255], which
  the inversion attack needs when it optimises images in pixel space.

  Args:
    images_u8: `[..., H, W, 3]` pixel values, usually uint8.

  Returns:
    float32 array of the same shape, roughly in [-1, 1].
  """
  if isinstance(images_u8, jax.Array):
    return (images_u8.astype(jnp.float32) - 127.5) / 128.0
  return (np.asarray(images_u8, dtype=np.float32) - 127.5) / 128.0




class PReLU(nn.Module):
  """Parametric ReLU with one learnable slope per channel (last axis).

  Flax's built-in `nn.PReLU` has a single scalar slope; SphereFace/CosFace nets and insightface's
  iResNet use one per channel. Computed as `relu(x) + alpha * min(x, 0)`, the form of FedFace's
  `parametric_relu`, so `alpha_init=0` starts out exactly as a ReLU.

  Attributes:
    alpha_init: initial slope for negative inputs (FedFace SphereNet: 0.0; PyTorch/insightface:
      0.25).
    dtype: computation dtype (None: that of the input).
    param_dtype: dtype of `alpha`.
  """
  alpha_init: float = 0.0
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (x.shape[-1],),
                       self.param_dtype)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    return jax.nn.relu(x) + alpha.astype(dtype) * jnp.minimum(x, 0)


def scaled_width(width: int, multiplier: float) -> int:
  """Channel count after applying a width multiplier (at least 1), so tests can shrink full nets."""
  if multiplier <= 0:
    raise ValueError(f"width_multiplier must be > 0, got {multiplier}")
  return max(1, int(round(width * multiplier)))


def group_count(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
  """Number of GroupNorm groups for `channels`: the largest divisor that keeps groups >= 4 channels.

  A fixed 32 groups (the GroupNorm paper default) does not divide the narrow widths used on CPU or
  the shrunken widths used in tests; this picks the largest divisor of `channels` that is at most
  `max_groups` and leaves at least `min_group_size` channels per group (1 group if none does).
  """
  limit = max(1, min(max_groups, channels // min_group_size))
  for groups in range(limit, 0, -1):
    if channels % groups == 0:
      return groups
  return 1


class Identity(nn.Module):
  """No-op stand-in for a normalisation layer: call sites need no special case for `norm="none"`."""

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: Optional[bool] = None) -> jax.Array:
    del use_running_average
    return x


def make_norm(kind: str,
              *,
              train: bool = False,
              dtype: Dtype = jnp.float32,
              epsilon: float = 1e-5,
              use_scale: bool = True,
              use_bias: bool = True,
              scale_init: Initializer = nn.initializers.ones,
              momentum: float = 0.9,
              name: Optional[str] = None) -> Callable[[jax.Array], jax.Array]:
  """Returns a normalisation layer of the given kind (see `NORM_KINDS`).

  GroupNorm and LayerNorm normalise each example on its own, so a model built with them is a pure
  function of its params: vmapping over clients or padding a batch cannot change any other example's
  output. BatchNorm is offered for completeness (insightface fidelity); it needs the `batch_stats`
  collection, mutable in training and `use_running_average=True` (`train=False`) in evaluation.

  The returned callable takes only the activations; the channel count for GroupNorm is read lazily.
  """
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        use_scale=use_scale, use_bias=use_bias, scale_init=scale_init,
                        dtype=dtype, name=name)
  if kind == "group":
    # GroupNorm needs num_groups up front, so wrap it to read the channel count from the input.
    return _LazyGroupNorm(epsilon=epsilon, use_scale=use_scale, use_bias=use_bias,
                          scale_init=scale_init, dtype=dtype, name=name)
  if kind == "layer":
    return nn.LayerNorm(epsilon=epsilon, use_scale=use_scale, use_bias=use_bias,
                        scale_init=scale_init, dtype=dtype, name=name)
  if kind == "none":
    return Identity(name=name)
  raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORM_KINDS)}")


class _LazyGroupNorm(nn.Module):
  """GroupNorm whose group count is chosen from the input's channel count by `group_count`.

  Flax's `nn.GroupNorm` fixes the group count (or size) at construction, which does not fit nets
  whose widths are scaled by a multiplier. Statistics are computed in float32 whatever the compute
  dtype. Params are `scale` and `bias`, shape `[C]`, as in `nn.GroupNorm`.
  """
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Initializer = nn.initializers.ones
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    groups = group_count(channels)
    xf = x.astype(jnp.float32)
    grouped = xf.reshape(xf.shape[:-1] + (groups, channels // groups))
    # Reduce over all spatial axes and the within-group channel axis; keep batch and group axes.
    reduce_axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    mean = jnp.mean(grouped, axis=reduce_axes, keepdims=True)
    var = jnp.mean(jnp.square(grouped - mean), axis=reduce_axes, keepdims=True)
    y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(xf.shape)
    if self.use_scale:
      y = y * self.param("scale", self.scale_init, (channels,), jnp.float32)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    return y.astype(self.dtype)


def conv_out_size(size: int, stride: int) -> int:
  """Spatial size after a SAME-padded convolution with the given stride."""
  return int(math.ceil(size / stride))


class EmbeddingHead(nn.Module):
  """Flatten (or average-pool) -> linear bottleneck -> float32 L2 normalisation.

  The L2 normalisation is part of the model (as in FedFace's `sphere_net_rec`), so every consumer --
  the margin losses, the class-embedding initialisation from mean features, verification -- sees
  unit vectors. It is computed in float32 whatever the compute dtype, because cosine margins of 0.35
  at scale 64 are too fine for bfloat16.

  Attributes:
    embedding_dim: output dimension.
    pooling: "flatten" keeps the spatial layout of aligned faces (SphereFace, iResNet); "avg" is
      global average pooling (input-size independent, fewer params).
    use_bias: whether the bottleneck has a bias (SphereFace: no; insightface: yes).
    kernel_init: bottleneck initialiser.
    dtype: compute dtype of the bottleneck matmul.
  """
  embedding_dim: int = 512
  pooling: str = "flatten"
  use_bias: bool = False
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = pool_features(x, self.pooling)
    x = nn.Dense(self.embedding_dim, use_bias=self.use_bias, kernel_init=self.kernel_init,
                 dtype=self.dtype, name="bottleneck")(x)
    return l2_normalize(x.astype(jnp.float32))


def pool_features(x: jax.Array, pooling: str) -> jax.Array:
  """Turns an NHWC feature map into `[B, F]` features by flattening or global average pooling."""
  if pooling == "flatten":
    return x.reshape(x.shape[0], -1)
  if pooling == "avg":
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)
  raise ValueError(f"unknown pooling {pooling!r}; valid: flatten, avg")
