"""`FaceArrays`: the one container every concern uses for labelled face images.

Face recognition splits data by *identity*, not by image (pretrain / federated / evaluation
identities are disjoint), so the container is organised around identities: dense labels
`0..num_identities-1` and the matching names. Images are usually a read-only `np.memmap` over the
decoded cache; the helpers here return index arrays so that callers can gather only what they need
instead of copying the whole map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class FaceArrays:
  """Face images with dense identity labels.

  Attributes:
    images: `[N, H, W, 3]` uint8, NHWC. Often a read-only `np.memmap`.
    labels: `[N]` int32 in `0..num_identities-1`.
    identity_names: name of identity `i` at position `i`.
  """

  images: np.ndarray
  labels: np.ndarray
  identity_names: tuple[str, ...]

  def __post_init__(self):
    # Validate once here so that every consumer can trust shapes and label range.
    if self.images.ndim != 4 or self.images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3], got shape {self.images.shape}")
    if self.images.dtype != np.uint8:
      raise ValueError(f"images must be uint8, got {self.images.dtype}")
    labels = np.asarray(self.labels)
    if labels.ndim != 1 or labels.shape[0] != self.images.shape[0]:
      raise ValueError(
          f"labels must be [N={self.images.shape[0]}], got shape {labels.shape}")
    if labels.dtype != np.int32:
      labels = labels.astype(np.int32)
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "identity_names", tuple(str(n) for n in self.identity_names))
    if labels.size and (labels.min() < 0 or labels.max() >= len(self.identity_names)):
      raise ValueError(f"labels must lie in [0, {len(self.identity_names)}), "
                       f"got [{labels.min()}, {labels.max()}]")

  @property
  def num_identities(self) -> int:
    return len(self.identity_names)

  @property
  def num_images(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """`(H, W, 3)`."""
    return tuple(int(d) for d in self.images.shape[1:])

  def counts(self) -> np.ndarray:
    """Images per identity, `[num_identities]` int64 (zero for identities without images)."""
    return np.bincount(self.labels, minlength=self.num_identities)

  def indices_of_identity(self, identity_index: int) -> np.ndarray:
    """Image indices of one identity, ascending, so callers can gather lazily from the memmap."""
    if not 0 <= identity_index < self.num_identities:
      raise ValueError(f"identity_index {identity_index} out of range [0, {self.num_identities})")
    return np.flatnonzero(self.labels == identity_index)

  @staticmethod
  def concatenate(parts: Sequence[FaceArrays]) -> FaceArrays:
    """Disjoint identity sets as one, labels offset in order (e.g. pretrain + federated)."""
    offsets = np.cumsum([0] + [p.num_identities for p in parts[:-1]])
    return FaceArrays(
        images=np.concatenate([np.asarray(p.images) for p in parts]),
        labels=np.concatenate([p.labels + o for p, o in zip(parts, offsets)]).astype(np.int32),
        identity_names=tuple(n for p in parts for n in p.identity_names))

  def subset(self, identity_indices: Sequence[int] | np.ndarray) -> FaceArrays:
    """The images of the given identities, relabelled densely in the given order.

    Image order is kept (ascending index in `self`). When the selected images form one contiguous
    run, the result is a slice, i.e. a view that shares the memmap; otherwise a fancy-indexing copy.

    Args:
      identity_indices: distinct indices into `identity_names`.

    Returns:
      A new `FaceArrays` whose identity `j` is `self`'s identity `identity_indices[j]`.
    """
    ids = np.asarray(identity_indices, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.num_identities):
      raise ValueError(f"identity indices must lie in [0, {self.num_identities})")
    if np.unique(ids).size != ids.size:
      raise ValueError("identity indices must be distinct")
    new_label = np.full(self.num_identities, -1, dtype=np.int64)
    new_label[ids] = np.arange(ids.size)
    mapped = new_label[self.labels]
    index = np.flatnonzero(mapped >= 0)
    if index.size and index[-1] - index[0] + 1 == index.size:
      images = self.images[index[0]:index[-1] + 1]  # A view: no copy of the memmap.
    else:
      images = self.images[index]
    return FaceArrays(
        images=images,
        labels=mapped[index].astype(np.int32),
        identity_names=tuple(self.identity_names[i] for i in ids))
