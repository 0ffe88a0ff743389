"""Training (and caching) of the public-face DDPM prior used by the enhancers.

The prior must see only public faces -- the pretrain identities, disjoint from the federated
victims -- or the enhancement would leak the victims' faces into the "reconstruction". This module
turns a uint8 face array into EMA U-Net params: Adam with warmup, EMA of the weights, random
horizontal flips, orbax checkpoints with resumption, and `load_or_train_prior`, which returns the
cached prior when a finished checkpoint exists so that attack runs never retrain it.

Workdir layout: `checkpoints/` (orbax steps), `prior_meta.json` (model config + data fingerprint,
checked on resume/load so a stale prior is never silently reused), `samples.png` (DDIM samples).
"""

import functools
import hashlib
import json
import math
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image

from fedface_jax import metrics_io
from fedface_jax import progress
from fedface_jax.attack.diffusion import ddpm
from fedface_jax.attack.diffusion import schedule as schedule_lib
from fedface_jax.attack.diffusion import unet as unet_lib

_META_FILE = "prior_meta.json"


def default_prior_config(variant: str = "demo") -> mlc.ConfigDict:
  """Prior configs.

  Args:
    variant: "tiny" (unit tests: 16x16, base 8, T = 100, 20 steps), "demo" (32x32, trainable on 2
      CPU cores in minutes), or "full" (64x64, meant for a GPU).

  Returns:
    ConfigDict with `image_size`, `model` (UNet fields), `diffusion` (schedule), `train`, `sample`.
  """
  c = mlc.ConfigDict()
  c.variant = variant
  c.model = mlc.ConfigDict(dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                                use_attention=True, num_heads=4, num_groups=8, dropout=0.0,
                                dtype="float32"))
  c.diffusion = mlc.ConfigDict(dict(num_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                    scale_to_num_timesteps=True))
  c.train = mlc.ConfigDict(dict(batch_size=32, num_steps=3000, learning_rate=1e-3, warmup_steps=100,
                                end_lr_fraction=0.1, grad_clip=1.0, ema_decay=0.999, seed=0,
                                checkpoint_every=500, log_every=50, random_flip=True))
  # Samples written to workdir/samples.png at the end of training (0 = none).
  c.sample = mlc.ConfigDict(dict(num_grid=16, num_steps=50, eta=0.0))
  if variant == "tiny":
    c.image_size = 16
    c.model.update(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, num_heads=1)
    c.diffusion.num_timesteps = 100
    c.train.update(batch_size=8, num_steps=20, learning_rate=2e-3, warmup_steps=5,
                   end_lr_fraction=1.0, ema_decay=0.9, checkpoint_every=10, log_every=5)
    c.sample.num_grid = 0
  elif variant == "demo":
    c.image_size = 32
  elif variant == "full":
    c.image_size = 64
    c.model.update(base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2, dropout=0.1)
    c.train.update(batch_size=64, num_steps=100_000, learning_rate=2e-4, warmup_steps=1000,
                   end_lr_fraction=1.0, ema_decay=0.9999, checkpoint_every=5000, log_every=200)
    c.sample.num_grid = 64
  else:
    raise ValueError(f"unknown prior variant {variant!r}; expected tiny, demo or full")
  return c


def _freeze(d) -> str:
  """A hashable, order-independent key for (parts of) a config."""
  return json.dumps(d, sort_keys=True, default=list)


@functools.lru_cache(maxsize=16)
def _build_prior_cached(key: str):
  d = json.loads(key)
  model = unet_lib.unet_from_config(mlc.ConfigDict(d["model"]))
  # The first call may come from inside a trace (`jax.eval_shape` of the train state): without
  # this, the cached schedule would hold that trace's tracers and leak them into every later use.
  with jax.ensure_compile_time_eval():
    schedule = schedule_lib.schedule_from_config(mlc.ConfigDict(d["diffusion"]))
  return model, schedule


