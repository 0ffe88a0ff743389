"""Optimisers and learning-rate schedules built from configs.

One place for the optax recipes used by centralised pretraining, local client
training and the federated server, so an experiment changes optimisers by
config (`name`, `learning_rate`, `schedule`, ...) rather than by code.
"""

from __future__ import annotations

import jax
import ml_collections as mlc
import optax

_VALID_NAMES = ("sgd", "momentum", "adam", "adamw")
_VALID_SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def create_schedule(cfg: mlc.ConfigDict, total_steps: int) -> optax.Schedule:
  """`cfg.schedule` in constant | cosine | warmup_cosine | step."""
  lr = cfg.learning_rate
  kind = cfg.schedule
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1),
                                       alpha=cfg.final_lr_fraction)
  if kind == "warmup_cosine":
    warmup = int(cfg.warmup_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=lr * cfg.final_lr_fraction)
  if kind == "step":
    # Decay by 10x at the given fractions of training (SphereFace/CosFace recipe).
    boundaries = {int(f * total_steps): 0.1 for f in cfg.decay_at}
    return optax.piecewise_constant_schedule(lr, boundaries)
  raise ValueError(f"unknown schedule {kind!r}; valid: {_VALID_SCHEDULES}")


def _decay_mask(params):
  """Weight decay on kernels only: biases, norms and PReLU slopes are exempt."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(cfg: mlc.ConfigDict, total_steps: int = 1
                     ) -> optax.GradientTransformation:
  """Builds the optimiser named by `cfg.name` (sgd | momentum | adam | adamw)."""
  name = cfg.name
  schedule = create_schedule(cfg, total_steps)
  if name == "sgd":
    tx = optax.sgd(schedule)
  elif name == "momentum":
    tx = optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
  elif name == "adam":
    tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
  elif name == "adamw":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay,
                     mask=_decay_mask)
  else:
    raise ValueError(f"unknown optimizer {name!r}; valid: {_VALID_NAMES}")
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if name != "adamw" and cfg.weight_decay:
    chain.append(optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask))
  chain.append(tx)
  return optax.chain(*chain) if len(chain) > 1 else tx
