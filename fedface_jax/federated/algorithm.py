"""FedFace and its baselines as one `FederatedAlgorithm(init, apply)`.

Shape borrowed from FedJAX: `init` builds the server state from the pretrained
backbone, `apply` runs one round. What differs between FedFace, plain FedAvg,
FedAwS and the ablations is configuration only:

  method          class_init     spreadout   class_embedding (where w_c comes from)
  fedavg          random         off         client_trained
  fedaws          random         on          client_trained
  fedface         mean_feature   on          config: frozen (FedFace code) | reestimate |
  fedface_nosp    mean_feature   off           client_trained

`method_overrides(name)` returns those settings, so an experiment picks a
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

import dataclasses
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from fedface_jax import models
from fedface_jax import optim
from fedface_jax import sharding as sh
from fedface_jax.federated import client_data
from fedface_jax.federated import client_update
from fedface_jax.federated import host_loop
from fedface_jax.federated import loops
from fedface_jax.federated import privacy
from fedface_jax.federated import rounds

METHODS = {
    "fedavg": dict(class_init="random", spreadout=False, class_embedding="client_trained"),
    "fedaws": dict(class_init="random", spreadout=True, class_embedding="client_trained"),
    "fedface": dict(class_init="mean_feature", spreadout=True),
    "fedface_nosp": dict(class_init="mean_feature", spreadout=False),
}


DP_DEFAULTS = dict(enabled=False, clip_norm=1.0, noise_multiplier=0.0, delta=0.0,
                   accounting="rdp")


def apply_method(cfg: mlc.ConfigDict) -> mlc.ConfigDict:
  """Fills class_init / spreadout / class_embedding from cfg.method.

  Also fills the defence keys (`dp`, `secure_aggregation`, off) for configs
  written before they existed.
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
  dp = dict(DP_DEFAULTS)
  dp.update(cfg.dp.to_dict() if "dp" in cfg else {})
  unknown = set(dp) - set(DP_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown federated.dp keys {sorted(unknown)}; valid: {sorted(DP_DEFAULTS)}")
  cfg.dp = dp
  if "secure_aggregation" not in cfg:
    cfg.secure_aggregation = False
  rounds.dp_settings(cfg)   # validates clip_norm / noise_multiplier
  if cfg.dp.enabled and cfg.class_embedding in client_update.UPLOADS_ROW:
    logging.warning("federated.dp protects the backbone delta only: with "
                    "class_embedding=%s (%s) each client's class row is "
                    "uploaded without clipping or noise", cfg.class_embedding, cfg.method)
  return cfg


@dataclasses.dataclass
class FederatedAlgorithm:
  """`init(params0, rng) -> state`; `apply(state, round_index) -> (state, metrics)`."""
  init: Callable[..., Any]
  apply: Callable[..., Any]
  abstract_state: Any
  state_sharding: Any
  clients: client_data.FederatedClients
  mesh: Any
  config: Any = None

  def privacy_report(self, rounds_done: int) -> dict[str, float]:
    """{"privacy/epsilon", "privacy/delta"} after `rounds_done` rounds; {} without DP."""
    if self.config is None:
      return {}
    return privacy.run_epsilon(self.config, self.clients.num_clients, rounds_done)


def _state_sharding(abstract, mesh):
  def rule(path, leaf):
    if "table" in jax.tree_util.keystr(path):
      return sh.table_sharded(mesh)
    return sh.replicated(mesh)
  return jax.tree_util.tree_map_with_path(rule, abstract)


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
  requested = int(cfg.get("num_class_rows", 0) or 0)
  if requested == 0:
    return num_clients
  if requested < num_clients:
    raise ValueError(f"federated.num_class_rows={requested} < {num_clients} clients; "
                     "every client needs a row (0 = one row per client)")
  return requested


def build_fedface(cfg: mlc.ConfigDict, model, faces, mesh,
                  process_slice: Callable | None = None,
                  public_faces=None) -> FederatedAlgorithm:
  """Builds the algorithm for the federated identities in `faces`.

  Args:
    cfg: the `federated` config section (after `apply_method`).
    model: the backbone (linen module returning normalised embeddings).
    faces: FaceArrays of the federated split; one client per identity.
    mesh: ("data", "classes") mesh.
    process_slice: for multi-host runs, maps the padded client list of a round
      to this process's contiguous share (see engine); None = single process.
    public_faces: the public (pretraining) identities; needed only with
      `client.public_negatives.enabled`, whose rows are their mean features
      under theta_0, computed once at `init` and kept in the state.
  """
  clients = client_data.FederatedClients(faces, cfg.min_images_per_client,
                                         cfg.max_images_per_client)
  public = None
  if cfg.client.get("public_negatives", {}).get("enabled", False):
    if public_faces is None:
      raise ValueError("client.public_negatives needs the public (pretraining) identities")
    public = client_data.FederatedClients(public_faces, 1, cfg.max_images_per_client)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  dim = cfg.embedding_dim
  rows = sh.padded_num_classes(class_table_rows(cfg, clients.num_clients), mesh)
  cfg = mlc.ConfigDict(cfg.to_dict())
  if cfg.clients_per_round > clients.num_clients:
    # Full participation is a legitimate setting; the copy carries the real K, which
    # the DP denominator and the accountant's sampling rate read.
    logging.warning("federated.clients_per_round=%d > %d clients: every client joins "
                    "every round", cfg.clients_per_round, clients.num_clients)
    cfg.clients_per_round = clients.num_clients
  padded_m, chunk = round_layout(cfg.clients_per_round, mesh, cfg.clients_per_chunk)
  cfg.clients_per_chunk = chunk
  server_tx = optim.create_optimizer(cfg.server.optimizer, cfg.num_rounds)
  spread_tx = optim.create_optimizer(cfg.spreadout.optimizer, 1)
  execution_setting = cfg.get("execution", "auto")
  execution = loops.resolve_execution(execution_setting, mesh)
  round_args = (apply_fn, cfg, mesh, clients.max_images, server_tx, spread_tx,
                cfg.clients_per_round, clients.num_clients)

  def make_state(params, table, rng_data, public_table):
    state = {"params": params, "table": table, "server_opt": server_tx.init(params),
             "round": jnp.zeros((), jnp.int32), "rng": rng_data}
    if public_table is not None:
      state["public"] = public_table
    return state

  abstract = jax.eval_shape(
      make_state, jax.eval_shape(lambda: _abstract_params(model, faces)),
      jax.ShapeDtypeStruct((rows, dim), jnp.float32),
      jax.ShapeDtypeStruct((2,), jnp.uint32),
      None if public is None else jax.ShapeDtypeStruct((public.num_clients, dim), jnp.float32))
  state_sharding = _state_sharding(abstract, mesh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
      state_sharding)
  cl = rounds.client_sharding(mesh)
  if execution == "host_loop":
    round_call = host_loop.make_round(*round_args)
    put = lambda x: x            # host arrays: the loop reads the image counts
  else:
    round_call = jax.jit(
        rounds.make_round_fn(*round_args), in_shardings=(state_sharding, cl, cl, cl, cl),
        out_shardings=(state_sharding, sh.replicated(mesh), cl), donate_argnums=(0,))
    put = lambda x: jax.make_array_from_process_local_data(cl, x)
  logging.info("Federated round execution: %s (federated.execution=%r)", execution,
               execution_setting)
  make_state_jit = jax.jit(make_state, out_shardings=state_sharding)

  def init(params0, rng):
    table = initial_class_table(cfg, apply_fn, params0, clients, mesh, rows, rng,
                                process_slice)
    rng_data = jax.random.key_data(jax.random.fold_in(rng, 1))
    public_table = None
    if public is not None:
      public_table = jnp.asarray(mean_features(cfg, apply_fn, params0, public, mesh,
                                               process_slice))
    return make_state_jit(params0, table, rng_data, public_table)

  def apply(state, round_index: int, poison_clients=()):
    ids = client_data.sample_clients(cfg.seed, round_index, clients.num_clients,
                                     cfg.clients_per_round)
    padded_ids = np.zeros(padded_m, np.int32)
    padded_ids[:len(ids)] = ids
    poison = np.isin(padded_ids, np.asarray(poison_clients, np.int32))
    poison[len(ids):] = False
    lo, hi = process_slice(padded_m) if process_slice else (0, padded_m)
    data = clients.round_data(padded_ids[lo:hi])
    num_images = data.num_images.copy()
    num_images[max(0, len(ids) - lo):] = 0            # padding slots
    state, metrics, _ = round_call(state, put(data.images), put(num_images),
                                   put(padded_ids[lo:hi]), put(poison[lo:hi]))
    return state, metrics, ids

  return FederatedAlgorithm(init, apply, abstract, state_sharding, clients, mesh, cfg)


def _abstract_params(model, faces):
  return models.init_params(model, jax.random.key(0), faces.images.shape[1:])


def initial_class_table(cfg, apply_fn, params0, clients, mesh, rows: int, rng,
                        process_slice: Callable | None = None):
  """The server's class table before round 1, in its sharded layout.

  mean_feature (FedFace): every client computes the normalised mean of its own
  features under theta_0 and uploads only that vector (`mean_features`).
  random (FedAvg/FedAwS): Gaussian rows. Padding rows stay zero.
  """
  dim = cfg.embedding_dim
  table = np.zeros((rows, dim), np.float32)
  n = clients.num_clients
  if cfg.class_init == "random":
    table[:n] = np.asarray(jax.random.normal(rng, (n, dim))) / np.sqrt(dim)
  elif cfg.class_init == "mean_feature":
    table[:n] = mean_features(cfg, apply_fn, params0, clients, mesh, process_slice)
  else:
    raise ValueError(f"unknown class_init {cfg.class_init!r}; valid: random, mean_feature")
  return sh.put_table(table, mesh)


def mean_features(cfg, apply_fn, params, clients, mesh,
                  process_slice: Callable | None = None) -> np.ndarray:
  """[num_clients, D] host array: each client's normalised mean feature under `params`.

  Clients run in parallel, vmapped and split over all devices, in groups of
  one round's size. Multi-host: each process loads only its `process_slice`
  of a group; the [group, D] features come back replicated, so every process
  fills the same host array.
  """
  n = clients.num_clients
  out_rows = np.zeros((n, cfg.embedding_dim), np.float32)
  group, _ = round_layout(min(n, cfg.clients_per_round), mesh, cfg.clients_per_chunk)
  cl = rounds.client_sharding(mesh)
  feat = jax.jit(jax.vmap(lambda p, im, k: client_update.mean_feature(apply_fn, p, im, k),
                          in_axes=(None, 0, 0)),
                 in_shardings=(sh.replicated(mesh), cl, cl), out_shardings=sh.replicated(mesh))
  put = lambda x: jax.make_array_from_process_local_data(cl, x)
  lo, hi = process_slice(group) if process_slice else (0, group)
  for start in range(0, n, group):
    ids = np.arange(start, min(start + group, n))
    padded = np.zeros(group, np.int32)
    padded[:len(ids)] = ids
    data = clients.round_data(padded[lo:hi])
    out = feat(params, put(data.images), put(data.num_images))
    out_rows[ids] = np.asarray(out.addressable_data(0))[:len(ids)]
  return out_rows
