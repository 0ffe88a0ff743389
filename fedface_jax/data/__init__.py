"""The data concern: faces in, `FaceArrays` out.

`load_faces(data_config)` is the one entry point the rest of the code uses. Whatever the source
(procedural `synthetic_faces` or a real `image_folder` tree), it
  1. prepares a TFDS dataset to ArrayRecord (once; no TensorFlow, no network),
  2. reads it back with `tfds.data_source` into a decoded, memory-mapped uint8 cache (once),
  3. returns `FaceArrays` over that memmap.
`split_identities` then cuts it into disjoint pretrain / federated / evaluation identities.
"""

from __future__ import annotations

import os

from absl import logging
import ml_collections as mlc

from fedface_jax import errors
from fedface_jax.data.faces import FaceArrays
from fedface_jax.data.splits import SPLITS, SplitPlan, load_splits, plan_split, split_identities

__all__ = [
    "FaceArrays", "SPLITS", "SplitPlan", "DATASET_NAMES", "default_data_config",
    "default_split_config", "load_faces", "load_faces_with_info", "load_splits", "plan_split",
    "split_identities",
]

# dlib_trunk_features: image_folder chips as cached dlib trunk features (data/dlib_features.py).
DATASET_NAMES = ("synthetic_faces", "image_folder", "dlib_trunk_features")
DEFAULT_DATA_DIR = "~/.cache/fedface_jax"


def default_data_config() -> mlc.ConfigDict:
  """Synthetic faces at 64x64: runs anywhere, no download."""
  c = mlc.ConfigDict()
  c.name = "synthetic_faces"
  c.root = ""  # image_folder only: <root>/<identity>/<image>.
  c.num_identities = 1000  # synthetic_faces only.
  c.images_per_identity = 20  # synthetic_faces only.
  c.image_size = (64, 64)  # (H, W).
  c.seed = 0  # synthetic_faces: renderer seed.
  c.difficulty = 1.0  # synthetic_faces: nuisance strength.
  c.align = "none"  # image_folder only: "none" | "dlib5" (dlib 5-point face chips; data/align.py).
  c.align_padding = 0.25  # dlib5: get_face_chip padding (0.25: what dlib's face ResNet expects).
  c.align_on_failure = "keep"  # dlib5, no face found: "keep" unaligned | "drop" the image.
  c.align_upsample = 0  # dlib5: detector upsampling steps (1 finds faces ~40 px and smaller).
  c.data_dir = DEFAULT_DATA_DIR  # TFDS datasets and decoded caches.
  c.progress = True  # tqdm bar while building the cache.
  c.fit = "crop"  # image_folder only: "crop" | "pad" non-square images to the target size.
  return c


def default_split_config() -> mlc.ConfigDict:
  """Identity split sizes: ints = counts, floats = fractions, -1 = the rest."""
  c = mlc.ConfigDict()
  c.pretrain = 0.5
  c.federated = 0.3
  c.evaluation = -1
  c.min_images_per_identity = 2
  c.seed = 0
  return c


def _image_size(size) -> tuple[int, int]:
  if isinstance(size, int):
    return size, size
  h, w = (int(s) for s in size)
  return h, w


def load_faces(data_config: mlc.ConfigDict) -> FaceArrays:
  """Faces described by `data_config` (see `default_data_config`), built and cached on first use.

  Raises:
    ValueError: unknown `name`, or invalid settings.
    FileNotFoundError: `image_folder` root missing.
  """
  return load_faces_with_info(data_config)[0]


def load_faces_with_info(data_config: mlc.ConfigDict):
  """`load_faces`, plus the cache's `CacheInfo` (path, built or reused, meta with skip stats)."""
  # Imported here: TFDS costs ~1 s to import, and most users of this package only need FaceArrays.
  from fedface_jax.data import cache  # pylint: disable=g-import-not-at-top
  from fedface_jax.data import image_folder  # pylint: disable=g-import-not-at-top
  from fedface_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top

  def field(key):
    # Every key of `default_data_config()` (experiments/common.py builds the sections from it);
    # works for ConfigDicts and plain dicts.
    try:
      return data_config[key]
    except KeyError:
      raise errors.ConfigError(f"data config lacks data.{key} (see default_data_config)") from None

  name = field("name")
  if name not in DATASET_NAMES:
    raise errors.ConfigError(
        f"unknown dataset name data.name={name!r}; valid names: {', '.join(DATASET_NAMES)}")
  if name == "dlib_trunk_features":
    from fedface_jax.data import dlib_features  # pylint: disable=g-import-not-at-top
    return dlib_features.load_with_info(data_config)
  data_dir = os.path.expanduser(field("data_dir"))
  h, w = _image_size(field("image_size"))
  progress = bool(field("progress"))
  align = field("align")
  if name == "synthetic_faces":
    if align != "none":
      raise ValueError(f"align={align!r} applies to image_folder only, not synthetic_faces")
    config = tfds_builders.SyntheticFacesConfig(
        num_identities=int(field("num_identities")),
        images_per_identity=int(field("images_per_identity")), image_height=h, image_width=w,
        seed=int(field("seed")), difficulty=float(field("difficulty")))
    builder_cls = tfds_builders.SyntheticFaces
    fingerprint = None
  else:
    root = field("root")
    if not root:
      raise errors.ConfigError(
          "data.root is empty: set it to the <root>/<identity>/<image> folder of the faces")
    fit = field("fit")
    config = tfds_builders.ImageFolderFacesConfig(
        root=root, image_height=h, image_width=w, fit=fit, align=align,
        align_padding=float(field("align_padding")),
        align_on_failure=field("align_on_failure"), align_upsample=int(field("align_upsample")))
    builder_cls = tfds_builders.ImageFolderFaces
    fingerprint = image_folder.folder_fingerprint(config.root)  # Also: clear error if root is bad.

  expected = {
      "builder": builder_cls.name,
      "builder_version": str(builder_cls.VERSION),
      "config_name": config.name,
      "config": config.to_dict(),
      "source_fingerprint": fingerprint,
  }

  def make_source():
    builder = tfds_builders.prepare(config, data_dir)
    if fingerprint and builder.info.metadata.get("fingerprint") != fingerprint:
      logging.warning("%s changed since its TFDS dataset was prepared; rebuilding it", config.root)
      builder = tfds_builders.prepare(config, data_dir, force=True)
    skip_stats = dict(builder.info.metadata.get("stats", {}))
    return tfds_builders.data_source(config, data_dir), {"skip_stats": skip_stats}

  faces, info = cache.load_or_build(data_dir, config.name, expected, make_source, progress=progress)
  stats = info.meta.get("skip_stats", {})
  logging.info("loaded %s: %d images of %d identities at %dx%d from %s%s", config.name,
               faces.num_images, faces.num_identities, h, w, info.path,
               f" (skipped {stats.get('num_corrupt_skipped', 0)} unreadable files, dropped "
               f"{stats.get('num_empty_identities_dropped', 0)} empty identities)" if stats else "")
  return faces, info
