"""TFDS builders for the two face sources, prepared to ArrayRecord and read without TensorFlow.

Why TFDS: one versioned, documented on-disk format for every source, with random access through
`tfds.data_source` (ArrayRecord), so that per-client sampling never scans a whole file and no
TensorFlow install is needed. Each builder config carries every setting that changes the bytes
(sizes, seed, difficulty, folder path), and the config name is derived from them, so different
settings never share a directory.

Both builders store images already decoded and resized (`Tensor(H, W, 3) uint8`): decoding happens
once at preparation time, which is also where unreadable files are found, skipped and counted. The
counts are kept in the dataset's metadata (`builder.info.metadata["stats"]`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from fedface_jax.data import align as align_lib
from fedface_jax.data import image_folder
from fedface_jax.data import synthetic_faces

SYNTHETIC_FACES = "synthetic_faces"
IMAGE_FOLDER_FACES = "image_folder_faces"


class _DropCustomConfigWarning(logging.Filter):
  """TFDS warns 'Using custom data configuration' for every config built at run time, which is how
  these builders are meant to be used; the warning would only confuse users."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_DropCustomConfigWarning())


class _LocalPreparation:
  """TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout for every build;
  these builders download nothing, so the two messages become log lines that say what happens."""

  def _log_download_bytes(self) -> None:
    logging.info("preparing %s from local data (nothing is downloaded) in %s", self.name,
                 self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("prepared %s in %s", self.name, self.data_dir)


def _float_token(x: float) -> str:
  """`1.25 -> '1p25'`: a float that is safe in a directory name."""
  return f"{float(x):g}".replace("-", "m").replace(".", "p").replace("+", "")


class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """Every setting of the procedural renderer; the name encodes all of them (and its version)."""

  def __init__(self, *, num_identities: int, images_per_identity: int, image_height: int,
               image_width: int, seed: int, difficulty: float):
    if num_identities < 1 or images_per_identity < 1:
      raise ValueError(
          f"need >= 1 identity and image, got {num_identities} x {images_per_identity}")
    if min(image_height, image_width) < 8:
      raise ValueError(f"image size must be at least 8x8, got {image_height}x{image_width}")
    if seed < 0 or not np.isfinite(difficulty) or difficulty < 0:
      raise ValueError(f"need seed >= 0 and finite difficulty >= 0, got {seed}, {difficulty}")
    name = (f"n{num_identities}_k{images_per_identity}_{image_height}x{image_width}_s{seed}"
            f"_d{_float_token(difficulty)}_r{synthetic_faces.RENDERER_VERSION}")
    super().__init__(
        name=name,
        description=(f"{num_identities} identities x {images_per_identity} images, "
                     f"{image_height}x{image_width}, seed {seed}, difficulty {difficulty:g}"))
    self.num_identities = int(num_identities)
    self.images_per_identity = int(images_per_identity)
    self.image_height = int(image_height)
    self.image_width = int(image_width)
    self.seed = int(seed)
    self.difficulty = float(difficulty)

  def to_dict(self) -> dict:
    return dict(num_identities=self.num_identities, images_per_identity=self.images_per_identity,
                image_height=self.image_height, image_width=self.image_width, seed=self.seed,
                difficulty=self.difficulty, renderer_version=synthetic_faces.RENDERER_VERSION)


def _features(height: int, width: int) -> tfds.features.FeaturesDict:
  # `tfds.features.Image` would need TensorFlow to encode numpy arrays; a raw uint8 tensor does not,
  # and is also what the decoded cache wants. BYTES encoding stores it as one bytes field (the
  # default would serialise every pixel as an int64, ~10x slower and larger).
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(height, width, 3), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.Scalar(dtype=np.int64, doc="dense identity index"),
      "identity": tfds.features.Text(doc="identity name"),
      "image_id": tfds.features.Text(doc="unique image id: '<identity>/<image>'"),
  })


