"""Gradient-matching losses and image priors, over arbitrary params pytrees.

Two families, because the paper and the standard baseline disagree and both must be reported
(ATTACK.md 10.10):
- ``l2_matching``: sum over *all* parameter tensors of the squared L2 difference, no per-layer
  normalisation. This is the reference attack's objective (paper Eq. (3),
  [C:src/attack/attacker.py]). It is dominated by the layers with the largest pseudo-gradients (fc1
  for LeNet), and it is not scale-invariant, so a wrong eta guess matters.
- ``cosine_matching``: 1 - cos between the two pseudo-gradients. ``per_layer=False`` (default) is
  Inverting Gradients' ``cost_fn='sim'`` and breaching's ``cosine-similarity``: ONE cosine over the
  concatenation of all layers (inner products and norms are summed over layers before dividing).
  ``per_layer=True`` is IG's ``'simlocal'``: sum over layers of (1 - cos_l), which weights every
  layer equally regardless of its size. Cosine matching is invariant to the scale of the target,
  hence to a wrong eta guess (for tau = 1).

``total_variation`` is IG's anisotropic TV: mean |dx| + mean |dy| (means over batch, rows, columns,
channels).
"""

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _paired_leaves(pred: PyTree, target: PyTree) -> list[tuple[jax.Array, jax.Array]]:
  pred_leaves, pred_def = jax.tree.flatten(pred)
  target_leaves, target_def = jax.tree.flatten(target)
  if pred_def != target_def:
    raise ValueError(f"pseudo-gradient structures differ:\n{pred_def}\nvs\n{target_def}")
  for a, b in zip(pred_leaves, target_leaves):
    if a.shape != b.shape:
      raise ValueError(f"leaf shapes differ: {a.shape} vs {b.shape}")
  return list(zip(pred_leaves, target_leaves))


def l2_matching(pred: PyTree, target: PyTree) -> jax.Array:
  """sum_l ||pred_l - target_l||^2 (paper-faithful; no normalisation)."""
  return sum(jnp.sum(jnp.square(a - b)) for a, b in _paired_leaves(pred, target))


def cosine_matching(pred: PyTree, target: PyTree, per_layer: bool = False,
                    eps: float = 1e-12) -> jax.Array:
  """1 - cos(pred, target), globally (IG 'sim', default) or summed per layer (IG 'simlocal').

  ``eps`` only guards a zero norm (e.g. a layer with no gradient); it is added under the square
  root.
  """
  pairs = _paired_leaves(pred, target)
  if per_layer:
    total = 0.0
    for a, b in pairs:
      dot = jnp.sum(a * b)
      total = total + 1.0 - dot / (jnp.sqrt(jnp.sum(a * a) + eps) * jnp.sqrt(jnp.sum(b * b) + eps))
    return total
  dot = sum(jnp.sum(a * b) for a, b in pairs)
  na = sum(jnp.sum(a * a) for a, _ in pairs)
  nb = sum(jnp.sum(b * b) for _, b in pairs)
  return 1.0 - dot / (jnp.sqrt(na + eps) * jnp.sqrt(nb + eps))


def total_variation(images: jax.Array) -> jax.Array:
  """Anisotropic TV of NHWC images.

  mean |x[:, :, 1:] - x[:, :, :-1]| + mean |x[:, 1:] - x[:, :-1]|.
  """
  if images.ndim != 4:
    raise ValueError(f"total_variation expects NHWC images, got shape {images.shape}")
  dx = jnp.mean(jnp.abs(images[:, :, 1:, :] - images[:, :, :-1, :]))
  dy = jnp.mean(jnp.abs(images[:, 1:, :, :] - images[:, :-1, :, :]))
  return dx + dy


MATCHING_FNS = {
    "l2": l2_matching,
    "cosine": cosine_matching,
    "cosine_per_layer": lambda p, t: cosine_matching(p, t, per_layer=True),
}


def get_matching_fn(name: str):
  """'l2' | 'cosine' | 'cosine_per_layer'."""
  if name not in MATCHING_FNS:
    raise ValueError(f"unknown matching loss {name!r}; choose from {sorted(MATCHING_FNS)}")
  return MATCHING_FNS[name]
