"""Real faces from any `<root>/<identity>/<image>` tree (CASIA-WebFace, VGGFace2, MS1M as folders).

Why it exists: face-recognition training sets are distributed as one folder per identity, with a few
broken or non-image files mixed in. This module turns such a tree into dense labels and decoded
uint8 images of one requested size, deterministically (sorted names), and accounts for everything it
leaves out: unreadable files are skipped with a warning naming each one, identities left without
images are dropped, and the counts come back in `FolderStats` so that a run can report them instead
of silently training on less data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageOps

from fedface_jax.data.faces import FaceArrays

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Corrupt files named in the stats (all are logged); keeps meta.json small on very noisy trees.
_MAX_LISTED = 100


@dataclasses.dataclass
class FolderStats:
  """What a scan + decode of an identity-folder tree kept and left out."""

  num_identity_dirs: int = 0
  num_image_files: int = 0
  num_images_kept: int = 0
  num_corrupt_skipped: int = 0
  num_empty_identities_dropped: int = 0
  num_other_files_ignored: int = 0
  corrupt_files: list[str] = dataclasses.field(default_factory=list)
  empty_identities: list[str] = dataclasses.field(default_factory=list)

  @property
  def num_identities_kept(self) -> int:
    return self.num_identity_dirs - self.num_empty_identities_dropped

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["corrupt_files"] = d["corrupt_files"][:_MAX_LISTED]
    d["empty_identities"] = d["empty_identities"][:_MAX_LISTED]
    d["num_identities_kept"] = self.num_identities_kept
    return d

  @classmethod
  def from_dict(cls, d: dict) -> FolderStats:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _is_image(name: str) -> bool:
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, list[str]]], FolderStats]:
  """Lists `(identity, [image file names])` under `root`, both sorted, without decoding anything.

  Identity folders with no image files are included here (with an empty list); hidden entries are
  ignored. Files directly under `root` and non-image files are counted in `num_other_files_ignored`.

  Raises:
    FileNotFoundError: `root` does not exist or is not a directory.
    ValueError: `root` contains no identity folders.
  """
  root = pathlib.Path(root).expanduser()
  if not root.exists():
    raise FileNotFoundError(f"image folder root does not exist: {root}")
  if not root.is_dir():
    raise FileNotFoundError(f"image folder root is not a directory: {root}")
  stats = FolderStats()
  listing = []
  with os.scandir(root) as entries:
    entries = sorted(entries, key=lambda e: e.name)
  for entry in entries:
    if entry.name.startswith("."):
      continue
    if not entry.is_dir():
      stats.num_other_files_ignored += 1
      continue
    with os.scandir(entry.path) as files:
      names = sorted(f.name for f in files if f.is_file())
    images = [n for n in names if _is_image(n)]
    stats.num_other_files_ignored += len(names) - len(images)
    stats.num_image_files += len(images)
    listing.append((entry.name, images))
  stats.num_identity_dirs = len(listing)
  if not listing:
    raise ValueError(
        f"no identity folders under {root}: expected <root>/<identity>/<image> with extensions "
        f"{', '.join(IMAGE_EXTENSIONS)}")
  return listing, stats


def folder_fingerprint(root: str | os.PathLike) -> str:
  """Hash of the image listing (names, sizes, mtimes): tells a cache that the folder changed."""
  root = pathlib.Path(root).expanduser().resolve()
  listing, _ = scan_image_folder(root)
  h = hashlib.sha256()
  for identity, names in listing:
    for name in names:
      st = os.stat(root / identity / name)
      h.update(f"{identity}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


def decode_image(path: str | os.PathLike, image_size: tuple[int, int]) -> np.ndarray:
  """Decodes one image to uint8 `[H, W, 3]` RGB at `image_size = (H, W)`.

  EXIF orientation is applied; the image is centre-cropped to the requested aspect ratio first (e.g.
  112x112 faces -> 112x96), then resized with a Lanczos filter. JPEGs are decoded at a reduced DCT
  scale when that is still at least the target size, which is much faster for downsizing.

  Raises:
    OSError / ValueError / SyntaxError / Image.DecompressionBombError for unreadable files.
  """
  h, w = image_size
  with Image.open(path) as im:
    im.draft("RGB", (w, h))
    im.load()
    im = ImageOps.exif_transpose(im)
    im = im.convert("RGB")
    im = ImageOps.fit(im, (w, h), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    out = np.asarray(im, dtype=np.uint8)
  if out.shape != (h, w, 3):
    raise ValueError(f"decoded shape {out.shape} != {(h, w, 3)}")
  return out


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def iter_image_folder(
    root: str | os.PathLike, image_size: tuple[int, int], stats: FolderStats | None = None,
    decode: Callable[[pathlib.Path, tuple[int, int]], np.ndarray | None] | None = None,
) -> Iterator[tuple[int, str, str, np.ndarray]]:
  """Yields `(label, identity, relative path, uint8 [H, W, 3])` for every readable image.

  Identities are decoded one at a time, so labels stay dense over the identities that keep at least
  one image, while memory stays bounded by one identity. `stats` (if given) is filled in as it goes
  and is complete once the iterator is exhausted. `decode(path, image_size)` replaces
  `decode_image` (e.g. `align.AlignedDecoder`); a None from it leaves the image out without
  counting it as unreadable (the decoder keeps its own count).
  """
  decode = decode or decode_image
  root = pathlib.Path(root).expanduser()
  listing, scan = scan_image_folder(root)
  stats = stats if stats is not None else FolderStats()
  stats.num_identity_dirs = scan.num_identity_dirs
  stats.num_image_files = scan.num_image_files
  stats.num_other_files_ignored = scan.num_other_files_ignored
  label = 0
  for identity, names in listing:
    decoded = []
    for name in names:
      rel = f"{identity}/{name}"
      try:
        image = decode(root / identity / name, image_size)
      except _DECODE_ERRORS as e:
        stats.num_corrupt_skipped += 1
        stats.corrupt_files.append(rel)
        logging.warning("skipping unreadable image %s: %s: %s", root / rel, type(e).__name__, e)
        continue
      if image is not None:
        decoded.append((rel, image))
    if not decoded:
      stats.num_empty_identities_dropped += 1
      stats.empty_identities.append(identity)
      logging.warning("dropping identity %r under %s: no readable images", identity, root)
      continue
    for rel, image in decoded:
      stats.num_images_kept += 1
      yield label, identity, rel, image
    label += 1
  if stats.num_corrupt_skipped or stats.num_empty_identities_dropped:
    logging.warning(
        "image folder %s: kept %d images of %d identities; skipped %d unreadable files, dropped %d "
        "identities without images", root, stats.num_images_kept, stats.num_identities_kept,
        stats.num_corrupt_skipped, stats.num_empty_identities_dropped)
  if stats.num_images_kept == 0:
    raise ValueError(f"no readable images under {root}")


def load_image_folder(root: str | os.PathLike, image_size: tuple[int, int],
                      decode=None) -> tuple[FaceArrays, FolderStats]:
  """Decodes a whole tree into memory (small trees, tests); `load_faces` goes through the cache."""
  stats = FolderStats()
  images, labels, names = [], [], []
  for label, identity, _, image in iter_image_folder(root, image_size, stats, decode):
    if label == len(names):
      names.append(identity)
    images.append(image)
    labels.append(label)
  faces = FaceArrays(images=np.stack(images), labels=np.asarray(labels, np.int32),
                     identity_names=tuple(names))
  return faces, stats
