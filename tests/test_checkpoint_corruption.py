"""Checkpoints damaged after they were written: detected, reported in one line, skipped if possible.

Every test damages a real file that `Checkpointer.save` wrote (the step's largest file, its array
chunk, unless said otherwise) the way a full disk, an interrupted copy or a sync tool would.
"""

import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import checkpoint
from fedface_jax import errors
from tests import file_damage


def _state(step):
  # Random values: a constant array compresses to a few bytes and hides truncation.
  rng = np.random.default_rng(step)
  return {"w": jnp.asarray(rng.normal(size=(64, 64)).astype(np.float32)),
          "key": jax.random.fold_in(jax.random.key(0), step), "step": step}


def _assert_is(state, step):
  expected = _state(step)
  assert state["step"] == step
  np.testing.assert_array_equal(state["w"], expected["w"])
  np.testing.assert_array_equal(jax.random.key_data(state["key"]),
                                jax.random.key_data(expected["key"]))


def _write(directory, steps, **kwargs):
  with checkpoint.Checkpointer(directory, max_to_keep=None, **kwargs) as ck:
    for step in steps:
      assert ck.save(step, _state(step))
    ck.wait()


def _largest_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in step_dir.rglob("*")
           if p.is_file() and p.name != checkpoint.CHECKSUM_FILE]
  return max(files, key=lambda p: p.stat().st_size)


DAMAGES = file_damage.KINDS


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_only_step_is_a_one_line_user_error(tmp_path, how):
  directory = tmp_path / "ckpt"
  _write(directory, [7])
  victim = _largest_file(directory / "7")
  file_damage.damage(victim, how)
  with checkpoint.Checkpointer(directory) as ck:
    with pytest.raises(errors.CorruptCheckpointError) as info:
      ck.restore_latest(_state(0))
  e = info.value
  assert isinstance(e, errors.UserError)  # launch/common.run prints it as one line, status 2
  assert e.step == 7 and e.path == str(directory / "7")
  message = str(e)
  assert "\n" not in message
  assert f"checkpoint step 7 at {directory / '7'} is unreadable" in message
  assert str(victim.relative_to(directory / "7")) in message  # names the damaged file
  assert message.endswith(f"delete {directory / '7'} (the only step) to start over")


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_newest_step_falls_back_and_is_rewritten(tmp_path, caplog, how):
  directory = tmp_path / "ckpt"
  _write(directory, [1, 2, 3])
  file_damage.damage(_largest_file(directory / "3"), how)
  with caplog.at_level(logging.WARNING):
    with checkpoint.Checkpointer(directory, max_to_keep=3) as ck:
      step, state = ck.restore_latest(_state(0))
      assert step == 2
      _assert_is(state, 2)
      warnings = [r.getMessage() for r in caplog.records
                  if "unreadable" in r.getMessage() and "resuming" in r.getMessage()]
      assert len(warnings) == 1 and warnings[0].startswith(
          "checkpoint step 3 unreadable ("), warnings
      assert warnings[0].endswith("); resuming from step 2")
      # The resumed run writes step 3 again; the damaged one is moved aside, not deleted.
      assert ck.save(3, _state(3))
      assert ck.all_steps() == [1, 2, 3]
  aside = [p.name for p in directory.iterdir() if p.name.startswith("3.unreadable-")]
  assert len(aside) == 1
  with checkpoint.Checkpointer(directory) as ck:
    step, state = ck.restore_latest(_state(0))
  assert step == 3
  _assert_is(state, 3)


def test_several_damaged_steps_fall_back_to_the_newest_readable(tmp_path, caplog):
  directory = tmp_path / "ckpt"
  _write(directory, [1, 2, 3, 4])
  file_damage.damage(_largest_file(directory / "4"), "empty")
  file_damage.damage(_largest_file(directory / "3"), "zero_fill")
  with caplog.at_level(logging.WARNING), checkpoint.Checkpointer(directory) as ck:
    step, state = ck.restore_latest(_state(0))
    _assert_is(state, 2)
    assert step == 2
    text = caplog.text
    assert "checkpoint step 4 unreadable (" in text and "checkpoint step 3 unreadable (" in text
    # A save at 3 moves both 3 and 4 aside (otherwise 4 would stay the latest step).
    assert ck.save(3, _state(3))
    assert ck.all_steps() == [1, 2, 3]


def test_damage_in_a_step_without_checksum_record_is_still_reported(tmp_path):
  """Steps written before checksums existed (or a kill before the record): orbax's read errors."""
  directory = tmp_path / "ckpt"
  _write(directory, [1, 2])
  for step in (1, 2):
    os.remove(directory / str(step) / checkpoint.CHECKSUM_FILE)
  file_damage.damage(_largest_file(directory / "2"), "truncate_half")
  with checkpoint.Checkpointer(directory) as ck:
    with pytest.raises(errors.CorruptCheckpointError, match="step 2 .* orbax cannot read it") as e:
      ck.restore(2, _state(0))
    assert str(e.value).endswith(f"delete {directory / '2'} to resume from step 1")
    step, state = ck.restore_latest(_state(0))
  assert step == 1
  _assert_is(state, 1)


def test_damaged_checksum_record_counts_as_damage(tmp_path):
  directory = tmp_path / "ckpt"
  _write(directory, [1])
  file_damage.damage(directory / "1" / checkpoint.CHECKSUM_FILE, "truncate_half")
  with checkpoint.Checkpointer(directory) as ck, pytest.raises(
      errors.CorruptCheckpointError, match="checksum record"):
    ck.restore(1, _state(0))


@pytest.mark.parametrize("with_record", [True, False])
def test_intact_step_with_wrong_template_is_not_called_corrupt(tmp_path, with_record):
  """A template mismatch is a bug or a config change: no fallback, orbax's own error."""
  directory = tmp_path / "ckpt"
  _write(directory, [1, 2])
  if not with_record:
    for step in (1, 2):
      os.remove(directory / str(step) / checkpoint.CHECKSUM_FILE)
  wrong = dict(_state(0), w=jnp.zeros((32, 64)))
  with checkpoint.Checkpointer(directory) as ck:
    with pytest.raises(ValueError) as info:
      ck.restore_latest(wrong)
  assert not isinstance(info.value, errors.CorruptCheckpointError)


def test_async_saves_get_a_checksum_record(tmp_path):
  directory = tmp_path / "ckpt"
  _write(directory, [1, 2], async_save=True)
  for step in (1, 2):
    assert (directory / str(step) / checkpoint.CHECKSUM_FILE).is_file()
    assert checkpoint.verify_checksums(str(directory / str(step))) is None
  file_damage.damage(_largest_file(directory / "2"), "flip_byte")
  assert "CRC32" in checkpoint.verify_checksums(str(directory / "2"))
