"""What an algorithm may change in a round: the plug-in points of the engine's round.

The engine's round (`rounds.py` compiled, `host_loop.py` on a CPU host) is FedAvg with FedFace's
class table: clients train locally, the server averages their deltas, steps its optimiser, and
updates the class table. An algorithm that differs from that only in a few places subclasses
`AlgorithmHooks` and overrides those places; every default is the identity, so the FedFace
methods (`algorithm.METHODS`) run the base class unchanged, bit for bit.

Where the hooks run:
  * server side, once: `init_server(params)` -> extra server state, kept in `state["algo"]`;
    `init_client(params)` -> one client's state (stateful algorithms such as SCAFFOLD), stored
    per client id in `state["clients"]` and split over the "classes" axis like the class table.
  * client side, per client (pure functions of one client's arrays, vmapped by the compiled
    round): `client_start` builds what the client keeps beside its weights (`aux`) from the
    global model, its stored state and the server's broadcast; `client_loss` may replace the
    local objective; `client_grad` corrects each local gradient; `client_finish` returns what
    the client uploads besides its delta (summed over valid clients) and its new stored state.
  * server side, per round: `server_step` folds the summed uploads into the extra state.

An algorithm that uploads anything besides the backbone delta must say so (`uploads_extra`):
DP and secure aggregation protect the delta only, so the engine refuses that combination.
"""

from __future__ import annotations

from typing import Any, Callable


class AlgorithmHooks:
  """FedAvg with FedFace's class table: every hook is the identity (see the module doc)."""

  name = "fedavg"
  uploads_extra = False   # True: clients upload more than the delta (no DP / secure agg)

  def init_server(self, params) -> Any:
    """Extra server state, `state["algo"]`; {} adds no key to the state."""
    del params
    return {}

  def init_client(self, params) -> Any:
    """One client's stored state; {} = stateless clients (no `state["clients"]`)."""
    del params
    return {}

  def client_start(self, params, client_state, broadcast) -> Any:
    """What a client keeps beside its weights during local training (its `aux`)."""
    del params, client_state, broadcast
    return ()

  def client_loss(self, default_loss: Callable) -> Callable:
    """The local objective `(trainable, x, public) -> (loss, inside_margin)`."""
    return default_loss

  def client_grad(self, grads, local_params, aux):
    """The backbone gradient actually applied at a local step."""
    del local_params, aux
    return grads

  def client_finish(self, params, local_params, client_state, aux, steps):
    """(extra upload, new stored client state) after local training."""
    del params, local_params, aux, steps
    return {}, client_state

  def server_step(self, extra, upload_sum, num_valid, num_clients):
    """New extra server state from the uploads summed over the round's valid clients."""
    del upload_sum, num_valid, num_clients
    return extra
