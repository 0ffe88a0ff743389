"""One compiled federated round: parallel client updates, aggregation, server step.

Layout of a round on a ("data", "classes") mesh:
  * the client axis of the round's arrays is split over *all* devices
    (`CLIENT_AXES` = both mesh axes), so every device trains its own slice of
    clients; inside a device, clients run in chunks: `lax.scan` over chunks,
    `vmap` within a chunk. Only the running weighted sum of deltas is carried,
    never one parameter copy per client, and there is no Python loop over
    clients;
  * the class-embedding table stays split over "classes"; the round's rows are
    fetched with an in-shard gather + psum (Q rows cross devices, not the
    table), written back the same way, and spreadout compares this round's rows
    with all rows block by block (`sharding.sharded_spreadout_rows`);
  * a client whose update is NaN/Inf gets weight 0 and a zeroed delta, and is
    counted in the round metrics: it is never averaged in.

Defences (docs/ATTACK.md section 9), both off by default:
  * `federated.dp` (enabled, clip_norm S, noise_multiplier z): DP-FedAvg with a
    fixed denominator (McMahan et al. 2018). Each client's backbone delta is
    clipped to L2 norm S over the whole backbone, inside the chunk loop (no
    per-client copy is kept); the server adds N(0, (z S)^2) to the *sum* of the
    clipped deltas and divides by the number of sampled clients K, so the mean
    update has noise std z S / K. Clients get *equal* weight: with image-count
    weights a client's share n_k / sum(n) is unbounded and data-dependent (one
    client with many photos could dominate), so S would no longer bound its
    influence on the sum, which is what the Gaussian mechanism's sensitivity
    needs. A NaN-excluded client still counts in K (fixed denominator). The
    noise comes from a server key (state rng, round) *after* the psum, so it
    is the same whatever the number of devices. The class-embedding rows are
    not clipped or noised: a client's row is not summed with others but
    written to its own slot (FedAwS), so DP on the sum cannot protect it;
    FedFace's default clients never upload a row during rounds, but its
    round-0 mean-feature init does. See `privacy.py` for the accounting and
    these caveats;
  * `federated.secure_aggregation`: each client adds pairwise masks from seeds
    shared with every other client of the round (`secure_aggregation.py`);
    the psum over devices adds masked updates, and the masks cancel. The
    result equals the unmasked round to float rounding: masking hides single
    updates from the server, not the new global model from the clients.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from fedface_jax import sharding as sh
from fedface_jax.federated import client_update as cu
from fedface_jax.federated import hooks as hooks_lib
from fedface_jax.federated import loops
from fedface_jax.federated import secure_aggregation as sa

P = jax.sharding.PartitionSpec
CLIENT_AXES = (sh.DATA, sh.CLASSES)


# federated.spreadout.reduction (see make_spreadout).
SPREADOUT_REDUCTIONS = ("row_sum", "pair_mean")
# fold_in constant separating the DP noise's key stream from the clients' keys.
DP_NOISE_STREAM = 0xD1FF


def dp_settings(cfg: mlc.ConfigDict) -> tuple[bool, float, float]:
  """(enabled, clip_norm S, noise_multiplier z) of `cfg.dp`."""
  dp = cfg.dp
  if not dp.enabled:
    return False, float("inf"), 0.0
  clip, z = float(dp.clip_norm), float(dp.noise_multiplier)
  if not clip > 0 or z < 0:
    raise ValueError(f"federated.dp needs clip_norm > 0 and noise_multiplier >= 0, "
                     f"got {clip}, {z}")
  return True, clip, z


def client_sharding(mesh):
  return jax.NamedSharding(mesh, P(CLIENT_AXES))


class RoundBatch(NamedTuple):
  """A round's client data as the engine hands it over (M slots, padding slots have 0 images)."""
  images: Any        # [M, n_max, H, W, 3] uint8
  num_images: Any    # [M] int32; 0 = padding slot (weight 0, not a client)
  client_ids: Any    # [M] int32 rows of the class table and of the client store
  poison: Any        # [M] bool: fault injection (the client's delta becomes NaN)