class _FacesBuilder(_LocalPreparation, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What both face builders share: run-time config, raw uint8 features, one local `train` split."""

  BUILDER_CONFIGS = []  # Run-time configs only: builder_kwargs={'config': <CONFIG_CLASS>(...)}.
  CONFIG_CLASS: type[tfds.core.BuilderConfig]
  # Set explicitly: TFDS infers them through importlib.resources, which fails when the package is
  # imported as a namespace package (as some editable installs do).
  pkg_dir_path = epath.Path(__file__).parent
  code_path = epath.Path(__file__)

  def _description(self, cfg) -> str:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    if cfg is None:
      raise ValueError(f"{self.name} needs a {self.CONFIG_CLASS.__name__} "
                       "(builder_kwargs={'config': ...})")
    return tfds.core.DatasetInfo(
        builder=self,
        description=self._description(cfg),
        features=_features(cfg.image_height, cfg.image_width),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(config=cfg.to_dict()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local data only: nothing to download.
    return {"train": self._generate_examples()}


class SyntheticFaces(_FacesBuilder):
  """Procedurally rendered faces (`fedface_jax.data.synthetic_faces`); no download."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release (renderer v1: ellipsoid head, hair styles, glasses, beard; pose, "
               "light, expression, occlusion, blur, noise and clutter nuisance).",
  }
  CONFIG_CLASS = SyntheticFacesConfig

  def _description(self, cfg) -> str:
    return ("Procedurally rendered faces: identity = latent parameters, every image adds "
            "pose, light, expression, occlusion, blur, noise and background nuisance. "
            + (cfg.description or ""))

  def _generate_examples(self):
    cfg = self.builder_config
    for identity, image_index, image in synthetic_faces.iter_dataset(
        cfg.num_identities, cfg.images_per_identity, (cfg.image_height, cfg.image_width), cfg.seed,
        cfg.difficulty):
      name = synthetic_faces.identity_name(identity)
      image_id = f"{name}/{image_index:05d}"
      yield image_id, {"image": image, "label": identity, "identity": name, "image_id": image_id}
    self.info.metadata["stats"] = {
        "num_images_kept": cfg.num_identities * cfg.images_per_identity,
        "num_identities_kept": cfg.num_identities,
        "num_corrupt_skipped": 0,
        "num_empty_identities_dropped": 0,
    }


