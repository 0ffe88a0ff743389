"""Execution strategies for one FedAvg round of the shared workload, all giving the same update.

Why this module exists: the engine's design choice (vmap over client chunks inside shard_map over
devices) is only justified against the alternatives, measured on the same round:

* `sequential`: a Python loop of jitted client updates (FedJAX's default `jit` backend);
* `engine`: the real compiled round of the federated engine (`algorithm.FederatedAlgorithm`
  built for the workload with `federated.execution="compiled"`), with the workload model's own
  convolutions (what `launch.fedface` compiles); `conv_impl="patches"` swaps the benchmark
  CNN's convolutions for the benchmark-only `workload.PatchConv`, which no engine model has, so
  those rows are labelled as such. On a 1-device mesh it is `lax.scan` over chunks + `vmap`
  within a chunk; on an N-device mesh the client axis is also sharded over devices. The chunk
  size is the knob;
* `engine_host`: the engine's host-loop round (`host_loop.make_round`, what the engine runs on
  a one-device CPU with the default `federated.execution="auto"`): the same client and
  server code, clients one after another, one jitted local step per call;
* `centralised`: the ceiling, i.e. the same images through the same model as large SGD batches
  with no per-client state.

The engine round is configured to do exactly what the workload says: plain SGD, no flip
augmentation, spreadout off, FedAvg server (SGD lr 1 on the mean delta), weights = image counts.
Its local batches are a per-client random permutation of the client's images; with
`batch_size == images_per_client` (what the benchmark sweep uses) every step sees all images, so
the update equals `workload.sequential_round` to float rounding (tested).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from fedface_jax import losses
from fedface_jax import sharding as sh
from fedface_jax.benchmark import workload as wl
from fedface_jax.federated import algorithm
from fedface_jax.federated import rounds


def engine_config(w: wl.Workload, chunk: int, streams: int = 0,
                  execution: str = "compiled", fused_steps: int = 1) -> mlc.ConfigDict:
  """The `federated` config section that makes the engine round run the workload.

  Complete like experiments/common.py `federated_section` (the library reads every key it
  needs without defaults): plain SGD clients, FedAvg server, no spreadout, no defences.
  """
  sgd = lambda lr: dict(name="sgd", learning_rate=lr, momentum=0.0, nesterov=False, b1=0.9,
                        b2=0.999, weight_decay=0.0, grad_clip_norm=0.0, schedule="constant",
                        warmup_steps=0, final_lr_fraction=0.0, decay_at=(0.5, 0.75))
  return mlc.ConfigDict(dict(
      method="fedface_nosp", num_rounds=1, clients_per_round=w.num_clients,
      clients_per_chunk=chunk, embedding_dim=w.embedding_dim, execution=execution,
      host_loop_streams=streams, host_loop_fused_steps=fused_steps, unroll_loops="off",
      class_embedding="frozen", num_class_rows=0, secure_aggregation=False,
      dp=dict(enabled=False, clip_norm=1.0, noise_multiplier=0.0, delta=0.0, accounting="rdp"),
      client=dict(local_steps=w.local_steps, local_epochs=0, batch_size=w.batch_size,
                  margin=wl.POSITIVE_MARGIN, augment_flip=False, local_loss="positive_only",
                  public_negatives=dict(enabled=False, scale=30.0, margin=0.35),
                  optimizer=sgd(w.lr)),
      server=dict(optimizer=sgd(1.0)),
      spreadout=dict(enabled=False, margin=0.3, weight=0.0, reduction="row_sum", steps=0,
                     block_size=4096, optimizer=sgd(0.0))))


class EngineRound:
  """The engine's round on a workload (built by `FederatedAlgorithm`), plus its data step.

  Attributes:
    algorithm: the engine's `FederatedAlgorithm` for the workload.
    jitted: its jitted round `(state, batch) -> (state, metrics, valid)` (None in the host loop).
    padded_clients: client slots per round (padded to split over devices and chunks).
    chunk: clients per vmapped chunk (per device).
  """

  def __init__(self, w: wl.Workload, mesh, chunk: int, conv_impl: str = "lax",
               execution: str = "compiled", streams: int = 0, fused_steps: int = 1):
    if execution not in ("compiled", "host_loop"):
      raise ValueError(f"execution must be 'compiled' or 'host_loop', got {execution!r}")
    self.workload = w
    self.mesh = mesh
    self.execution = execution
    _, chunk = algorithm.round_layout(w.num_clients, mesh, chunk)
    model = wl.workload_model(w, conv_impl)
    self.rows = sh.padded_num_classes(w.num_clients, mesh)
    self.algorithm = algorithm.FederatedAlgorithm(
        engine_config(w, chunk, streams=streams, execution=execution,
                      fused_steps=fused_steps),
        lambda p, x: model.apply({"params": p}, x),
        jax.eval_shape(lambda: wl.init_params(w)), mesh, max_images=w.images_per_client,
        num_clients=w.num_clients, num_rows=self.rows)
    self.padded_clients, self.chunk = self.algorithm.padded_clients, self.algorithm.chunk
    self.state_sharding = self.algorithm.state_sharding
    self.jitted = self.algorithm.round_fn if execution == "compiled" else None
    self._cl = rounds.client_sharding(mesh)

  def init_state(self, params, class_embeddings: np.ndarray) -> dict[str, Any]:
    table = np.zeros((self.rows, self.workload.embedding_dim), np.float32)
    table[:class_embeddings.shape[0]] = class_embeddings
    # A copy: the round donates its state, and the caller's params are reused.
    params = jax.device_put(jax.tree.map(jnp.copy, params), sh.replicated(self.mesh))
    rng_data = jax.random.key_data(jax.random.key(self.workload.seed))
    return self.algorithm.init(params, sh.put_table(table, self.mesh), rng_data)

  def round_inputs(self, images: np.ndarray, client_ids: np.ndarray) -> tuple[Any]:
    """Host data step of a round: gather the sampled clients' images, pad, put on the mesh.

    This is what the engine's `FederatedRun.round_data` does per round, so its time is the
    data-pipeline share of a round. Returns the round's arguments after the state: a
    one-element tuple holding the `rounds.RoundBatch`.
    """
    m = self.padded_clients
    n = len(client_ids)
    ids = np.zeros(m, np.int32)
    ids[:n] = client_ids
    batch = np.zeros((m,) + images.shape[1:], np.uint8)
    batch[:n] = images[client_ids]
    num_images = np.zeros(m, np.int32)
    num_images[:n] = images.shape[1]
    poison = np.zeros(m, bool)
    if self.execution == "host_loop":
      # The host loop reads the image counts on the host; the images go to the device once.
      return (rounds.RoundBatch(jax.device_put(batch), num_images, ids, poison),)
    put = lambda x: jax.device_put(x, self._cl)
    return (rounds.RoundBatch(put(batch), put(num_images), put(ids), put(poison)),)

  def __call__(self, state, inputs):
    """`(state, metrics, valid)` after one round on `round_inputs`' output."""
    return self.algorithm.round_fn(state, *inputs)