def build_prior(config: mlc.ConfigDict) -> tuple[unet_lib.UNet, schedule_lib.Schedule]:
  """The U-Net module and schedule a config describes; `module.apply` is the enhancers' apply_fn.

  Memoised on the model/diffusion config, so repeated calls return the *same* module and the jitted
  enhancers (which take `apply_fn` as a static argument, hashed by module identity) do not
  recompile.
  """
  return _build_prior_cached(_freeze(dict(model=config.model.to_dict(),
                                          diffusion=config.diffusion.to_dict())))


# ------------------------------------------------------------------------------------------- data


def prepare_images(images_u8: np.ndarray, image_size: int) -> np.ndarray:
  """Validates a uint8 NHWC RGB array; resizes it once (Pillow bicubic, antialiased) to size²."""
  images_u8 = np.asarray(images_u8) if not isinstance(images_u8, np.ndarray) else images_u8
  if images_u8.dtype != np.uint8 or images_u8.ndim != 4 or images_u8.shape[-1] != 3:
    raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images_u8.dtype} {images_u8.shape}")
  if images_u8.shape[0] == 0:
    raise ValueError("no images to train the prior on")
  if images_u8.shape[1:3] == (image_size, image_size):
    return np.ascontiguousarray(images_u8)
  out = np.empty((images_u8.shape[0], image_size, image_size, 3), np.uint8)
  for i in progress.progress(range(images_u8.shape[0]), "resize prior images", unit="img",
                             disable=images_u8.shape[0] < 5000):
    out[i] = np.asarray(Image.fromarray(np.asarray(images_u8[i])).resize(
        (image_size, image_size), Image.BICUBIC))
  return out


def _data_fingerprint(images: np.ndarray) -> str:
  # A strided sample: cheap on large memmaps, and any change of dataset or split shows up.
  idx = np.linspace(0, images.shape[0] - 1, num=min(64, images.shape[0])).astype(np.int64)
  h = hashlib.sha1(str(images.shape).encode())
  h.update(np.ascontiguousarray(images[idx]).tobytes())
  return h.hexdigest()


def _meta(config: mlc.ConfigDict, images: np.ndarray) -> dict:
  return dict(image_size=int(config.image_size), model=config.model.to_dict(),
              diffusion=config.diffusion.to_dict(), data=_data_fingerprint(images))


def _check_meta(workdir: str, meta: dict) -> None:
  """Refuses to resume/load a prior trained with another model config or on other images."""
  path = os.path.join(workdir, _META_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  new = json.loads(json.dumps(meta))  # tuples -> lists, as stored
  diffs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  if diffs:
    raise ValueError(f"the prior in {workdir} was trained with different {diffs}; use another "
                     f"workdir (or delete it) to train a new prior")


# ---------------------------------------------------------------------------------------- training


def learning_rate_at(train_config: mlc.ConfigDict, step: int) -> float:
  """Linear warmup to learning_rate, then cosine decay to end_lr_fraction·learning_rate.

  Computed on the host and fed to the jitted step, so that the compiled step does not depend on
  num_steps (changing the length of a run, e.g. to resume it longer, reuses the compilation).
  """
  peak = train_config.learning_rate
  warmup = max(1, train_config.warmup_steps)
  if step < warmup:
    return peak * (step + 1) / warmup
  decay = max(1, train_config.num_steps - warmup)
  progress_frac = min(1.0, (step - warmup) / decay)
  end = peak * train_config.end_lr_fraction
  return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress_frac))


def _optimizer(grad_clip: float) -> optax.GradientTransformation:
  # Adam without its learning rate, which the step applies (see learning_rate_at).
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.scale_by_adam())


@functools.lru_cache(maxsize=16)
def _jitted_init(key: str):
  model, _ = _build_prior_cached(key)
  return jax.jit(model.init)


