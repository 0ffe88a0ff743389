"""`data.name = "dlib_trunk_features"`: dlib-aligned chips as cached dlib trunk features.

Why: a frozen-trunk run of dlib's face ResNet (`models.dlib_head`) needs each chip's pooled
256-d trunk features, and computing them once (about 3 minutes for CelebA's 4,604 chips and their
mirror images on 2 CPU cores) instead of at every local step is what makes federated training
of dlib's last layer cheap. The features are computed with the Flax `DlibResNet` on the chips of
the ordinary `image_folder` cache (same fields: root, image_size, align=dlib5, ...), so the
identities, labels and hence every identity split are exactly those of the image dataset.

The result is a `FaceArrays` whose "images" are `dlib_head.pack_features` byte containers
`[N, 342, 2, 3]` uint8 (a memmap), so that clients, batches, flips and evaluation work
unchanged. The cache lives beside the image cache (`<data_dir>/cache/<name>_dlibtrunk/`), is
keyed by the image cache's identity and the model file's size and CRC, and is rebuilt when either
changes. It is derived from the face images: never commit it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import zlib

from absl import logging
import numpy as np

from fedface_jax import progress as progress_lib
from fedface_jax.data.faces import FaceArrays

NAME = "dlib_trunk_features"
FORMAT_VERSION = 1


def _file_crc32(path: pathlib.Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      crc = zlib.crc32(chunk, crc)
  return crc


def image_config(data_config) -> dict:
  """The `image_folder` data config whose chips the features are computed from.

  Fields the config leaves out take `data.default_data_config()`'s values, as in `load_faces`.
  """
  from fedface_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  cfg = data_lib.default_data_config().to_dict()
  given = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  cfg.update({k: v for k, v in given.items() if v is not None})
  cfg["name"] = "image_folder"
  return cfg


def load_with_info(data_config):
  """`(FaceArrays of feature containers, CacheInfo)`; builds the feature cache on first use.

  Raises:
    ValueError: the chips are not dlib's 150x150 input, or alignment is not dlib5.
  """
  # pylint: disable=g-import-not-at-top
  from fedface_jax import data as data_lib
  from fedface_jax.data import cache as cache_lib
  from fedface_jax.models import dlib_head
  from fedface_jax.models import dlib_resnet
  # pylint: enable=g-import-not-at-top
  img_cfg = image_config(data_config)
  faces, info = data_lib.load_faces_with_info(img_cfg)
  if faces.image_shape != dlib_resnet.DLIB_INPUT_SHAPE:
    raise ValueError(f"{NAME} needs dlib's {dlib_resnet.DLIB_INPUT_SHAPE} chips; "
                     f"data.image_size gives {faces.image_shape}")
  if img_cfg["align"] != "dlib5":
    raise ValueError(f"{NAME} needs data.align='dlib5' (dlib's face ResNet expects its chips)")
  model_path = dlib_resnet.packaged_model_path()
  expected = {
      "format_version": FORMAT_VERSION,
      "image_cache": str(info.path),
      "image_cache_meta_crc32": _file_crc32(pathlib.Path(info.path) / "meta.json"),
      "num_images": faces.num_images,
      "model_file": model_path.name,
      "model_size": os.path.getsize(model_path),
      "model_crc32": _file_crc32(model_path),
  }
  path = pathlib.Path(str(info.path) + "_dlibtrunk")
  meta = None
  if (path / "meta.json").is_file():
    with open(path / "meta.json") as f:
      meta = json.load(f)
  shape = (faces.num_images,) + dlib_head.CONTAINER_SHAPE
  built = False
  if meta is None or any(meta.get(k) != v for k, v in expected.items()):
    if meta is not None:
      logging.info("feature cache %s is stale; rebuilding it", path)
    _build(path, faces, expected, shape, bool(img_cfg["progress"]))
    with open(path / "meta.json") as f:
      meta = json.load(f)
    built = True
  containers = np.memmap(path / "features.u8", dtype=np.uint8, mode="r", shape=shape)
  out = FaceArrays(images=containers, labels=faces.labels, identity_names=faces.identity_names)
  return out, cache_lib.CacheInfo(path=path, built=built, meta=meta)


def _build(path: pathlib.Path, faces: FaceArrays, meta: dict, shape, progress: bool):
  # pylint: disable=g-import-not-at-top
  import time
  from fedface_jax.models import dlib_head
  from fedface_jax.models import dlib_resnet
  # pylint: enable=g-import-not-at-top
  tmp = pathlib.Path(str(path) + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  module, params = dlib_resnet.load_dlib_resnet()
  t0 = time.time()
  with progress_lib.progress(faces.num_images, desc="dlib trunk features", unit="chip",
                             disable=not progress) as bar:
    feats, mirrored = dlib_head.trunk_features(module, params, faces.images,
                                               progress=bar.update)
  out = np.memmap(tmp / "features.u8", dtype=np.uint8, mode="w+", shape=shape)
  out[:] = dlib_head.pack_features(feats, mirrored)
  out.flush()
  del out
  meta = dict(meta, build_seconds=round(time.time() - t0, 1))
  with open(tmp / "meta.json", "w") as f:
    json.dump(meta, f, indent=1)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
  logging.info("built %s: trunk features of %d chips in %.0f s", path, faces.num_images,
               meta["build_seconds"])
