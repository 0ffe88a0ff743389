"""FedProx (Li et al., 2020): FedAvg whose clients are pulled back towards the global model.

Each local step minimises F_k(y) + mu/2 ||y - x||^2, where x is the global backbone the client
received: the proximal term bounds how far heterogeneous clients drift in their local steps.
Only the local gradient changes (g + mu (y - x)); aggregation, DP, secure aggregation and the
class table are the engine's. mu = 0 is FedAvg exactly. The class row a client may train
(`class_embedding=client_trained`) is not pulled back: the term is on the backbone.

Config: `federated.method = "fedprox"` and `federated.fedprox.mu` (>= 0).
"""

from __future__ import annotations

import jax
import ml_collections as mlc

from fedface_jax.federated import hooks


class FedProx(hooks.AlgorithmHooks):
  """The proximal term as a gradient correction; the global model is the client's anchor."""

  name = "fedprox"

  def __init__(self, mu: float):
    if not mu >= 0:
      raise ValueError(f"federated.fedprox.mu must be >= 0, got {mu}")
    self.mu = float(mu)

  def client_start(self, params, client_state, broadcast):
    del client_state, broadcast
    return params   # x: what the proximal term pulls towards

  def client_grad(self, grads, local_params, aux):
    return jax.tree.map(lambda g, y, x: g + self.mu * (y - x), grads, local_params, aux)


def make(cfg: mlc.ConfigDict) -> FedProx:
  if "fedprox" not in cfg or "mu" not in cfg.fedprox:
    raise ValueError("federated.method='fedprox' needs federated.fedprox.mu (>= 0)")
  return FedProx(cfg.fedprox.mu)