def init_train_state(config: mlc.ConfigDict, seed: int) -> dict:
  """{"step", "params", "ema_params", "opt_state"}: a plain pytree that orbax saves as is."""
  s = config.image_size
  init = _jitted_init(_freeze(dict(model=config.model.to_dict(),
                                   diffusion=config.diffusion.to_dict())))
  # An "rbg" key: with the default threefry, XLA's CPU compile of the ~100 param initialisers takes
  # several times longer than the whole U-Net forward pass.
  rng = jax.random.key(seed, impl="rbg")
  params = init(rng, jnp.zeros((1, s, s, 3)), jnp.zeros((1,), jnp.int32))["params"]
  opt_state = _optimizer(config.train.grad_clip).init(params)
  return dict(step=jnp.zeros((), jnp.int32), params=params,
              ema_params=jax.tree.map(jnp.copy, params), opt_state=opt_state)


def make_train_step(config: mlc.ConfigDict):
  """Jitted `train_step(state, images_u8, rng, lr) -> (state, loss)`, images [B, S, S, 3] uint8.

  The step maps to [-1, 1], applies random horizontal flips (faces are roughly symmetric, so this
  doubles the data for free), takes one Adam step of size `lr` on the ε-MSE and updates the EMA
  with the usual warm-started decay min(decay, (1+step)/(10+step)) so short runs still get a useful
  EMA. Memoised on the parts of the config it depends on.
  """
  tc = config.train
  return _make_train_step_cached(_freeze(dict(
      model=config.model.to_dict(), diffusion=config.diffusion.to_dict(),
      grad_clip=tc.grad_clip, ema_decay=tc.ema_decay, random_flip=tc.random_flip)))


@functools.lru_cache(maxsize=16)
def _make_train_step_cached(key: str):
  d = json.loads(key)
  model, schedule = _build_prior_cached(_freeze(dict(model=d["model"], diffusion=d["diffusion"])))
  optimizer = _optimizer(d["grad_clip"])
  use_dropout = d["model"]["dropout"] > 0
  flip, ema_decay = d["random_flip"], d["ema_decay"]

  def train_step(state, images_u8, rng, lr):
    flip_rng, loss_rng, drop_rng = jax.random.split(rng, 3)
    x = images_u8.astype(jnp.float32) / 127.5 - 1.0
    if flip:
      do_flip = jax.random.bernoulli(flip_rng, 0.5, (x.shape[0], 1, 1, 1))
      x = jnp.where(do_flip, x[:, :, ::-1, :], x)
    loss_fn = lambda p: ddpm.diffusion_loss(p, model.apply, schedule, x, loss_rng,
                                            drop_rng if use_dropout else None)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
    step = state["step"]
    decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
    return dict(step=step + 1, params=params, ema_params=ema, opt_state=opt_state), loss

  return jax.jit(train_step, donate_argnums=0)


# ------------------------------------------------------------------------------------ checkpoints


