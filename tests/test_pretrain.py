"""Centralised CosFace pretraining: the class-sharded loss, one full run, and resume.

theta_0 for FedFace comes out of this trainer, so three things must hold: the loss whose table is
split over the "classes" axis is the dense CosFace (value and gradients, whatever the mesh), a run
leaves every artefact the later stages read (checkpoint, exported backbone, metrics, a TAR@FAR
report), and an interrupted run that is restarted ends exactly where an uninterrupted one does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import pretrain_synthetic
from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import data as data_lib
from fedface_jax import losses
from fedface_jax import metrics_io
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.training import pretrain

# ---------------------------------------------------------------------------------------------
# The class-table-sharded CosFace loss.

SCALE, MARGIN = 30.0, 0.35
NUM_VALID, TABLE_ROWS, BATCH, DIM = 5, 8, 8, 16


def _loss_inputs():
  """A batch where half the examples sit near their class row, and padding rows that would matter.

  Rows 5..7 are padding (`num_valid=5`); on a 4-way classes mesh (2 rows per shard) the last shard
  holds padding only. They are copies of examples' directions, so a padding row that leaked into the
  softmax or the accuracy would change both noticeably.
  """
  rng = np.random.default_rng(0)
  table = rng.normal(size=(TABLE_ROWS, DIM)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 0, 2, 4], np.int32)
  x = rng.normal(size=(BATCH, DIM)).astype(np.float32)
  x[:4] = table[labels[:4]] + 0.3 * x[:4]         # these four are classified correctly
  table[NUM_VALID:] = x[[4, 5, 6]] * 3.0           # padding rows aligned with examples 4..6
  return x, table, labels


def _normalize(x):
  return models.l2_normalize(x)


def _sharded_value_and_grad(mesh, x, table, labels):
  """Loss, accuracy and d/d(raw features, table) with the table on the mesh's "classes" axis."""

  def f(x, table):
    return sh.sharded_cosface_loss(_normalize(x), table, labels, mesh, scale=SCALE,
                                   margin=MARGIN, num_valid=NUM_VALID)

  x = jax.device_put(x, sh.data_sharded(mesh))
  table = sh.put_table(table, mesh)
  (loss, acc), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(x, table)
  return float(loss), float(acc), tuple(np.asarray(g) for g in grads)


def _dense_value_and_grad(x, table, labels):
  """losses.py's reference on the valid rows only; padding rows get a zero gradient."""

  def f(x, table):
    emb = _normalize(x)
    return losses.cosface_loss(emb, table[:NUM_VALID], labels, SCALE, MARGIN), losses.accuracy(
        emb, table[:NUM_VALID], labels)

  (loss, acc), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(x, table)
  return float(loss), float(acc), tuple(np.asarray(g) for g in grads)


@pytest.fixture(scope="module")
def dense_reference():
  return _dense_value_and_grad(*_loss_inputs())


def _mesh(data, classes):
  return sh.make_mesh(data=data, classes=classes, devices=jax.devices()[:data * classes])


def test_sharded_loss_test_case_is_discriminative(dense_reference):
  """The inputs above can tell a wrong loss apart: accuracy strictly inside (0, 1), and the padding
  rows, if they took part, would change the loss a lot."""
  x, table, labels = _loss_inputs()
  loss, acc, (gx, gt) = dense_reference
  assert 0.0 < acc < 1.0
  assert np.all(gt[NUM_VALID:] == 0) and np.all(np.abs(gt[:NUM_VALID]).sum(1) > 0)
  leaky = float(losses.cosface_loss(_normalize(x), table, labels, SCALE, MARGIN))
  assert leaky > loss + 1.0


@pytest.mark.parametrize("data, classes", [(1, 1), (2, 4), (1, 8), (8, 1)])
def test_sharded_cosface_equals_dense_reference(dense_reference, data, classes):
  x, table, labels = _loss_inputs()
  loss, acc, (gx, gt) = _sharded_value_and_grad(_mesh(data, classes), x, table, labels)
  ref_loss, ref_acc, (ref_gx, ref_gt) = dense_reference
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert acc == ref_acc
  np.testing.assert_allclose(gx, ref_gx, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gt, ref_gt, rtol=1e-4, atol=1e-6)
  assert np.all(gt[NUM_VALID:] == 0)  # padding rows never receive a gradient


