"""Centralised CosFace pretraining with a class table sharded over devices.

This produces theta_0, the starting point of FedFace. The backbone is
replicated and the batch is split over the "data" mesh axis; the class table
(one row per pretraining identity) is split over the "classes" axis, and the
margin softmax is assembled across shards by `sharding.sharded_cosface_loss`
without ever gathering the table.

Sections: state -> update step -> checkpoint/resume -> loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import errors
from fedface_jax import evaluation
from fedface_jax import data as data_lib
from fedface_jax import metrics_io
from fedface_jax import models
from fedface_jax import optim
from fedface_jax import progress as progress_lib
from fedface_jax import sharding as sh
from fedface_jax.training import input_pipeline

P = jax.sharding.PartitionSpec


@dataclasses.dataclass
class Setup:
  """Everything the loop and the evaluation need, built once from the config."""
  model: Any
  mesh: jax.sharding.Mesh
  splits: dict
  train_faces: Any   # the FaceArrays trained on (`train_faces`)
  num_classes: int
  table_rows: int
  tx: optax.GradientTransformation
  state_sharding: Any
  abstract_state: Any
  init_fn: Any  # jitted rng -> state, created directly in its sharded layout


def train_faces(config: mlc.ConfigDict, splits: dict):
  """The identities to train on: `train_split` names a split, or several joined by "+".

  "pretrain+federated" is the centralised ceiling of the federated study: one model that
  saw every identity the federation holds, with its images pooled.
  """
  names = config.train_split.split("+")
  unknown = [n for n in names if n not in splits]
  if unknown:
    raise ValueError(f"train_split {config.train_split!r}: unknown split(s) {unknown}; "
                     f"valid: {sorted(splits)}, joined with '+'")
  parts = [splits[n] for n in names]
  return parts[0] if len(parts) == 1 else data_lib.FaceArrays.concatenate(parts)


def build(config: mlc.ConfigDict, splits: dict | None = None) -> Setup:
  mesh_cfg = config.mesh
  mesh = sh.make_mesh(None if mesh_cfg.data < 0 else mesh_cfg.data, mesh_cfg.classes)
  splits = data_lib.load_splits(config) if splits is None else splits
  faces = train_faces(config, splits)
  num_classes = faces.num_identities
  table_rows = sh.padded_num_classes(num_classes, mesh)
  model = models.from_config(config.model)
  tx = optim.create_optimizer(config.optimizer, config.num_steps)
  image_shape = faces.image_shape

  def init(rng):
    r_model, r_table = jax.random.split(rng)
    params = models.init_params(model, r_model, image_shape)
    table = 0.01 * jax.random.normal(r_table, (table_rows, config.model.embedding_dim))
    trainable = {"backbone": params, "table": table}
    return {"params": params, "table": table, "opt_state": tx.init(trainable),
            "step": jnp.zeros((), jnp.int32)}

  abstract = jax.eval_shape(init, jax.random.key(0))
  state_sharding = sh.state_sharding(abstract, mesh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, state_sharding)
  return Setup(model, mesh, splits, faces, num_classes, table_rows, tx, state_sharding,
               abstract, jax.jit(init, out_shardings=state_sharding))


def make_train_step(setup: Setup, config: mlc.ConfigDict):
  """The jitted update: flip augmentation, forward, sharded CosFace, optax."""
  model, mesh = setup.model, setup.mesh
  loss_cfg = config.loss

  def loss_fn(trainable, images, labels, rng):
    x = models.preprocess(images)
    if config.augment_flip:
      flip = jax.random.bernoulli(rng, 0.5, (x.shape[0], 1, 1, 1))
      x = jnp.where(flip, x[:, :, ::-1], x)
    emb = model.apply({"params": trainable["backbone"]}, x)
    return sh.sharded_cosface_loss(
        emb, trainable["table"], labels, mesh, scale=loss_cfg.scale,
        margin=loss_cfg.margin, num_valid=setup.num_classes)

  def step_fn(state, images, labels, rng):
    rng = jax.random.fold_in(rng, state["step"])
    trainable = {"backbone": state["params"], "table": state["table"]}
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainable, images, labels, rng)
    updates, opt_state = setup.tx.update(grads, state["opt_state"], trainable)
    trainable = optax.apply_updates(trainable, updates)
    new_state = {"params": trainable["backbone"], "table": trainable["table"],
                 "opt_state": opt_state, "step": state["step"] + 1}
    metrics = {"loss": loss, "accuracy": acc, "grad_norm": optax.global_norm(grads)}
    return new_state, metrics

  data = sh.data_sharded(mesh)
  return jax.jit(
      step_fn,
      in_shardings=(setup.state_sharding, data, data, sh.replicated(mesh)),
      out_shardings=(setup.state_sharding, sh.replicated(mesh)),
      donate_argnums=(0,))


def restore_or_init(setup: Setup, checkpointer, config):
  """Resumes from the newest finished checkpoint, else initialises.

  `config.init_backbone` (a backbone export directory) starts the backbone
  from theta_0 instead of from scratch: the centralised fine-tuning oracle.
  Without it, `config.model.pretrained` (a `models.PRETRAINED` name) starts it
  from published weights.
  `config.init_head = "mean_feature"` starts the class table from each
  identity's normalised mean feature under that backbone, as FedFace's server
  table starts, so that oracle and FedFace differ only in who holds the images.
  """
  step, state = checkpointer.restore_latest(setup.abstract_state)
  if state is not None:
    logging.info("Resumed pretraining from step %d", step)
    return state
  state = setup.init_fn(jax.random.key(config.seed))
  if config.init_backbone:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            state["params"])
    with ckpt_lib.Checkpointer(config.init_backbone) as ck:
      _, params = ck.restore_latest(abstract)
    if params is None:
      raise errors.MissingInputError(
          f"no backbone checkpoint in init_backbone={config.init_backbone}; give the workdir of a "
          "finished launch.pretrain run, or '' to start from random weights")
    state["params"] = jax.device_put(params, sh.replicated(setup.mesh))
  elif config.model.pretrained:
    # A published start (e.g. dlib's), as `checkpoint.load_start` gives the federated engine.
    params = models.load_pretrained_params(config.model.pretrained, setup.model)
    state["params"] = jax.device_put(params, sh.replicated(setup.mesh))
  head = config.init_head
  if head == "mean_feature":
    table = np.zeros(state["table"].shape, np.float32)
    table[:setup.num_classes] = identity_mean_features(
        setup.model, jax.device_get(state["params"]), setup.train_faces)
    state["table"] = sh.put_table(table, setup.mesh)
  elif head != "random":
    raise ValueError(f"unknown init_head {head!r}; valid: random, mean_feature")
  return state


def identity_mean_features(model, params, faces) -> np.ndarray:
  """[num_identities, D]: the normalised mean embedding of each identity's images."""
  emb = evaluation.compute_embeddings(evaluation.make_embed_fn(model, params), faces.images,
                                     progress=False, desc="mean features")
  sums = np.zeros((faces.num_identities, emb.shape[1]), np.float64)
  np.add.at(sums, faces.labels, emb)
  return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-10)).astype(
      np.float32)


