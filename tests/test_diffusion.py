"""Tests of the public-face DDPM prior and the diffusion enhancers (tiny configs, CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.attack.diffusion import ddpm
from fedface_jax.attack.diffusion import enhance
from fedface_jax.attack.diffusion import schedule as schedule_lib
from fedface_jax.attack.diffusion import train_prior as train_lib
from fedface_jax.attack.diffusion import unet as unet_lib


def _smooth_images(n, size, seed=0):
  """Random smooth colour images: 4x4 noise, bicubically upsampled (a stand-in for faces)."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(0, 1, (n, 4, 4, 3)).astype(np.float32)
  up = jax.image.resize(jnp.asarray(low), (n, size, size, 3), "bicubic")
  return np.asarray(jnp.clip(up, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny():
  """A tiny prior trained for 30 steps, with its losses before/after on a fixed batch."""
  config = train_lib.default_prior_config("tiny")
  config.train.num_steps = 30
  model, schedule = train_lib.build_prior(config)
  images = _smooth_images(8, config.image_size)
  x_eval = jnp.asarray(np.tile(images, (4, 1, 1, 1)), jnp.float32) / 127.5 - 1.0
  eval_loss = jax.jit(lambda p: ddpm.diffusion_loss(p, model.apply, schedule, x_eval,
                                                    jax.random.key(7)))
  state = train_lib.init_train_state(config, 0)
  before = float(eval_loss(state["params"]))
  step_fn = train_lib.make_train_step(config)
  for step in range(config.train.num_steps):
    lr = train_lib.learning_rate_at(config.train, step)
    state, _ = step_fn(state, images, jax.random.key(step), lr)
  after = float(eval_loss(state["params"]))
  return dict(config=config, model=model, schedule=schedule, params=state["params"],
              images=images, before=before, after=after)


def test_linear_schedule_values():
  s = schedule_lib.linear_beta_schedule(1000)
  np.testing.assert_allclose(s.betas[0], 1e-4, rtol=1e-6)
  np.testing.assert_allclose(s.betas[-1], 0.02, rtol=1e-6)
  np.testing.assert_allclose(s.alpha_bars[0], 1 - 1e-4, rtol=1e-7)
  beta1 = 1e-4 + (0.02 - 1e-4) / 999
  np.testing.assert_allclose(s.alpha_bars[1], (1 - 1e-4) * (1 - beta1), rtol=1e-6)
  assert np.all(np.diff(np.asarray(s.alpha_bars)) < 0)
  assert float(s.alpha_bars[-1]) < 1e-4  # x_T is essentially pure noise
  assert float(schedule_lib.alpha_bar_at(s, -1)) == 1.0
  # A short chain is rescaled so that it still ends in noise.
  s100 = schedule_lib.linear_beta_schedule(100)
  np.testing.assert_allclose(s100.betas[0], 1e-3, rtol=1e-6)
  assert float(s100.alpha_bars[-1]) < 1e-3
  ts, ts_next = schedule_lib.skip_timesteps(1000, 50)
  assert (ts[0], ts[-1], ts_next[0], ts_next[-1], len(ts)) == (980, 0, 960, -1, 50)


@pytest.mark.parametrize("variant,sizes", [("demo", (32, 64)), ("full", (64,))])
def test_unet_output_shape(variant, sizes):
  # Shapes only (eval_shape traces without compiling); the tiny U-Net is run for real below.
  model, _ = train_lib.build_prior(train_lib.default_prior_config(variant))
  for size in sizes:
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x, t)["params"]
    eps = jax.eval_shape(model.apply, {"params": params}, x, t)
    assert eps.shape == (2, size, size, 3) and eps.dtype == jnp.float32
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(model.apply, {"params": params}, jnp.zeros((1, 18, 18, 3)), jnp.zeros(1, int))


def test_unet_is_fully_convolutional(tiny):
  apply = jax.jit(tiny["model"].apply)
  x = jnp.zeros((1, 32, 32, 3))
  eps = apply({"params": tiny["params"]}, x, jnp.array([5]))
  assert eps.shape == (1, 32, 32, 3) and bool(jnp.all(jnp.isfinite(eps)))


def test_training_loss_decreases(tiny):
  assert np.isfinite(tiny["after"])
  # Zero-initialised output: ε̂ = 0 at init, so the loss starts at E[ε²] ≈ 1.
  assert tiny["before"] == pytest.approx(1.0, abs=0.1)
  assert tiny["after"] < 0.8 * tiny["before"], (tiny["before"], tiny["after"])


def _gaussian_prior_apply(mu, std):
  """The exact ε-predictor for data ~ N(mu, std² I): E[ε | x_t] in closed form (tests only)."""
  sched = schedule_lib.linear_beta_schedule(100)

  def apply_fn(variables, x_t, t):
    del variables
    a = sched.alpha_bars[t][:, None, None, None]
    return jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * mu) / (a * std**2 + 1 - a)

  return apply_fn, sched


