"""One benchmark worker's rows: the sweep of one device count, and the class-table step.

Why a worker: a fake-device count is fixed when JAX starts
(XLA_FLAGS=--xla_force_host_platform_device_count), so each device count runs in its own process
(`reporting/benchmark_suite.py` spawns them and writes BENCHMARKS.md). A worker appends one JSON
row per measurement to `results.jsonl`; each row records the load average, because this machine
is shared and timings move with it.

Row schema (all rows): kind ("round" | "peer" | "class_table" | "peak" | "error"), name,
load_avg. Round rows add the workload (nominal), clients_timed, strategy, devices, chunk,
client_updates_per_s / images_per_s (from the median round) and their `*_spread` (n, median,
q1, q3, iqr over the timed repetitions), flops_per_update, mfu, compile_s, round_s (every timed
repetition) and round_s_spread, data_s, data_share, peak_rss_bytes, device_memory; host-loop
rows add streams; centralised rows add batch, batch_is_all, pool_images, images_per_call,
streams, active_streams; rows of an interleaved peer comparison add paired_block.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import ml_collections as mlc
import numpy as np

MODEL_ALIASES = {"small": "bench_cnn_small", "large": "bench_cnn_large"}


def make_workload(cfg: mlc.ConfigDict, run: dict[str, Any]):
  """The `Workload` of one configured run (also what the peers are given)."""
  from fedface_jax.benchmark import workload as wl  # pylint: disable=g-import-not-at-top
  images = int(run["images"])
  return wl.Workload(
      num_clients=int(run["clients"]), images_per_client=images,
      image_size=tuple(int(x) for x in run.get("image_size", cfg.image_size)),
      local_steps=int(run["steps"]),
      # Full-batch local steps by default: a client trains on all its photos each step, so
      # images per client scales the work (with B < N it would only change the data volume).
      batch_size=int(run.get("batch", images)),
      model=MODEL_ALIASES.get(run["model"], run["model"]),
      embedding_dim=int(run.get("embedding_dim", cfg.embedding_dim)), lr=float(cfg.lr),
      seed=int(cfg.seed))


def emit(out_path: str, row: dict[str, Any]) -> None:
  """Appends `row` (stamped with load average and time) to results.jsonl and echoes it."""
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedface_jax import host_memory  # pylint: disable=g-import-not-at-top
  row.setdefault("load_avg", list(measure.load_average()))
  row.setdefault("host_malloc", host_memory.current_mode())
  row.setdefault("time", time.strftime("%Y-%m-%d %H:%M:%S"))
  with open(out_path, "a") as f:
    f.write(json.dumps(row) + "\n")
  logging.info("row: %s", json.dumps(row)[:400])
  print(json.dumps({k: row[k] for k in row if k in (
      "name", "strategy", "devices", "chunk", "client_updates_per_s", "images_per_s", "mfu",
      "peak_rss_bytes", "error")}), flush=True)


# ------------------------------------------------------------------------------------------------
# Worker (one process per device count).


def run_worker(cfg: mlc.ConfigDict, devices: int, out_path: str) -> None:
  """Runs the sweep rows for `devices` devices in this process (JAX already sized)."""
  import jax  # pylint: disable=g-import-not-at-top
  from fedface_jax import sharding as sh  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import strategies  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import workload as wl  # pylint: disable=g-import-not-at-top

  if jax.device_count() < devices:
    raise ValueError(f"worker wants {devices} devices, JAX has {jax.device_count()}; "
                     "set XLA_FLAGS=--xla_force_host_platform_device_count")
  peak = measure.peak_matmul_flops(cfg.peak_matmul_size, reps=5)
  peak_row = {"kind": "peak", "name": f"matmul{cfg.peak_matmul_size}", "devices": devices,
              "peak_flops": peak, "backend": jax.default_backend(),
              "device_kind": jax.devices()[0].device_kind}
  if jax.default_backend() != "cpu":
    # The models train in float32 (XLA's default precision: TF32 matrix units on recent NVIDIA
    # GPUs), so MFU is against that peak; the bf16 peak says how far a bf16 model could go.
    peak_row["peak_flops_bf16"] = measure.peak_matmul_flops(
        cfg.peak_matmul_size, reps=5, dtype=jax.numpy.bfloat16)
  if cfg.paired_run:
    peak_row["paired_block"] = int(cfg.paired_block)
  emit(out_path, peak_row)
  mesh = sh.make_mesh(data=devices, devices=jax.devices()[:devices])
  runs = [dict(r) for r in cfg.runs if int(r.get("devices", 1)) == devices]
  paired = cfg.paired_run
  if paired:
    # One block of an interleaved ours/peer comparison (`benchmark_suite.run_peers`): only the
    # named run, only the strategies compared with the peer.
    runs = [dict(r, strategies=tuple(cfg.paired_strategies)) for r in runs
            if r["name"] == paired][:1]
    if not runs:
      raise ValueError(f"paired_run {paired!r} names no {devices}-device run")
  for run in runs:
    nominal = make_workload(cfg, run)
    # A run may be timed on its first `timed_clients` clients (rounds of big backbones on a
    # CPU): the row keeps the nominal workload and says how many clients were timed.
    timed = int(run.get("timed_clients", 0) or 0)
    w = (dataclasses.replace(nominal, num_clients=min(timed, nominal.num_clients)) if timed
         else nominal)
    data = wl.synthetic_client_data(w)
    params = wl.init_params(w)
    base = {"kind": "round", "name": run["name"], "devices": devices,
            "workload": nominal.to_dict(), "clients_timed": w.num_clients, "peak_flops": peak}
    if paired:
      base["paired_block"] = int(cfg.paired_block)
      if cfg.get("paired_peer"):
        base["paired_peer"] = str(cfg.paired_peer)
    # FLOPs per client update: one local step's compiled cost x local steps (XLA counts a
    # scan body once, so the round program's own count would be low).
    step = strategies.client_step_fn(w)
    flops_step, flops_source = measure.step_flops(step, params, data.images[0],
                                                  data.class_embeddings[0])
    flops_update = flops_step * w.local_steps
    base["flops_source"] = flops_source
    reps = reps_policy(cfg, run)
    for strat in run.get("strategies", ("engine",)):
      try:
        if strat in ("sequential", "sequential_steps"):
          n = min(w.num_clients, int(cfg.sequential_max_clients))
          measure.reset_peak_rss()
          make = (strategies.sequential_updates if strat == "sequential"
                  else strategies.sequential_steps)
          thunk = make(w, params, data, n)
          t0 = time.perf_counter()
          jax.block_until_ready(thunk())      # compiles the per-client update
          first = time.perf_counter() - t0
          times = measure.timed_reps(thunk, **reps)
          emit(out_path, _row(base, strat, None, n, w, times, first, flops_update, peak,
                               measure, extra={"clients_timed": n}))
        elif strat in ("centralised", "centralised_im2col"):
          _centralised(base, w, data, params, cfg, run, reps, flops_update, peak, out_path,
                       conv_impl="im2col" if strat == "centralised_im2col" else "lax")
        elif strat in ("engine_host", "engine_host_1stream", "engine_host_fused"):
          _engine_host(base, w, data, params, mesh, reps, flops_update, peak, out_path,
                       streams=1 if strat == "engine_host_1stream" else 0,
                       fused_steps=w.local_steps if strat == "engine_host_fused" else 1)
        elif strat in ("engine", "engine_laxconv", "engine_im2col", "engine_patchconv"):
          # "engine": the compiled round with the model's own convolutions, i.e. what
          # launch.fedface compiles ("engine_laxconv" is its old name). "engine_im2col": the same
          # with the model's im2col option (model.conv_impl=im2col, models/im2col.py).
          # "engine_patchconv": the benchmark CNN with the benchmark-only PatchConv.
          conv = {"engine_patchconv": "patches", "engine_im2col": "im2col"}.get(strat, "lax")
          if conv == "patches" and w.model not in wl.BENCH_MODELS:
            raise ValueError(f"engine_patchconv needs a benchmark CNN, not {w.model!r}")
          for chunk in run.get("chunks", (cfg.default_chunk,)):
            measure.reset_peak_rss()
            eng = strategies.EngineRound(w, mesh, int(chunk), conv)
            state = eng.init_state(params, data.class_embeddings)
            ids = np.arange(w.num_clients)
            t0 = time.perf_counter()
            inputs = eng.round_inputs(data.images, ids)
            jax.block_until_ready(inputs)
            data_s = time.perf_counter() - t0
            compiled, lower_s, compile_s = measure.lower_and_compile(eng.jitted, state, *inputs)
            round_flops = measure.compiled_flops(compiled)
            # The untimed first run lets host buffers settle.
            _, metrics, _, times = _timed_rounds(lambda st: compiled(st, *inputs), state, reps)
            loss = float(metrics["client_loss_first"])
            name = ("vmap" if devices == 1 else "shard") + {
                "patches": "-benchpatchconv", "im2col": "-im2col"}.get(conv, "")
            emit(out_path, _row(base, name, eng.chunk, w.num_clients, w, times, None,
                                 flops_update, peak, measure, extra={
                                     "lower_s": lower_s, "compile_s": compile_s,
                                     "data_s": data_s,
                                     "data_share": data_s / (data_s + float(np.median(times))),
                                     "padded_clients": eng.padded_clients,
                                     "round_program_flops_xla": round_flops,
                                     "client_loss_first": loss}))
            del state, inputs, compiled, eng
        else:
          raise ValueError(f"unknown strategy {strat!r}")
      except Exception as e:  # pylint: disable=broad-except
        # A failed row is reported, not hidden: the table shows the error.
        logging.exception("row %s/%s failed", run["name"], strat)
        emit(out_path, {**base, "kind": "error", "strategy": strat, "error": repr(e)[:500]})


def reps_policy(cfg: mlc.ConfigDict, run: dict[str, Any]) -> dict[str, Any]:
  """Timed repetitions of a row: >= `timed_rounds` (a run's `reps` may only raise it), more while
  their total is under `min_timed_s` (fast rows), at most `max_timed_rounds`."""
  min_reps = max(int(cfg.timed_rounds), int(run.get("reps", 0)))
  return {"min_reps": min_reps, "min_total_s": float(cfg.min_timed_s),
          "max_reps": max(min_reps, int(cfg.max_timed_rounds))}


def _row(base, strategy, chunk, clients_timed, w, times, first_s, flops_update, peak, measure,
         extra=None):
  med = float(np.median(times))
  ups = clients_timed / med
  per_update = w.local_steps * w.batch_size
  ups_spread = measure.rate_spread(clients_timed, times)
  row = {**base, "strategy": strategy, "chunk": chunk, "round_s": times,
         "round_s_spread": measure.spread(times),
         "client_updates_per_s": ups, "client_updates_per_s_spread": ups_spread,
         "images_per_s": ups * per_update,
         "images_per_s_spread": measure.rate_spread(clients_timed * per_update, times),
         "flops_per_update": flops_update,
         "mfu": flops_update * ups / peak,
         "peak_rss_bytes": measure.peak_rss_bytes(),
         "device_memory": measure.device_memory()}
  if first_s is not None:
    row["first_call_s"] = first_s
  row.update(extra or {})
  return row


def _timed_rounds(round_call, state, reps):
  """One untimed round (awaited), then timed ones per `reps` (`reps_policy`).

  Returns (state, metrics, first_s, times). The round donates its state, so the state is
  threaded through the calls.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  state, metrics, _ = round_call(state)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  box = {"state": state, "metrics": metrics}

  def one():
    box["state"], box["metrics"], _ = round_call(box["state"])
    return box["state"]
  times = measure.timed_reps(one, **reps)
  return box["state"], box["metrics"], first, times


def _engine_host(base, w, data, params, mesh, reps, flops_update, peak, out_path, streams=0,
                 fused_steps=1):
  """The engine's host-loop round (the CPU default): timed like the compiled rounds.

  `fused_steps` > 1 is `federated.host_loop_fused_steps`: that many local steps per jitted call
  (one dispatch per client instead of one per step when it equals the local steps).

  There is no separate compile step to time (each jitted piece compiles on first use), so the
  first round's extra time over a steady round is reported as its compile time.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import strategies  # pylint: disable=g-import-not-at-top
  measure.reset_peak_rss()
  from fedface_jax.federated import host_loop  # pylint: disable=g-import-not-at-top
  eng = strategies.EngineRound(w, mesh, 1, conv_impl="lax", execution="host_loop",
                               streams=streams, fused_steps=fused_steps)
  state = eng.init_state(params, data.class_embeddings)
  t0 = time.perf_counter()
  inputs = eng.round_inputs(data.images, np.arange(w.num_clients))
  jax.block_until_ready(inputs)
  data_s = time.perf_counter() - t0
  _, metrics, first, times = _timed_rounds(lambda st: eng(st, inputs), state, reps)
  med = float(np.median(times))
  name = "host_loop-1stream" if streams == 1 else "host_loop"
  if fused_steps > 1:
    name += f"-fused{fused_steps}"
  emit(out_path, _row(base, name, None, w.num_clients, w, times, first, flops_update,
                       peak, measure, extra={
                           "streams": host_loop.num_streams(streams),
                           "fused_steps": host_loop.fused_steps(fused_steps),
                           "compile_s": max(first - med, 0.0), "data_s": data_s,
                           "data_share": data_s / (data_s + med),
                           "client_loss_first": float(metrics["client_loss_first"])}))


def centralised_streams(cfg: mlc.ConfigDict) -> list[int]:
  """Stream counts the ceiling is measured at: `centralised_streams` (0 = the host loop's auto).

  The host loop runs `host_loop.num_streams(0)` threads by default and the compiled round one
  stream, so the default (1, 0) gives a ceiling with the same thread count as each.
  """
  from fedface_jax.federated import host_loop  # pylint: disable=g-import-not-at-top
  return sorted({host_loop.num_streams(int(s)) for s in cfg.centralised_streams})


def _centralised(base, w, data, params, cfg, run, reps, flops_update, peak, out_path,
                 conv_impl: str = "lax"):
  """Same images, same model, plain SGD at each batch size and stream count: the ceiling.

  `conv_impl` "im2col" runs the model's im2col convolutions (rows say `conv_impl`); the report's
  ceiling is the best row of either, so the baseline is at its best setting.

  Batch sizes: `centralised_batches` plus the workload's own client batch size. One row per
  (batch size, streams); the report takes the best images/s at the stream count of
  the row it compares against as the ceiling and says which batch size won. The image pool is
  the round's images (clients x images per client), capped at `centralised_max_images`
  (activations of every image at once must fit in memory); "all" is that pool.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import strategies  # pylint: disable=g-import-not-at-top
  cap = int(run.get("centralised_max_images", cfg.centralised_max_images))
  per_client = w.images_per_client
  clients = max(1, min(w.num_clients, cap // per_client))
  images = data.images[:clients].reshape((-1,) + data.images.shape[2:])
  embs = np.repeat(data.class_embeddings[:clients], per_client, axis=0)
  pool = images.shape[0]
  flops_img = flops_update / (w.local_steps * w.batch_size)
  combos = [(streams, batch, fused) for streams in centralised_streams(cfg)
            for batch in strategies.centralised_batch_sizes(cfg.centralised_batches, pool,
                                                            client_batch=w.batch_size)
            for fused in cfg.get("centralised_fused", (1,))]
  for streams, batch, fused in combos:
    if pool // batch < fused:
      print(f"centralised: skipped batch {batch} x {fused} fused steps (the pool of {pool} "
            f"images holds {pool // batch} batches)", flush=True)
      continue
    measure.reset_peak_rss()
    cen = strategies.Centralised(w, params, images, embs, batch, streams, conv_impl, fused)
    t0 = time.perf_counter()
    jax.block_until_ready(cen())          # compile + warm-up, awaited before any timing
    first = time.perf_counter() - t0
    times = measure.timed_reps(cen, **reps)
    cen.close()
    med = float(np.median(times))
    ips = cen.images_per_call / med
    emit(out_path, {**base, "strategy": "centralised", "conv_impl": conv_impl,
                     "chunk": None, "batch": batch, "fused_steps": fused,
                     "batch_is_all": batch == pool, "pool_images": pool,
                     "images_per_call": cen.images_per_call, "streams": streams,
                     # A pool of fewer batches than streams leaves threads idle.
                     "active_streams": min(streams, cen.calls),
                     "round_s": times, "round_s_spread": measure.spread(times),
                     "images_per_s": ips,
                     "images_per_s_spread": measure.rate_spread(cen.images_per_call, times),
                     "client_updates_per_s": None,
                     "flops_per_update": flops_update, "mfu": flops_img * ips / peak,
                     "first_call_s": first, "peak_rss_bytes": measure.peak_rss_bytes(),
                     "device_memory": measure.device_memory()})
    del cen


# ------------------------------------------------------------------------------------------------
# Class-embedding table at scale (8 fake devices).


def run_class_table(cfg: mlc.ConfigDict, out_path: str, hlo_path: str) -> None:
  """CosFace logits + spreadout step on a [rows, dim] table sharded over "classes".

  One step = grad of (sharded CosFace on a batch of embeddings + spreadout of Q query rows
  against every row) w.r.t. the table, then SGD, table donated. The compiled HLO is saved and
  scanned for a C x C shape and for any op producing the full (unsharded) table.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fedface_jax import sharding as sh  # pylint: disable=g-import-not-at-top
  from fedface_jax.benchmark import measure  # pylint: disable=g-import-not-at-top

  ct = cfg.class_table
  rows, dim, shards = int(ct.rows), int(ct.dim), int(ct.devices)
  mesh = sh.make_mesh(data=1, classes=shards, devices=jax.devices()[:shards])
  measure.reset_peak_rss()
  tshard = sh.table_sharded(mesh)
  table = jax.jit(lambda k: jax.random.normal(k, (rows, dim), jnp.float32),
                  out_shardings=tshard)(jax.random.key(0))
  b, q = int(ct.batch), int(ct.queries)
  emb = jax.random.normal(jax.random.key(1), (b, dim))
  emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
  labels = jax.random.randint(jax.random.key(2), (b,), 0, rows)
  qids = jax.random.randint(jax.random.key(3), (q,), 0, rows)

  def loss(tbl, e, lab, qi):
    cos_loss, _ = sh.sharded_cosface_loss(e, tbl, lab, mesh)
    sp = sh.sharded_spreadout_rows(tbl, qi, mesh, block_size=int(ct.block_size))
    return cos_loss + sp.hinge_sum / jnp.maximum(sp.pairs, 1)

  def step(tbl, e, lab, qi):
    value, g = jax.value_and_grad(loss)(tbl, e, lab, qi)
    return tbl - 0.1 * g, value

  rep = sh.replicated(mesh)
  jitted = jax.jit(step, in_shardings=(tshard, rep, rep, rep), out_shardings=(tshard, rep),
                   donate_argnums=(0,))
  compiled, lower_s, compile_s = measure.lower_and_compile(jitted, table, emb, labels, qids)
  hlo = compiled.as_text()
  with open(hlo_path, "w") as f:
    f.write(hlo)
  table, value = compiled(table, emb, labels, qids)
  jax.block_until_ready(table)
  times = []
  for _ in range(int(ct.reps)):
    t0 = time.perf_counter()
    table, value = compiled(table, emb, labels, qids)
    jax.block_until_ready(table)
    times.append(time.perf_counter() - t0)
  emit(out_path, {
      "kind": "class_table", "name": f"table{rows}x{dim}", "rows": rows, "dim": dim,
      "devices": shards, "batch": b, "queries": q, "block_size": int(ct.block_size),
      "step_s": times, "compile_s": compile_s, "lower_s": lower_s, "loss": float(value),
      "table_bytes": rows * dim * 4, "per_device_table_bytes": rows * dim * 4 // shards,
      "peak_rss_bytes": measure.peak_rss_bytes(), "device_memory": measure.device_memory(),
      "hlo_file": os.path.basename(hlo_path), **hlo_checks(hlo, rows, dim, shards)})


def hlo_checks(hlo: str, rows: int, dim: int, shards: int) -> dict[str, Any]:
  """Counts, in compiled HLO text, the shapes that would mean the table was not kept sharded.

  * `cxc_shapes`: any f32 shape with two dims >= rows/shards (a C x C or shard x shard matrix);
  * `full_table_shapes`: any shape [rows, dim] (the whole table materialised on a device);
  * `all_gathers` / `all_gather_table`: all-gather ops, and those whose result has >= rows/shards
    rows (a gather of the table);
  * `largest_cross_device_all_reduce_elems`: the biggest all-reduce operand that actually crosses
    devices (singleton replica groups, i.e. a psum over a size-1 axis, are skipped).
  """
  import re  # pylint: disable=g-import-not-at-top
  local = rows // shards
  shapes = re.findall(r"[a-z0-9]+\[([0-9,]+)\]", hlo)
  cxc, full = 0, 0
  for s in shapes:
    dims = [int(x) for x in s.split(",") if x]
    if sum(d >= local for d in dims) >= 2:
      cxc += 1
    if len(dims) == 2 and dims[0] == rows and dims[1] == dim:
      full += 1
  gathers = [ln for ln in hlo.splitlines() if "all-gather(" in ln or "all-gather-start(" in ln]
  big = [ln for ln in gathers
         if any(int(s.split(",")[0]) >= local
                for s in re.findall(r"\[([0-9,]+)\]", ln.split("=")[1].split("all-gather")[0])
                if s)]
  psum_lines = [ln for ln in hlo.splitlines() if "all-reduce(" in ln or "all-reduce-start(" in ln]
  largest_ar = 0
  for ln in psum_lines:
    groups = re.search(r"replica_groups=\{(.*?)\}(,|$| )", ln)
    # Singleton groups ({0},{1},...) are a psum over a size-1 mesh axis: no data moves.
    if groups and all("," not in g for g in re.findall(r"\{([0-9,]*)\}", groups.group(0))):
      continue
    head = ln.split("=")[1].split("all-reduce")[0]
    for s in re.findall(r"\[([0-9,]*)\]", head):
      largest_ar = max(largest_ar, int(np.prod([int(x) for x in s.split(",") if x] or [1])))
  return {"cxc_shapes": cxc, "full_table_shapes": full, "all_gathers": len(gathers),
          "all_gather_table": len(big), "all_reduces": len(psum_lines),
          "largest_cross_device_all_reduce_elems": largest_ar,
          "local_table_shape_present": f"[{local},{dim}]" in hlo}
