"""A small ε-predicting U-Net for the public-face DDPM prior.

The paper's priors (ADM ImageNet-256, MDT) are far too big to train here and were trained on data we
must not assume; a few-million-parameter DDPM U-Net (Ho et al. 2020 layout: sinusoidal time
embedding, GroupNorm+SiLU residual blocks, self-attention at the lowest resolution) is enough to
learn the low-frequency structure of 32x32 / 64x64 faces, which is what the enhancers need. Fully
convolutional, so the same weights run at any size divisible by 2**(len(channel_mults)-1).

Call convention used by every sampler in this package:
  `apply_fn({"params": params}, x_t, t) -> ε̂`, x_t float [B, H, W, C] in the [-1, 1] data scale,
  t int32 [B] in [0, T).
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Transformer-style sinusoidal embedding of (possibly fractional) timesteps, [B] -> [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _group_norm(channels: int, num_groups: int, dtype) -> nn.GroupNorm:
  # The largest group count <= num_groups that divides the channels, so tiny test configs work.
  return nn.GroupNorm(num_groups=math.gcd(num_groups, channels), dtype=dtype)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv twice, with the time embedding added in between (DDPM residual block)."""
  channels: int
  num_groups: int = 8
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, train: bool = False):
    h = nn.silu(_group_norm(x.shape[-1], self.num_groups, self.dtype)(x))
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(h)
    h = h + nn.Dense(self.channels, dtype=self.dtype)(nn.silu(temb))[:, None, None, :]
    h = nn.silu(_group_norm(self.channels, self.num_groups, self.dtype)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    # Zero init: every block starts as the identity, which keeps early training stable.
    h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), dtype=self.dtype)(x)
    return x + h


class AttnBlock(nn.Module):
  """Multi-head self-attention over all spatial positions, residual, zero-initialised output."""
  num_heads: int = 1
  num_groups: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"attention channels {c} not divisible by num_heads {self.num_heads}")
    h = _group_norm(c, self.num_groups, self.dtype)(x).reshape(b, hgt * wid, c)
    qkv = nn.Dense(3 * c, dtype=self.dtype)(h).reshape(b, hgt * wid, 3, self.num_heads,
                                                        c // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    h = jax.nn.dot_product_attention(q, k, v).reshape(b, hgt * wid, c)
    h = nn.Dense(c, kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
    return x + h.reshape(b, hgt, wid, c)


class UNet(nn.Module):
  """DDPM U-Net predicting ε.

  Attributes:
    base_channels: channels at full resolution.
    channel_mults: per-level multipliers; level i runs at resolution H / 2**i.
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    use_attention: self-attention after each block at the lowest resolution and in the middle.
    num_heads: attention heads.
    num_groups: GroupNorm groups (reduced automatically where channels are fewer).
    dropout: dropout rate inside residual blocks (active only with train=True).
    out_channels: 3 for RGB ε.
    dtype: computation dtype (params stay float32); bfloat16 is sensible on GPU.
  """
  base_channels: int = 32
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  use_attention: bool = True
  num_heads: int = 4
  num_groups: int = 8
  dropout: float = 0.0
  out_channels: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, t, train: bool = False):
    """x: [B, H, W, C] in [-1, 1]; t: int [B] or scalar. Returns ε̂ [B, H, W, out_channels]
    f32."""
    levels = len(self.channel_mults)
    factor = 2 ** (levels - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"spatial size {x.shape[1:3]} must be divisible by {factor}")
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    temb_dim = 4 * self.base_channels
    temb = timestep_embedding(t, self.base_channels)
    temb = nn.Dense(temb_dim, dtype=self.dtype)(temb)
    temb = nn.Dense(temb_dim, dtype=self.dtype)(nn.silu(temb))

    block = lambda ch: ResBlock(ch, self.num_groups, self.dropout, self.dtype)
    attn = lambda: AttnBlock(self.num_heads, self.num_groups, self.dtype)

    h = nn.Conv(self.base_channels, (3, 3), dtype=self.dtype)(x.astype(self.dtype))
    skips = [h]
    for level, mult in enumerate(self.channel_mults):
      lowest = level == levels - 1
      for _ in range(self.num_res_blocks):
        h = block(self.base_channels * mult)(h, temb, train)
        if lowest and self.use_attention:
          h = attn()(h)
        skips.append(h)
      if not lowest:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
        skips.append(h)

    h = block(h.shape[-1])(h, temb, train)
    if self.use_attention:
      h = attn()(h)
    h = block(h.shape[-1])(h, temb, train)

    for level in reversed(range(levels)):
      lowest = level == levels - 1
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.base_channels * self.channel_mults[level])(h, temb, train)
        if lowest and self.use_attention:
          h = attn()(h)
      if level:
        b, hgt, wid, c = h.shape
        h = jax.image.resize(h, (b, 2 * hgt, 2 * wid, c), method="nearest")
        h = nn.Conv(c, (3, 3), dtype=self.dtype)(h)
    assert not skips

    h = nn.silu(_group_norm(h.shape[-1], self.num_groups, self.dtype)(h))
    h = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
    return h.astype(jnp.float32)


def unet_from_config(model_config) -> UNet:
  """Builds the U-Net from a `config.model` ConfigDict (field names as the UNet attributes)."""
  return UNet(
      base_channels=model_config.base_channels,
      channel_mults=tuple(model_config.channel_mults),
      num_res_blocks=model_config.num_res_blocks,
      use_attention=model_config.use_attention,
      num_heads=model_config.num_heads,
      num_groups=model_config.num_groups,
      dropout=model_config.dropout,
      dtype=jnp.dtype(model_config.dtype))
