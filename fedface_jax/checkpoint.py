"""A small orbax wrapper, so training code saves and resumes in one line each.

Also the two things every trainer does with it: the backbone export (`export_backbone`, theta_0
for FedFace; `load_backbone` reads it back) and the check that a workdir's checkpoint is resumed
only under the config that wrote it (`check_workdir_config`).

Why a wrapper rather than raw orbax:
  * It refuses to write a state with NaN/Inf in a floating leaf. A diverged run
    would otherwise push the last good checkpoint out of the `max_to_keep`
    window, and a resume would restart from garbage.
  * It turns leaves orbax should not have to know about into plain arrays
    (typed PRNG keys, Python scalars), so the on-disk format is just arrays.
  * Backends change (orbax V0 `CheckpointManager` today, V1
    `ocp.training.Checkpointer` later); callers only see this class.

Crash safety comes from orbax: a step is written to
`<dir>/<step>.orbax-checkpoint-tmp-<ts>/` and renamed to `<dir>/<step>/` only
when complete, and steps are discovered by their final names, so a process
killed mid-save leaves at worst an ignored tmp directory. With `async_save=False`
a step is final when `save()` returns; with `async_save=True` only after
`wait()` (or the next `save()`/`close()`).

Restore needs an abstract state, best `jax.eval_shape(init_fn)` with shardings
set (`jax.ShapeDtypeStruct(..., sharding=NamedSharding(...))`), so arrays come
back sharded; a leaf without a sharding comes back on one device. A concrete
state works as the template too. Stored forms:
  * typed PRNG keys (`jax.random.key`) are stored as their `uint32` key data
    (`jax.random.key_data`) and wrapped back with `jax.random.wrap_key_data`
    using the key dtype (hence the impl) of the abstract leaf. A legacy raw
    `PRNGKey` is already a `uint32` array and round-trips as one.
  * Python `int`/`float`/`bool` are stored as 0-d numpy arrays. They come back
    as Python scalars when the abstract leaf is itself a Python scalar, else
    as 0-d arrays with the abstract dtype (int32 under `jax.eval_shape`).
  * numpy arrays come back as numpy arrays (e.g. RNG state), jax arrays as jax
    arrays.

Corruption after the fact (a disk, a copy or a sync tool that truncates or
zeroes files) is not something write-then-rename can prevent: orbax reads many
such files without complaint, and a flipped byte in an array chunk restores
wrong numbers silently. So once a step is final, process 0 records the size and
CRC32 of each of its files in `<step>/fedface_checksums.json`, and `restore`
checks them first. A step that fails (or, without a record, one whose restore
fails while reading files) raises `errors.CorruptCheckpointError`, and
`restore_latest` then falls back to the newest step that reads back, with a
warning; the unreadable newer steps are moved aside (`<step>.unreadable-<ts>`)
only when this checkpointer saves over them, so a reader never changes a
directory.
"""

import json
import math
import os
import signal
import threading
import time
from typing import Any
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fedface_jax import config_utils
from fedface_jax import errors
from fedface_jax import models
from fedface_jax import sharding as sh

_PyScalar = (bool, int, float)
CHECKSUM_FILE = "fedface_checksums.json"
_CHUNK = 16 << 20
# Substrings of the errors orbax/tensorstore raise when a file reads back wrong (seen with
# truncated, emptied, zeroed and missing files); used only for steps without a checksum record,
# so that a template mismatch (a bug, not corruption) is never taken for one.
_READ_FAILURES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "Error reading",
                  "Encountered error while reading", "Invalid JSON")


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _to_storable(leaf):
  if _is_key(leaf):
    return jax.random.key_data(leaf)
  if isinstance(leaf, (*_PyScalar, np.generic)):
    try:
      return np.asarray(leaf)
    except OverflowError as e:
      raise ValueError(f"Python int {leaf} does not fit a numpy integer.") from e
  return leaf


def _to_abstract(leaf):
  """The `ShapeDtypeStruct` orbax restores into, for one leaf of the template."""
  if isinstance(leaf, (*_PyScalar, np.generic)):
    return jax.ShapeDtypeStruct((), np.asarray(leaf).dtype)
  sharding = getattr(leaf, "sharding", None)
  if isinstance(leaf, np.ndarray):
    sharding = None
  if _is_key(leaf):
    if sharding is not None and not isinstance(
        sharding, (jax.NamedSharding, jax.sharding.SingleDeviceSharding)):
      raise ValueError(f"Cannot restore a PRNG key with sharding {sharding}; use a NamedSharding.")
    # A NamedSharding's spec leaves the trailing key-data dimension replicated.
    phys = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
    return jax.ShapeDtypeStruct(phys.shape, phys.dtype, sharding=sharding)
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _from_storable(template, value):
  if _is_key(template):
    return jax.random.wrap_key_data(value, dtype=template.dtype)
  if isinstance(template, _PyScalar):
    return type(template)(value.item())
  return value