class _OrbaxCheckpointer:
  """Minimal stand-in with the interface of fedface_jax.checkpoint.Checkpointer (used if absent)."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self._mngr = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))

  def save(self, step: int, pytree) -> None:
    self._mngr.save(step, args=ocp.args.StandardSave(pytree))

  def latest_step(self):
    return self._mngr.latest_step()

  def restore(self, step: int, abstract_pytree):
    return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_pytree))

  def wait(self) -> None:
    self._mngr.wait_until_finished()


def _make_checkpointer(directory: str):
  try:
    from fedface_jax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _OrbaxCheckpointer(directory, max_to_keep=3)
  return Checkpointer(directory, max_to_keep=3)


def _wait(ckpt) -> None:
  if hasattr(ckpt, "wait"):
    ckpt.wait()


def _abstract_state(config: mlc.ConfigDict) -> dict:
  return jax.eval_shape(lambda: init_train_state(config, 0))


# ------------------------------------------------------------------------------------------ public


def save_sample_grid(images01: np.ndarray, path: str, num_cols: int | None = None) -> None:
  """Writes [N, H, W, 3] images in [0, 1] as one PNG grid (for eyeballing the prior)."""
  images = np.clip(np.asarray(images01, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  cols = num_cols or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = images[i]
  Image.fromarray((grid * 255.0 + 0.5).astype(np.uint8)).save(path)


def sample_prior(config: mlc.ConfigDict, params, num: int, rng: jax.Array, num_steps: int = 50,
                 eta: float = 0.0) -> jax.Array:
  """Unconditional DDIM samples from the prior, [num, S, S, 3] in [0, 1]."""
  model, schedule = build_prior(config)
  s = config.image_size
  x = ddpm.ddim_sample(params, model.apply, schedule, (num, s, s, 3), rng, num_steps, eta)
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def train_prior(config: mlc.ConfigDict, images_u8: np.ndarray, workdir: str):
  """Trains the prior (resuming from the latest checkpoint in workdir) and returns its EMA params.

  Args:
    config: from `default_prior_config`.
    images_u8: [N, H, W, 3] uint8 public faces (never the victims'); resized once to image_size.
    workdir: holds checkpoints/, prior_meta.json and samples.png.

  Returns:
    The EMA params (the ones to sample/enhance with).
  """
  images = prepare_images(images_u8, config.image_size)
  meta = _meta(config, images)
  os.makedirs(workdir, exist_ok=True)
  _check_meta(workdir, meta)
  with open(os.path.join(workdir, _META_FILE), "w") as f:
    json.dump(meta, f, indent=1)

  tc = config.train
  ckpt = _make_checkpointer(os.path.join(workdir, "checkpoints"))
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(latest, _abstract_state(config))
    logging.info("prior: resumed from step %d in %s", latest, workdir)
  else:
    state = init_train_state(config, tc.seed)
  start = int(state["step"])
  train_step = make_train_step(config)
  base_rng = jax.random.key(tc.seed + 1)
  n = images.shape[0]
  batch = tc.batch_size

  losses = []
  t_start = time.time()
  writer = metrics_io.MetricWriter(workdir, tensorboard=False, jsonl_name="prior_metrics.jsonl")
  with progress.progress(tc.num_steps, "prior") as bar:
    bar.update(start)
    for step in range(start, tc.num_steps):
      idx = np.random.default_rng([tc.seed, step]).integers(0, n, size=batch)
      state, loss = train_step(state, images[idx], jax.random.fold_in(base_rng, step),
                               np.float32(learning_rate_at(tc, step)))
      losses.append(loss)
      bar.update()
      done = step + 1
      if done % tc.log_every == 0 or done == tc.num_steps:
        mean_loss = float(jnp.mean(jnp.stack(losses)))
        if not np.isfinite(mean_loss):
          raise FloatingPointError(f"prior training diverged at step {done} (loss {mean_loss})")
        losses = []
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        writer.write(done, {"prior_loss": mean_loss, "elapsed_s": time.time() - t_start})
        logging.info("prior step %d loss %.4f (%.1f s)", done, mean_loss, time.time() - t_start)
      if done % tc.checkpoint_every == 0 or done == tc.num_steps:
        ckpt.save(done, state)
  writer.close()
  _wait(ckpt)

  if start < tc.num_steps and config.sample.num_grid > 0:
    samples = sample_prior(config, state["ema_params"], config.sample.num_grid,
                           jax.random.key(tc.seed + 2), config.sample.num_steps, config.sample.eta)
    save_sample_grid(np.asarray(samples), os.path.join(workdir, "samples.png"))
  return state["ema_params"]


def load_or_train_prior(config: mlc.ConfigDict, images_u8: np.ndarray, workdir: str):
  """The prior is cached as a checkpoint: returns its EMA params if training finished, else trains.

  A checkpoint at step ≥ config.train.num_steps counts as finished; an unfinished one is resumed.
  Raises ValueError if the cached prior was trained with another model config or other images.
  """
  ckpt = _make_checkpointer(os.path.join(workdir, "checkpoints"))
  latest = ckpt.latest_step()
  if latest is not None and latest >= config.train.num_steps:
    images = prepare_images(images_u8, config.image_size)
    _check_meta(workdir, _meta(config, images))
    abstract = _abstract_state(config)
    state = ckpt.restore(latest, abstract)
    logging.info("prior: loaded finished checkpoint (step %d) from %s", latest, workdir)
    return state["ema_params"]
  return train_prior(config, images_u8, workdir)