def test_sharded_cosface_one_device_equals_eight_devices():
  """Same function, same inputs: a 1-device and a data=2 x classes=4 mesh agree to float32 noise."""
  x, table, labels = _loss_inputs()
  one = _sharded_value_and_grad(_mesh(1, 1), x, table, labels)
  eight = _sharded_value_and_grad(_mesh(2, 4), x, table, labels)
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-6)
  assert eight[1] == one[1]
  for g8, g1 in zip(eight[2], one[2]):
    np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-7)


def _dot_precisions(jaxpr):
  """`precision` of every dot_general in a jaxpr, including those nested in shard_map/scan/jit."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(sub, "eqns"):
          found += _dot_precisions(sub)
        elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
          found += _dot_precisions(sub.jaxpr)
  return found


def test_sharded_cosines_use_highest_precision():
  """On GPU (TF32) / TPU (bf16) JAX's default f32 matmul errs by ~1e-3 in a cosine, 0.06 of a logit
  at scale 64: the sharded losses must pin full precision, as the dense ones in losses.py do. CPU
  matmuls are exact either way, so this is checked on the traced program, forward and backward."""
  x, table, labels = _loss_inputs()
  mesh = _mesh(2, 4)
  cosface = jax.make_jaxpr(jax.grad(lambda x, t: sh.sharded_cosface_loss(
      _normalize(x), t, labels, mesh, num_valid=NUM_VALID)[0], argnums=(0, 1)))(x, table)
  spread = jax.make_jaxpr(jax.grad(lambda t: sh.sharded_spreadout_rows(
      t, jnp.array([0, 3]), mesh, num_valid=NUM_VALID)[0]))(table)
  for jaxpr in (cosface.jaxpr, spread.jaxpr):
    precisions = _dot_precisions(jaxpr)
    assert len(precisions) >= 3  # forward + two backward matmuls
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), precisions


# ---------------------------------------------------------------------------------------------
# The trainer, end to end, on the tiny synthetic config.


def _config(data_dir):
  """`variant=tiny` on a data=2 x classes=4 mesh (12 identities: 3 table rows per shard).

  The backbone is cut to one stage: the trainer is under test here (backbones are in
  test_models.py), and compiling the 4-stage net three times would triple this file's runtime.
  """
  config = pretrain_synthetic.get_config("variant=tiny")
  config.data.data_dir = str(data_dir)
  config.mesh.data, config.mesh.classes = 2, 4
  config.model.kwargs = dict(widths=(8,), blocks=(1,), strides=(2,))
  config.num_steps = 2
  config.checkpoint_every_steps = 1
  config.log_every_steps = 1
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
  """One uninterrupted 2-step run: the artefacts under test and the reference for resume."""
  config = _config(data_dir)
  workdir = tmp_path_factory.mktemp("full")
  report = pretrain.train_and_evaluate(config, str(workdir))
  return config, workdir, report


def _restore(config, directory, step=None):
  setup = pretrain.build(config)
  with ckpt_lib.Checkpointer(directory) as ck:
    step = ck.latest_step() if step is None else step
    return step, ck.all_steps(), jax.device_get(ck.restore(step, setup.abstract_state))


def _train_steps(workdir):
  return [r["step"] for r in metrics_io.read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]


def test_run_writes_checkpoint_backbone_metrics_and_report(full_run):
  config, workdir, report = full_run
  # Checkpoint of the final state, trained (not the initial state).
  step, steps, state = _restore(config, workdir / "checkpoints")
  assert step == 2 and steps == [1, 2] and int(state["step"]) == 2
  setup = pretrain.build(config)
  init = jax.device_get(setup.init_fn(jax.random.key(config.seed)))
  assert state["table"].shape == (12, 32)
  assert not np.allclose(state["table"], init["table"])
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), state["params"],
                                         init["params"]))
  assert sum(changed) >= len(changed) // 2

  # Exported backbone = the checkpoint's params, alone (theta_0 for FedFace).
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state["params"])
  with ckpt_lib.Checkpointer(workdir / "backbone") as ck:
    assert ck.latest_step() == 2
    backbone = ck.restore(2, abstract)
  jax.tree.map(np.testing.assert_array_equal, backbone, state["params"])
  emb = setup.model.apply({"params": backbone},
                          models.preprocess(setup.splits["evaluation"].images[:4]))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, rtol=1e-5)

  # metrics.jsonl: one finite train record per step, then the evaluation at the last step.
  records = metrics_io.read_jsonl(workdir / "metrics.jsonl")
  assert _train_steps(workdir) == [1, 2]
  for r in records:
    if "train/loss" in r:
      assert np.isfinite(r["train/loss"]) and r["train/loss"] > 0
      assert 0.0 <= r["train/accuracy"] <= 1.0 and r["train/grad_norm"] > 0
  evals = [r for r in records if any(k.startswith("eval/") for k in r)]
  assert len(evals) == 1 and evals[0]["step"] == 2
  assert evals[0]["eval/tar@far=1e-3"] == pytest.approx(report["tar@far=1e-3"])
  assert (workdir / "config.json").is_file()

  # The report: TAR@FAR at every configured FAR, on the held-out identities (24 - 12 - 6 = 6).
  assert set(report["tar_at_far"]) == set(config.eval.fars)
  for name in ("tar@far=1e-4", "tar@far=1e-3", "tar@far=1e-2", "tar@far=1e-1"):
    assert 0.0 <= report[name] <= 1.0
  assert report["num_identities"] == 6 and report["embedding_dim"] == 32
  assert 0.0 <= report["eer"] <= 1.0 and 0.0 <= report["auc"] <= 1.0
  assert (workdir / "eval" / "pretrained.json").is_file()


def test_stop_and_resume_equals_uninterrupted_run(full_run, data_dir, tmp_path):
  config, full_dir, full_report = full_run
  workdir = tmp_path / "resumed"

  # Interrupted after one step: checkpointed, nothing exported or evaluated.
  assert pretrain.train_and_evaluate(config, str(workdir), stop_after_steps=1) is None
  step, _, stopped = _restore(config, workdir / "checkpoints")
  assert step == 1 and int(stopped["step"]) == 1
  assert not (workdir / "backbone").exists() and not (workdir / "eval").exists()
  _, _, reference_1 = _restore(config, full_dir / "checkpoints", step=1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               stopped, reference_1)

  # Restarted: continues from step 1 (step 1 is not trained again) and ends where the
  # uninterrupted run did, optimiser state and learning-rate schedule included.
  report = pretrain.train_and_evaluate(config, str(workdir))
  assert _train_steps(workdir) == [1, 2]
  _, _, resumed = _restore(config, workdir / "checkpoints")
  _, _, reference = _restore(config, full_dir / "checkpoints")
  assert int(resumed["step"]) == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               resumed, reference)
  assert report["tar@far=1e-1"] == pytest.approx(full_report["tar@far=1e-1"])
  assert report["eer"] == pytest.approx(full_report["eer"])


def test_train_split_joins_splits_and_mean_feature_head(data_dir, tmp_path):
  """"pretrain+federated" trains one head over both identity sets (the central oracle);
  init_head="mean_feature" starts each row at its identity's mean feature under the backbone."""
  config = _config(data_dir)
  splits = data_lib.load_splits(config)
  config.train_split = "pretrain+federated"
  setup = pretrain.build(config, splits)
  assert setup.num_classes == splits["pretrain"].num_identities + splits["federated"].num_identities
  assert setup.train_faces.num_images == (splits["pretrain"].num_images
                                          + splits["federated"].num_images)
  config.init_head = "mean_feature"
  with ckpt_lib.Checkpointer(str(tmp_path / "ck")) as ck:
    state = jax.device_get(pretrain.restore_or_init(setup, ck, config))
  table = np.asarray(state["table"])[:setup.num_classes]
  np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-5)
  faces = setup.train_faces
  last = faces.num_identities - 1
  emb = np.asarray(setup.model.apply({"params": state["params"]}, models.preprocess(
      np.asarray(faces.images[faces.indices_of_identity(last)]))))
  mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
  np.testing.assert_allclose(table[last], mean, rtol=1e-4, atol=1e-5)
  config.train_split = "pretrain+public"
  with pytest.raises(ValueError, match="unknown split"):
    pretrain.build(config, splits)