@jax.jit
def _finite_flags(leaves):
  return [jnp.isfinite(x).all() for x in leaves]


def nonfinite_leaves(state: Any) -> list[str]:
  """Paths of floating leaves of `state` that hold a NaN or Inf."""
  bad, jax_paths, jax_leaves = [], [], []
  for path, x in jax.tree_util.tree_leaves_with_path(state):
    name = jax.tree_util.keystr(path)
    if isinstance(x, float):
      if not math.isfinite(x):
        bad.append(name)
    elif _is_key(x) or not jnp.issubdtype(getattr(x, "dtype", np.int32), jnp.inexact):
      continue
    elif isinstance(x, jax.Array):
      jax_paths.append(name)
      jax_leaves.append(x)
    elif not np.isfinite(np.asarray(x)).all():
      bad.append(name)
  # One jitted reduction for all device arrays: works on sharded global arrays.
  flags = jax.device_get(_finite_flags(jax_leaves)) if jax_leaves else []
  return bad + [p for p, ok in zip(jax_paths, flags) if not ok]


# TEST ONLY (tests/test_kill_resume.py): "<step>:<before|during|after>" makes this process SIGKILL
# itself in the save of that step: before orbax writes; while orbax's tmp directory of the step
# exists (if the save outruns the watcher, right after it returns); or once the step is final
# but before its checksum record. A real crash lands at these points too, only by chance.
KILL_IN_SAVE_ENV = "FEDFACE_TEST_KILL_IN_SAVE"


