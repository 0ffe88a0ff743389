"""Can one FedFace update reveal the victims' hidden class embeddings? Measured on the truth.

Why this module exists: the FedFace objective works when the attacker knows each victim's class
embedding w_c (the server's row) and falls to chance without it (`mean_feature`, `joint`). That
failure could be the attack's optimiser, or the problem itself: w_c may not be determined by the
update at all. These measurements separate the two by giving the attacker the one thing it never
has, the victims' true images, and asking what the update then says about w_c:

* `residual_true`: the relative residual ||g(x*, w*) - target|| / ||target|| at the true images and
  true embeddings (0 up to float error without DP: the model of the update is exact).
* `residual_mean_feature` and `cos_mean_feature`: the same with w := the normalised mean feature of
  the true images under w_t (what `mean_feature` mode assumes at the optimum), and how close that
  assumption is to w* per victim. A large residual means the assumption is wrong for this round,
  however good the images.
* `cos_recovered` / `residual_recovered`: w fitted to the target with the true images held fixed
  (Adam from the mean feature and from random directions; the best fit). Cosine near 1 means w is identifiable from the update given the
  images, so `joint` fails on the images-and-w landscape, not for lack of information.
* `matching_true` / `matching_mean_feature`: the attack's own objective at the true images (with
  w* or the mean feature): the floor against which the loss an attack stops at is read. An attack
  stopping orders of magnitude above it failed to optimise, not for lack of a solution.
* `inside_margin_*`: the share of images already inside the positive-only hinge (cos >= margin,
  zero loss and zero gradient) under w*, under the true images' mean feature, and for the attack's
  random initial images under their own mean feature: a hinge that is inactive at the start gives
  the image optimiser no gradient to follow.

Everything here is simulation-only (it reads the victims' images and rows); the fit of w costs
about as much as one inversion of as many iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedface_jax.attack import unroll

PyTree = Any


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _tree_sq_norm(tree: PyTree) -> jax.Array:
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def class_embedding_identifiability(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array], params0: PyTree, target: PyTree,
    images_in: jax.Array, true_embeddings: np.ndarray, *, eta: float, tau: int, margin: float,
    client_loss_fn: Callable[..., jax.Array], momentum: float = 0.0,
    init_images_in: jax.Array | None = None, iterations: int = 100, lr: float = 0.05,
    restarts: int = 3, seed: int = 0,
    matching_fn: Callable[[PyTree, PyTree], jax.Array] | None = None) -> dict[str, Any]:
  """The measurements of the module docstring for one round's V victims of n images each.

  Args:
    apply_fn: (params, model_input) -> embeddings [B, D].
    params0: the global backbone w_t.
    target: the victims' mean pseudo-gradient the attack inverts.
    images_in: the victims' true images at the model's input scale, victim-major [V * n, ...].
    true_embeddings: [V, D] the victims' class rows (the server's, hidden from the attacker).
    eta, tau, margin, momentum: the victims' local training (as the attack assumes it).
    client_loss_fn: (embeddings [n, D], class_embedding [D], margin) -> the victims' loss.
    init_images_in: optional random initial images (same shape) for `inside_margin_init`.
    matching_fn: the attack's matching loss (pred, target) -> scalar; if given, its value at
      the truth is reported (`matching_true`, `matching_mean_feature`), the floor an attack that
      found the true images would reach.
    iterations, lr, restarts, seed: Adam on w alone, with the images held at the truth, from
      the mean feature and from `restarts` random unit directions (seeded); the best fit wins.

  Returns:
    Floats and per-victim lists (JSON-ready); see the module docstring.
  """
  w_true = jnp.asarray(true_embeddings, jnp.float32)
  v_count = int(w_true.shape[0])
  if images_in.shape[0] % v_count:
    raise ValueError(f"{images_in.shape[0]} images do not split over {v_count} victims")
  n = images_in.shape[0] // v_count
  tau = int(tau)

  def victims_loss(params, batch):
    x, w = batch
    emb = apply_fn(params, x).reshape(v_count, n, -1)
    return jnp.mean(jax.vmap(lambda e, cw: client_loss_fn(e, cw, margin))(emb, w))

  target_sq = _tree_sq_norm(target)

  @jax.jit
  def rel_residual(w):
    g = unroll.unrolled_pseudograd(victims_loss, params0, (images_in, w), eta, tau,
                                   momentum=momentum)
    diff = jax.tree.map(lambda a, b: a - b, g, target)
    return _tree_sq_norm(diff) / jnp.maximum(target_sq, 1e-30)

  def features(x):
    return _normalise(apply_fn(params0, x)).reshape(v_count, n, -1)

  def mean_feature(x):
    return _normalise(jnp.mean(features(x), axis=1))

  def inside_share(x, w):
    cos = jnp.einsum("vnd,vd->vn", features(x), _normalise(w))
    return float(jnp.mean(cos >= margin))

  w_mf = mean_feature(images_in)
  cos_mf = jnp.sum(_normalise(w_true) * w_mf, axis=-1)

  tx = optax.adam(lr)
  grad_fn = jax.jit(jax.value_and_grad(rel_residual))

  def fit(w):
    """Adam on w; the best iterate seen (the start included), so a fit never ends worse."""
    opt_state = tx.init(w)
    best_w, best_r = w, np.inf
    for _ in range(int(iterations)):
      r, g = grad_fn(w)
      if float(r) < best_r:
        best_w, best_r = w, float(r)
      upd, opt_state = tx.update(g, opt_state, w)
      w = optax.apply_updates(w, upd)
    r = float(rel_residual(w))
    return (w, r) if r < best_r else (best_w, best_r)

  # From the mean feature (the attack's own guess) and from random directions: the mean feature
  # can sit where every image is inside the margin, a flat region with zero gradient in w.
  starts = [w_mf] + [_normalise(jax.random.normal(k, w_mf.shape))
                     for k in jax.random.split(jax.random.key(seed), restarts)]
  fits = [fit(w0) for w0 in starts]
  best = int(np.argmin([r for _, r in fits]))
  w = fits[best][0]
  cos_rec = jnp.sum(_normalise(w_true) * _normalise(w), axis=-1)

  out = {
      # With every true image inside the margin the victims' update is zero and the target is
      # noise only: the residuals are then meaningless (read them against this norm).
      "target_norm": float(jnp.sqrt(target_sq)),
      "residual_true": float(jnp.sqrt(rel_residual(w_true))),
      "residual_mean_feature": float(jnp.sqrt(rel_residual(w_mf))),
      "residual_recovered": float(jnp.sqrt(rel_residual(w))),
      "cos_mean_feature": [float(c) for c in cos_mf],
      "cos_recovered": [float(c) for c in cos_rec],
      "inside_margin_true": inside_share(images_in, w_true),
      "inside_margin_mean_feature": inside_share(images_in, w_mf),
      "residual_recovered_per_start": [float(np.sqrt(r)) for _, r in fits],
      "recovered_from": "mean_feature" if best == 0 else "random",
      "recover_iterations": int(iterations), "recover_lr": float(lr),
  }
  if matching_fn is not None:
    for name, wc in (("matching_true", w_true), ("matching_mean_feature", w_mf)):
      g = unroll.unrolled_pseudograd(victims_loss, params0, (images_in, wc), eta, tau,
                                     momentum=momentum)
      out[name] = float(matching_fn(g, target))
  if init_images_in is not None:
    out["inside_margin_init"] = inside_share(init_images_in, mean_feature(init_images_in))
  return out
