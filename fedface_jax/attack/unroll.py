"""Differentiable simulation of a client's local training: tau full-batch GD steps, unrolled.

The attacker's forward model (ATTACK.md 2.3) is g_hat(x) = (w_t - Phi_tau(w_t; x)) / eta, where
Phi_tau runs tau full-batch gradient-descent steps on the dummy data x. Inverting it needs
d g_hat / d x, i.e. gradients *through* the local optimisation (second order: the inner step
contains a gradient). The steps are a ``jax.lax.scan``, unrolled on the CPU backend: XLA:CPU
compiles a ``while`` body without its fast convolution path, and a convolution's weight gradient
inside one ran ~33x slower than the same three steps unrolled (conv 5x5 32->64 at 64x64, 8
images). On GPU/TPU the rolled scan keeps the program size independent of tau. ``jax.checkpoint``
on the step stores only the params between steps and recomputes each step's activations during
the backward pass; for the reference LeNet at 128x128 the fc1 layer (65,536 x 512) dominates
memory, so without remat the memory grows with tau times the batch activations.

``per_client_unrolled_pseudograd`` simulates the real protocol (each client trains on its own data,
the server averages) and exists to measure the *super-client* approximation used by the attack: for
tau = 1 and equal client sizes, the mean of per-client mean-loss gradients equals the gradient of
the mean loss over the union, exactly; for tau > 1 the two differ by O(eta^2 tau^2) (ATTACK.md 2.2,
DERIVED).
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]  # (params, batch) -> scalar


def _check_tau_eta(tau: int, eta: float) -> None:
  if not isinstance(tau, (int, np.integer)) or tau < 1:
    raise ValueError(
        f"tau must be a positive Python int (the number of unrolled steps), got {tau!r}")
  if isinstance(eta, (int, float)) and eta <= 0:
    raise ValueError(f"eta must be positive, got {eta}")


def unroll_steps(unroll: bool | None) -> bool:
  """Whether to unroll the local steps: ``None`` means on the CPU backend (see the module doc)."""
  return jax.default_backend() == "cpu" if unroll is None else bool(unroll)


def gd_steps(loss_fn: LossFn, params0: PyTree, batch: PyTree, eta: float, tau: int,
             remat: bool = True, momentum: float = 0.0, unroll: bool | None = None) -> PyTree:
  """Phi_tau: tau full-batch (heavy-ball) GD steps from ``params0``.

  Differentiable in params0 and batch. ``unroll``: unroll the tau steps (None: on CPU only).

  ``momentum`` follows ``torch.optim.SGD`` (buf = mu * buf + g, p -= eta * buf, buf starting at 0).
  The reference uses plain GD (momentum 0); FedFace's client code uses momentum 0.9
  (FEDFACE.md 2.2), so it is a knob here.
  """
  _check_tau_eta(tau, eta)

  def step(carry, _):
    params, buf = carry
    grads = jax.grad(loss_fn)(params, batch)
    if momentum:
      buf = jax.tree.map(lambda b, g: momentum * b + g, buf, grads)
    else:
      buf = grads
    params = jax.tree.map(lambda p, d: p - eta * d, params, buf)
    return (params, buf), None

  if remat:
    step = jax.checkpoint(step)
  buf0 = jax.tree.map(jnp.zeros_like, params0)
  (params_tau, _), _ = jax.lax.scan(step, (params0, buf0), None, length=int(tau),
                                    unroll=unroll_steps(unroll))
  return params_tau


def unrolled_pseudograd(loss_fn: LossFn, params0: PyTree, batch: PyTree, eta: float, tau: int,
                        remat: bool = True, momentum: float = 0.0,
                        unroll: bool | None = None) -> PyTree:
  """(w_t - Phi_tau(w_t)) / eta for one (super-)client holding ``batch``.

  tau = 1 gives grad(loss_fn).
  """
  params_tau = gd_steps(loss_fn, params0, batch, eta, tau, remat=remat, momentum=momentum,
                        unroll=unroll)
  return jax.tree.map(lambda a, b: (a - b) / eta, params0, params_tau)


def per_client_unrolled_pseudograd(
    loss_fn: LossFn, params0: PyTree, client_batches: PyTree, eta: float, tau: int,
    weights: Sequence[float] | np.ndarray | jax.Array | None = None, remat: bool = True,
    momentum: float = 0.0, return_per_client: bool = False,
    unroll: bool | None = None) -> PyTree | tuple[PyTree, PyTree]:
  """FedAvg of per-client pseudo-gradients, each client on its own batch (leading axis = clients).

  Args:
    loss_fn: (params, batch) -> scalar, the client's mean loss.
    params0: the global model w_t.
    client_batches: pytree whose leaves have a leading client axis [K, ...]; client k gets the k-th
      slice.
    eta: local learning rate.
    tau: local full-batch steps.
    weights: aggregation weights [K] (normalised inside); equal if None.
    remat: checkpoint each unrolled step.
    momentum: local SGD momentum (see ``gd_steps``).
    return_per_client: also return the stacked per-client pseudo-gradients [K, ...].
    unroll: unroll the tau steps (None: on CPU only, see the module doc).

  Returns:
    sum_k p_k g_k, and optionally the per-client g_k.
  """
  per_client = jax.vmap(
      lambda b: unrolled_pseudograd(loss_fn, params0, b, eta, tau, remat=remat, momentum=momentum,
                                    unroll=unroll))(client_batches)
  num_clients = jax.tree.leaves(per_client)[0].shape[0]
  if weights is None:
    p = jnp.full((num_clients,), 1.0 / num_clients, jnp.float32)
  else:
    p = jnp.asarray(weights, jnp.float32)
    if p.shape != (num_clients,):
      raise ValueError(f"weights must have shape ({num_clients},), got {p.shape}")
    p = p / jnp.sum(p)
  mean = jax.tree.map(lambda g: jnp.tensordot(p, g, axes=1), per_client)
  return (mean, per_client) if return_per_client else mean
