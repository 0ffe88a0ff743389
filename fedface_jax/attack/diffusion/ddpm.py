"""DDPM training objective and samplers (ancestral DDPM, DDIM) for the face prior.

Everything is a pure function of (params, apply_fn, schedule, …) so that it jits, and the
denoising loops are `jax.lax.scan`s: the U-Net is traced once whatever the number of steps. Images
are in the [-1, 1] data scale here; the [0, 1] ↔ [-1, 1] mapping is done by the enhancers.

`apply_fn` is called as `apply_fn({"params": params}, x_t, t)` with t int32 [B] (see unet.py).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from fedface_jax.attack.diffusion import schedule as schedule_lib

ApplyFn = Callable[..., jax.Array]


def diffusion_loss(params, apply_fn: ApplyFn, schedule: schedule_lib.Schedule, x0: jax.Array,
                   rng: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
  """The simple DDPM loss E_{t~U[0,T), ε}‖ε - ε̂(x_t, t)‖², averaged over pixels.

  Args:
    params: U-Net params.
    apply_fn: see module docstring; called with train=True and a dropout rng when one is given.
    schedule: noise schedule.
    x0: clean images [B, H, W, C] in [-1, 1].
    rng: key for t and ε.
    dropout_rng: key for dropout; None runs the model deterministically.

  Returns:
    Scalar float32 loss.
  """
  t_rng, n_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_timesteps)
  noise = jax.random.normal(n_rng, x0.shape, x0.dtype)
  x_t = schedule_lib.q_sample(schedule, x0, t, noise)
  if dropout_rng is None:
    eps = apply_fn({"params": params}, x_t, t)
  else:
    eps = apply_fn({"params": params}, x_t, t, train=True, rngs={"dropout": dropout_rng})
  return jnp.mean(jnp.square(eps - noise))


def _model_eps(params, apply_fn, x, t):
  # t = -1 (the clean image) is never fed to the model in a meaningful way; clamp for the embedding.
  tb = jnp.full((x.shape[0],), jnp.maximum(t, 0), jnp.int32)
  return apply_fn({"params": params}, x, tb)


def ddim_step(params, apply_fn: ApplyFn, schedule: schedule_lib.Schedule, x_t: jax.Array,
              t: jax.Array, t_next: jax.Array, rng: jax.Array, eta: float,
              clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One generalised DDIM step x_t -> x_{t_next} (Song et al. 2021, Eq. 12).

  σ = η sqrt((1-ᾱ')/(1-ᾱ)) sqrt(1-ᾱ/ᾱ'); η = 0 is deterministic DDIM, η = 1 matches
  DDPM's posterior variance. When x0 is clipped to [-1, 1], ε̂ is recomputed from the clipped x0
  so that the step stays on the line between them (as in guided-diffusion).

  Returns:
    (x_{t_next}, x0 prediction).
  """
  eps = _model_eps(params, apply_fn, x_t, t)
  x0 = schedule_lib.predict_x0(schedule, x_t, t, eps)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = jnp.where(t >= 0, schedule_lib.predict_eps(schedule, x_t, t, x0), eps)
  a = schedule_lib.alpha_bar_at(schedule, t)
  a_next = schedule_lib.alpha_bar_at(schedule, t_next)
  # max(), not "+ 1e-12": XLA may reassociate 1 - a + 1e-12 into (1 + 1e-12) - a = 0 in float32.
  var = eta**2 * (1.0 - a_next) / jnp.maximum(1.0 - a, 1e-12) * (1.0 - a / a_next)
  var = jnp.clip(var, 0.0, 1.0 - a_next)
  x_next = (jnp.sqrt(a_next) * x0 + jnp.sqrt(1.0 - a_next - var) * eps
            + jnp.sqrt(var) * jax.random.normal(rng, x_t.shape, x_t.dtype))
  return x_next, x0


def ddim_loop(params, apply_fn: ApplyFn, schedule: schedule_lib.Schedule, x_t: jax.Array,
              timesteps: jax.Array, next_timesteps: jax.Array, rng: jax.Array, eta: float = 0.0,
              clip_x0: bool = True) -> jax.Array:
  """Runs DDIM steps t_i -> t_next_i in order (a lax.scan); timesteps may be traced int arrays."""

  def body(x, inp):
    t, t_next, key = inp
    x, _ = ddim_step(params, apply_fn, schedule, x, t, t_next, key, eta, clip_x0)
    return x, None

  keys = jax.random.split(rng, timesteps.shape[0])
  x, _ = jax.lax.scan(body, x_t, (timesteps, next_timesteps, keys))
  return x


@functools.partial(jax.jit, static_argnames=("apply_fn", "shape", "num_steps", "clip_x0"))
def ddim_sample(params, apply_fn: ApplyFn, schedule: schedule_lib.Schedule, shape: tuple[int, ...],
                rng: jax.Array, num_steps: int = 50, eta: float = 0.0,
                clip_x0: bool = True) -> jax.Array:
  """Unconditional DDIM samples [*shape] in [-1, 1], with the uniform-skip respacing."""
  ts, ts_next = schedule_lib.skip_timesteps(schedule.num_timesteps, num_steps)
  init_rng, loop_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32)
  return ddim_loop(params, apply_fn, schedule, x, jnp.asarray(ts), jnp.asarray(ts_next), loop_rng,
                   eta, clip_x0)


@functools.partial(jax.jit, static_argnames=("apply_fn", "shape", "clip_x0"))
def ddpm_sample(params, apply_fn: ApplyFn, schedule: schedule_lib.Schedule, shape: tuple[int, ...],
                rng: jax.Array, clip_x0: bool = True) -> jax.Array:
  """Ancestral DDPM sampling over all T steps (Ho et al. 2020, Alg. 2) with the posterior variance.

  Uses the posterior q(x_{t-1} | x_t, x̂0) with β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t)
  ("fixedsmall"), written in terms of x̂0 so that x̂0 can be clipped to [-1, 1]. No noise is added
  on the last step.
  """
  T = schedule.num_timesteps
  init_rng, loop_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32)

  def body(x, inp):
    t, key = inp
    eps = _model_eps(params, apply_fn, x, t)
    x0 = schedule_lib.predict_x0(schedule, x, t, eps)
    if clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
    a = schedule.alpha_bars[t]
    a_prev = schedule_lib.alpha_bar_at(schedule, t - 1)
    beta = schedule.betas[t]
    coef_x0 = jnp.sqrt(a_prev) * beta / (1.0 - a)
    coef_xt = jnp.sqrt(schedule.alphas[t]) * (1.0 - a_prev) / (1.0 - a)
    var = beta * (1.0 - a_prev) / (1.0 - a)
    noise = jax.random.normal(key, x.shape, x.dtype)
    x = coef_x0 * x0 + coef_xt * x + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noise
    return x, None

  ts = jnp.arange(T - 1, -1, -1, dtype=jnp.int32)
  x, _ = jax.lax.scan(body, x, (ts, jax.random.split(loop_rng, T)))
  return x