class RoundInputs(NamedTuple):
  """What the clients phase receives: the server's half (`prepare`) plus the round's data."""
  params: Any           # global backbone (broadcast)
  rows: jax.Array       # [M, D] the clients' class rows
  images: Any           # [M, n_max, H, W, 3]
  num_images: Any       # [M] (a host array in the host loop: it reads the step counts)
  keys: jax.Array       # [M, 2] raw keys of the clients' local randomness
  poison: Any           # [M]
  participants: jax.Array  # [M] (broadcast) client ids for the pairwise masks, -1 = padding
  sa_key: jax.Array     # (broadcast) the round's mask key
  public: jax.Array     # (broadcast) [P, D] public negatives, P = 0 without them
  client_state: Any     # [M, ...] the algorithm's stored state of each client ({}: none)
  broadcast: Any        # (broadcast) the algorithm's extra server state ({}: none)


class ClientOutputs(NamedTuple):
  """What the server keeps of each client slot (leading axis M once gathered)."""
  new_row: jax.Array    # class row after local training (written back in UPLOADS_ROW modes)
  valid: jax.Array      # finite and a real client: averaged in
  finite: jax.Array     # False: NaN/Inf update, excluded and counted
  metrics: dict         # loss_first, loss_last, inside_margin
  delta_norm: jax.Array  # before DP clipping
  client_state: Any     # the algorithm's new stored state ({}: none)


class RoundSums(NamedTuple):
  """The round's sums over clients (over devices after the psum)."""
  delta_sum: Any        # weighted (image counts, or DP-clipped equal weights) backbone deltas
  weight_sum: jax.Array
  upload_sum: Any       # the algorithm's extra uploads of valid clients, unweighted


def round_input_specs() -> RoundInputs:
  """shard_map specs of `RoundInputs`: per-client fields over all devices, the rest replicated."""
  cl = P(CLIENT_AXES)
  return RoundInputs(params=P(), rows=cl, images=cl, num_images=cl, keys=cl, poison=cl,
                     participants=P(), sa_key=P(), public=P(), client_state=cl, broadcast=P())


def _tree_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.ones((), bool)
  return jnp.all(jnp.stack(leaves))


def _scatter_rows(table, row_ids, rows, mask, mesh):
  """Writes `rows` into `table[row_ids]` where `mask`, shard-locally (rows split over "classes")."""
  rows_per_shard = table.shape[0] // mesh.shape[sh.CLASSES]

  def local(table_local, ids, new_rows, m):
    offset = jax.lax.axis_index(sh.CLASSES) * rows_per_shard
    local_ids = ids - offset
    owned = m & (local_ids >= 0) & (local_ids < rows_per_shard)
    # Rows not owned are sent out of bounds and dropped by the scatter.
    target = jnp.where(owned, local_ids, rows_per_shard)
    return table_local.at[target].set(new_rows, mode="drop")

  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(sh.CLASSES), P(), P(), P()),
      out_specs=P(sh.CLASSES))(table, row_ids, rows, mask)


def gather_rows(table, row_ids, mesh):
  """`table[row_ids]` replicated, from a table split over "classes"."""
  rows_per_shard = table.shape[0] // mesh.shape[sh.CLASSES]
  return jax.shard_map(
      lambda t, i: sh.gather_rows_local(t, i, rows_per_shard), mesh=mesh,
      in_specs=(P(sh.CLASSES, None), P()), out_specs=P(), check_vma=False)(
          table, row_ids)


def gather_store(store, row_ids, mesh):
  """`leaf[row_ids]` of every leaf of a per-client store split over "classes", replicated."""

  def one(leaf):
    rows_per_shard = leaf.shape[0] // mesh.shape[sh.CLASSES]

    def local(t, ids):
      offset = jax.lax.axis_index(sh.CLASSES) * rows_per_shard
      local_ids = ids - offset
      owned = (local_ids >= 0) & (local_ids < rows_per_shard)
      rows = t[jnp.clip(local_ids, 0, rows_per_shard - 1)]
      owned = owned.reshape((-1,) + (1,) * (rows.ndim - 1))
      return jax.lax.psum(jnp.where(owned, rows, 0), sh.CLASSES)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(sh.CLASSES), P()), out_specs=P(),
                         check_vma=False)(leaf, row_ids)

  return jax.tree.map(one, store)


