"""Simulated pairwise-mask secure aggregation (Bonawitz et al., CCS 2017).

Every pair of clients (a, b) of a round shares a seed (in the protocol, from a
Diffie-Hellman key agreement; here `fold_in(fold_in(round_key, min), max)`).
Each client expands the seed with a PRG and adds the mask to its update when
its id is the smaller of the pair, subtracts it otherwise:

  y_a = x_a + sum_{b != a} sign(b - a) * PRG(s_ab)

so the masks cancel in sum_a y_a = sum_a x_a, while each y_a alone looks like
noise to the server. Dropped clients (the engine's NaN-excluded ones) still
send a masked zero, which is what the protocol's secret-shared mask recovery
yields, so their masks cancel too.

Two arithmetics:
  * float masks (`mask_updates`, `secure_sum`, and the engine's
    `federated.secure_aggregation`): Gaussian masks of std `mask_std` per
    pair, added in float32. Masks cancel up to float rounding, ~ulp(mask_std *
    sqrt(K)) per coordinate. This is what runs inside the compiled round: it
    vmaps, shards and needs no range agreement;
  * fixed-point masks (`secure_sum_fixed_point`): updates encoded as int32
    fixed point, uniform uint32 masks, sums mod 2^32, as in the protocol. The
    masks cancel *exactly* (only the encoding rounds), and each masked update
    is uniform on Z_{2^32}, independent of the true one.

What secure aggregation does *not* change (the point for the curious-client
attack, docs/ATTACK.md section 9): the server, and every client, still get
w_{t+1} = w_t + mean update. A curious client sees w_t and w_{t+1}, which are
bit-for-bit (float: to rounding) the same with or without masking, so SA does
not stop that attack; only noise on the aggregate (DP-FedAvg) does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Std of each pairwise mask (float masks). Client updates are ~1e-3 per weight,
# so masked updates are ~1e3x noisier than the true ones; the float32 sum error
# stays ~1e-7 * sqrt(K) per coordinate.
MASK_STD = 1.0
# fold_in constant separating the masks' key stream from the clients' keys.
KEY_STREAM = 0x5EC_A66


def round_key(base_key, round_index):
  """The masks' key of one round, independent of the clients' training keys."""
  return jax.random.fold_in(jax.random.fold_in(base_key, KEY_STREAM), round_index)


def pair_key(key, a, b):
  """Shared seed of clients a and b (symmetric in a, b)."""
  lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
  return jax.random.fold_in(jax.random.fold_in(key, lo), hi)


def _normal_like(key, tree, std):
  leaves, treedef = jax.tree.flatten(tree)
  out = [std * jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32).astype(x.dtype)
         for i, x in enumerate(leaves)]
  return jax.tree.unflatten(treedef, out)


def client_mask(key, own_id, participant_ids, like, mask_std: float = MASK_STD):
  """sum_{b in participants, b != own} sign(b - own) * PRG(s_{own,b}), shaped like `like`.

  `participant_ids` [M] holds the round's client ids, -1 for non-participants
  (padding slots); a non-participant (`own_id` < 0) gets a zero mask. Memory is
  one tree; the pairs are a `fori_loop`, so this vmaps over clients.
  """
  participant_ids = jnp.asarray(participant_ids)
  zero = jax.tree.map(jnp.zeros_like, like)

  def body(j, acc):
    other = participant_ids[j]
    active = (other >= 0) & (own_id >= 0) & (other != own_id)
    sign = jnp.where(active, jnp.where(own_id < other, 1.0, -1.0), 0.0)
    k = pair_key(key, jnp.maximum(own_id, 0), jnp.maximum(other, 0))
    m = _normal_like(k, like, mask_std)
    return jax.tree.map(lambda a, b: a + (sign * b).astype(a.dtype), acc, m)

  return jax.lax.fori_loop(0, participant_ids.shape[0], body, zero)


def mask_updates(updates, client_ids, key, mask_std: float = MASK_STD):
  """Masked per-client updates y_k = x_k + mask_k; `updates` is [K, D] (or a pytree of [K, ...])."""
  client_ids = jnp.asarray(client_ids, jnp.int32)
  like = jax.tree.map(lambda u: u[0], updates)
  masks = jax.vmap(lambda c: client_mask(key, c, client_ids, like, mask_std))(client_ids)
  return jax.tree.map(jnp.add, updates, masks)


def secure_sum(updates, client_ids, key, mask_std: float = MASK_STD):
  """What the server computes: the sum of the masked updates (= sum of updates)."""
  return jax.tree.map(lambda y: y.sum(0), mask_updates(updates, client_ids, key, mask_std))


def _to_fixed(x, frac_bits):
  q = jnp.round(x * (2.0 ** frac_bits)).astype(jnp.int32)
  return jax.lax.bitcast_convert_type(q, jnp.uint32)


def _from_fixed(u, frac_bits):
  return jax.lax.bitcast_convert_type(u, jnp.int32).astype(jnp.float32) / (2.0 ** frac_bits)


def masked_fixed_point(updates, client_ids, key, frac_bits: int = 20):
  """Per-client masked updates in Z_{2^32}: encode(x_k) + sum sign * uniform mask."""
  updates = jnp.asarray(updates, jnp.float32)
  client_ids = jnp.asarray(client_ids, jnp.int32)
  k_clients = updates.shape[0]
  bound = 2.0 ** (31 - frac_bits) / k_clients
  max_abs = float(jnp.max(jnp.abs(updates)))
  if not max_abs < bound:
    raise ValueError(f"|update| up to {max_abs:g} overflows the fixed-point sum of {k_clients} "
                     f"clients at frac_bits={frac_bits} (need < {bound:g}); lower frac_bits")

  def one(x, own):
    def body(j, acc):
      other = client_ids[j]
      m = jax.random.bits(pair_key(key, own, other), x.shape, jnp.uint32)
      acc = jnp.where(own < other, acc + m, acc)   # uint32 arithmetic wraps mod 2^32
      return jnp.where(own > other, acc - m, acc)
    return jax.lax.fori_loop(0, k_clients, body, _to_fixed(x, frac_bits))

  return jax.vmap(one)(updates, client_ids)


def secure_sum_fixed_point(updates, client_ids, key, frac_bits: int = 20):
  """Sum of [K, D] updates via fixed-point masking; masks cancel exactly mod 2^32.

  Raises ValueError when the encoded sum could overflow int32 (the protocol's
  agreed range), instead of returning a wrapped, wrong sum.
  """
  masked = masked_fixed_point(updates, client_ids, key, frac_bits)
  return _from_fixed(masked.sum(0, dtype=jnp.uint32), frac_bits)
