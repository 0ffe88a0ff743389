"""The round loop: resume, sample, train, checkpoint, evaluate, log.

A run is fully determined by its config: clients of round t come from
(seed, t), client randomness from (rng, t, client id), so a run killed at any
point and restarted from its last checkpoint ends in the same state as an
uninterrupted run. Checkpoints hold the whole server state (backbone, class
table, server optimiser state, round, RNG) and are never written when the
state is not finite.
"""

from __future__ import annotations

import os
import time

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import metrics_io
from fedface_jax import models
from fedface_jax import progress as progress_lib
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.training import pretrain


def load_backbone(model, image_shape, backbone_dir: str):
  """theta_0: the backbone exported at the end of pretraining."""
  abstract = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0), image_shape))
  with ckpt_lib.Checkpointer(backbone_dir) as ck:
    step, params = ck.restore_latest(abstract)
  if params is None:
    raise FileNotFoundError(
        f"no pretrained backbone in {backbone_dir}; run launch.pretrain first")
  logging.info("Loaded theta_0 from %s (step %d)", backbone_dir, step)
  return params


def process_slice_fn():
  """Each process feeds the contiguous block of clients its devices own."""
  if jax.process_count() == 1:
    return None
  def slice_for(padded_m):
    per = padded_m // jax.process_count()
    return jax.process_index() * per, (jax.process_index() + 1) * per
  return slice_for


def run(config: mlc.ConfigDict, workdir: str, splits: dict | None = None,
        stop_after_rounds: int | None = None) -> dict:
  """Runs (or resumes) the federated rounds of `config.federated`.

  Returns {"final": evaluation report, "history": [(round, report), ...]}.
  `stop_after_rounds` ends the process early (used to simulate interruptions).
  """
  os.makedirs(workdir, exist_ok=True)
  fcfg = alg_lib.apply_method(config.federated)
  mesh_cfg = config.mesh
  mesh = sh.make_mesh(None if mesh_cfg.data < 0 else mesh_cfg.data, mesh_cfg.classes)
  splits = pretrain.load_splits(config) if splits is None else splits
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.get("kwargs", {}))
  fed_faces = splits["federated"]
  algo = alg_lib.build_fedface(fcfg, model, fed_faces, mesh, process_slice_fn())
  logging.info("%s: %d clients (%d dropped), %d per round, table %s over %s",
               fcfg.method, algo.clients.num_clients, algo.clients.num_dropped,
               fcfg.clients_per_round, algo.abstract_state["table"].shape,
               dict(mesh.shape))

  writer = metrics_io.MetricWriter(workdir, is_primary=jax.process_index() == 0)
  writer.write_config(config)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.get("keep_checkpoints", 2))
  start, state = checkpointer.restore_latest(algo.abstract_state)
  if state is None:
    params0 = load_backbone(model, fed_faces.image_shape, config.pretrained_backbone)
    state = algo.init(params0, jax.random.key(fcfg.seed))
    start = 0
    checkpointer.save(0, state)
  else:
    logging.info("Resumed federated run at round %d", start)

  eval_fn = lambda st, name: pretrain.evaluate_state(
      _EvalSetup(model, splits), st, config, os.path.join(workdir, "eval"), name=name)
  history = []
  if start == 0 and config.eval.get("at_round_0", True):
    report = eval_fn(state, "round_0")
    writer.write(0, _eval_scalars(report))
    history.append((0, report))

  num_rounds = fcfg.num_rounds
  end = num_rounds if stop_after_rounds is None else min(num_rounds, start + stop_after_rounds)
  poison = tuple(config.get("fault_injection", {}).get("nan_client_ids", ()))
  bar = progress_lib.progress(num_rounds, desc=fcfg.method, unit="round")
  bar.update(start)
  t_start = time.time()
  for r in range(start, end):
    t0 = time.time()
    state, metrics, ids = algo.apply(state, r, poison_clients=poison)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics["round_s"] = time.time() - t0
    if metrics["clients_excluded"]:
      logging.warning("Round %d: excluded %d client updates with NaN/Inf", r + 1,
                      int(metrics["clients_excluded"]))
    writer.write(r + 1, {f"train/{k}": v for k, v in metrics.items()})
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['client_loss_last']:.3f}",
                    excl=int(metrics["clients_excluded"]))
    last = r + 1 == num_rounds
    if (r + 1) % fcfg.checkpoint_every_rounds == 0 or last:
      checkpointer.save(r + 1, state)
    if config.eval.every_rounds and ((r + 1) % config.eval.every_rounds == 0 or last):
      report = eval_fn(state, f"round_{r + 1}")
      writer.write(r + 1, _eval_scalars(report))
      history.append((r + 1, report))
  bar.close()
  checkpointer.wait()
  checkpointer.close()
  if end == num_rounds:
    pretrain.export_backbone(workdir, num_rounds, state["params"])
  logging.info("Rounds %d..%d took %.1f s", start, end, time.time() - t_start)
  if jax.process_index() == 0:
    plot_tar_vs_round(workdir, config.eval.fars)
  writer.close()
  return {"final": history[-1][1] if history else None, "history": history,
          "state": state}


class _EvalSetup:
  """The two fields of `pretrain.Setup` that evaluation needs."""

  def __init__(self, model, splits):
    self.model = model
    self.splits = splits


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
