"""The clients phase as a host loop: clients one after another, one jitted local step per call.

Why this exists: on XLA:CPU the compiled round (`rounds.make_clients_phase`: `lax.scan` over
chunks and local steps, `vmap` within a chunk) loses the backend's fast convolution path. A
convolution step inside a `while` loop runs much slower than at top level, and vmapped
convolutions whose weights differ per client become grouped convolutions that are slower still
(BENCHMARKS.md has the measured rounds). A Python loop that calls a jitted step for one client at
a time keeps every convolution on the fast path. A dispatch costs tens of microseconds, a step costs
milliseconds, so on CPU the host loop is the faster strategy. On a GPU it depends on the model:
small models are launch-bound and run faster compiled, while a full-size face backbone ran faster
in the host loop on an H200 (its grouped convolutions again; `loops.py` has the figures).
`federated.execution="auto"` picks this only on a one-device CPU mesh (see
`loops.resolve_execution`).

The math is the compiled phase's, not a copy of it: the same `client_update.LocalTraining`
pieces (start, step, finish) and the same `rounds.make_client_contribution` (NaN exclusion,
weights, DP clipping, secure-aggregation masks), and the server halves of the round come from
`rounds.make_server_phases`. Only where the loops run differs. One deliberate difference:
the host knows each client's step count, so a client in `local_epochs` mode runs exactly its own
steps instead of the static bound with masked-out steps (same result, less work), and padding
slots are skipped instead of being trained on zeros and weighted 0.

The running sums and the per-client outputs stay on the device, updated in place (donated
buffers); nothing is copied back to the host until the round's metrics. Clients run in a few
concurrent streams (`federated.host_loop_streams`, default one per core), merged in a fixed
order so that the round stays deterministic.

A client of several local steps pays one dispatch per step. `federated.host_loop_fused_steps`
= F > 1 runs up to F steps per call instead: a client of s steps takes ceil(s/F) calls, the
first also opening the client and the last also accumulating its contribution. The steps are
unrolled in Python inside the jitted function (a static count), not a `lax.scan`/`fori_loop`:
a loop body would lose XLA:CPU's fast convolution path, which is why this module exists.
Most of what fusing gained under glibc's default malloc (1.27x on resnet_small) was page
faults, one set per call, which `--host_malloc=keep` (`fedface_jax/host_memory.py`, the
launchers' default) removes for every call: with it, fused and unfused run alike there.
"""

from __future__ import annotations

from concurrent import futures
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from fedface_jax.federated import client_update as cu
from fedface_jax.federated import hooks as hooks_lib
from fedface_jax.federated import loops
from fedface_jax.federated import rounds


def num_streams(setting) -> int:
  """Concurrent client streams for `federated.host_loop_streams` (0 = one per usable core)."""
  setting = int(setting or 0)
  if setting < 0:
    raise ValueError(f"federated.host_loop_streams must be >= 0 (0 = auto), got {setting}")
  if setting:
    return setting
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:   # not Linux
    return max(1, os.cpu_count() or 1)


def fused_steps(setting) -> int:
  """Local steps per jitted call for `federated.host_loop_fused_steps` (0 and 1: one per call)."""
  setting = int(setting or 0)
  if setting < 0:
    raise ValueError(
        f"federated.host_loop_fused_steps must be >= 0 (0 or 1 = one step per call), got {setting}")
  return max(1, setting)


def step_blocks(steps: int, fused: int) -> list[int]:
  """How many local steps each call of a client of `steps` steps runs: F, F, ..., the rest."""
  return [min(fused, steps - t) for t in range(0, steps, fused)]


