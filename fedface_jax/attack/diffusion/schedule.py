"""Noise schedules for the DDPM face prior.

The enhancers (SDEdit, DDRM) and the sampler all need the same small set of quantities -- β_t,
ᾱ_t and the variance-exploding noise level σ_t = sqrt(1-ᾱ_t)/sqrt(ᾱ_t) -- so they live here
once, as a `Schedule` NamedTuple that is a pytree and can be passed straight into jitted functions.

Timestep convention (matches DDIM/DDRM reference code): t ∈ {0, …, T-1} indexes a noisy state
x_t with ᾱ_t = ∏_{s≤t}(1-β_s); the "virtual" index t = -1 is the clean image, with
ᾱ_{-1} = 1. Samplers walk a decreasing sequence of timesteps and finish with a step to t = -1.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """Per-timestep diffusion constants, all float32 arrays of shape [T]."""
  betas: jax.Array
  alphas: jax.Array
  alpha_bars: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def linear_beta_schedule(num_timesteps: int = 1000,
                         beta_start: float = 1e-4,
                         beta_end: float = 0.02,
                         scale_to_num_timesteps: bool = True) -> Schedule:
  """The DDPM linear β schedule (Ho et al. 2020).

  Args:
    num_timesteps: T.
    beta_start: β_0 for T = 1000.
    beta_end: β_{T-1} for T = 1000.
    scale_to_num_timesteps: multiply both ends by 1000/T (the "linear" schedule of Nichol & Dhariwal
      2021). Without it a short chain (e.g. T = 100 for tests) would end at ᾱ_T ≈ 0.37, i.e. x_T
      would not be noise and sampling from N(0, I) would be wrong. For T = 1000 it is a no-op.

  Returns:
    The schedule.
  """
  if num_timesteps < 2:
    raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
  scale = 1000.0 / num_timesteps if scale_to_num_timesteps else 1.0
  lo, hi = beta_start * scale, beta_end * scale
  if not 0.0 < lo <= hi < 1.0:
    raise ValueError(f"invalid β range [{lo}, {hi}] (after scaling by {scale})")
  # float64 on the host so that the cumulative product matches reference implementations.
  betas = np.linspace(lo, hi, num_timesteps, dtype=np.float64)
  alphas = 1.0 - betas
  alpha_bars = np.cumprod(alphas)
  return Schedule(betas=jnp.asarray(betas, jnp.float32),
                  alphas=jnp.asarray(alphas, jnp.float32),
                  alpha_bars=jnp.asarray(alpha_bars, jnp.float32))


def schedule_from_config(diffusion_config) -> Schedule:
  """The schedule of a `config.diffusion` ConfigDict (num_timesteps, beta_start, beta_end)."""
  return linear_beta_schedule(
      num_timesteps=diffusion_config.num_timesteps,
      beta_start=diffusion_config.beta_start,
      beta_end=diffusion_config.beta_end,
      scale_to_num_timesteps=diffusion_config.scale_to_num_timesteps)


def alpha_bar_at(schedule: Schedule, t: jax.Array) -> jax.Array:
  """ᾱ_t with the convention ᾱ_{-1} = 1 (the clean image); t may be any integer array."""
  t = jnp.asarray(t, jnp.int32)
  return jnp.where(t < 0, 1.0, schedule.alpha_bars[jnp.clip(t, 0, schedule.num_timesteps - 1)])


def ve_sigma(alpha_bar: jax.Array) -> jax.Array:
  """σ = sqrt(1-ᾱ)/sqrt(ᾱ), the noise level of x_t/sqrt(ᾱ_t) = x_0 + σ ε (DDRM's form)."""
  return jnp.sqrt(1.0 - alpha_bar) / jnp.sqrt(alpha_bar)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-example [B] (or scalar) array so it broadcasts against NHWC `x`."""
  v = jnp.asarray(v, x.dtype)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)) if v.ndim else v


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """Forward process: x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε, with t of shape [B] or scalar."""
  ab = _bcast(alpha_bar_at(schedule, t), x0)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  """Inverts the forward process given an ε estimate: x0 = (x_t - sqrt(1-ᾱ_t) ε)/sqrt(ᾱ_t)."""
  ab = _bcast(alpha_bar_at(schedule, t), x_t)
  return (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def predict_eps(schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  """The ε consistent with x_t and an (e.g. clipped) x0; undefined at t = -1 (returns 0)."""
  ab = _bcast(alpha_bar_at(schedule, t), x_t)
  return jnp.where(ab < 1.0, (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(jnp.maximum(1.0 - ab, 1e-12)),
                   0.0)


def skip_timesteps(num_timesteps: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """The "uniform skip" respacing of the DDIM/DDRM reference code, in sampling order.

  seq = range(0, T, T // num_steps) and seq_next = [-1] + seq[:-1], both reversed, so that the chain
  starts at the largest kept timestep and ends with a step to the clean image (t = -1). With
  T = 1000 and 50 steps: 980, 960, …, 0 → 960, 940, …, -1.

  Args:
    num_timesteps: T.
    num_steps: number of denoising steps; must be in [1, T].

  Returns:
    (timesteps, next_timesteps), int32 numpy arrays of length len(seq).
  """
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
  seq = np.arange(0, num_timesteps, num_timesteps // num_steps, dtype=np.int32)
  seq_next = np.concatenate([np.array([-1], np.int32), seq[:-1]])
  return seq[::-1].copy(), seq_next[::-1].copy()
