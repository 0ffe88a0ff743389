"""Local training on one phone: FedFace's positive-only loss on the owner's photos.

A client only has positive examples of one identity, so its loss pulls its
features towards its own class embedding w_c:
  mean_x max(0, m - cos(f(x), w_c))^2          (FedFace, m = 0.9).
Where w_c comes from is `federated.class_embedding` (see `CLASS_EMBEDDING`):
the server's row, fixed (FedFace code); recomputed by the client as its mean
feature under the current global model each time it joins; or trained along
with the backbone (FedAwS). In the last two the server receives the new row.

Optional public negatives (`client.public_negatives`): the class embeddings
of the public (pretraining) identities come with the model, and the loss
becomes CosFace over {own row} + public rows, so a client also pushes its
photos away from identities that are not its owner, at no privacy cost.

`local_loss` picks the client objective:
  * "positive_only" (default): FedFace's hinge above;
  * "softmax_ce": a classifier client (the curious-client attack's LeNet
    victims, ATTACK.md 1): the model returns logits and the loss is the cross
    entropy against the client's row of the class table, read as a (one-hot)
    label vector, so a table with row c = e_c gives every image of client c
    the label c. The row is a constant here (never trained).

Everything here is a pure function of one client's arrays, so the engine can
`vmap` it over a chunk of clients and shard chunks over devices.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from fedface_jax import losses
from fedface_jax import models
from fedface_jax import optim
from fedface_jax.federated import hooks as hooks_lib
from fedface_jax.federated import loops

# federated.class_embedding: where a client's class row w_c comes from.
CLASS_EMBEDDING = ("frozen", "reestimate", "client_trained")
# Modes in which the client's row changes and is uploaded to the server's table.
UPLOADS_ROW = ("reestimate", "client_trained")


def local_num_steps(cfg: mlc.ConfigDict, num_images, max_images: int):
  """Steps for a client: `local_steps`, or ceil(local_epochs * n / batch).

  Returns (per-client step count, static upper bound for the scan).
  """
  if cfg.local_epochs:
    steps = jnp.ceil(cfg.local_epochs * num_images / cfg.batch_size).astype(jnp.int32)
    bound = int(-(-cfg.local_epochs * max_images // cfg.batch_size))
    return jnp.maximum(steps, 1), max(bound, 1)
  return jnp.full_like(num_images, cfg.local_steps), int(cfg.local_steps)


class LocalTraining(NamedTuple):
  """One client's local training, as pieces the engine can loop over either way.

  The compiled round runs `start`, then `lax.scan` of `step` over `bound`
  steps, then `finish` (`make_client_update`); the CPU host loop
  (`host_loop.py`) calls the same three jitted from Python, one step per call,
  because XLA:CPU loses its fast convolution path inside `while` loops and
  under vmap (BENCHMARKS.md has the profile). One definition keeps the two
  paths numerically the same.

  Attributes:
    start: `(params, class_emb, images, num_images, rng) -> ClientState`.
    step: `(ClientState, images, t) -> (ClientState, loss)`; a step at
      `t >= steps` (local_epochs mode) leaves the state unchanged.
    finish: `(params, ClientState, loss_first, loss_last) -> LocalResult`.
    num_steps: `num_images -> (per-client steps, static bound)`.
  """
  start: Callable
  step: Callable
  finish: Callable
  num_steps: Callable


class ClientState(NamedTuple):
  """What a phone holds between local steps."""
  trainable: Any       # {"params": backbone, "w": class embedding}
  opt_state: Any
  perm: jax.Array      # [n_max] valid images first, in random order
  flip_key: jax.Array  # raw key data (uint32): cheaper to pass through jit than a typed key
  num_images: jax.Array
  steps: jax.Array     # this client's number of local steps
  public: jax.Array    # [P, D] public negatives (P = 0: none)
  inside_margin: jax.Array  # share of the first local batch already within the margin
  stored: Any          # the algorithm's stored state of this client ({}: stateless)
  aux: Any             # what the algorithm's client hook keeps beside the weights (hooks.py)


class LocalResult(NamedTuple):
  """One client's local run, as the round consumes it."""
  delta: Any           # local params - global params
  new_row: jax.Array   # the class embedding after training (uploaded in UPLOADS_ROW modes)
  metrics: dict
  upload: Any          # the algorithm's extra upload, summed over valid clients ({}: none)
  client_state: Any    # the algorithm's new stored state of this client ({}: stateless)