def make_clients_phase(apply_fn: Callable, cfg: mlc.ConfigDict, max_images: int,
                       hooks: hooks_lib.AlgorithmHooks | None = None):
  """Returns `phase(inputs: RoundInputs) -> (RoundSums, ClientOutputs [M])`.

  Same inputs and outputs as the compiled `rounds.make_clients_phase`, except that
  `inputs.num_images` must be a host array (the loop reads each client's image and step
  counts). The per-client output buffers are shaped from `jax.eval_shape` of one client's
  outputs, so an algorithm's extra uploads and stored state need nothing here.

  Clients run in `federated.host_loop_streams` concurrent streams (Python threads; a jitted call
  releases the GIL): XLA:CPU parallelises one small client step over only part of the cores
  (BENCHMARKS.md). Stream k trains the k-th, (k+S)-th, ... client and keeps its own running
  sums; the sums are then added in stream order, so a round is deterministic (bit-identical on
  rerun and on resume) whatever the thread timing.
  """
  streams = num_streams(cfg.host_loop_streams)
  fused = fused_steps(cfg.host_loop_fused_steps)
  local = cu.make_local_training(apply_fn, cfg.client, max_images, cfg.class_embedding, hooks)
  contribution = rounds.make_client_contribution(cfg)

  def open_client(inputs, c):
    """Slot c's local state, read from the round's arrays inside the jitted call."""
    slot = lambda tree: jax.tree.map(lambda x: x[c], tree)
    return local.start(inputs.params, inputs.rows[c], inputs.images[c], inputs.num_images[c],
                       jax.random.wrap_key_data(inputs.keys[c]), inputs.public,
                       slot(inputs.client_state), inputs.broadcast)

  start = jax.jit(open_client)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, images, c, t):
    return local.step(state, images[c], t)

  def client_outputs(inputs, state, loss_first, loss_last, c):
    result = local.finish(inputs.params, state, loss_first, loss_last)
    return contribution(inputs.params, result, inputs.num_images[c], inputs.poison[c],
                        inputs.participants[c], inputs.participants, inputs.sa_key)

  def accumulate(acc, inputs, state, loss_first, loss_last, c):
    sums, outputs = client_outputs(inputs, state, loss_first, loss_last, c)
    acc_sums, per_client = acc
    per_client = jax.tree.map(lambda buf, v: buf.at[c].set(v), per_client, outputs)
    return jax.tree.map(jnp.add, acc_sums, sums), per_client

  finish = jax.jit(accumulate, donate_argnums=(0,))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def solo(acc, inputs, c):
    """A one-step client in one call (start, step, accumulate): a third of the dispatches."""
    state = open_client(inputs, c)
    state, loss = local.step(state, inputs.images[c], 0)
    return accumulate(acc, inputs, state, loss, loss, c)

  def run_steps(state, images, c, t0, n):
    """n local steps from step t0, unrolled (n is static): no loop body for XLA:CPU."""
    losses = []
    for i in range(n):
      state, loss = local.step(state, images[c], t0 + i)
      losses.append(loss)
    return state, losses[0], losses[-1]

  # Fused calls (F > 1). `n` is static: each distinct block length compiles once (jit's cache).
  @functools.partial(jax.jit, static_argnums=(2,))
  def open_block(inputs, c, n):
    """Start a client and run its first n steps: (state, loss of step 0, loss of step n-1)."""
    return run_steps(open_client(inputs, c), inputs.images, c, 0, n)

  @functools.partial(jax.jit, static_argnums=(4,), donate_argnums=(0,))
  def mid_block(state, images, c, t0, n):
    state, _, loss = run_steps(state, images, c, t0, n)
    return state, loss

  @functools.partial(jax.jit, static_argnums=(6,), donate_argnums=(0,))
  def close_block(acc, inputs, state, loss_first, c, t0, n):
    """The client's last n steps, then its contribution added to the stream's sums."""
    state, _, loss = run_steps(state, inputs.images, c, t0, n)
    return accumulate(acc, inputs, state, loss_first, loss, c)

  @functools.partial(jax.jit, static_argnums=(3,), donate_argnums=(0,))
  def whole_block(acc, inputs, c, n):
    """A client of n <= F steps in one call (`solo` for n steps)."""
    state, loss_first, loss = run_steps(open_client(inputs, c), inputs.images, c, 0, n)
    return accumulate(acc, inputs, state, loss_first, loss, c)

  def run_client_fused(acc, inputs, c, s):
    blocks = step_blocks(s, fused)
    if len(blocks) == 1:
      return whole_block(acc, inputs, c, blocks[0])
    state, loss_first, _ = open_block(inputs, c, blocks[0])
    t = blocks[0]
    for n in blocks[1:-1]:
      state, _ = mid_block(state, inputs.images, c, t, n)
      t += n
    return close_block(acc, inputs, state, loss_first, c, t, blocks[-1])

  def one_client(inputs):
    state, loss = local.step(open_client(inputs, 0), inputs.images[0], 0)
    return client_outputs(inputs, state, loss, loss, 0)

  @jax.jit
  def empty_sums(inputs):
    """Zero sums and [M, ...] per-client buffers, shaped like one client's outputs."""
    m = inputs.rows.shape[0]
    sums, outputs = jax.eval_shape(one_client, inputs)
    # Distinct buffers (jnp.zeros per leaf): each is donated.
    return (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums),
            jax.tree.map(lambda s: jnp.zeros((m,) + s.shape, s.dtype), outputs))

  @jax.jit
  def merge_streams(accs, owner):
    """Stream 0's sums + stream 1's + ... (fixed order); slot c's outputs from its owner."""
    sums, per_client = accs[0]
    for k, (s, pc) in enumerate(accs[1:], start=1):
      sums = jax.tree.map(jnp.add, sums, s)
      mine = owner == k
      per_client = jax.tree.map(
          lambda a, b: jnp.where(mine.reshape((-1,) + (1,) * (a.ndim - 1)), b, a),
          per_client, pc)
    return sums, per_client

  def phase(inputs):
    num_images = np.asarray(inputs.num_images)
    steps = np.asarray(local.num_steps(num_images)[0])
    inputs = inputs._replace(num_images=jnp.asarray(num_images))
    # Padding slots (no images) are not clients: weight 0, nothing to train.
    clients = [c for c in range(num_images.shape[0]) if num_images[c] > 0]
    active = max(1, min(streams, len(clients)))

    def run_stream(k):
      acc = empty_sums(inputs)
      for c in clients[k::active]:
        if fused > 1:
          acc = run_client_fused(acc, inputs, c, int(steps[c]))
          continue
        if steps[c] == 1:
          acc = solo(acc, inputs, c)
          continue
        state = start(inputs, c)
        state, loss_first = step(state, inputs.images, c, 0)
        loss = loss_first
        for t in range(1, int(steps[c])):
          state, loss = step(state, inputs.images, c, t)
        acc = finish(acc, inputs, state, loss_first, loss, c)
      return acc

    if active == 1:
      return run_stream(0)
    with futures.ThreadPoolExecutor(active, thread_name_prefix="client-stream") as pool:
      accs = tuple(pool.map(run_stream, range(active)))
    owner = np.full(num_images.shape[0], -1, np.int32)
    for k in range(active):
      owner[clients[k::active]] = k
    return merge_streams(accs, owner)

  return phase


