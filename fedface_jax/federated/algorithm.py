"""A federated algorithm: `init`, client and server hooks, `apply(state, round_data)`.

Shape borrowed from FedJAX: an algorithm knows how to build its server state and run one round
on the data it is handed; who joins a round, where their photos come from and the loop over
rounds belong to the engine (`run.py`, `engine.py`). One round is the engine's FedAvg round with
FedFace's class table (`rounds.py` compiled, `host_loop.py` on a CPU host); what an algorithm
changes in it lives in its hooks (`hooks.AlgorithmHooks`): the FedFace methods use the base
hooks, and FedProx and SCAFFOLD are one file each under `algorithms/` (`ALGORITHM_OF`).

What differs between FedFace, plain FedAvg, FedAwS and the ablations is configuration only:

  method          class_init     spreadout   class_embedding (where w_c comes from)
  fedavg          random         off         client_trained
  fedaws          random         on          client_trained
  fedface         mean_feature   on          config: frozen (FedFace code) | reestimate |
  fedface_nosp    mean_feature   off           client_trained
  fedprox         random         off         client_trained   + proximal term (fedprox.mu)
  scaffold        random         off         client_trained   + control variates

`apply_method(cfg)` fills those settings, so an experiment picks a
method by name and can still override any field.

How a round runs (`federated.execution`: auto | compiled | host_loop) is
chosen per backend in `loops.resolve_execution`; the math is the same.

Defences, orthogonal to the method (default off; see rounds.py, privacy.py,
secure_aggregation.py):
  federated.dp = {enabled, clip_norm, noise_multiplier, delta, accounting}
      DP-FedAvg (fixed denominator, equal client weights); delta <= 0 means
      1 / num_clients^1.1; accounting "rdp" | "pld" | "wor".
  federated.secure_aggregation = bool
      pairwise-mask aggregation simulated inside the compiled round.
"""

from __future__ import annotations

import importlib
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc

from fedface_jax import optim
from fedface_jax import sharding as sh
from fedface_jax.federated import client_update
from fedface_jax.federated import hooks as hooks_lib
from fedface_jax.federated import host_loop
from fedface_jax.federated import loops
from fedface_jax.federated import rounds

METHODS = {
    "fedavg": dict(class_init="random", spreadout=False, class_embedding="client_trained"),
    "fedaws": dict(class_init="random", spreadout=True, class_embedding="client_trained"),
    "fedface": dict(class_init="mean_feature", spreadout=True),
    "fedface_nosp": dict(class_init="mean_feature", spreadout=False),
    "fedprox": dict(class_init="random", spreadout=False, class_embedding="client_trained"),
    "scaffold": dict(class_init="random", spreadout=False, class_embedding="client_trained"),
}
# Methods whose round differs from FedAvg's: the plug-in module under algorithms/ (hooks.py).
ALGORITHM_OF = {"fedprox": "fedprox", "scaffold": "scaffold"}
# The keys of `federated.dp` (experiments/common.py `federated_section` has them all).
DP_KEYS = ("enabled", "clip_norm", "noise_multiplier", "delta", "accounting")


def apply_method(cfg: mlc.ConfigDict) -> mlc.ConfigDict:
  """Fills class_init / spreadout / class_embedding from cfg.method.

  `cfg` must be a complete `federated` section (experiments/common.py `federated_section`):
  a missing key (e.g. `dp.delta`) raises here, an unknown one where it is set.
  """
  if cfg.method not in METHODS:
    raise ValueError(f"unknown method {cfg.method!r}; valid: {sorted(METHODS)}")
  if "train_class_embedding" in cfg.client:
    raise ValueError("federated.client.train_class_embedding was replaced by "
                     "federated.class_embedding = frozen | reestimate | client_trained")
  cfg = mlc.ConfigDict(cfg.to_dict())
  m = METHODS[cfg.method]
  cfg.class_init = m["class_init"]
  cfg.spreadout.enabled = m["spreadout"]
  if "class_embedding" in m:
    cfg.class_embedding = m["class_embedding"]
  client_update.check_class_embedding(cfg.class_embedding)
  unknown, missing = sorted(set(cfg.dp) - set(DP_KEYS)), sorted(set(DP_KEYS) - set(cfg.dp))
  if unknown or missing:
    raise ValueError(f"unknown federated.dp keys {unknown} / missing {missing}; the section has "
                     f"exactly {list(DP_KEYS)}")
  rounds.dp_settings(cfg)   # validates clip_norm / noise_multiplier
  if cfg.dp.enabled and cfg.class_embedding in client_update.UPLOADS_ROW:
    logging.warning("federated.dp protects the backbone delta only: with "
                    "class_embedding=%s (%s) each client's class row is "
                    "uploaded without clipping or noise", cfg.class_embedding, cfg.method)
  return cfg


