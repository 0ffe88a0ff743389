"""Real faces from any `<root>/<identity>/<image>` tree (CASIA-WebFace, VGGFace2, MS1M as folders).

Why it exists: face-recognition training sets are distributed as one folder per identity, with a few
broken or non-image files mixed in. This module turns such a tree into dense labels and decoded
uint8 images of one requested size, deterministically (sorted names), and accounts for everything it
leaves out: unreadable files are skipped with a warning naming each one, identities left without
images are dropped, and the counts come back in `FolderStats` so that a run can report them instead
of silently training on less data.

Formats: whatever Pillow opens among the common still-image formats (JPEG, PNG, BMP, WebP, the
PGM/PPM/PBM family that the AT&T/ORL and Yale sets use, TIFF, GIF's first frame, TGA, JPEG 2000),
in any mode: greyscale, bilevel, palette, 16-bit and alpha images all become 8-bit RGB (alpha is
composited onto black, so that what is transparent does not depend on the encoder's hidden colours).
Non-square images are fitted to the requested aspect ratio by a centre crop (default) or by padding
(`fit="pad"`, which keeps the whole image), then resized.
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

from fedface_jax import errors
from fedface_jax.data.faces import FaceArrays

# The formats a face tree may use; an extension is accepted only if this Pillow build can open it
# (JPEG 2000 and AVIF need optional codecs). Anything else in an identity folder is counted as
# ignored.
_CANDIDATE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".pgm", ".ppm", ".pbm",
    ".pnm", ".tif", ".tiff", ".gif", ".tga", ".jp2", ".j2k", ".avif")


def _openable_extensions() -> tuple[str, ...]:
  Image.init()
  registered = Image.registered_extensions()
  return tuple(e for e in _CANDIDATE_EXTENSIONS if registered.get(e) in Image.OPEN)


IMAGE_EXTENSIONS = _openable_extensions()
FITS = ("crop", "pad")
DEFAULT_FIT = "crop"
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
  num_other_files_ignored: int = 0  # In identity folders, without an accepted extension.
  num_root_files_ignored: int = 0  # Directly under the root, where no identity can be read.
  corrupt_files: list[str] = dataclasses.field(default_factory=list)
  empty_identities: list[str] = dataclasses.field(default_factory=list)
  # The first ignored files (root-level and unaccepted extensions), so that a tree of an
  # unexpected layout or format can be recognised from the error or meta.json.
  ignored_files: list[str] = dataclasses.field(default_factory=list)

  @property
  def num_identities_kept(self) -> int:
    return self.num_identity_dirs - self.num_empty_identities_dropped

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["corrupt_files"] = d["corrupt_files"][:_MAX_LISTED]
    d["empty_identities"] = d["empty_identities"][:_MAX_LISTED]
    d["ignored_files"] = d["ignored_files"][:_MAX_LISTED]
    d["num_identities_kept"] = self.num_identities_kept
    return d

  @classmethod
  def from_dict(cls, d: dict) -> FolderStats:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _is_image(name: str) -> bool:
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _accepted() -> str:
  return " ".join(IMAGE_EXTENSIONS)


def _ignore(stats: FolderStats, rel: str):
  if len(stats.ignored_files) < _MAX_LISTED:
    stats.ignored_files.append(rel)


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, list[str]]], FolderStats]:
  """Lists `(identity, [image file names])` under `root`, both sorted, without decoding anything.

  Identity folders with no image files are included here (with an empty list); hidden entries are
  ignored. Files directly under `root` are counted in `num_root_files_ignored` (and logged), files
  without an accepted extension in `num_other_files_ignored`; the first of both are listed.

  Raises:
    errors.MissingInputError (a FileNotFoundError): `root` does not exist or is not a directory.
    errors.DataError (a ValueError): `root` contains no identity folders.
  """
  root = pathlib.Path(root).expanduser()
  if not root.exists():
    raise errors.MissingInputError(
        f"image folder root does not exist: {root}; set data.root to a <root>/<identity>/<image> "
        "folder")
  if not root.is_dir():
    raise errors.MissingInputError(
        f"image folder root is not a directory: {root}; set data.root to a "
        "<root>/<identity>/<image> folder")
  stats = FolderStats()
  listing = []
  with os.scandir(root) as entries:
    entries = sorted(entries, key=lambda e: e.name)
  for entry in entries:
    if entry.name.startswith("."):
      continue
    if not entry.is_dir():
      stats.num_root_files_ignored += 1
      _ignore(stats, entry.name)
      continue
    with os.scandir(entry.path) as files:
      names = sorted(f.name for f in files if f.is_file() and not f.name.startswith("."))
    images = [n for n in names if _is_image(n)]
    for name in names:
      if not _is_image(name):
        stats.num_other_files_ignored += 1
        _ignore(stats, f"{entry.name}/{name}")
    stats.num_image_files += len(images)
    listing.append((entry.name, images))
  stats.num_identity_dirs = len(listing)
  if not listing:
    raise errors.DataError(
        f"no identity folders under {root} (saw {_seen(stats)}): expected "
        f"<root>/<identity>/<image>, one folder per identity; accepted extensions: {_accepted()}")
  if stats.num_root_files_ignored:
    logging.warning("ignoring %d files directly under %s (e.g. %s): images must be in "
                    "<root>/<identity>/ folders", stats.num_root_files_ignored, root,
                    ", ".join(stats.ignored_files[:3]))
  return listing, stats


def _seen(stats: FolderStats, limit: int = 5) -> str:
  """`"3 files: a.txt, b/c.xyz, ..."`: what a scan found but did not use, for an error message."""
  n = stats.num_root_files_ignored + stats.num_other_files_ignored
  if not n:
    return "no files"
  more = ", ..." if n > limit else ""
  return f"{n} other file{'s' if n > 1 else ''}: {', '.join(stats.ignored_files[:limit])}{more}"


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


def to_rgb(im: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB, without the silent saturation of `convert` on 16-bit images."""
  if im.mode in ("I", "F") or im.mode.startswith("I;16"):
    # 16-bit PGM/PNG/TIFF: Pillow scales PGM maxval to 16 bits; `convert("L")` would clip to 255.
    scale = 1.0 if im.mode == "F" else 255.0 / 65535.0
    grey = np.clip(np.rint(np.asarray(im, np.float64) * scale), 0, 255).astype(np.uint8)
    im = Image.fromarray(grey)
  if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
      im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
  return im.convert("RGB")