def make_round(apply_fn: Callable, cfg: mlc.ConfigDict, mesh, max_images: int,
               server_tx: optax.GradientTransformation,
               spread_tx: optax.GradientTransformation, num_real_clients: int,
               num_valid_rows: int,
               hooks: hooks_lib.AlgorithmHooks | None = None) -> Callable[..., Any]:
  """`round(state, batch: RoundBatch)` like the jitted `rounds.make_round_fn`.

  Inputs are host arrays (`batch.num_images` must be); `state` is donated, as in the compiled
  round.
  """
  loops.resolve_execution("host_loop", mesh)   # one device, one process, or a clear error
  prepare, server = rounds.make_server_phases(cfg, mesh, server_tx, spread_tx,
                                              num_real_clients, num_valid_rows, hooks)
  prepare = jax.jit(prepare)
  server = jax.jit(server, donate_argnums=(0,))
  clients_phase = make_clients_phase(apply_fn, cfg, max_images, hooks)

  def round_fn(state, batch):
    client_ids = jnp.asarray(batch.client_ids)
    inputs = prepare(state, client_ids)._replace(
        images=jnp.asarray(batch.images), num_images=batch.num_images,
        poison=jnp.asarray(batch.poison))
    sums, outputs = clients_phase(inputs)
    return server(state, sums, outputs,
                  rounds.RoundBatch(None, jnp.asarray(batch.num_images), client_ids, None))

  return round_fn
