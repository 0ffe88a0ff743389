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
"""

import math
import os
from typing import Any

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
    # force=True: orbax's save decision (which may sync hosts) was taken above.
    return self._manager.save(step, args=ocp.args.StandardSave(storable), force=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the structure, dtypes and shardings of `abstract_state`."""
    target = jax.tree.map(_to_abstract, abstract_state)
    restored = self._manager.restore(int(step), args=ocp.args.StandardRestore(target))
    return jax.tree.map(_from_storable, abstract_state, restored)

  def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
    """Returns `(step, state)` of the newest checkpoint, or `(None, None)` if none."""
    step = self.latest_step()
    if step is None:
      return None, None
    return step, self.restore(step, abstract_state)

  def wait(self):
    """Blocks until an async save is final on disk."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()

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
