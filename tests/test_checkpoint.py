"""Checkpointer: resume, sharded restore, refusal of non-finite states, crash safety."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import checkpoint

P = jax.sharding.PartitionSpec
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _state(step):
  """A state with every leaf kind the training loops keep."""
  return {
      "params": {"w": jnp.full((4, 3), float(step)), "b": jnp.arange(3, dtype=jnp.bfloat16)},
      "step": step,  # Python int.
      "lr": 0.5 * step,  # Python float.
      "key": jax.random.fold_in(jax.random.key(0), step),  # Typed key.
      "raw_key": jax.random.PRNGKey(step),  # Legacy uint32 key.
      "np_rng": np.random.default_rng(step).integers(0, 2**31, size=5).astype(np.uint32),
  }


def _assert_state_equal(restored, expected):
  assert restored["step"] == expected["step"] and isinstance(restored["step"], int)
  assert restored["lr"] == expected["lr"] and isinstance(restored["lr"], float)
  np.testing.assert_array_equal(restored["params"]["w"], expected["params"]["w"])
  assert restored["params"]["b"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(restored["params"]["b"], expected["params"]["b"])
  assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                jax.random.key_data(expected["key"]))
  np.testing.assert_array_equal(restored["raw_key"], expected["raw_key"])
  assert isinstance(restored["np_rng"], np.ndarray)
  np.testing.assert_array_equal(restored["np_rng"], expected["np_rng"])


def test_resume_keeps_newest_and_restores_values(tmp_path):
  with checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
    assert ckpt.restore_latest(_state(0)) == (None, None)
    for step in range(1, 6):
      assert ckpt.save(step, _state(step))
    assert ckpt.all_steps() == [4, 5]
    assert not ckpt.save(3, _state(3))  # Older than the latest: not written.
    with pytest.raises(ValueError, match="not newer"):
      ckpt.save(3, _state(3), force=True)
    assert ckpt.all_steps() == [4, 5]
  # A fresh Checkpointer, as after a restart.
  with checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
    # The Python scalars of a concrete template come back as Python scalars.
    step, restored = ckpt.restore_latest(_state(0))
    assert step == 5
    _assert_state_equal(restored, _state(5))
    # An eval_shape template: scalars come back as 0-d arrays of its dtype.
    abstract = jax.eval_shape(lambda: _state(0))
    restored = ckpt.restore(4, abstract)
    assert int(restored["step"]) == 4 and restored["step"].dtype == np.int32
    np.testing.assert_array_equal(restored["params"]["w"], _state(4)["params"]["w"])
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                  jax.random.key_data(_state(4)["key"]))


def test_restore_onto_mesh_keeps_shardings(tmp_path):
  mesh = jax.make_mesh((2,), ("data",))
  state = {"w": jnp.arange(8.0).reshape(4, 2), "keys": jax.random.split(jax.random.key(1), 4),
           "n": jnp.int32(7)}
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, state)
    abstract = jax.eval_shape(lambda: state)
    row = jax.NamedSharding(mesh, P("data"))
    abstract["w"] = jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=row)
    abstract["keys"] = jax.ShapeDtypeStruct((4,), state["keys"].dtype, sharding=row)
    abstract["n"] = jax.ShapeDtypeStruct((), jnp.int32, sharding=jax.NamedSharding(mesh, P()))
    restored = ckpt.restore(1, abstract)
  for name in ("w", "keys", "n"):
    assert restored[name].sharding == abstract[name].sharding, name
  np.testing.assert_array_equal(restored["w"], state["w"])
  np.testing.assert_array_equal(jax.random.key_data(restored["keys"]),
                                jax.random.key_data(state["keys"]))
  assert len(restored["w"].addressable_shards) == 2


def test_refuses_nonfinite_state_and_keeps_last_good(tmp_path):
  with checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=1) as ckpt:
    assert ckpt.save(1, _state(1))
    bad = _state(2)
    bad["params"]["w"] = bad["params"]["w"].at[0, 0].set(jnp.nan)
    with pytest.raises(FloatingPointError, match=r"\['params'\]\['w'\]"):
      ckpt.save(2, bad)
    bad = _state(3)
    bad["lr"] = float("inf")
    bad["np_rng"] = np.array([1.0, -np.inf])
    assert checkpoint.nonfinite_leaves(bad) == ["['lr']", "['np_rng']"]
    with pytest.raises(FloatingPointError):
      ckpt.save(3, bad)
    assert ckpt.all_steps() == [1]
  with checkpoint.Checkpointer(tmp_path / "ckpt", on_nonfinite="skip") as ckpt:
    assert not ckpt.save(4, bad)
    assert ckpt.all_steps() == [1]


def test_async_save_is_final_after_wait(tmp_path):
  with checkpoint.Checkpointer(tmp_path / "ckpt", async_save=True, save_interval_steps=2) as ckpt:
    assert ckpt.save(1, _state(1))  # Orbax always writes the first save.
    assert not ckpt.save(3, _state(3))  # Off the interval.
    assert ckpt.save(4, _state(4))
    assert ckpt.save(5, _state(5), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [1, 4, 5]
    _assert_state_equal(ckpt.restore(4, _state(0)), _state(4))


_CHILD = textwrap.dedent("""
    import sys, time
    import jax.numpy as jnp
    from fedface_jax import checkpoint
    ckpt = checkpoint.Checkpointer(sys.argv[1], max_to_keep=2)
    for step in (1, 2, 3):
      ckpt.save(step, {"w": jnp.full((64, 64), float(step))})
    print("saved", flush=True)
    time.sleep(120)
""")


def test_sigkill_after_save_leaves_restorable_checkpoint(tmp_path):
  directory = tmp_path / "ckpt"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
  child = subprocess.Popen([sys.executable, "-c", _CHILD, str(directory)], env=env,
                           stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "saved"
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
  assert child.returncode == -signal.SIGKILL

  # An interrupted save of step 4: complete contents but never renamed.
  shutil.copytree(directory / "3", directory / "4.orbax-checkpoint-tmp-1700000000")
  abstract = {"w": jax.ShapeDtypeStruct((64, 64), jnp.float32)}
  with checkpoint.Checkpointer(directory, max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [2, 3]
    step, state = ckpt.restore_latest(abstract)
  assert step == 3
  np.testing.assert_array_equal(state["w"], np.full((64, 64), 3.0))


def test_bad_arguments():
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpoint.Checkpointer("/tmp/unused", max_to_keep=0)
  with pytest.raises(ValueError, match="on_nonfinite"):
    checkpoint.Checkpointer("/tmp/unused", on_nonfinite="ignore")


def test_backbone_export_and_load_round_trip_and_missing_backbone_is_a_clear_error(tmp_path):
  from fedface_jax import errors  # pylint: disable=g-import-not-at-top
  from fedface_jax import models  # pylint: disable=g-import-not-at-top
  from fedface_jax import sharding as sh  # pylint: disable=g-import-not-at-top

  model = models.create_model("resnet_small", 8)
  shape = (8, 8, 3)
  params = models.init_params(model, jax.random.key(3), shape)
  path = checkpoint.export_backbone(str(tmp_path), 7, params)
  assert path == os.path.join(str(tmp_path), "backbone")
  assert checkpoint.export_backbone(str(tmp_path), 5, params) == path  # older step: kept as is
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  loaded = checkpoint.load_backbone(model, shape, path, mesh)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert all(x.sharding == sh.replicated(mesh) for x in jax.tree.leaves(loaded))
  with pytest.raises(errors.MissingInputError, match="no pretrained backbone"):
    checkpoint.load_backbone(model, shape, str(tmp_path / "nowhere"))
