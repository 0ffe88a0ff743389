"""The engine's side of a round: who joins, where their photos come from, round 0.

`FederatedAlgorithm` (algorithm.py) runs a round on the data it is handed. This module owns
the rest: the federated identities as clients, the deterministic choice of a round's clients
from (seed, round), the padded slot layout and each process's share of it, fault injection,
and the round-0 protocol that builds the server's class table (every client uploads its mean
feature under theta_0). `engine.run` loops over rounds with a `FederatedRun`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import client_data
from fedface_jax.federated import client_update
from fedface_jax.federated import privacy
from fedface_jax.federated import rounds


class FederatedRun:
  """An algorithm with its clients: `init(params0, rng)`, `apply(state, round_index)`.

  Attributes:
    algorithm: the `FederatedAlgorithm`.
    clients: the `FederatedClients` of the federated split.
    abstract_state, mesh, config: the algorithm's.
  """

  def __init__(self, algorithm: alg_lib.FederatedAlgorithm, clients, apply_fn: Callable,
               process_slice: Callable | None = None, public=None):
    self.algorithm = algorithm
    self.clients = clients
    self.config = algorithm.config
    self.mesh = algorithm.mesh
    self.abstract_state = algorithm.abstract_state
    self.state_sharding = algorithm.state_sharding
    self._apply_fn = apply_fn
    self._process_slice = process_slice
    self._public = public

  def init(self, params0, rng):
    """Round 0: the class table from `class_init`, public negatives, the algorithm's state."""
    cfg = self.config
    rows = self.abstract_state["table"].shape[0]
    table = initial_class_table(cfg, self._apply_fn, params0, self.clients, self.mesh, rows,
                                rng, self._process_slice)
    public_table = None
    if self._public is not None:
      public_table = jnp.asarray(mean_features(cfg, self._apply_fn, params0, self._public,
                                               self.mesh, self._process_slice))
    rng_data = jax.random.key_data(jax.random.fold_in(rng, 1))
    return self.algorithm.init(params0, table, rng_data, public_table)

  def round_data(self, round_index: int, poison_clients=()):
    """(this process's placed `RoundBatch` of round `round_index`, the sampled client ids)."""
    cfg = self.config
    m = self.algorithm.padded_clients
    ids = client_data.sample_clients(cfg.seed, round_index, self.clients.num_clients,
                                     cfg.clients_per_round)
    padded_ids = np.zeros(m, np.int32)
    padded_ids[:len(ids)] = ids
    poison = np.isin(padded_ids, np.asarray(poison_clients, np.int32))
    poison[len(ids):] = False
    lo, hi = self._process_slice(m) if self._process_slice else (0, m)
    data = self.clients.round_data(padded_ids[lo:hi])
    num_images = data.num_images.copy()
    num_images[max(0, len(ids) - lo):] = 0            # padding slots
    batch = rounds.RoundBatch(data.images, num_images, padded_ids[lo:hi], poison[lo:hi])
    return self.algorithm.place(batch), ids

  def apply(self, state, round_index: int, poison_clients=()):
    """Round `round_index` (0-based). Returns (state, metrics, sampled client ids)."""
    batch, ids = self.round_data(round_index, poison_clients)
    state, metrics = self.algorithm.apply(state, batch)
    return state, metrics, ids

  def privacy_report(self, rounds_done: int) -> dict[str, float]:
    """{"privacy/epsilon", "privacy/delta"} after `rounds_done` rounds; {} without DP."""
    return privacy.run_epsilon(self.config, self.clients.num_clients, rounds_done)


def build_run(cfg: mlc.ConfigDict, model, faces, mesh, process_slice: Callable | None = None,
              public_faces=None, hooks=None) -> FederatedRun:
  """The algorithm of `cfg.method` on the federated identities in `faces`, one client each.

  Args:
    cfg: the `federated` config section (after `algorithm.apply_method`).
    model: the backbone (linen module returning normalised embeddings).
    faces: FaceArrays of the federated split; one client per identity.
    mesh: ("data", "classes") mesh.
    process_slice: for multi-host runs, maps the padded client list of a round
      to this process's contiguous share (see engine); None = single process.
    public_faces: the public (pretraining) identities; needed only with
      `client.public_negatives.enabled`, whose rows are their mean features
      under theta_0, computed once at `init` and kept in the state.
    hooks: the algorithm's `hooks.AlgorithmHooks`; None = those of `cfg.method`
      (`algorithm.make_hooks`).
  """
  clients = client_data.FederatedClients(faces, cfg.min_images_per_client,
                                         cfg.max_images_per_client)
  public = None
  if cfg.client.public_negatives.enabled:
    if public_faces is None:
      raise ValueError("client.public_negatives needs the public (pretraining) identities")
    public = client_data.FederatedClients(public_faces, 1, cfg.max_images_per_client)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  rows = sh.padded_num_classes(alg_lib.class_table_rows(cfg, clients.num_clients), mesh)
  cfg = alg_lib.round_config(cfg, clients.num_clients, mesh)
  abstract_params = jax.eval_shape(
      lambda: models.init_params(model, jax.random.key(0), faces.images.shape[1:]))
  algorithm = alg_lib.FederatedAlgorithm(
      cfg, apply_fn, abstract_params, mesh, max_images=clients.max_images,
      num_clients=clients.num_clients, num_rows=rows,
      num_public=0 if public is None else public.num_clients, hooks=hooks)
  return FederatedRun(algorithm, clients, apply_fn, process_slice, public)


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
  group, _ = alg_lib.round_layout(min(n, cfg.clients_per_round), mesh, cfg.clients_per_chunk)
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
