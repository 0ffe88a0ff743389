"""Threat-model algebra: what a curious client can compute from two consecutive global models.

FedAvg as in the reference (ATTACK.md 1 and 2.1): client k runs tau local GD steps with learning
rate eta from w_t and reports the *pseudo-gradient* g_k = (w_t - w_k^(tau)) / eta. The server
applies w_{t+1} = w_t - eta * sum_k p_k g_k with aggregation weights p_k (equal, 1/K, in the
reference). The attacker sees w_t and w_{t+1}, so it can recover the aggregate
``g_bar = (w_t - w_{t+1}) / eta`` and, knowing its own update g_a and its own weight p_a, the
weighted mean of the *other* clients' pseudo-gradients, which is what it inverts.

Options the attacker has, depending on what it knows (UNCONFIRMED which one the paper uses,
ATTACK.md 10.2):
- K and the weights known: ``remove_own_update`` gives the others' mean; invert only the victims'
  images.
- K unknown: no subtraction is possible. Invert ``g_bar`` directly as one super-client holding *all*
  images, the attacker's own included (this is what the reference simulation does). The attacker may
  pin its own images as known constants in the dummy batch (``known_images`` in
  ``inversion.invert_paper_faithful``), but the number of dummy images still has to be guessed.

All functions are pure maps over pytrees, so they work on any params structure and under
``jax.jit``.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def client_pseudo_gradient(params0: PyTree, params_tau: PyTree, eta: float) -> PyTree:
  """(w_t - w_k^(tau)) / eta: what a FedAvg client reports, in gradient units.

  With tau=1 it is the plain gradient.
  """
  if eta <= 0:
    raise ValueError(f"learning rate eta must be positive, got {eta}")
  return jax.tree.map(lambda a, b: (a - b) / eta, params0, params_tau)


def diluted_update(w_t: PyTree, w_t1: PyTree, eta_guess: float) -> PyTree:
  """The aggregate pseudo-gradient g_bar = (w_t - w_{t+1}) / eta_guess seen by every client.

  With a wrong ``eta_guess`` the target is only rescaled by eta / eta_guess (the reference rescales
  the target and keeps the true eta in its unroll; ATTACK.md 2.1 quirk).
  """
  return client_pseudo_gradient(w_t, w_t1, eta_guess)


def _normalised_weights(weights: Sequence[float] | np.ndarray, num_clients: int) -> np.ndarray:
  w = np.asarray(weights, dtype=np.float64)
  if w.shape != (num_clients,):
    raise ValueError(f"weights must have shape ({num_clients},), got {w.shape}")
  if np.any(w < 0) or w.sum() <= 0:
    raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
  return w / w.sum()


def remove_own_update(g_bar: PyTree, g_attacker: PyTree, num_clients: int,
                      weights: Sequence[float] | np.ndarray | None = None,
                      attacker_index: int = 0) -> PyTree:
  """Mean pseudo-gradient of the other clients, from the aggregate and the attacker's own update.

  Equal weights: (K * g_bar - g_a) / (K - 1). Weighted FedAvg (g_bar = sum_k p_k g_k,
  p = weights / sum(weights), e.g. weights = n_k): (g_bar - p_a g_a) / (1 - p_a), i.e. the others'
  mean with weights p_k / (1 - p_a). The weighted form needs the attacker's normalised weight p_a,
  hence every n_k (or at least sum_k n_k).

  Args:
    g_bar: aggregate pseudo-gradient, e.g. from ``diluted_update``.
    g_attacker: the attacker's own pseudo-gradient this round.
    num_clients: K, the number of clients aggregated this round (attacker included).
    weights: optional per-client aggregation weights (any positive scale), length K.
    attacker_index: position of the attacker in ``weights``.

  Returns:
    The (weighted) mean pseudo-gradient of the K - 1 other clients.
  """
  if num_clients < 2:
    raise ValueError(
        f"need at least 2 clients to remove the attacker's own update, got {num_clients}")
  if weights is None:
    p_a = 1.0 / num_clients
  else:
    if not 0 <= attacker_index < num_clients:
      raise ValueError(f"attacker_index {attacker_index} out of range for {num_clients} clients")
    p_a = float(_normalised_weights(weights, num_clients)[attacker_index])
    if p_a >= 1.0:
      raise ValueError("the attacker holds all the aggregation weight; there is nothing to recover")
  return jax.tree.map(lambda g, a: (g - p_a * a) / (1.0 - p_a), g_bar, g_attacker)


def aggregate(pseudo_gradients: Sequence[PyTree],
              weights: Sequence[float] | np.ndarray | None = None) -> PyTree:
  """Server side of FedAvg on pseudo-gradients: sum_k p_k g_k (equal weights by default).

  For simulations.
  """
  k = len(pseudo_gradients)
  if k == 0:
    raise ValueError("no pseudo-gradients to aggregate")
  p = np.full((k,), 1.0 / k) if weights is None else _normalised_weights(weights, k)
  return jax.tree.map(lambda *gs: sum(float(pk) * g for pk, g in zip(p, gs)), *pseudo_gradients)


def server_step(w_t: PyTree, g_bar: PyTree, eta: float) -> PyTree:
  """w_{t+1} = w_t - eta * g_bar.

  Server step size 1 on the raw deltas, as in the reference's FedAvg semantics.
  """
  return jax.tree.map(lambda w, g: w - eta * g, w_t, g_bar)


def tree_l2_norm(tree: PyTree) -> jax.Array:
  """Global L2 norm of a pytree (for reporting relative errors)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
