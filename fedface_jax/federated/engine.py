"""The round loop: resume, sample, train, checkpoint, evaluate, log.

A run is fully determined by its config: clients of round t come from
(seed, t), client randomness from (rng, t, client id), so a run killed at any
point and restarted from its last checkpoint ends in the same state as an
uninterrupted run. Checkpoints hold the whole server state (backbone, class
table, server optimiser state, round, RNG) and are never written when the
state is not finite: the state is checked after every round, and a NaN/Inf
stops the run with a `FloatingPointError` that names the last good checkpoint
(which is left untouched).

Multi-host (`jax.distributed` initialised, one process per host): every
process runs this same loop (SPMD). Each loads only its contiguous block of a
round's clients (`process_slice_fn`) and builds the global arrays with
`jax.make_array_from_process_local_data`; theta_0 is restored replicated on the
global mesh; orbax writes checkpoints from all processes together; metrics,
evaluation and plots happen on process 0 only.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import data as data_lib
from fedface_jax import evaluation
from fedface_jax import metrics_io
from fedface_jax import models
from fedface_jax import progress as progress_lib
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import run as run_lib


def process_slice_fn(mesh=None):
  """Each process feeds the contiguous block of clients its devices own.

  The client axis of a round is split over all mesh devices in mesh order
  (`rounds.CLIENT_AXES`); `jax.make_mesh` keeps each process's devices
  together, so process p owns the p-th of `process_count` equal blocks. That
  is checked against the mesh, since a different device order would silently
  feed clients to the wrong devices.
  """
  count = jax.process_count()
  if count == 1:
    return None
  if mesh is not None:
    owners = [d.process_index for d in mesh.devices.flat]
    per_proc = len(owners) // count
    expected = [p for p in range(count) for _ in range(per_proc)]
    if owners != expected:
      raise ValueError(f"mesh devices are not grouped by process ({owners}); the engine "
                       "needs each process's devices contiguous along the client axis")

  def slice_for(padded_m):
    if padded_m % count:
      raise ValueError(f"{padded_m} client slots do not split over {count} processes")
    per = padded_m // count
    return jax.process_index() * per, (jax.process_index() + 1) * per
  return slice_for


def run(config: mlc.ConfigDict, workdir: str, splits: dict | None = None,
        stop_after_rounds: int | None = None,
        after_round: Callable[[int], None] | None = None,
        allow_config_change: bool = False) -> dict:
  """Runs (or resumes) the federated rounds of `config.federated`.

  Returns {"final": evaluation report, "history": [(round, report), ...],
  "state": server state}. `stop_after_rounds` ends the run early (simulates an
  interruption); `after_round(round)` is called after each round's checkpoint
  (tests use it to slow a run down so that it can be killed mid-way). A
  checkpoint is resumed only under the config recorded with it, unless
  `allow_config_change` (`checkpoint.check_workdir_config`).
  """
  os.makedirs(workdir, exist_ok=True)
  ckpt_lib.check_workdir_config(workdir, config, allow_config_change)
  fcfg = alg_lib.apply_method(config.federated)
  mesh_cfg = config.mesh
  mesh = sh.make_mesh(None if mesh_cfg.data < 0 else mesh_cfg.data, mesh_cfg.classes)
  splits = data_lib.load_splits(config) if splits is None else splits
  model = models.from_config(config.model)
  fed_faces = splits["federated"]
  algo = run_lib.build_run(fcfg, model, fed_faces, mesh, process_slice_fn(mesh),
                           public_faces=splits.get("pretrain"))
  logging.info("%s: %d clients (%d dropped), %d per round, table %s over %s",
               fcfg.method, algo.clients.num_clients, algo.clients.num_dropped,
               fcfg.clients_per_round, algo.abstract_state["table"].shape,
               dict(mesh.shape))

  primary = jax.process_index() == 0
  writer = metrics_io.MetricWriter(workdir, is_primary=primary)
  writer.write_config(config)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  start, state = checkpointer.restore_latest(algo.abstract_state)
  if state is None:
    params0 = ckpt_lib.load_start(config, model, fed_faces.image_shape, mesh)
    state = algo.init(params0, jax.random.key(fcfg.seed))
    start = 0
    checkpointer.save(0, state)
  else:
    logging.info("Resumed federated run at round %d", start)

  def eval_fn(st, name):
    # Process 0 only: the backbone is replicated, evaluation is host-local.
    if not primary:
      return None
    return evaluation.evaluate_params(model, st["params"], splits[evaluation.eval_split(config)],
                                      config, os.path.join(workdir, "eval"), name=name)

  history = []
  if start == 0 and config.eval.at_round_0 and primary:
    report = eval_fn(state, "round_0")
    writer.write(0, _eval_scalars(report))
    history.append((0, report))

  num_rounds = fcfg.num_rounds
  end = num_rounds if stop_after_rounds is None else min(num_rounds, start + stop_after_rounds)
  poison = tuple(config.fault_injection.nan_client_ids)
  bar = progress_lib.progress(num_rounds, desc=fcfg.method, unit="round")
  bar.update(start)
  t_start = time.time()
  for r in range(start, end):
    t0 = time.time()
    state, metrics, ids = algo.apply(state, r, poison_clients=poison)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics["round_s"] = time.time() - t0
    bad = ckpt_lib.nonfinite_leaves(state)
    if bad:
      raise FloatingPointError(
          f"round {r + 1}: the server state has NaN/Inf in {bad[:5]}; it is not "
          f"checkpointed. Last good checkpoint: round {checkpointer.latest_step()} in "
          f"{checkpointer.directory}.")
    if metrics["clients_excluded"]:
      logging.warning("Round %d: excluded %d client updates with NaN/Inf", r + 1,
                      int(metrics["clients_excluded"]))
    if not metrics["clients_valid"]:
      logging.warning("Round %d: no usable client update; the model is unchanged", r + 1)
    writer.write(r + 1, {f"train/{k}": v for k, v in metrics.items()})
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['client_loss_last']:.3f}",
                    excl=int(metrics["clients_excluded"]))
    last = r + 1 == num_rounds
    if (r + 1) % fcfg.checkpoint_every_rounds == 0 or last:
      checkpointer.save(r + 1, state)
    if primary and config.eval.every_rounds and (
        (r + 1) % config.eval.every_rounds == 0 or last):
      report = eval_fn(state, f"round_{r + 1}")
      writer.write(r + 1, _eval_scalars(report))
      history.append((r + 1, report))
    if after_round is not None:
      after_round(r + 1)
  if (primary and end == num_rounds and config.eval.every_rounds and
      not any(h[0] == num_rounds for h in history) and start == num_rounds):
    # Killed after the last checkpoint but before the final evaluation.
    report = eval_fn(state, f"round_{num_rounds}")
    writer.write(num_rounds, _eval_scalars(report))
    history.append((num_rounds, report))
  bar.close()
  checkpointer.wait()
  checkpointer.close()
  if end == num_rounds:
    ckpt_lib.export_backbone(workdir, num_rounds, state["params"])
  logging.info("Rounds %d..%d took %.1f s", start, end, time.time() - t_start)
  if primary:
    plot_tar_vs_round(workdir, config.eval.fars)
  writer.close()
  return {"final": history[-1][1] if history else None, "history": history,
          "state": state}


def _eval_scalars(report: dict) -> dict:
  return {f"eval/{k}": float(v) for k, v in report.items()
          if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}


def plot_tar_vs_round(workdir: str, fars) -> str | None:
  """TAR@FAR against round, from the JSONL log (so resumed runs are complete)."""
  from fedface_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  rows = metrics_io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  curves = {}
  for far in fars:
    key = next((k for r in rows for k in r if k.startswith("eval/tar@far") and
                _far_of(k) == float(far)), None)
    if key is None:
      continue
    pts = sorted({int(r["step"]): r[key] for r in rows if key in r and r[key] is not None}.items())
    if pts:
      curves[f"TAR@FAR={far:g}"] = ([p[0] for p in pts], [p[1] for p in pts])
  if not curves:
    return None
  path = os.path.join(workdir, "tar_vs_round.png")
  xs = next(iter(curves.values()))[0]
  plots.save_metric_curve_png(xs, {k: v[1] for k, v in curves.items()}, path,
                              xlabel="round", ylabel="TAR")
  return path


def _far_of(key: str) -> float | None:
  try:
    return float(key.split("=")[-1]) if "=" in key else float(key.split("far")[-1].lstrip("_@"))
  except ValueError:
    return None
