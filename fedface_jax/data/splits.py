"""Identity splits: pretrain | federated | validation | evaluation, disjoint and deterministic.

Why by identity: FedFace pretrains on public identities, improves the model on *other* people's
phones (one identity per client), and is evaluated on identities seen by neither. Every choice of
learning rate, margin, rounds or variant is made on the `validation` identities, so that the
`evaluation` identities are touched only for final tables (optional: 0 identities by default).
Mixing identities across these roles would leak and inflate every number. Identities with too few
images (e.g. evaluation needs at least two images per person for genuine pairs) are dropped first,
with a counted warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedface_jax.data.faces import FaceArrays

SPLITS = ("pretrain", "federated", "validation", "evaluation")
# Splits a config may leave out (size 0); listed before "evaluation", so adding one leaves an
# existing config's other splits as they were when its size is 0.
OPTIONAL_SPLITS = ("validation",)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """Identity indices (into the unsplit `FaceArrays`, ascending) per split, and what was dropped."""

  indices: dict[str, np.ndarray]
  dropped: np.ndarray
  unused: np.ndarray

  @property
  def num_dropped(self) -> int:
    return int(self.dropped.size)


def _get(cfg: Any, key: str, default: Any) -> Any:
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return getattr(cfg, key, default) if hasattr(cfg, key) else default


def _resolve_counts(spec: dict[str, Any], available: int) -> dict[str, int]:
  """Ints are identity counts, floats in (0, 1] fractions of the eligible identities, -1 the rest.

  Fractions round down, so fractional sizes never over-subscribe; leftovers stay unused unless a
  split is -1.
  """
  counts, rest = {}, None
  for name in SPLITS:
    value = spec[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
      raise ValueError(f"split size {name}={value!r} must be an int, a fraction or -1")
    if value == -1:
      if rest is not None:
        raise ValueError(f"only one split may be -1 (the rest), got {rest} and {name}")
      rest = name
      continue
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
      if not 0.0 < value <= 1.0:
        raise ValueError(f"fractional split size {name}={value} must lie in (0, 1]")
      counts[name] = int(np.floor(value * available + 1e-9))
    elif isinstance(value, (float, np.floating)) and value == 1.0:
      counts[name] = available  # 1.0 means "all of them"; the int 1 means one identity.
    else:
      if value < 0:
        raise ValueError(f"split size {name}={value} must be >= 0 (or -1 for the rest)")
      counts[name] = int(value)
  fixed = sum(counts.values())
  if fixed > available:
    raise ValueError(
        f"split sizes {counts} need {fixed} identities but only {available} have enough images")
  if rest is not None:
    counts[rest] = available - fixed
  return {name: counts[name] for name in SPLITS}


def plan_split(counts_per_identity: np.ndarray, split_config: Any,
               seed: int | None = None) -> SplitPlan:
  """Chooses identities for each split from per-identity image counts (see `split_identities`)."""
  counts_per_identity = np.asarray(counts_per_identity)
  if seed is None:
    seed = _get(split_config, "seed", 0)
  min_images = int(_get(split_config, "min_images_per_identity", 1))
  spec = {name: _get(split_config, name, 0 if name in OPTIONAL_SPLITS else None)
          for name in SPLITS}
  missing = [name for name, value in spec.items() if value is None]
  if missing:
    raise ValueError(f"split_config lacks sizes for {missing}; give ints, fractions or -1")
  eligible = np.flatnonzero(counts_per_identity >= min_images)
  dropped = np.flatnonzero(counts_per_identity < min_images)
  if dropped.size:
    logging.warning(
        "split: dropped %d of %d identities with fewer than %d images (min_images_per_identity)",
        dropped.size, counts_per_identity.size, min_images)
  sizes = _resolve_counts(spec, eligible.size)
  perm = eligible[np.random.default_rng(int(seed)).permutation(eligible.size)]
  indices, start = {}, 0
  for name in SPLITS:
    # Sorted within a split: images stay in storage order, so reads from the memmap stay local.
    indices[name] = np.sort(perm[start:start + sizes[name]])
    start += sizes[name]
  return SplitPlan(indices=indices, dropped=dropped, unused=np.sort(perm[start:]))


def split_identities(faces: FaceArrays, split_config: Any,
                     seed: int | None = None) -> dict[str, FaceArrays]:
  """Disjoint identity splits `pretrain`, `federated`, `evaluation`, deterministic from `seed`.

  Args:
    faces: all identities.
    split_config: mapping or ConfigDict with `pretrain`, `federated`, `evaluation` and optionally
      `validation` (int = number of identities, float in (0, 1] = fraction of eligible identities,
      -1 = all remaining; at most one -1), optional `min_images_per_identity` (default 1) and
      optional `seed`.
    seed: permutation seed; defaults to `split_config.seed` (or 0).

  Returns:
    `{"pretrain": ..., "federated": ..., "validation": ..., "evaluation": ...}`, each relabelled
    densely.
  """
  plan = plan_split(faces.counts(), split_config, seed)
  out = {name: faces.subset(idx) for name, idx in plan.indices.items()}
  logging.info("split identities: %s (dropped %d, unused %d)",
               {k: v.num_identities for k, v in out.items()}, plan.num_dropped, plan.unused.size)
  return out


def load_splits(config: Any) -> dict[str, FaceArrays]:
  """Faces of the dataset in `config.data`, split by `config.splits` into disjoint identity sets."""
  # The package imports this module, so its loader is looked up when called.
  from fedface_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  faces = data_lib.load_faces(config.data)
  return split_identities(faces, config.splits, config.splits.seed)