def _test_kill(step: int, phase: str, directory: str):
  spec = os.environ.get(KILL_IN_SAVE_ENV, "")
  if not spec or spec != f"{step}:{phase.removesuffix('_late')}":
    return
  if phase == "during":  # Watch from a thread while orbax writes on this one.
    def watch():
      prefix = f"{step}.orbax-checkpoint-tmp"
      while True:
        if any(n.startswith(prefix) for n in os.listdir(directory)):
          os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.0002)
    threading.Thread(target=watch, daemon=True).start()
    return
  logging.warning("TEST: SIGKILL %s the save of step %d", phase, step)
  os.kill(os.getpid(), signal.SIGKILL)


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(step_dir: str) -> list[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
  return sorted(f for f in out if f != CHECKSUM_FILE)


def write_checksums(step_dir: str) -> None:
  """Records size and CRC32 of every file of a final step (atomically: tmp file, then rename)."""
  record = {f: {"size": os.path.getsize(os.path.join(step_dir, f)),
                "crc32": _crc32(os.path.join(step_dir, f))} for f in _files(step_dir)}
  tmp = os.path.join(step_dir, f".{CHECKSUM_FILE}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump({"format": 1, "files": record}, f, indent=0)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, CHECKSUM_FILE))


def verify_checksums(step_dir: str) -> str | None:
  """Why `step_dir` differs from its checksum record, or None (also None without a record)."""
  path = os.path.join(step_dir, CHECKSUM_FILE)
  try:
    with open(path) as f:
      record = json.load(f)["files"]
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"its checksum record {CHECKSUM_FILE} is unreadable ({type(e).__name__})"
  for name, want in sorted(record.items()):
    full = os.path.join(step_dir, name)
    try:
      size = os.path.getsize(full)
      if size != want["size"]:
        return f"{name} has {size} bytes, {want['size']} were written"
      if _crc32(full) != want["crc32"]:
        return f"{name} has other contents than were written (CRC32 mismatch)"
    except FileNotFoundError:
      return f"{name} is missing"
    except OSError as e:
      return f"{name} cannot be read ({e})"
  return None


def _looks_like_read_failure(e: Exception) -> bool:
  if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
    return True
  return any(s in str(e) for s in _READ_FAILURES)


class Checkpointer:
  """Saves and restores training-state pytrees under one directory.

  Keeps the newest `max_to_keep` steps (None keeps all); since non-finite
  states are never written, the newest steps are always good ones.
  `on_nonfinite` is "raise" (a `FloatingPointError`) or "skip" (log an error
  and return False from `save`).
  """

  def __init__(self, directory, max_to_keep: int | None = 3, save_interval_steps: int = 1,
               async_save: bool = False, on_nonfinite: str = "raise"):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}.")
    if on_nonfinite not in ("raise", "skip"):
      raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}.")
    self.on_nonfinite = on_nonfinite
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save, create=True)
    directory = os.fspath(directory)
    if "://" not in directory:  # Orbax's tensorstore backend wants absolute local paths.
      directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(directory, options=options)
    self._local = "://" not in directory  # Checksums are recorded for local directories only.
    self._unsealed: list[int] = []     # saved, checksums not yet recorded
    self._unreadable: set[int] = set()  # found corrupt by restore_latest; moved aside on save

  @property
  def directory(self):
    return self._manager.directory

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves `state` at `step`; returns whether a checkpoint was written.

    Returns False when `step` is off `save_interval_steps` (orbax's policy; the
    first save of a run is always written) unless `force`, and when `step` is not
    newer than the latest saved step (a `ValueError` if `force`).
    """
    step = int(step)
    latest = self.latest_step()
    if latest is not None and step <= latest and self._unreadable.issuperset(
        s for s in self.all_steps() if s >= step):
      self._move_aside(s for s in self.all_steps() if s >= step)
      latest = self.latest_step()
    if latest is not None and step <= latest:
      # Orbax would write it with force=True, then count it as the latest step
      # and could delete newer ones to honour max_to_keep.
      msg = f"Not saving step {step}: not newer than the latest step {latest}."
      if force:
        raise ValueError(msg)
      logging.warning(msg)
      return False
    if not force and not self._manager.should_save(step):
      return False
    # After the decision, so skipped steps cost no device reduction.
    bad = nonfinite_leaves(state)
    if bad:
      msg = (f"Refusing to checkpoint step {step}: non-finite values in {bad[:10]}"
             f"{' ...' if len(bad) > 10 else ''}; keeping step {self.latest_step()}.")
      if self.on_nonfinite == "raise":
        raise FloatingPointError(msg)
      logging.error(msg)
      return False
    storable = jax.tree.map(_to_storable, state)
    directory = os.fspath(self.directory)
    _test_kill(step, "before", directory)
    _test_kill(step, "during", directory)
    # force=True: orbax's save decision (which may sync hosts) was taken above.
    saved = self._manager.save(step, args=ocp.args.StandardSave(storable), force=True)
    _test_kill(step, "during_late", directory)
    _test_kill(step, "after", directory)
    if saved and self._local:
      self._unsealed.append(step)
    self._seal_finished()
    return saved

  def _step_dir(self, step: int) -> str:
    return os.path.join(os.fspath(self.directory), str(int(step)))

  def _seal_finished(self):
    """Records checksums of the saved steps that are final (all of them once a sync save returns).

    Orbax renames a step to its final name only when every process has written it, so a
    final directory is complete; one that max_to_keep removed meanwhile is dropped.
    """
    pending = []
    for step in self._unsealed:
      step_dir = self._step_dir(step)
      if not os.path.isdir(step_dir):
        if step in self._manager.all_steps():
          pending.append(step)  # An async save not final yet.
        continue
      if jax.process_index() == 0:
        try:
          write_checksums(step_dir)
        except OSError as e:  # Removed by max_to_keep while hashing: nothing to protect.
          logging.info("No checksum record for checkpoint step %d: %s", step, e)
    self._unsealed = pending

  def _move_aside(self, steps):
    """Renames unreadable steps out of orbax's sight, so this run can write them again."""
    steps = sorted(steps)
    sync = jax.process_count() > 1
    if sync:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("fedface_jax: before moving unreadable steps")
    if jax.process_index() == 0:
      for step in steps:
        dest = f"{self._step_dir(step)}.unreadable-{time.time_ns()}"
        os.rename(self._step_dir(step), dest)
        logging.warning("Moved unreadable checkpoint step %d aside to %s", step, dest)
    if sync:
      multihost_utils.sync_global_devices("fedface_jax: after moving unreadable steps")
    self._unreadable.difference_update(steps)
    self._manager.reload()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the structure, dtypes and shardings of `abstract_state`.

    Raises `errors.CorruptCheckpointError` if the step's files differ from its checksum
    record or, without one, if orbax fails while reading them.
    """
    step = int(step)
    step_dir = self._step_dir(step)
    local = os.path.isdir(step_dir)
    why = verify_checksums(step_dir) if local else None
    if why is not None:
      raise self._corrupt(step, why)
    verified = local and os.path.exists(os.path.join(step_dir, CHECKSUM_FILE))
    target = jax.tree.map(_to_abstract, abstract_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-exception-caught
      if verified or not _looks_like_read_failure(e):
        raise  # The files are as written: a real error (e.g. a template that does not match).
      first_line = (str(e).strip().splitlines() or [""])[0][:200]
      raise self._corrupt(step, f"orbax cannot read it: {type(e).__name__}: {first_line}") from e
    return jax.tree.map(_from_storable, abstract_state, restored)

  def _corrupt(self, step: int, why: str) -> errors.CorruptCheckpointError:
    step_dir = self._step_dir(step)
    earlier = [s for s in self.all_steps() if s < step]
    fix = (f"delete {step_dir} to resume from step {earlier[-1]}" if earlier else
           f"delete {step_dir} (the only step) to start over")
    return errors.CorruptCheckpointError(
        f"checkpoint step {step} at {step_dir} is unreadable: {why}; its files were altered after "
        f"it was written (truncated or damaged copy?); {fix}", step=step, path=step_dir,
        reason=why)

  def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
    """Returns `(step, state)` of the newest readable checkpoint, or `(None, None)` if none.

    An unreadable newer step is skipped with a warning, and moved aside when this
    checkpointer next saves at or before it; if no step reads back, the newest step's
    `errors.CorruptCheckpointError` is raised.
    """
    unreadable = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(step, abstract_state)
      except errors.CorruptCheckpointError as e:
        unreadable.append(e)
        self._unreadable.add(step)
        continue
      for e in unreadable:
        logging.warning("checkpoint step %d unreadable (%s); resuming from step %d",
                        e.step, e.reason, step)
      return step, state
    if unreadable:
      raise unreadable[0]
    return None, None

  def wait(self):
    """Blocks until an async save is final on disk (and its checksums are recorded)."""
    self._manager.wait_until_finished()
    self._seal_finished()

  def close(self):
    self._manager.close()
    self._seal_finished()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def export_backbone(workdir: str, step: int, params) -> str:
  """Saves the backbone alone under `<workdir>/backbone`: theta_0 for FedFace, without the head."""
  path = os.path.join(workdir, "backbone")
  with Checkpointer(path, max_to_keep=1) as ck:
    latest = ck.latest_step()
    if latest is not None and latest >= step:
      logging.info("Backbone of step %d already exported to %s", latest, path)
      return path
    ck.save(step, jax.device_get(params), force=True)
    ck.wait()
  return path


def load_backbone(model, image_shape, backbone_dir: str, mesh=None):
  """theta_0: the backbone `export_backbone` wrote at the end of pretraining.

  With a mesh, it comes back replicated over it (a global array: what a
  multi-host jit needs; a single-device array would be rejected there).
  """
  abstract = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0), image_shape))
  if mesh is not None:
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh.replicated(mesh)), abstract)
  with Checkpointer(backbone_dir) as ck:
    step, params = ck.restore_latest(abstract)
  if params is None:
    raise errors.MissingInputError(
        f"no pretrained backbone in {backbone_dir}; run launch.pretrain first")
  logging.info("Loaded theta_0 from %s (step %d)", backbone_dir, step)
  return params


def load_start(config, model, image_shape, mesh=None):
  """theta_0 of a federated run: a published model or the backbone pretraining exported.

  `config.model.pretrained` (e.g. "dlib") names weights that ship with an installed package
  (`models.load_pretrained_params`); otherwise `config.pretrained_backbone` is the directory
  `launch.pretrain` exported. With a mesh, the params come back replicated over it.
  """
  pretrained = config.model.pretrained
  if not pretrained:
    return load_backbone(model, image_shape, config.pretrained_backbone, mesh)
  params = models.load_pretrained_params(pretrained, model)
  if mesh is not None:
    params = jax.device_put(params, sh.replicated(mesh))
  logging.info("theta_0 = the published %r model (config.model.pretrained)", pretrained)
  return params


def check_workdir_config(workdir: str, config, allow_change: bool = False) -> list:
  """Refuses to resume `workdir`'s checkpoint under a config other than the one that wrote it.

  Called first thing by the trainer and the federated engine: a mismatch fails in seconds,
  before data is loaded or anything compiles, and before this run's `config.json` replaces
  the recorded one. Every process checks, so all of them fail together; with several, a
  barrier keeps process 0 from rewriting the record while another process still reads it.
  Returns the allowed differences (see `config_utils.check_resume_config`).
  """
  with Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None) as ck:
    resuming = ck.latest_step() is not None
  diffs = []
  if resuming:
    diffs = config_utils.check_resume_config(workdir, config, allow_change=allow_change)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("fedface_jax: workdir config checked")
  return diffs
