"""SCAFFOLD (Karimireddy et al., 2020), option II: control variates against client drift.

The server keeps a control variate c, each client i its own c_i (stored per client id in the
state, split over the "classes" axis like the class table; zero at the start). A client that
receives the global backbone x runs K local SGD steps with the corrected gradient

    y <- y - lr (g_i(y) - c_i + c),

then (option II) sets c_i+ = c_i - c + (x - y) / (K lr) and uploads its delta y - x and
dc_i = c_i+ - c_i. The server averages the deltas as in FedAvg (its optimiser, image-count
weights) and sets c <- c + sum_i dc_i / N over the round's valid clients, N = all clients.
K is the client's own step count (`local_steps`, or its `local_epochs` steps).

Option II needs plain SGD on the client (the identity (x - y) / (K lr) = mean corrected gradient
fails with momentum or Adam), so other client optimisers are refused. The control variates are
uploaded in the clear, so DP and secure aggregation, which protect the delta only, are refused
too (`uploads_extra`). With equal image counts the server step is the paper's uniform mean.

Memory: one backbone-sized c_i per client in the state (and its checkpoints).

Config: `federated.method = "scaffold"`, `federated.client.optimizer.name = "sgd"`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc

from fedface_jax.federated import hooks


class Scaffold(hooks.AlgorithmHooks):
  """Control variates: c in the server state, c_i stored per client."""

  name = "scaffold"
  uploads_extra = True

  def __init__(self, client_lr: float):
    if not client_lr > 0:
      raise ValueError(f"SCAFFOLD needs a client learning rate > 0, got {client_lr}")
    self.client_lr = float(client_lr)

  def init_server(self, params):
    return {"c": jax.tree.map(jnp.zeros_like, params)}

  def init_client(self, params):
    return {"c": jax.tree.map(jnp.zeros_like, params)}

  def client_start(self, params, client_state, broadcast):
    del params
    return jax.tree.map(jnp.subtract, broadcast["c"], client_state["c"])   # c - c_i

  def client_grad(self, grads, local_params, aux):
    del local_params
    return jax.tree.map(jnp.add, grads, aux)

  def client_finish(self, params, local_params, client_state, aux, steps):
    scale = 1.0 / (jnp.maximum(steps, 1).astype(jnp.float32) * self.client_lr)
    # c_i+ = c_i - c + (x - y) / (K lr), with aux = c - c_i.
    new_c = jax.tree.map(lambda a, x, y: (x - y) * scale - a, aux, params, local_params)
    upload = jax.tree.map(jnp.subtract, new_c, client_state["c"])
    return {"c": upload}, {"c": new_c}

  def server_step(self, extra, upload_sum, num_valid, num_clients):
    del num_valid
    return {"c": jax.tree.map(lambda c, d: c + d / num_clients, extra["c"], upload_sum["c"])}


def make(cfg: mlc.ConfigDict) -> Scaffold:
  opt = cfg.client.optimizer
  if opt.name != "sgd" or opt.schedule != "constant":
    raise ValueError("federated.method='scaffold' (option II) needs a constant-rate plain SGD "
                     f"client optimizer, got name={opt.name!r}, "
                     f"schedule={opt.schedule!r}")
  return Scaffold(opt.learning_rate)