def engine_round_params(w: wl.Workload, data: wl.ClientData, mesh, chunk: int,
                        conv_impl: str = "lax", execution: str = "compiled") -> wl.Params:
  """New server params after one engine round (for cross-checks against `sequential_round`)."""
  eng = EngineRound(w, mesh, chunk, conv_impl, execution)
  state = eng.init_state(wl.init_params(w), data.class_embeddings)
  state, _, _ = eng(state, eng.round_inputs(data.images, np.arange(w.num_clients)))
  return state["params"]


def sequential_steps(w: wl.Workload, params, data: wl.ClientData, num_clients: int,
                     conv_impl: str = "lax") -> Callable[[], Any]:
  """Like `sequential_updates`, but a Python loop over local steps of a jitted SGD step.

  This is FedJAX's `jit` backend exactly (it jits `client_step` per batch). On XLA:CPU it is
  also much faster than jitting the whole update: see BENCHMARKS.md.
  """
  step = client_step_fn(w, conv_impl)
  idx = wl.batch_indices(w)
  batches = [[jnp.asarray(data.images[c][i]) for i in idx] for c in range(num_clients)]
  embs = [jnp.asarray(data.class_embeddings[c]) for c in range(num_clients)]
  weight = float(w.images_per_client)

  def run():
    acc = jax.tree.map(jnp.zeros_like, params)
    for c in range(num_clients):
      p = params
      for b in batches[c]:
        p = step(p, b, embs[c])
      acc = _acc(acc, p, weight)
    return acc
  return run


