"""Local training on one phone: FedFace's positive-only loss on the owner's photos.

A client only has positive examples of one identity, so its loss pulls its
features towards its own class embedding w_c:
  mean_x max(0, m - cos(f(x), w_c))^2          (FedFace, m = 0.9).
w_c is fixed during local training by default (FedFace code); the
`train_class_embedding` switch lets the client update it too (FedAwS), in
which case the server receives the new row.

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

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from fedface_jax import losses
from fedface_jax import models
from fedface_jax import optim
from fedface_jax.federated import loops


def local_num_steps(cfg: mlc.ConfigDict, num_images, max_images: int):
  """Steps for a client: `local_steps`, or ceil(local_epochs * n / batch).

  Returns (per-client step count, static upper bound for the scan).
  """
  if cfg.get("local_epochs", 0):
    steps = jnp.ceil(cfg.local_epochs * num_images / cfg.batch_size).astype(jnp.int32)
    bound = int(-(-cfg.local_epochs * max_images // cfg.batch_size))
    return jnp.maximum(steps, 1), max(bound, 1)
  return jnp.full_like(num_images, cfg.local_steps), int(cfg.local_steps)


def make_client_update(apply_fn: Callable, cfg: mlc.ConfigDict, max_images: int,
                       unroll_loops="off"):
  """Returns `update(params, class_emb, images, num_images, rng)`.

  `unroll_loops` is `federated.unroll_loops` (see loops.py).

  Outputs (delta = local params - global params, new class embedding,
  metrics). `images` is [n_max, H, W, 3] uint8 with the first `num_images`
  valid; local batches cycle through a per-client permutation of those.
  """
  tx = optim.create_optimizer(cfg.optimizer, 1)
  batch = cfg.batch_size
  margin = cfg.margin
  local_loss = cfg.get("local_loss", "positive_only")
  train_w = cfg.train_class_embedding and local_loss == "positive_only"

  if local_loss == "positive_only":
    def loss_fn(trainable, x):
      emb = apply_fn(trainable["params"], x)
      return losses.positive_only_loss(emb, trainable["w"], margin=margin)
  elif local_loss == "softmax_ce":
    def loss_fn(trainable, x):
      logits = apply_fn(trainable["params"], x)
      label = jax.lax.stop_gradient(trainable["w"])
      return jnp.mean(-jnp.sum(label * jax.nn.log_softmax(logits, axis=-1), axis=-1))
  else:
    raise ValueError(f"unknown local_loss {local_loss!r}; valid: positive_only, softmax_ce")

  def update(params, class_emb, images, num_images, rng):
    steps, bound = local_num_steps(cfg, num_images, max_images)
    r_perm, r_flip = jax.random.split(rng)
    keys = jnp.where(jnp.arange(images.shape[0]) < num_images,
                     jax.random.uniform(r_perm, (images.shape[0],)), 2.0)
    perm = jnp.argsort(keys)  # valid images first, in random order
    trainable = {"params": params, "w": class_emb}
    opt_state = tx.init(trainable)

    def step(carry, t):
      trainable, opt_state = carry
      idx = perm[(t * batch + jnp.arange(batch)) % jnp.maximum(num_images, 1)]
      x = models.preprocess(images[idx])
      if cfg.get("augment_flip", True):
        flip = jax.random.bernoulli(jax.random.fold_in(r_flip, t), 0.5, (batch, 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1], x)
      loss, grads = jax.value_and_grad(loss_fn)(trainable, x)
      if not train_w:
        grads = {"params": grads["params"], "w": jnp.zeros_like(grads["w"])}
      updates, new_opt = tx.update(grads, opt_state, trainable)
      new = optax.apply_updates(trainable, updates)
      # Clients with fewer steps (local_epochs mode) stop early: keep old state.
      active = t < steps
      new, new_opt = jax.tree.map(lambda a, b: jnp.where(active, a, b),
                                  (new, new_opt), (trainable, opt_state))
      return (new, new_opt), loss

    (trainable, _), step_losses = jax.lax.scan(
        step, (trainable, opt_state), jnp.arange(bound),
        unroll=loops.unroll_factor(unroll_loops, bound))
    delta = jax.tree.map(jnp.subtract, trainable["params"], params)
    metrics = {"loss_first": step_losses[0],
               "loss_last": step_losses[jnp.maximum(steps - 1, 0)]}
    return delta, trainable["w"], metrics

  return update


def mean_feature(apply_fn: Callable, params: Any, images, num_images):
  """FedFace's class-embedding init: the normalised mean feature of a client.

  Only this vector leaves the phone. Padding slots are excluded.
  """
  emb = apply_fn(params, models.preprocess(images))           # [n_max, D]
  mask = (jnp.arange(images.shape[0]) < num_images)[:, None]
  mean = jnp.sum(jnp.where(mask, emb, 0.0), 0) / jnp.maximum(num_images, 1)
  return mean / jnp.maximum(jnp.linalg.norm(mean), 1e-10)