def scatter_store(store, row_ids, values, mask, mesh):
  """Writes `values[k]` into row `row_ids[k]` of every store leaf where `mask[k]`."""
  return jax.tree.map(lambda leaf, v: _scatter_rows(leaf, row_ids, v, mask, mesh), store, values)


def make_client_contribution(cfg: mlc.ConfigDict):
  """`contribution(params, result, n, poison, own_id, participants, sa_key) -> (sums, outputs)`.

  What one client (its `client_update.LocalResult`) adds to the round, for one
  client (the compiled round vmaps it over a chunk, the host loop calls it per
  client): NaN exclusion, image-count or DP weights, DP clipping and
  secure-aggregation masks. Returns its `RoundSums` share and its `ClientOutputs`.
  """
  dp_on, clip_norm, _ = dp_settings(cfg)
  secure = bool(cfg.secure_aggregation)

  def contribution(params, result, n, poison, own_id, participants, sa_key):
    # Fault injection for tests and robustness studies (see config).
    delta = jax.tree.map(lambda d: jnp.where(poison, jnp.nan, d), result.delta)
    finite = (_tree_finite((delta, result.new_row, result.upload, result.client_state))
              & jnp.isfinite(result.metrics["loss_last"]))
    valid = finite & (n > 0)   # n == 0: a padding slot, not a client
    # where(), not multiply: 0 * NaN would still be NaN.
    delta = jax.tree.map(lambda d: jnp.where(valid, d, 0.0), delta)
    upload = jax.tree.map(lambda u: jnp.where(valid, u, 0.0), result.upload)
    norm = optax.global_norm(delta)
    if dp_on:
      # DP-FedAvg: clip each client's whole backbone delta to S, equal weights.
      weight = jnp.where(valid, 1.0, 0.0)
      coef = weight * jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-30))
    else:
      weight = jnp.where(valid, n.astype(jnp.float32), 0.0)
      coef = weight
    contrib = jax.tree.map(lambda d: coef.astype(d.dtype) * d, delta)
    if secure:
      # Each client uploads only contrib + its pairwise masks; the sum cancels them.
      masks = sa.client_mask(jax.random.wrap_key_data(sa_key), own_id, participants, params)
      contrib = jax.tree.map(jnp.add, contrib, masks)
    return (RoundSums(contrib, weight, upload),
            ClientOutputs(result.new_row, valid, finite, result.metrics, norm,
                          result.client_state))

  return contribution