def sequential_updates(w: wl.Workload, params, data: wl.ClientData, num_clients: int,
                       conv_impl: str = "lax") -> Callable[[], Any]:
  """A thunk running `num_clients` jitted client updates one after another (FedJAX-jit-like).

  The running weighted sum stays on device, as in `workload.sequential_round`; the thunk
  returns it so `time_calls` can block on it.
  """
  model = wl.workload_model(w, conv_impl)
  upd = jax.jit(functools.partial(_client_update_model, workload=w, model=model))
  imgs = [jnp.asarray(data.images[c]) for c in range(num_clients)]
  embs = [jnp.asarray(data.class_embeddings[c]) for c in range(num_clients)]
  weight = float(w.images_per_client)

  def run():
    acc = jax.tree.map(jnp.zeros_like, params)
    for c in range(num_clients):
      acc = _acc(acc, upd(params, imgs[c], embs[c]), weight)
    return acc
  return run


@jax.jit
def _acc(acc, p, weight):
  return jax.tree.map(lambda a, b: a + weight * b, acc, p)


def _client_update_model(params, images_u8, class_embedding, workload, model):
  """`workload.client_update` with a chosen conv implementation."""
  grad_fn = jax.grad(lambda p, x, e: wl.positive_loss(
      model.apply({"params": p}, wl.preprocess(x)), e))
  idx = jnp.asarray(wl.batch_indices(workload))

  def step(p, step_idx):
    g = grad_fn(p, images_u8[step_idx], class_embedding)
    return jax.tree.map(lambda a, b: a - workload.lr * b, p, g), None

  return jax.lax.scan(step, params, idx)[0]


def client_step_fn(w: wl.Workload, conv_impl: str = "lax"):
  """jit of ONE client SGD step on one batch: its cost analysis is FLOPs per local step."""
  model = wl.workload_model(w, conv_impl)

  def step(params, images_u8, class_embedding):
    g = jax.grad(lambda p: wl.positive_loss(
        model.apply({"params": p}, wl.preprocess(images_u8)), class_embedding))(params)
    return jax.tree.map(lambda a, b: a - w.lr * b, params, g)
  return jax.jit(step)


def centralised_step_fn(w: wl.Workload, conv_impl: str = "lax", fused: int = 1):
  """jit of SGD steps on large batches with per-image class embeddings (the ceiling).

  `fused` = 1: one step on `(params, images [B, ...], class_embs [B, D])`. `fused` = F > 1: F
  steps unrolled in one call on `[F, B, ...]` batches, the ceiling's counterpart of the host
  loop's `federated.host_loop_fused_steps` (one dispatch per F steps), so the baseline can use
  the same trick the engine does.
  """
  model = wl.workload_model(w, conv_impl)

  def loss(params, images_u8, class_embs):
    emb = model.apply({"params": params}, wl.preprocess(images_u8))
    cos = jnp.sum(emb * losses.l2_normalize(class_embs), -1)
    return jnp.mean(jnp.square(jax.nn.relu(wl.POSITIVE_MARGIN - cos)))

  def one(params, images_u8, class_embs):
    g = jax.grad(loss)(params, images_u8, class_embs)
    return jax.tree.map(lambda a, b: a - w.lr * b, params, g)

  if fused < 1:
    raise ValueError(f"fused must be >= 1, got {fused}")
  if fused == 1:
    return jax.jit(one, donate_argnums=(0,))

  def steps(params, images_u8, class_embs):
    for i in range(fused):
      params = one(params, images_u8[i], class_embs[i])
    return params
  return jax.jit(steps, donate_argnums=(0,))


