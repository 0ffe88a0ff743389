"""Decoded uint8 cache: one memory-mapped `[N, H, W, 3]` file per prepared dataset config.

Why: federated rounds gather the images of a few hundred clients many times per second; going
through ArrayRecord + feature decoding for each would dominate. After the TFDS dataset is prepared,
every example is read once through `tfds.data_source` and written, sorted identity-major, to

  <data_dir>/cache/<config_name>/
    images.u8         raw uint8 [N, H, W, 3] (opened with np.memmap, read-only)
    labels.npy        [N] int32, dense identity indices, non-decreasing
    identities.json   identity names, position = label
    meta.json         shape, counts, skip statistics, source config and version

The directory is written under a temporary name and renamed when complete, so a crash never leaves a
half cache. It is reused when `meta.json` matches what the caller expects (builder, version, config,
source fingerprint); anything else rebuilds it.

Damage after the fact (a truncated copy, a zero-filled region, an edited file) is caught by what
`meta.json` recorded when the cache was written: the size and CRC32 of `labels.npy` and
`identities.json`, and for `images.u8` (up to tens of GB, opened on every run) its size and the
CRC32 of 16 evenly spaced 64 KiB blocks, first and last included; a cache below 1 MiB is thus
checked whole, a larger one only where sampled. A damaged cache is rebuilt with a warning;
`open_cache` on its own raises `errors.CorruptCacheError`. Caches written before these records
are checked by size only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any
import zlib

import numpy as np
import tqdm

from fedface_jax import errors
from fedface_jax import progress as progress_lib
from fedface_jax.data.faces import FaceArrays

CACHE_FORMAT = 1
_READ_BATCH = 256
_SAMPLES = 16
_SAMPLE_BYTES = 1 << 16
_SMALL_FILES = ("labels.npy", "identities.json")


@dataclasses.dataclass(frozen=True)
class CacheInfo:
  """Where a cache lives, whether this call built it, and its metadata."""

  path: pathlib.Path
  built: bool
  meta: dict


def cache_dir(data_dir: str | os.PathLike, config_name: str) -> pathlib.Path:
  return pathlib.Path(data_dir).expanduser() / "cache" / config_name


def _read_meta(path: pathlib.Path) -> dict | None:
  try:
    with open(path / "meta.json") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _matches(meta: dict | None, expected: dict[str, Any], path: pathlib.Path) -> bool:
  if meta is None or meta.get("format") != CACHE_FORMAT:
    return False
  for key, value in expected.items():
    if meta.get(key) != value:
      logging.info("cache %s is stale: %s=%r, expected %r", path, key, meta.get(key), value)
      return False
  return True


def _crc32(path: pathlib.Path) -> int:
  with open(path, "rb") as f:
    return zlib.crc32(f.read())


def _sample_offsets(size: int) -> list[int]:
  if size <= _SAMPLES * _SAMPLE_BYTES:
    return list(range(0, size, _SAMPLE_BYTES))
  return [int(o) for o in np.linspace(0, size - _SAMPLE_BYTES, _SAMPLES)]


def _sample_crc32(path: pathlib.Path, size: int) -> list[int]:
  with open(path, "rb") as f:
    crcs = []
    for offset in _sample_offsets(size):
      f.seek(offset)
      crcs.append(zlib.crc32(f.read(_SAMPLE_BYTES)))
  return crcs


def _checksums(path: pathlib.Path) -> dict:
  """What `damage` checks later, recorded when the files are complete."""
  out = {name: {"size": os.path.getsize(path / name), "crc32": _crc32(path / name)}
         for name in _SMALL_FILES}
  size = os.path.getsize(path / "images.u8")
  out["images.u8"] = {"size": size, "sample_crc32": _sample_crc32(path / "images.u8", size)}
  return out


def damage(path: str | os.PathLike, meta: dict) -> str | None:
  """Why the cache at `path` differs from what its `meta.json` recorded, or None if it does not."""
  path = pathlib.Path(path)
  try:
    n, h, w, c = meta["image_shape"]
    recorded = meta.get("checksums", {})
    want = {"images.u8": {"size": n * h * w * c, **recorded.get("images.u8", {})},
            **{k: v for k, v in recorded.items() if k != "images.u8"}}
  except (KeyError, TypeError, ValueError) as e:
    return f"meta.json lacks a valid image_shape ({type(e).__name__}: {e})"
  for name, record in sorted(want.items()):
    try:
      size = os.path.getsize(path / name)
      if size != record["size"]:
        return f"{name} has {size} bytes, {record['size']} were written"
      if "crc32" in record and _crc32(path / name) != record["crc32"]:
        return f"{name} has other contents than were written (CRC32 mismatch)"
      if "sample_crc32" in record:
        crcs = _sample_crc32(path / name, size)
        bad = [o for o, a, b in zip(_sample_offsets(size), crcs, record["sample_crc32"]) if a != b]
        if bad or len(crcs) != len(record["sample_crc32"]):
          return f"{name} differs from what was written (block at byte {bad[0] if bad else '?'})"
    except FileNotFoundError:
      return f"{name} is missing"
    except OSError as e:
      return f"{name} cannot be read ({e})"
  return None


def open_cache(path: str | os.PathLike, verify: bool = True) -> FaceArrays:
  """Opens a complete cache directory as `FaceArrays` over a read-only memmap.

  Raises `errors.CorruptCacheError` if `verify` and the files differ from what was recorded.
  """
  path = pathlib.Path(path)
  meta = _read_meta(path)
  if meta is None:
    if (path / "meta.json").exists():
      raise errors.CorruptCacheError(
          f"decoded cache {path} is damaged: meta.json is unreadable; delete {path} to rebuild it")
    raise FileNotFoundError(f"no decoded cache at {path}")
  why = damage(path, meta) if verify else None
  if why is not None:
    raise errors.CorruptCacheError(
        f"decoded cache {path} is damaged: {why}; delete {path} to rebuild it")
  shape = tuple(meta["image_shape"])
  images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=shape)
  labels = np.load(path / "labels.npy")
  with open(path / "identities.json") as f:
    names = tuple(json.load(f))
  return FaceArrays(images=images, labels=labels, identity_names=names)


def load_or_build(data_dir: str | os.PathLike, config_name: str, expected: dict[str, Any],
                  make_source, progress: bool = True) -> tuple[FaceArrays, CacheInfo]:
  """Returns the cached faces for `config_name`, building the cache from `make_source()` if needed.

  Args:
    data_dir: root data directory; the cache goes to `<data_dir>/cache/<config_name>/`.
    config_name: the TFDS config name (unique per setting).
    expected: key -> value that `meta.json` must hold for the cache to be reused (builder, version,
      config dict, source fingerprint...). All of it is also written into `meta.json`.
    make_source: zero-argument callable, only called to build, returning `(source, extra_meta)`: a
      random-access source (`len`, `__getitems__` or `__getitem__`) of examples with `image`,
      `label`, `identity`, `image_id`, and more keys for `meta.json` that do not decide reuse (e.g.
      skip statistics).
    progress: show a tqdm progress bar while building.
  """
  path = cache_dir(data_dir, config_name)
  meta = _read_meta(path)
  if _matches(meta, expected, path):
    why = damage(path, meta)
    if why is None:
      return open_cache(path, verify=False), CacheInfo(path=path, built=False, meta=meta)
    logging.warning("decoded cache %s is damaged (%s); rebuilding it", path, why)
  elif meta is None and (path / "meta.json").exists():
    logging.warning("decoded cache %s is damaged (meta.json is unreadable); rebuilding it", path)
  source, extra_meta = make_source()
  meta = _build(path, expected, source, extra_meta, progress)
  return open_cache(path, verify=False), CacheInfo(path=path, built=True, meta=meta)


def _get_many(source, indices):
  if hasattr(source, "__getitems__"):
    return source.__getitems__(list(map(int, indices)))
  return [source[int(i)] for i in indices]


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _build(path: pathlib.Path, expected: dict, source, extra_meta: dict, progress: bool) -> dict:
  n = len(source)
  if n == 0:
    raise ValueError(f"cannot cache an empty dataset ({path.name})")
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
  bar = tqdm.tqdm(total=n, desc=f"caching {path.name}", unit="img", disable=not progress,
                  mininterval=progress_lib.min_interval())
  try:
    # One decoding pass in storage order (ArrayRecord order is a hash shuffle) ...
    labels = np.empty(n, np.int64)
    ids, identity_of_label, unsorted, shape = [], {}, None, None
    for start in range(0, n, _READ_BATCH):
      for k, ex in enumerate(_get_many(source, range(start, min(n, start + _READ_BATCH)))):
        image = np.asarray(ex["image"], np.uint8)
        if unsorted is None:
          shape = (n, *image.shape)
          unsorted = np.memmap(tmp / "unsorted.u8", dtype=np.uint8, mode="w+", shape=shape)
        unsorted[start + k] = image
        labels[start + k] = int(ex["label"])
        ids.append(_text(ex["image_id"]))
        identity_of_label.setdefault(int(ex["label"]), _text(ex["identity"]))
      bar.update(min(n, start + _READ_BATCH) - start)
    num_identities = len(identity_of_label)
    if sorted(identity_of_label) != list(range(num_identities)):
      raise ValueError(f"labels of {path.name} are not dense 0..{num_identities - 1}")
    # ... then a memcpy-speed permutation to identity-major order, so that each identity's images
    # are contiguous in the memmap.
    order = np.lexsort((np.asarray(ids, dtype=str), labels))
    images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=shape)
    step = max(1, (64 << 20) // int(np.prod(shape[1:])))
    for start in range(0, n, step):
      images[start:start + step] = unsorted[order[start:start + step]]
    images.flush()
    del images, unsorted
    os.remove(tmp / "unsorted.u8")
    sorted_labels = labels[order].astype(np.int32)
    np.save(tmp / "labels.npy", sorted_labels)
    names = [identity_of_label[i] for i in range(num_identities)]
    with open(tmp / "identities.json", "w") as f:
      json.dump(names, f)
    counts = np.bincount(sorted_labels)
    meta = {
        "format": CACHE_FORMAT,
        **expected,
        **extra_meta,
        "image_shape": list(shape),
        "num_images": n,
        "num_identities": num_identities,
        "images_per_identity": {"min": int(counts.min()), "max": int(counts.max()),
                                "mean": float(n / num_identities)},
        "created_unix": time.time(),
        "checksums": _checksums(tmp),
    }
    with open(tmp / "meta.json", "w") as f:
      json.dump(meta, f, indent=1)
    _replace_dir(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    bar.close()
  logging.info("wrote decoded cache %s: %d images of %d identities", path, n, num_identities)
  return meta


def _replace_dir(tmp: pathlib.Path, path: pathlib.Path):
  """Moves a finished `tmp` into place; a stale `path` is moved aside first, then removed."""
  old = None
  if path.exists():
    old = path.with_name(f".old-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, old)
  os.rename(tmp, path)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
