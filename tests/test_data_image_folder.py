"""Identity-folder trees: scanning, decoding, skipping broken files, and the shared real faces."""

import json

import numpy as np
import pytest
from PIL import Image

from fedface_jax import data
from fedface_jax.data import image_folder


def _write(path, size=(40, 30), colour=(200, 30, 30), fmt=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", size, colour).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path):
  """alice: 2 PNG + 1 JPEG (mixed-case extension); bob: 1 JPEG + 1 corrupt .jpg; carol: empty;
  dave: only a corrupt .png; plus a note at the root, a non-image file and a hidden folder."""
  root = tmp_path / "faces"
  _write(root / "alice" / "b.png", colour=(250, 0, 0))
  _write(root / "alice" / "a.png", colour=(0, 250, 0))
  _write(root / "alice" / "c.JPEG", colour=(0, 0, 250), fmt="JPEG")
  _write(root / "bob" / "1.jpg", size=(64, 64), colour=(90, 90, 90))
  (root / "bob" / "2.jpg").write_bytes(np.random.default_rng(0).bytes(500))
  (root / "bob" / "notes.txt").write_text("not an image")
  (root / "carol").mkdir()
  (root / "dave").mkdir()
  (root / "dave" / "x.png").write_bytes(b"\x89PNG broken")
  (root / "README").write_text("loose file")
  _write(root / ".hidden" / "h.png")
  return root


def test_scan_is_sorted_and_filters(tree):
  listing, stats = image_folder.scan_image_folder(tree)
  assert [name for name, _ in listing] == ["alice", "bob", "carol", "dave"]
  assert listing[0][1] == ["a.png", "b.png", "c.JPEG"]
  assert listing[1][1] == ["1.jpg", "2.jpg"]
  assert stats.num_image_files == 6
  assert stats.num_other_files_ignored == 2  # README and notes.txt.


def test_corrupt_skipped_and_empty_dropped(tree, caplog):
  with caplog.at_level("WARNING"):
    faces, stats = image_folder.load_image_folder(tree, (16, 16))
  assert faces.identity_names == ("alice", "bob")
  np.testing.assert_array_equal(faces.labels, [0, 0, 0, 1])
  assert faces.images.shape == (4, 16, 16, 3) and faces.images.dtype == np.uint8
  # Sorted file order: a.png (green), b.png (red), c.JPEG (blue).
  np.testing.assert_array_equal(faces.images[0, 8, 8], [0, 250, 0])
  np.testing.assert_array_equal(faces.images[1, 8, 8], [250, 0, 0])
  assert stats.num_corrupt_skipped == 2
  assert stats.corrupt_files == ["bob/2.jpg", "dave/x.png"]
  assert stats.num_empty_identities_dropped == 2
  assert stats.empty_identities == ["carol", "dave"]
  assert stats.num_images_kept == 4 and stats.num_identities_kept == 2
  assert "2.jpg" in caplog.text and "x.png" in caplog.text and "carol" in caplog.text


def test_decode_crops_to_aspect_before_resizing(tmp_path):
  # 300x100 (W x H): a red centre square between green side bands.
  image = np.zeros((100, 300, 3), np.uint8)
  image[:, :] = (0, 255, 0)
  image[:, 100:200] = (255, 0, 0)
  Image.fromarray(image).save(tmp_path / "wide.png")
  square = image_folder.decode_image(tmp_path / "wide.png", (50, 50))
  assert square.shape == (50, 50, 3)
  assert square[:, :, 1].max() < 20  # Side bands cropped away.
  tall = image_folder.decode_image(tmp_path / "wide.png", (112, 96))
  assert tall.shape == (112, 96, 3)


def test_missing_or_empty_roots(tmp_path):
  with pytest.raises(FileNotFoundError):
    image_folder.scan_image_folder(tmp_path / "nope")
  (tmp_path / "file").write_text("x")
  with pytest.raises(FileNotFoundError):
    image_folder.scan_image_folder(tmp_path / "file")
  (tmp_path / "flat").mkdir()
  _write(tmp_path / "flat" / "a.png")
  with pytest.raises(ValueError, match="no identity folders"):
    image_folder.scan_image_folder(tmp_path / "flat")
  c = data.default_data_config()
  c.name, c.root, c.data_dir = "image_folder", str(tmp_path / "nope"), str(tmp_path / "d")
  with pytest.raises(FileNotFoundError):
    data.load_faces(c)
  c.root = ""
  with pytest.raises(ValueError):
    data.load_faces(c)


def test_all_broken_is_an_error(tmp_path):
  (tmp_path / "r" / "a").mkdir(parents=True)
  (tmp_path / "r" / "a" / "x.jpg").write_bytes(b"junk")
  with pytest.raises(ValueError, match="no readable images"):
    image_folder.load_image_folder(tmp_path / "r", (16, 16))


def test_load_faces_image_folder_and_rebuild_on_change(tree, tmp_path):
  c = data.default_data_config()
  c.name, c.root, c.image_size = "image_folder", str(tree), (16, 16)
  c.data_dir, c.progress = str(tmp_path / "d"), False
  faces, info = data.load_faces_with_info(c)
  direct, _ = image_folder.load_image_folder(tree, (16, 16))
  np.testing.assert_array_equal(np.asarray(faces.images), direct.images)
  np.testing.assert_array_equal(faces.labels, direct.labels)
  assert faces.identity_names == direct.identity_names
  meta = json.loads((info.path / "meta.json").read_text())
  assert meta["skip_stats"]["num_corrupt_skipped"] == 2
  assert meta["skip_stats"]["num_empty_identities_dropped"] == 2
  assert not data.load_faces_with_info(c)[1].built

  _write(tree / "carol" / "new.png", colour=(1, 2, 3))  # The folder changes: rebuild.
  faces, info = data.load_faces_with_info(c)
  assert info.built
  assert faces.identity_names == ("alice", "bob", "carol")
  assert info.meta["skip_stats"]["num_empty_identities_dropped"] == 1


def test_shared_real_faces(celeba_root, tmp_path):
  """The shared CelebA-derived tree (239 identities, 4,604 images) through the pipeline at 56x56.

  Everything derived from it is written under tmp_path, never into the repository."""
  c = data.default_data_config()
  c.name, c.root, c.image_size = "image_folder", str(celeba_root), (56, 56)
  c.data_dir, c.progress = str(tmp_path / "d"), False
  faces, info = data.load_faces_with_info(c)
  stats = info.meta["skip_stats"]
  assert stats["num_identity_dirs"] == 239 and stats["num_image_files"] == 4604
  assert faces.num_images == 4604 - stats["num_corrupt_skipped"]
  assert faces.num_identities == 239 - stats["num_empty_identities_dropped"]
  assert faces.num_identities >= 230 and faces.num_images >= 4500
  assert faces.image_shape == (56, 56, 3)
  assert 1 <= faces.counts().min() and faces.counts().max() <= 30
  sample = np.asarray(faces.images[:: max(1, faces.num_images // 64)], np.float32)
  assert 40 < sample.mean() < 220 and sample.std() > 30  # Real photographs, not blank.
  splits = data.split_identities(faces, dict(pretrain=0.5, federated=0.3, evaluation=-1,
                                             min_images_per_identity=2), seed=0)
  assert sum(s.num_identities for s in splits.values()) <= faces.num_identities