def test_ddrm_matches_measurement_when_noiseless():
  apply_fn, sched = _gaussian_prior_apply(0.0, 0.2)
  rng = np.random.default_rng(1)
  y01 = jnp.asarray(rng.uniform(0.35, 0.65, (2, 8, 8, 3)), jnp.float32)
  out = enhance.ddrm_super_resolution({}, apply_fn, y01, 2, 0.0, jax.random.key(3), num_steps=20,
                                      schedule=sched)
  assert out.shape == (2, 16, 16, 3)
  assert 0.0 < float(out.min()) and float(out.max()) < 1.0  # no clipping, so exact consistency
  block_mean = out.reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(block_mean, y01, atol=1e-5)
  # The null space (within-block detail) is generated, not copied from a nearest upsampling.
  assert float(jnp.std(out - jnp.repeat(jnp.repeat(y01, 2, 1), 2, 2))) > 0.01
  # With measurement noise the means are a denoised estimate: close, but no longer exact.
  noisy = enhance.ddrm_super_resolution({}, apply_fn, y01, 2, 0.05, jax.random.key(3),
                                        num_steps=20, schedule=sched)
  err = jnp.abs(noisy.reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4)) - y01)
  assert 1e-4 < float(err.mean()) < 0.1


def test_ddrm_with_unet_runs(tiny):
  y01 = jnp.asarray(tiny["images"][:2, ::2, ::2] / 255.0, jnp.float32)
  out = enhance.ddrm_super_resolution(tiny["params"], tiny["model"].apply, y01, 2, 0.05,
                                      jax.random.key(0), num_steps=10, schedule=tiny["schedule"])
  assert out.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(out)))
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_sdedit_small_t0_returns_input(tiny):
  x = jnp.asarray(tiny["images"][:4] / 255.0, jnp.float32)
  args = (tiny["params"], tiny["model"].apply, x)
  kw = dict(num_steps=5, schedule=tiny["schedule"])
  same = enhance.sdedit(*args, 0.0, jax.random.key(0), **kw)
  np.testing.assert_allclose(same, x, atol=1e-5)
  close = enhance.sdedit(*args, 0.01, jax.random.key(0), **kw)
  assert float(jnp.abs(close - x).mean()) < 0.03
  far = enhance.sdedit(*args, 0.8, jax.random.key(0), **kw)
  assert float(jnp.abs(far - x).mean()) > float(jnp.abs(close - x).mean())
  with pytest.raises(ValueError, match="t0_fraction"):
    enhance.sdedit(*args, 1.5, jax.random.key(0), **kw)


def test_load_or_train_prior_caches(tmp_path, monkeypatch):
  config = train_lib.default_prior_config("tiny")
  config.train.update(num_steps=4, checkpoint_every=2, log_every=2)
  images = _smooth_images(6, 20, seed=3)  # resized to 16x16 inside
  workdir = str(tmp_path / "prior")
  first = train_lib.load_or_train_prior(config, images, workdir)

  def no_training(*args, **kwargs):
    raise AssertionError("a finished prior must be loaded, not retrained")

  with monkeypatch.context() as m:
    m.setattr(train_lib, "train_prior", no_training)
    m.setattr(train_lib, "make_train_step", no_training)
    second = train_lib.load_or_train_prior(config, images, workdir)
    jax.tree.map(np.testing.assert_array_equal, first, second)
    # A cached prior trained on other images is refused rather than silently reused.
    with pytest.raises(ValueError, match="data"):
      train_lib.load_or_train_prior(config, images[::-1].copy(), workdir)
  # More steps: resumes from the finished checkpoint instead of starting over.
  config.train.num_steps = 6
  train_lib.load_or_train_prior(config, images, workdir)
  assert train_lib._make_checkpointer(tmp_path / "prior" / "checkpoints").latest_step() == 6


def test_prior_built_first_inside_a_trace_does_not_leak_tracers():
  config = train_lib.default_prior_config("tiny")
  config.diffusion.num_timesteps = 37   # a schedule no other test has cached yet
  jax.eval_shape(lambda: train_lib.build_prior(config)[1].betas * 1.0)
  _, schedule = train_lib.build_prior(config)
  assert isinstance(schedule.betas, jax.Array) and not isinstance(schedule.betas, jax.core.Tracer)
  assert float(schedule_lib.alpha_bar_at(schedule, 0)) < 1.0