def check_class_embedding(mode: str) -> str:
  if mode not in CLASS_EMBEDDING:
    raise ValueError(f"unknown federated.class_embedding {mode!r}; valid: {CLASS_EMBEDDING}")
  return mode


def make_local_training(apply_fn: Callable, cfg: mlc.ConfigDict, max_images: int,
                        class_embedding: str = "frozen",
                        hooks: hooks_lib.AlgorithmHooks | None = None) -> LocalTraining:
  """The client objective and optimiser of `cfg` (the `federated.client` section).

  `images` is [n_max, H, W, 3] uint8 with the first `num_images` valid;
  local batches cycle through a per-client permutation of those.
  `class_embedding` is `federated.class_embedding` (see `CLASS_EMBEDDING`).
  `hooks`: the algorithm's client hooks (loss, gradient correction, extra
  upload and stored state); None = FedAvg/FedFace (`hooks.AlgorithmHooks`).
  """
  hooks = hooks or hooks_lib.AlgorithmHooks()
  tx = optim.create_optimizer(cfg.optimizer, 1)
  batch = cfg.batch_size
  margin = cfg.margin
  local_loss = cfg.local_loss
  check_class_embedding(class_embedding)
  train_w = class_embedding == "client_trained" and local_loss == "positive_only"
  reestimate = class_embedding == "reestimate" and local_loss == "positive_only"
  cos_scale, cos_margin = cfg.public_negatives.scale, cfg.public_negatives.margin

  if local_loss == "positive_only":
    def loss_fn(trainable, x, public):
      emb = apply_fn(trainable["params"], x)
      w = trainable["w"]
      cos = jnp.sum(emb * w, -1) / jnp.maximum(jnp.linalg.norm(w), 1e-10)
      inside = jnp.mean((jax.lax.stop_gradient(cos) >= margin).astype(jnp.float32))
      if public.shape[0]:
        # CosFace over {own row} + public rows; the own row is label 0.
        rows = jnp.concatenate([w[None], jax.lax.stop_gradient(public)])
        labels = jnp.zeros((emb.shape[0],), jnp.int32)
        loss = losses.cosface_loss(emb, rows, labels, scale=cos_scale, margin=cos_margin)
      else:
        loss = losses.positive_only_loss(emb, w, margin=margin)
      return loss, inside
  elif local_loss == "softmax_ce":
    def loss_fn(trainable, x, public):
      del public
      logits = apply_fn(trainable["params"], x)
      label = jax.lax.stop_gradient(trainable["w"])
      loss = jnp.mean(-jnp.sum(label * jax.nn.log_softmax(logits, axis=-1), axis=-1))
      return loss, jnp.zeros((), jnp.float32)
  else:
    raise ValueError(f"unknown local_loss {local_loss!r}; valid: positive_only, softmax_ce")
  loss_fn = hooks.client_loss(loss_fn)

  def num_steps(num_images):
    return local_num_steps(cfg, num_images, max_images)

  def start(params, class_emb, images, num_images, rng, public, stored=None, broadcast=None):
    stored = {} if stored is None else stored
    broadcast = {} if broadcast is None else broadcast
    steps, _ = num_steps(num_images)
    r_perm, r_flip = jax.random.split(rng)
    slots = images.shape[0]
    keys = jnp.where(jnp.arange(slots) < num_images,
                     jax.random.uniform(r_perm, (slots,)), 2.0)
    if reestimate:
      # The centre of the owner's photos under the model being improved, not theta_0's.
      class_emb = mean_feature(apply_fn, params, images, num_images)
    trainable = {"params": params, "w": class_emb}
    return ClientState(trainable, tx.init(trainable), jnp.argsort(keys),
                       jax.random.key_data(r_flip),
                       jnp.asarray(num_images, jnp.int32), jnp.asarray(steps, jnp.int32),
                       public, jnp.zeros((), jnp.float32), stored,
                       hooks.client_start(params, stored, broadcast))

  def step(state, images, t):
    trainable, opt_state = state.trainable, state.opt_state
    idx = state.perm[(t * batch + jnp.arange(batch)) % jnp.maximum(state.num_images, 1)]
    x = models.preprocess(images[idx])
    if cfg.augment_flip:
      flip_key = jax.random.wrap_key_data(state.flip_key)
      flip = jax.random.bernoulli(jax.random.fold_in(flip_key, t), 0.5, (batch, 1, 1, 1))
      x = jnp.where(flip, x[:, :, ::-1], x)
    (loss, inside), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, x,
                                                                       state.public)
    grads = {"params": hooks.client_grad(grads["params"], trainable["params"], state.aux),
             "w": grads["w"] if train_w else jnp.zeros_like(grads["w"])}
    updates, new_opt = tx.update(grads, opt_state, trainable)
    new = optax.apply_updates(trainable, updates)
    # Clients with fewer steps (local_epochs mode) stop early: keep old state.
    active = t < state.steps
    new, new_opt = jax.tree.map(lambda a, b: jnp.where(active, a, b),
                                (new, new_opt), (trainable, opt_state))
    inside = jnp.where(t == 0, inside, state.inside_margin)
    return state._replace(trainable=new, opt_state=new_opt, inside_margin=inside), loss

  def finish(params, state, loss_first, loss_last):
    local_params = state.trainable["params"]
    delta = jax.tree.map(jnp.subtract, local_params, params)
    upload, stored = hooks.client_finish(params, local_params, state.stored, state.aux,
                                         state.steps)
    return LocalResult(delta, state.trainable["w"],
                       {"loss_first": loss_first, "loss_last": loss_last,
                        "inside_margin": state.inside_margin}, upload, stored)

  return LocalTraining(start, step, finish, num_steps)


