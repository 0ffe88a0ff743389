"""Face alignment for image folders (data/align.py): settings, the decoder hook and the cache key.

The tests that run dlib use a few shared real faces copied to tmp_path (never into the repo) and
skip when dlib, the landmark model or the shared faces are absent.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fedface_jax import data
from fedface_jax.data import align
from fedface_jax.data import image_folder
from fedface_jax.data import tfds_builders


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="mtcnn"), "align method"),
    (dict(on_failure="skip"), "align_on_failure"),
    (dict(padding=-0.1), "padding"),
    (dict(padding=float("nan")), "padding"),
    (dict(upsample=1.5), "upsample"),
    (dict(upsample=5), "upsample"),
])
def test_validate_rejects_bad_settings(kwargs, match):
  settings = dict(method="dlib5", padding=0.25, on_failure="keep", upsample=0) | kwargs
  with pytest.raises(ValueError, match=match):
    align.validate(**settings)


def test_config_name_and_cache_key_carry_the_alignment(tmp_path):
  plain = tfds_builders.ImageFolderFacesConfig(root=tmp_path, image_height=150, image_width=150)
  # align="none" leaves name and key as they were before alignment existed (old caches stay valid).
  assert plain.to_dict() == dict(root=str(tmp_path.resolve()), image_height=150, image_width=150)
  assert plain.make_decoder() is None
  names, keys = {plain.name}, [plain.to_dict()]
  for kw in (dict(align="dlib5"), dict(align="dlib5", align_padding=0.4),
             dict(align="dlib5", align_on_failure="drop"), dict(align="dlib5", align_upsample=1)):
    cfg = tfds_builders.ImageFolderFacesConfig(root=tmp_path, image_height=150, image_width=150,
                                               **kw)
    assert cfg.name.startswith(plain.name + "_dlib5")
    names.add(cfg.name)
    keys.append(cfg.to_dict())
  assert len(names) == 5
  assert all(a != b for i, a in enumerate(keys) for b in keys[i + 1:])
  with pytest.raises(ValueError, match="square"):
    tfds_builders.ImageFolderFacesConfig(root=tmp_path, image_height=112, image_width=96,
                                         align="dlib5")


def test_synthetic_faces_refuse_alignment(tmp_path):
  c = data.default_data_config()
  c.align, c.data_dir = "dlib5", str(tmp_path)
  with pytest.raises(ValueError, match="image_folder only"):
    data.load_faces(c)


def test_decoder_returning_none_drops_the_image_without_calling_it_corrupt(tmp_path):
  for identity, colours in (("a", [(250, 0, 0), (0, 250, 0)]), ("b", [(0, 0, 250)])):
    for i, colour in enumerate(colours):
      (tmp_path / identity).mkdir(exist_ok=True)
      Image.new("RGB", (20, 20), colour).save(tmp_path / identity / f"{i}.png")

  def decode(path, size):  # drops the green image and everything of identity b
    image = image_folder.decode_image(path, size)
    return None if image[0, 0, 1] > 128 or path.parent.name == "b" else image

  faces, stats = image_folder.load_image_folder(tmp_path, (8, 8), decode=decode)
  assert faces.identity_names == ("a",) and faces.num_images == 1
  np.testing.assert_array_equal(faces.images[0, 4, 4], [250, 0, 0])
  assert stats.num_corrupt_skipped == 0
  assert stats.empty_identities == ["b"] and stats.num_images_kept == 1


# ---------------------------------------------------------------------------------------------
# With dlib.


@pytest.fixture(scope="module")
def dlib_available():
  pytest.importorskip("dlib")
  try:
    from fedface_jax.models.dlib_resnet import (  # pylint: disable=g-import-not-at-top
        packaged_model_path)
    packaged_model_path(align.SHAPE_PREDICTOR_FILE)
  except FileNotFoundError as e:
    pytest.skip(str(e))


@pytest.fixture
def small_tree(celeba_root, tmp_path, dlib_available):
  """3 real identities x 3 faces, plus one image with no face (uniform noise) for identity 0."""
  del dlib_available
  root = tmp_path / "faces"
  dirs = sorted(p for p in celeba_root.iterdir() if p.is_dir())[:3]
  for d in dirs:
    (root / d.name).mkdir(parents=True)
    for f in sorted(d.glob("*.jpg"))[:3]:
      shutil.copy(f, root / d.name / f.name)
  noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
  Image.fromarray(noise).save(root / dirs[0].name / "zz_noise.png")
  return root


def test_aligner_makes_chips_and_reports_no_face(small_tree):
  aligner = align.Dlib5Aligner(size=150, padding=0.25)
  faces = sorted(small_tree.glob("*/*.jpg"))
  chips = [aligner(align.load_rgb(f)) for f in faces]
  found = [c for c in chips if c is not None]
  assert len(found) >= len(faces) - 2  # HOG misses ~5% of these crops
  assert all(c.shape == (150, 150, 3) and c.dtype == np.uint8 for c in found)
  assert aligner(align.load_rgb(small_tree.glob("*/zz_noise.png").__next__())) is None
  with pytest.raises(ValueError, match="RGB"):
    aligner(np.zeros((50, 50), np.uint8))


@pytest.mark.parametrize("on_failure", ["keep", "drop"])
def test_decoder_counts_failures_and_keeps_or_drops(small_tree, on_failure):
  decoder = align.AlignedDecoder(size=64, on_failure=on_failure)
  noise = next(small_tree.glob("*/zz_noise.png"))
  out = decoder(noise, (64, 64))
  if on_failure == "keep":
    np.testing.assert_array_equal(out, image_folder.decode_image(noise, (64, 64)))
    assert decoder.stats.num_failed_kept_unaligned == 1
  else:
    assert out is None and decoder.stats.num_failed_dropped == 1
  assert decoder.stats.num_failed == 1 and decoder.stats.failed_files == [str(noise)]
  face = sorted(small_tree.glob("*/*.jpg"))[0]
  with pytest.raises(RuntimeError, match="64x64"):
    decoder(face, (150, 150))


def test_load_faces_aligns_when_the_cache_is_built(small_tree, tmp_path):
  c = data.default_data_config()
  c.name, c.root, c.image_size = "image_folder", str(small_tree), (150, 150)
  c.data_dir, c.progress = str(tmp_path / "d"), False
  plain, plain_info = data.load_faces_with_info(c)
  c.align, c.align_on_failure = "dlib5", "drop"
  aligned, info = data.load_faces_with_info(c)
  assert info.built and info.path != plain_info.path
  stats = info.meta["skip_stats"]["alignment"]
  assert stats["num_failed_dropped"] == stats["num_failed"] >= 1  # at least the noise image
  assert stats["num_aligned"] == aligned.num_images == plain.num_images - stats["num_failed"]
  assert info.meta["config"]["align"] == "dlib5"
  meta = json.loads((info.path / "meta.json").read_text())
  assert meta["config"]["align_on_failure"] == "drop"
  # Aligned chips are not the centre-cropped images (same files, different framing).
  assert np.abs(np.asarray(aligned.images[:2], np.float32)
                - np.asarray(plain.images[:2], np.float32)).mean() > 5
  assert not data.load_faces_with_info(c)[1].built  # reused: alignment costs nothing next time