def centralised_batch_sizes(requested, pool: int, client_batch: int = 0) -> list[int]:
  """The distinct effective batch sizes of `requested` (0 = "all") on a pool of `pool` images.

  A batch larger than the pool is the pool itself, so e.g. {8, 32, 128, 512, all} on 100 images
  measures 8, 32 and 100 once each. `client_batch` (> 0) is added: the engine's local steps run
  at that size, and a ceiling that skipped it could sit below the engine for want of the one
  batch size the engine uses (resnet_small's 20 photos fall between 8 and 32).
  """
  requested = tuple(requested) + ((int(client_batch),) if client_batch else ())
  if pool < 1:
    raise ValueError(f"the centralised image pool must hold >= 1 image, got {pool}")
  out = set()
  for b in requested:
    b = int(b)
    if b < 0:
      raise ValueError(f"centralised batch sizes must be >= 0 (0 = all), got {b}")
    out.add(pool if b == 0 else min(b, pool))
  return sorted(out)


class Centralised:
  """Centralised SGD on a fixed image pool at one batch size, in `streams` concurrent streams.

  The ceiling a federated round is compared to: the same model on the same images, as plain
  mini-batch SGD with no per-client state. One call runs `pool // batch` SGD steps (the batches
  are on the device already, so the host copy is not timed), dealt round-robin over `streams`
  Python threads, each with its own parameter copy, exactly as the host loop's streams split
  clients: a ceiling measured with fewer threads than the row it bounds is not a ceiling.
  `fused` = F > 1 runs F consecutive batches per jitted call (the pool's steps in groups of F;
  a remainder of fewer than F batches is left out).
  """

  def __init__(self, w: wl.Workload, params, images: np.ndarray, class_embs: np.ndarray,
               batch: int, streams: int = 1, conv_impl: str = "lax", fused: int = 1):
    if streams < 1:
      raise ValueError(f"streams must be >= 1, got {streams}")
    n = images.shape[0] // batch
    if n < 1:
      raise ValueError(f"batch {batch} is larger than the pool of {images.shape[0]} images")
    calls = n // fused
    if calls < 1:
      raise ValueError(f"{fused} fused steps need >= {fused} batches of {batch}; the pool of "
                       f"{images.shape[0]} images holds {n}")
    self.batch, self.streams, self.fused = batch, streams, fused
    self.calls, self.steps = calls, calls * fused
    self.images_per_call = calls * fused * batch
    self.step = centralised_step_fn(w, conv_impl, fused)
    group = lambda a, i: a[i * batch * fused:(i + 1) * batch * fused].reshape(
        ((fused,) if fused > 1 else ()) + (batch,) + a.shape[1:])
    batches = [(jnp.asarray(group(images, i)), jnp.asarray(group(class_embs, i)))
               for i in range(calls)]
    self._per_stream = [batches[s::streams] for s in range(streams)]
    self._params = [jax.tree.map(jnp.copy, params) for _ in range(streams)]
    self._pool = None
    if streams > 1:
      from concurrent import futures  # pylint: disable=g-import-not-at-top
      self._pool = futures.ThreadPoolExecutor(streams)

  def _run_stream(self, s: int):
    p = self._params[s]
    for x, e in self._per_stream[s]:
      p = self.step(p, x, e)
    self._params[s] = p
    return p

  def __call__(self):
    """Runs one pass over the pool; returns the streams' params (block on them to time)."""
    if self._pool is None:
      return [self._run_stream(0)]
    return list(self._pool.map(self._run_stream, range(self.streams)))

  def close(self):
    if self._pool is not None:
      self._pool.shutdown()