def make_hooks(cfg: mlc.ConfigDict) -> hooks_lib.AlgorithmHooks:
  """The hooks of `cfg.method`: the base FedAvg/FedFace hooks, or a plug-in's `make(cfg)`.

  A plug-in is the module `fedface_jax.federated.algorithms.<name>` (name from `ALGORITHM_OF`);
  it is imported only when its method is chosen.
  """
  name = ALGORITHM_OF.get(cfg.method)
  if name is None:
    return hooks_lib.AlgorithmHooks()
  hooks = importlib.import_module(f"fedface_jax.federated.algorithms.{name}").make(cfg)
  if hooks.uploads_extra and (rounds.dp_settings(cfg)[0] or cfg.secure_aggregation):
    raise ValueError(f"federated.method={cfg.method!r} uploads more than the backbone delta "
                     "(see its module); federated.dp and secure_aggregation protect the delta "
                     "only, so they cannot be combined with it")
  return hooks


class FederatedAlgorithm:
  """An algorithm bound to a model, a mesh and a round layout; no data, no sampling.

  `init(params0, table, rng, public=None) -> state` and `apply(state, round_data) ->
  (state, metrics)`, where `round_data` is a `rounds.RoundBatch` of the round's padded client
  slots (host arrays; `place` puts a process's share on the mesh). The client hook (local loss,
  gradient correction, extra upload, stored client state) and the server hook (its extra
  state) are `hooks`; aggregation and the class-table step are the engine's
  (`rounds.make_server_phases`).

  Attributes:
    hooks: the algorithm's `hooks.AlgorithmHooks`.
    abstract_state: the state's shapes, dtypes and shardings (what a checkpoint restores into).
    state_sharding: the state's shardings.
    execution: "compiled" or "host_loop" (`loops.resolve_execution`).
    round_fn: the round itself, `(state, batch) -> (state, metrics, valid)` (jitted when
      compiled; benchmarks lower it), `valid` = which slots were averaged in.
    padded_clients, chunk: client slots per round and clients per vmapped chunk.
  """

  def __init__(self, cfg: mlc.ConfigDict, apply_fn: Callable, abstract_params, mesh, *,
               max_images: int, num_clients: int, num_rows: int, num_public: int = 0,
               hooks: hooks_lib.AlgorithmHooks | None = None):
    self.config = cfg
    self.mesh = mesh
    self.hooks = hooks or make_hooks(cfg)
    self.padded_clients, self.chunk = round_layout(cfg.clients_per_round, mesh,
                                                   cfg.clients_per_chunk)
    if self.chunk != cfg.clients_per_chunk:
      raise ValueError(f"clients_per_chunk={cfg.clients_per_chunk} does not fit the round "
                       f"layout (chunk {self.chunk}); pass the config through `round_config`")
    server_tx = optim.create_optimizer(cfg.server.optimizer, cfg.num_rounds)
    spread_tx = optim.create_optimizer(cfg.spreadout.optimizer, 1)
    execution_setting = cfg.execution
    self.execution = loops.resolve_execution(execution_setting, mesh)
    hooks_ = self.hooks

    def make_state(params, table, rng_data, public_table):
      state = {"params": params, "table": table, "server_opt": server_tx.init(params),
               "round": jnp.zeros((), jnp.int32), "rng": rng_data}
      if public_table is not None:
        state["public"] = public_table
      extra = hooks_.init_server(params)
      if jax.tree.leaves(extra):
        state["algo"] = extra
      one = hooks_.init_client(params)
      if jax.tree.leaves(one):   # stored per client id, one row each, like the table
        state["clients"] = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (table.shape[0],) + x.shape), one)
      return state

    abstract = jax.eval_shape(
        make_state, abstract_params,
        jax.ShapeDtypeStruct((num_rows, cfg.embedding_dim), jnp.float32),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        (jax.ShapeDtypeStruct((num_public, cfg.embedding_dim), jnp.float32)
         if num_public else None))
    self.state_sharding = sh.state_sharding(abstract, mesh)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        self.state_sharding)
    self._make_state = jax.jit(make_state, out_shardings=self.state_sharding)
    round_args = (apply_fn, cfg, mesh, max_images, server_tx, spread_tx, cfg.clients_per_round,
                  num_clients)
    cl = rounds.client_sharding(mesh)
    if self.execution == "host_loop":
      self.round_fn = host_loop.make_round(*round_args, hooks=self.hooks)
      self._put = lambda x: x            # host arrays: the loop reads the image counts
    else:
      self.round_fn = jax.jit(
          rounds.make_round_fn(*round_args, hooks=self.hooks),
          in_shardings=(self.state_sharding, cl), out_shardings=(self.state_sharding,
                                                                sh.replicated(mesh), cl),
          donate_argnums=(0,))
      self._put = lambda x: jax.make_array_from_process_local_data(cl, x)
    logging.info("Federated round execution: %s (federated.execution=%r), algorithm %s",
                 self.execution, execution_setting, self.hooks.name)

  def init(self, params0, table, rng_data, public=None):
    """The server state before round 1 (the table comes from the engine's round 0)."""
    return self._make_state(params0, table, rng_data, public)

  def place(self, batch: rounds.RoundBatch) -> rounds.RoundBatch:
    """This process's share of a round's slots, where the round wants it (mesh or host)."""
    return rounds.RoundBatch(*map(self._put, batch))

  def apply(self, state, round_data: rounds.RoundBatch):
    """One round on placed `round_data`; `state` is donated. Returns (state, metrics)."""
    state, metrics, _ = self.round_fn(state, round_data)
    return state, metrics