def train_and_evaluate(config: mlc.ConfigDict, workdir: str,
                       stop_after_steps: int | None = None,
                       allow_config_change: bool = False) -> dict | None:
  """Pretrains, checkpoints every `checkpoint_every_steps`, then evaluates.

  Resumes from the newest checkpoint in `workdir/checkpoints`: step t's batch
  and augmentation depend only on (seed, t), so an interrupted run that is
  restarted ends with the same parameters as an uninterrupted one.

  Returns the evaluation report on the held-out identities (also written to
  `workdir/eval/`). `stop_after_steps` stops after that many steps of this
  call (an interruption: the state is checkpointed, nothing is exported or
  evaluated, None is returned). A checkpoint is resumed only under the config
  recorded with it (`checkpoint.check_workdir_config`) unless `allow_config_change`.
  """
  os.makedirs(workdir, exist_ok=True)
  ckpt_lib.check_workdir_config(workdir, config, allow_config_change)
  setup = build(config)
  logging.info("Pretraining on %d identities (%d images); table %d rows over %s",
               setup.num_classes,
               setup.train_faces.num_images,
               setup.table_rows, dict(setup.mesh.shape))
  writer = metrics_io.MetricWriter(workdir)
  writer.write_config(config)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  state = restore_or_init(setup, checkpointer, config)
  start = int(state["step"])
  train_step = make_train_step(setup, config)
  batches = input_pipeline.RandomBatches(
      setup.train_faces, config.batch_size, config.seed)
  rng = jax.random.key(config.seed + 1)
  data_sharding = sh.data_sharded(setup.mesh)
  end = config.num_steps if stop_after_steps is None else min(
      config.num_steps, start + stop_after_steps)
  stream = input_pipeline.prefetch(batches.batch, range(start, end), data_sharding)
  bar = progress_lib.progress(config.num_steps, desc="pretrain", unit="step")
  bar.update(start)
  t0, pending = time.time(), None
  for step, (images, labels) in stream:
    state, metrics = train_step(state, images, labels, rng)
    # Pull the previous step's metrics while this one runs (one step late).
    if pending is not None:
      _log(writer, bar, *pending, t0, config.log_every_steps)
    pending = (step + 1, metrics)
    bar.update(1)
    if (step + 1) % config.checkpoint_every_steps == 0 or step + 1 in (config.num_steps, end):
      checkpointer.save(step + 1, state)
  if pending is not None:
    _log(writer, bar, *pending, t0, config.log_every_steps, force=True)
  bar.close()
  checkpointer.wait()
  if end < config.num_steps:
    logging.info("Stopped after step %d of %d (checkpointed)", end, config.num_steps)
    writer.close()
    checkpointer.close()
    return None
  ckpt_lib.export_backbone(workdir, int(state["step"]), state["params"])
  report = evaluation.evaluate_params(
      setup.model, state["params"], setup.splits[evaluation.eval_split(config)], config,
      os.path.join(workdir, "eval"))
  writer.write(int(state["step"]), {f"eval/{k}": v for k, v in _scalars(report).items()})
  writer.close()
  checkpointer.close()
  return report


def _log(writer, bar, step, metrics, t0, every, force=False):
  metrics = jax.device_get(metrics)
  if not np.all(np.isfinite([float(v) for v in metrics.values()])):
    raise FloatingPointError(f"non-finite training metrics at step {step}: {metrics}")
  bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.2f}")
  if force or step % max(every, 1) == 0:
    writer.write(step, {**{f"train/{k}": float(v) for k, v in metrics.items()},
                        "train/elapsed_s": time.time() - t0})


def _scalars(report: dict) -> dict:
  return {k: float(v) for k, v in report.items()
          if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}