def make_local_update(apply_fn: Callable, cfg: mlc.ConfigDict, max_images: int,
                      unroll_loops="off", class_embedding: str = "frozen",
                      hooks: hooks_lib.AlgorithmHooks | None = None):
  """Returns `update(params, class_emb, images, num_images, rng, public, stored, broadcast)`.

  The compiled form of `make_local_training` (a `lax.scan` over the static
  step bound), which the engine vmaps over a chunk of clients. `unroll_loops`
  is `federated.unroll_loops` (see loops.py). Returns a `LocalResult`.
  """
  local = make_local_training(apply_fn, cfg, max_images, class_embedding, hooks)

  def update(params, class_emb, images, num_images, rng, public=None, stored=None,
             broadcast=None):
    if public is None:
      public = jnp.zeros((0, class_emb.shape[-1]), jnp.float32)
    state = local.start(params, class_emb, images, num_images, rng, public, stored, broadcast)
    steps, bound = local.num_steps(num_images)
    state, step_losses = jax.lax.scan(
        lambda st, t: local.step(st, images, t), state, jnp.arange(bound),
        unroll=loops.unroll_factor(unroll_loops, bound))
    return local.finish(params, state, step_losses[0],
                        step_losses[jnp.maximum(steps - 1, 0)])

  return update


def make_client_update(apply_fn: Callable, cfg: mlc.ConfigDict, max_images: int,
                       unroll_loops="off", class_embedding: str = "frozen"):
  """Returns `update(params, class_emb, images, num_images, rng, public=None)`: a local run.

  One FedAvg/FedFace client on its own (the attack recomputes its own update
  with it): outputs (delta = local params - global params, new class
  embedding, metrics). The round uses `make_local_update`.
  """
  local = make_local_update(apply_fn, cfg, max_images, unroll_loops, class_embedding)

  def update(params, class_emb, images, num_images, rng, public=None):
    return tuple(local(params, class_emb, images, num_images, rng, public)[:3])

  return update


def mean_feature(apply_fn: Callable, params: Any, images, num_images):
  """FedFace's class-embedding init: the normalised mean feature of a client.

  Only this vector leaves the phone. Padding slots are excluded.
  """
  emb = apply_fn(params, models.preprocess(images))           # [n_max, D]
  mask = (jnp.arange(images.shape[0]) < num_images)[:, None]
  mean = jnp.sum(jnp.where(mask, emb, 0.0), 0) / jnp.maximum(num_images, 1)
  return mean / jnp.maximum(jnp.linalg.norm(mean), 1e-10)