def decode_image(path: str | os.PathLike, image_size: tuple[int, int],
                 fit: str = DEFAULT_FIT) -> np.ndarray:
  """Decodes one image to uint8 `[H, W, 3]` RGB at `image_size = (H, W)`.

  EXIF orientation is applied and any mode becomes RGB (see the module docstring). `fit="crop"`
  centre-crops to the requested aspect ratio (e.g. 112x112 faces -> 112x96), `fit="pad"` pads the
  shorter side with black instead; then the image is resized with a Lanczos filter. JPEGs are
  decoded at a reduced DCT scale when that is still at least the target size, much faster for
  downsizing. Multi-frame files (GIF, TIFF, WebP) give their first frame.

  Raises:
    ValueError: `fit` is not one of `FITS`.
    OSError / ValueError / SyntaxError / Image.DecompressionBombError for unreadable files.
  """
  if fit not in FITS:
    raise ValueError(f"fit={fit!r}: expected one of {', '.join(FITS)}")
  h, w = image_size
  with Image.open(path) as im:
    im.draft("RGB", (w, h))
    im.load()
    im = to_rgb(ImageOps.exif_transpose(im))
    if fit == "crop":
      im = ImageOps.fit(im, (w, h), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    else:
      im = ImageOps.pad(im, (w, h), method=Image.Resampling.LANCZOS, color=(0, 0, 0),
                        centering=(0.5, 0.5))
    out = np.asarray(im, dtype=np.uint8)
  if out.shape != (h, w, 3):
    raise ValueError(f"decoded shape {out.shape} != {(h, w, 3)}")
  return out


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def iter_image_folder(
    root: str | os.PathLike, image_size: tuple[int, int], stats: FolderStats | None = None,
    fit: str = DEFAULT_FIT,
    decode: Callable[[pathlib.Path, tuple[int, int]], np.ndarray | None] | None = None,
) -> Iterator[tuple[int, str, str, np.ndarray]]:
  """Yields `(label, identity, relative path, uint8 [H, W, 3])` for every readable image.

  Identities are decoded one at a time, so labels stay dense over the identities that keep at least
  one image, while memory stays bounded by one identity. `stats` (if given) is filled in as it goes
  and is complete once the iterator is exhausted. `decode(path, image_size)` replaces
  `decode_image` with `fit` (e.g. `align.AlignedDecoder`); a None from it leaves the image out
  without counting it as unreadable (the decoder keeps its own count).

  Raises:
    ValueError: no image could be decoded; the message names the accepted extensions and the first
      files it saw.
  """
  if fit not in FITS:
    raise ValueError(f"fit={fit!r}: expected one of {', '.join(FITS)}")
  decode = decode or (lambda path, size: decode_image(path, size, fit))
  root = pathlib.Path(root).expanduser()
  listing, scan = scan_image_folder(root)
  stats = stats if stats is not None else FolderStats()
  stats.num_identity_dirs = scan.num_identity_dirs
  stats.num_image_files = scan.num_image_files
  stats.num_other_files_ignored = scan.num_other_files_ignored
  stats.num_root_files_ignored = scan.num_root_files_ignored
  stats.ignored_files = list(scan.ignored_files)
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
    if stats.num_image_files:
      found = (f"all {stats.num_image_files} files with an accepted extension were unreadable "
               f"(e.g. {', '.join(stats.corrupt_files[:5])}); ")
    else:
      found = "no file has an accepted extension; "
    raise errors.DataError(
        f"no readable images under {root}: {found}saw {_seen(stats)}; accepted extensions: "
        f"{_accepted()}")


def load_image_folder(root: str | os.PathLike, image_size: tuple[int, int],
                      fit: str = DEFAULT_FIT, decode=None) -> tuple[FaceArrays, FolderStats]:
  """Decodes a whole tree into memory (small trees, tests); `load_faces` goes through the cache."""
  stats = FolderStats()
  images, labels, names = [], [], []
  for label, identity, _, image in iter_image_folder(root, image_size, stats, fit, decode):
    if label == len(names):
      names.append(identity)
    images.append(image)
    labels.append(label)
  faces = FaceArrays(images=np.stack(images), labels=np.asarray(labels, np.int32),
                     identity_names=tuple(names))
  return faces, stats