def make_clients_phase(apply_fn: Callable, cfg: mlc.ConfigDict, mesh, max_images: int,
                       hooks: hooks_lib.AlgorithmHooks | None = None):
  """`phase(inputs: RoundInputs) -> (RoundSums, ClientOutputs [M])`: every client of the round.

  Clients are split over all devices, run in chunks (`lax.scan` over chunks,
  `vmap` within one); only the running sums are carried. `participants` and
  `sa_key` are used only with secure aggregation.
  """
  unroll_setting = cfg.unroll_loops
  update = cu.make_local_update(apply_fn, cfg.client, max_images, unroll_loops=unroll_setting,
                                class_embedding=cfg.class_embedding, hooks=hooks)
  contribution = make_client_contribution(cfg)
  chunk = int(cfg.clients_per_chunk)

  def one_client(params, row, images, n, key_data, poison, own_id, stored, public, broadcast,
                 participants, sa_key):
    result = update(params, row, images, n, jax.random.wrap_key_data(key_data), public,
                    stored, broadcast)
    return contribution(params, result, n, poison, own_id, participants, sa_key)

  def local(inputs):
    m_local = inputs.images.shape[0]
    if m_local % chunk:
      raise ValueError(f"{m_local} clients per device not divisible by chunk {chunk}")
    # Client ids of this device's slots (-1 = padding), for the pairwise masks.
    first = jax.lax.axis_index(CLIENT_AXES) * m_local
    own_ids = jax.lax.dynamic_slice_in_dim(inputs.participants, first, m_local)
    per_client = (inputs.rows, inputs.images, inputs.num_images, inputs.keys, inputs.poison,
                  own_ids, inputs.client_state)
    shared = (inputs.public, inputs.broadcast, inputs.participants, inputs.sa_key)
    split = lambda x: x.reshape(m_local // chunk, chunk, *x.shape[1:])
    xs = jax.tree.map(split, per_client)
    slot0 = jax.tree.map(lambda x: x[0], per_client)
    sums_shape, _ = jax.eval_shape(one_client, inputs.params, *slot0, *shared)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
    in_axes = (None,) + (0,) * len(per_client) + (None,) * len(shared)

    def body(sums, chunk_xs):
      chunk_sums, outputs = jax.vmap(one_client, in_axes=in_axes)(inputs.params, *chunk_xs,
                                                                   *shared)
      return jax.tree.map(lambda acc, c: acc + c.sum(0), sums, chunk_sums), outputs

    num_chunks = m_local // chunk
    sums, outputs = jax.lax.scan(
        body, zero, xs,
        unroll=loops.unroll_factor(unroll_setting, num_chunks, loops.MAX_CHUNK_UNROLL))
    merge = lambda x: x.reshape(m_local, *x.shape[2:])
    return jax.lax.psum(sums, CLIENT_AXES), jax.tree.map(merge, outputs)

  return jax.shard_map(local, mesh=mesh, in_specs=(round_input_specs(),),
                       out_specs=(P(), P(CLIENT_AXES)), check_vma=False)


def make_round_fn(apply_fn: Callable, cfg: mlc.ConfigDict, mesh, max_images: int,
                  server_tx: optax.GradientTransformation,
                  spread_tx: optax.GradientTransformation, num_real_clients: int,
                  num_valid_rows: int, hooks: hooks_lib.AlgorithmHooks | None = None):
  """Returns `round_fn(state, batch: RoundBatch) -> (state, metrics, valid)`: one compiled round.

  `state` = {"params", "table", "server_opt", "round", "rng"} (+ "algo" and
  "clients" for algorithms with extra server / stored client state). Spreadout
  runs `spreadout.steps` optimiser steps on the table per round, with optimiser
  state (e.g. momentum) started afresh each round, like FedFace's server.
  The client arrays may be padded past `num_real_clients` with slots of
  `num_images == 0` so that they split evenly over devices and chunks; padding
  slots get weight 0 and are not counted as clients.
  """
  clients_phase = make_clients_phase(apply_fn, cfg, mesh, max_images, hooks)
  prepare, server = make_server_phases(cfg, mesh, server_tx, spread_tx, num_real_clients,
                                       num_valid_rows, hooks)

  def round_fn(state, batch):
    inputs = prepare(state, batch.client_ids)._replace(
        images=batch.images, num_images=batch.num_images, poison=batch.poison)
    sums, outputs = clients_phase(inputs)
    return server(state, sums, outputs, batch)

  return round_fn


def public_rows(state, dim: int):
  """The public negatives of `state` ([P, D]), or an empty [0, D] block without them."""
  return state.get("public", jnp.zeros((0, dim), jnp.float32))


def make_server_phases(cfg: mlc.ConfigDict, mesh, server_tx: optax.GradientTransformation,
                       spread_tx: optax.GradientTransformation, num_real_clients: int,
                       num_valid_rows: int, hooks: hooks_lib.AlgorithmHooks | None = None):
  """The server's two halves of a round, around the clients phase (whichever runs it).

  `prepare(state, client_ids) -> RoundInputs` without the round's data
  (images, num_images, poison are None; the caller fills them in): the
  sampled clients' class rows and stored states, training keys (from (rng,
  round, client id)), ids for the pairwise masks (-1 = padding slot), the
  round's mask key, and what goes out with the model (public negatives, the
  algorithm's broadcast).
  `server(state, sums, outputs, batch) -> (new state, round metrics, valid)`:
  DP noise, the server optimiser, uploaded class rows, the algorithm's server
  hook, spreadout and the round's metrics.
  """
  hooks = hooks or hooks_lib.AlgorithmHooks()
  dp_on, clip_norm, noise_multiplier = dp_settings(cfg)
  uploads_row = cu.check_class_embedding(cfg.class_embedding) in cu.UPLOADS_ROW
  spreadout = make_spreadout(cfg.spreadout, mesh, spread_tx, num_valid_rows)

  def prepare(state, client_ids):
    base_key = jax.random.wrap_key_data(state["rng"])
    round_key = jax.random.fold_in(base_key, state["round"])
    keys = jax.vmap(lambda c: jax.random.key_data(jax.random.fold_in(round_key, c)))(
        client_ids)
    rows = gather_rows(state["table"], client_ids, mesh)
    slots = jnp.arange(client_ids.shape[0])
    participants = jnp.where(slots < num_real_clients, client_ids, -1)
    sa_key = jax.random.key_data(sa.round_key(base_key, state["round"]))
    stored = gather_store(state["clients"], client_ids, mesh) if "clients" in state else {}
    return RoundInputs(state["params"], rows, None, None, keys, None, participants, sa_key,
                       public_rows(state, rows.shape[-1]), stored, state.get("algo", {}))

  def server(state, sums, outputs, batch):
    delta_sum, weight_sum = sums.delta_sum, sums.weight_sum
    valid, finite, metrics, norms = (outputs.valid, outputs.finite, outputs.metrics,
                                     outputs.delta_norm)
    num_images, client_ids = batch.num_images, batch.client_ids
    params, table = state["params"], state["table"]
    base_key = jax.random.wrap_key_data(state["rng"])
    # Real clients vs padding slots, as a mask: the round keeps its static, evenly
    # sharded shape (slicing the padding away inside the sharded program breaks it).
    real = jnp.arange(client_ids.shape[0]) < num_real_clients
    any_valid = weight_sum > 0
    if dp_on:
      # Server step of DP-FedAvg, after the psum: one replicated draw from the
      # server's key, identical on any number of devices.
      noise_key = jax.random.fold_in(jax.random.fold_in(base_key, DP_NOISE_STREAM),
                                     state["round"])
      sum_std = noise_multiplier * clip_norm if noise_multiplier > 0 else 0.0
      leaves, treedef = jax.tree.flatten(delta_sum)
      if sum_std > 0:
        leaves = [x + sum_std * jax.random.normal(jax.random.fold_in(noise_key, i), x.shape,
                                                  x.dtype)
                  for i, x in enumerate(leaves)]
      mean_delta = jax.tree.unflatten(treedef, [x / num_real_clients for x in leaves])
    else:
      mean_delta = jax.tree.map(lambda d: d / jnp.maximum(weight_sum, 1e-12), delta_sum)
    # The server optimiser treats -mean_delta as a gradient; SGD(lr=1) is FedAvg.
    pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
    updates, server_opt = server_tx.update(pseudo_grad, state["server_opt"], params)
    new_params = optax.apply_updates(params, updates)
    new_params, server_opt = jax.tree.map(
        lambda a, b: jnp.where(any_valid, a, b), (new_params, server_opt),
        (params, state["server_opt"]))

    if uploads_row:   # FedAwS / re-estimated rows: clients upload their new rows.
      table = _scatter_rows(table, client_ids, outputs.new_row, valid, mesh)

    spread_table, sp_before, table_stats = spreadout(table, client_ids, real)
    # A round without one usable client update leaves the whole model as it was, table included.
    table = jnp.where(any_valid, spread_table, table)
    new_state = dict(state, params=new_params, table=table, server_opt=server_opt,
                     round=state["round"] + 1)
    n_valid = valid.sum()
    if "algo" in state:
      new_state["algo"] = hooks.server_step(state["algo"], sums.upload_sum, n_valid,
                                            num_valid_rows)
    if "clients" in state:   # stateful clients: valid clients' new states, by client id
      new_state["clients"] = scatter_store(state["clients"], client_ids, outputs.client_state,
                                           valid, mesh)
    valid_mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(n_valid, 1)
    round_metrics = {
        "clients": num_real_clients, "clients_valid": n_valid,
        "clients_excluded": jnp.sum(real & ~finite),
        "images": jnp.sum(jnp.where(valid, num_images, 0)).astype(jnp.float32),
        "client_loss_first": valid_mean(metrics["loss_first"]),
        "client_loss_last": valid_mean(metrics["loss_last"]),
        # Share of the first local batch already inside the positive-only margin: near 1,
        # the clients have nothing left to learn from their own photos.
        "client_inside_margin": valid_mean(metrics["inside_margin"]),
        "client_delta_norm": valid_mean(norms),   # before DP clipping
        "update_norm": optax.global_norm(mean_delta),
        "spreadout_before": sp_before,
        **table_stats,
    }
    if dp_on:
      round_metrics.update({
          "dp_clip_fraction": valid_mean(norms > clip_norm),
          "dp_delta_norm_mean": round_metrics["client_delta_norm"],
          "dp_delta_norm_max": jnp.max(jnp.where(valid, norms, 0.0)),
          # Std of the noise on the mean update (per coordinate): z S / K.
          "dp_noise_std": jnp.float32(noise_multiplier * clip_norm / num_real_clients
                                      if noise_multiplier > 0 else 0.0),
      })
    return new_state, round_metrics, valid

  return prepare, server


def make_spreadout(spread: mlc.ConfigDict, mesh, spread_tx: optax.GradientTransformation,
                   num_valid_rows: int):
  """`spreadout(table, query_ids, real) -> (table, loss before, stats)`: the server's table step.

  `spread.steps` optimiser steps of the spreadout loss on this round's query
  rows (`real` masks padding slots) against all rows, optimiser state started
  afresh each round like FedFace's server; a no-op when `spread.enabled` is
  off. The stats (share of (query, row) pairs with cos > margin, and the
  largest cosine, before and after the steps) are computed either way: they
  show whether identities in the table are pushed apart at all.

  Reduction (`spread.reduction`): "row_sum" (default) sums each query row's
  hinges over all other rows and averages over the query rows, as FedAwS
  defines the regulariser: a row's push grows with the number of rows it is
  too close to. "pair_mean" divides by the number of pairs instead (the FedFace
  authors' code): each row's gradient shrinks by ~1/C, which left the table
  where it was (docs/FEDFACE.md, "What the project measured").
  """
  reduction = spread.reduction
  if reduction not in SPREADOUT_REDUCTIONS:
    raise ValueError(f"unknown federated.spreadout.reduction {reduction!r}; "
                     f"valid: {SPREADOUT_REDUCTIONS}")

  def sums_of(table, query_ids, real):
    return sh.sharded_spreadout_rows(
        table, query_ids, mesh, margin=spread.margin, block_size=spread.block_size,
        num_valid=num_valid_rows, query_mask=real)

  def loss_of(sums, real):
    denominator = jnp.sum(real) if reduction == "row_sum" else sums.pairs
    return spread.weight * sums.hinge_sum / jnp.maximum(denominator, 1)

  def loss_fn(table, query_ids, real):
    return loss_of(sums_of(table, query_ids, real), real)

  def stats(sums, when):
    return {f"spreadout_violations_{when}": sums.violations / jnp.maximum(sums.pairs, 1),
            f"spreadout_max_cos_{when}": sums.max_cos}

  def spreadout(table, query_ids, real):
    before = sums_of(table, query_ids, real)   # one pass for the loss and the stats
    table_stats = stats(before, "before")
    if not spread.enabled:
      table_stats.update(stats(before, "after"))
      return table, jnp.zeros(()), table_stats
    loss_before = loss_of(before, real)

    def step(carry, _):
      tbl, opt = carry
      grad = jax.grad(loss_fn)(tbl, query_ids, real)
      upd, opt = spread_tx.update(grad, opt, tbl)
      return (optax.apply_updates(tbl, upd), opt), None

    (table, _), _ = jax.lax.scan(step, (table, spread_tx.init(table)), None,
                                 length=spread.steps)
    table_stats.update(stats(sums_of(table, query_ids, real), "after"))
    return table, loss_before, table_stats

  return spreadout