def round_config(cfg: mlc.ConfigDict, num_clients: int, mesh) -> mlc.ConfigDict:
  """A copy of `cfg` with the round's real K and the chunk the mesh allows."""
  cfg = mlc.ConfigDict(cfg.to_dict())
  if cfg.clients_per_round > num_clients:
    # Full participation is a legitimate setting; the copy carries the real K, which
    # the DP denominator and the accountant's sampling rate read.
    logging.warning("federated.clients_per_round=%d > %d clients: every client joins "
                    "every round", cfg.clients_per_round, num_clients)
    cfg.clients_per_round = num_clients
  _, cfg.clients_per_chunk = round_layout(cfg.clients_per_round, mesh, cfg.clients_per_chunk)
  return cfg


def round_layout(clients_per_round: int, mesh, chunk: int) -> tuple[int, int]:
  """(padded clients per round, chunk) so clients split over devices and chunks."""
  devices = mesh.size
  per_device = -(-clients_per_round // devices)
  chunk = max(1, min(chunk, per_device))
  per_device = -(-per_device // chunk) * chunk
  return per_device * devices, chunk


def class_table_rows(cfg: mlc.ConfigDict, num_clients: int) -> int:
  """Rows of the server's class table: one per client, or `cfg.num_class_rows`.

  A deployed server sizes its table for the whole enrolled population, not for
  the identities one dataset happens to hold. `federated.num_class_rows` > 0
  reserves that many rows (rows past the clients stay zero, are never sampled
  and take no part in spreadout, see `num_valid_rows`), so memory and the
  blockwise spreadout cost can be measured at population scale with a small
  dataset. 0 (the default) means one row per client.
  """
  requested = int(cfg.num_class_rows)
  if requested == 0:
    return num_clients
  if requested < num_clients:
    raise ValueError(f"federated.num_class_rows={requested} < {num_clients} clients; "
                     "every client needs a row (0 = one row per client)")
  return requested