def _sanitize(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "root"


class ImageFolderFacesConfig(tfds.core.BuilderConfig):
  """A `<root>/<identity>/<image>` tree at one image size, optionally face-aligned.

  The name is `<sanitized basename>_<8 hex of the absolute root's hash>_<H>x<W>`, so two folders
  with the same basename, or two sizes of one folder, never share a directory. With
  `align="dlib5"` (see `align.py`) the alignment settings are appended to the name and added to
  `to_dict()` (hence to the decoded cache's key); with `align="none"` both are unchanged.
  """

  def __init__(self, *, root: str | os.PathLike, image_height: int, image_width: int,
               fit: str = image_folder.DEFAULT_FIT, align: str = "none",
               align_padding: float = align_lib.DEFAULT_PADDING, align_on_failure: str = "keep",
               align_upsample: int = 0):
    if min(image_height, image_width) < 8:
      raise ValueError(f"image size must be at least 8x8, got {image_height}x{image_width}")
    if fit not in image_folder.FITS:
      raise ValueError(f"data.fit={fit!r}: expected one of {', '.join(image_folder.FITS)}")
    align_lib.validate(align, align_padding, align_on_failure, align_upsample)
    if align != "none" and image_height != image_width:
      raise ValueError(f"align={align!r} makes square chips; got image size "
                       f"{image_height}x{image_width}")
    root = str(pathlib.Path(root).expanduser().resolve())
    digest = hashlib.sha256(root.encode()).hexdigest()[:8]
    # The default fit and no alignment leave name and dict as they were before either existed:
    # prepared datasets and caches stay valid.
    suffix = "" if fit == image_folder.DEFAULT_FIT else f"_{fit}"
    if align != "none":
      suffix += (f"_{align}_p{_float_token(align_padding)}_u{int(align_upsample)}"
                 f"_{align_on_failure}")
    name = f"{_sanitize(os.path.basename(root))}_{digest}_{image_height}x{image_width}{suffix}"
    super().__init__(name=name, description=f"{root} at {image_height}x{image_width}{suffix}")
    self.root = root
    self.image_height = int(image_height)
    self.image_width = int(image_width)
    self.fit = fit
    self.align = align
    self.align_padding = float(align_padding)
    self.align_on_failure = align_on_failure
    self.align_upsample = int(align_upsample)

  def to_dict(self) -> dict:
    d = dict(root=self.root, image_height=self.image_height, image_width=self.image_width)
    if self.fit != image_folder.DEFAULT_FIT:
      d["fit"] = self.fit
    if self.align != "none":
      d.update(align=self.align, align_padding=self.align_padding,
               align_on_failure=self.align_on_failure, align_upsample=self.align_upsample)
    return d

  def make_decoder(self):
    """The per-image decoder for `iter_image_folder`: None (plain decode) or an aligner."""
    if self.align == "none":
      return None
    return align_lib.AlignedDecoder(size=self.image_height, padding=self.align_padding,
                                    on_failure=self.align_on_failure,
                                    upsample=self.align_upsample)


class ImageFolderFaces(_FacesBuilder):
  """Faces from an identity-folder tree, decoded and resized once at preparation time."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: Pillow decode, EXIF transpose, centre crop to aspect, Lanczos "
               "resize; unreadable files skipped and counted; identities without images dropped.",
  }
  CONFIG_CLASS = ImageFolderFacesConfig

  def _description(self, cfg) -> str:
    return f"Face images from the identity folders under {cfg.root}."

  def _generate_examples(self):
    cfg = self.builder_config
    # Fingerprint first: if files change during the build, the next load sees a mismatch, rebuilds.
    fingerprint = image_folder.folder_fingerprint(cfg.root)
    stats = image_folder.FolderStats()
    decoder = cfg.make_decoder()
    for label, identity, rel, image in image_folder.iter_image_folder(
        cfg.root, (cfg.image_height, cfg.image_width), stats, cfg.fit, decoder):
      yield rel, {"image": image, "label": label, "identity": identity, "image_id": rel}
    self.info.metadata["stats"] = stats.to_dict()
    if decoder is not None:
      self.info.metadata["stats"]["alignment"] = decoder.stats.to_dict()
      logging.info("aligned %s: %s", cfg.root,
                   {k: v for k, v in decoder.stats.to_dict().items() if k != "failed_files"})
    self.info.metadata["fingerprint"] = fingerprint


BUILDERS = {SYNTHETIC_FACES: SyntheticFaces, IMAGE_FOLDER_FACES: ImageFolderFaces}


def prepare(config: SyntheticFacesConfig | ImageFolderFacesConfig, data_dir: str | os.PathLike,
            force: bool = False) -> tfds.core.DatasetBuilder:
  """Builds the dataset to ArrayRecord under `data_dir` if needed (never touches the network)."""
  cls = SyntheticFaces if isinstance(config, SyntheticFacesConfig) else ImageFolderFaces
  builder = cls(config=config, data_dir=os.fspath(data_dir), file_format="array_record")
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if force
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False, download_mode=mode))
  return builder


def data_source(config: SyntheticFacesConfig | ImageFolderFacesConfig, data_dir: str | os.PathLike):
  """Random-access `train` split of a prepared dataset (ArrayRecord; no TensorFlow)."""
  name = SYNTHETIC_FACES if isinstance(config, SyntheticFacesConfig) else IMAGE_FOLDER_FACES
  return tfds.data_source(name, split="train", data_dir=os.fspath(data_dir), download=False,
                          builder_kwargs={"config": config})
