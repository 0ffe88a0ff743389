"""Identity-folder trees: scanning, decoding, skipping broken files, and the shared real faces."""

import json
import pathlib

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
  assert stats.num_other_files_ignored == 1  # notes.txt.
  assert stats.num_root_files_ignored == 1  # README.
  assert stats.ignored_files == ["README", "bob/notes.txt"]


def test_root_level_files_are_counted_and_logged(tree, caplog):
  with caplog.at_level("WARNING"):
    _, stats = image_folder.load_image_folder(tree, (16, 16))
  assert stats.num_root_files_ignored == 1 and stats.to_dict()["num_root_files_ignored"] == 1
  assert "ignoring 1 files directly under" in caplog.text and "README" in caplog.text


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
  with pytest.raises(ValueError, match="no readable images") as e:
    image_folder.load_image_folder(tmp_path / "r", (16, 16))
  assert "all 1 files with an accepted extension were unreadable (e.g. a/x.jpg)" in str(e.value)


def test_no_accepted_extension_error_lists_extensions_and_files(tmp_path):
  """What a user sees for a tree in a format nobody here expected: what was accepted, what seen."""
  for i in range(7):
    (tmp_path / "r" / f"id{i}").mkdir(parents=True)
    (tmp_path / "r" / f"id{i}" / "face.xyz").write_bytes(b"?")
  (tmp_path / "r" / "LICENSE").write_text("x")
  with pytest.raises(ValueError, match="no readable images") as e:
    image_folder.load_image_folder(tmp_path / "r", (16, 16))
  message = str(e.value)
  assert "no file has an accepted extension" in message
  for ext in (".jpg", ".png", ".pgm", ".ppm", ".pbm", ".tif", ".gif", ".webp", ".bmp"):
    assert f" {ext}" in message
  assert "8 other files: LICENSE, id0/face.xyz, id1/face.xyz, id2/face.xyz, id3/face.xyz, ..." \
      in message
  flat = tmp_path / "flat"
  flat.mkdir()
  _write(flat / "a.pgm", fmt="PPM")
  with pytest.raises(ValueError, match=r"no identity folders .*saw 1 other file: a.pgm.*\.pgm"):
    image_folder.scan_image_folder(flat)


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


# ------------------------------------------------------------------------------------------------
# Formats and modes. Each case: (file name, how to write it, expected RGB at the centre, tolerance).


def _solid(mode, size, value):
  return Image.new(mode, size, value)


def _save(im, **kw):
  return lambda path: im.save(path, **kw)


def _palette_png(path):
  im = Image.new("P", (40, 30))
  im.putpalette([0, 0, 0, 10, 200, 60] + [0] * 762)
  im.paste(1, (0, 0, 40, 30))
  im.save(path)


def _grey16(fmt):
  # 16-bit greyscale at 40000/65535 -> 156 in 8 bits (a convert() would saturate it to 255).
  def write(path):
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(path, format=fmt)
  return write


def _rgba_png(path):
  # Left half opaque orange; right half fully transparent with a hidden white that must not show.
  a = np.zeros((30, 40, 4), np.uint8)
  a[:, :20] = (250, 120, 0, 255)
  a[:, 20:] = (255, 255, 255, 0)
  Image.fromarray(a, "RGBA").save(path)


def _gif_two_frames(path):
  first = Image.new("RGB", (40, 30), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
  second = Image.new("RGB", (40, 30), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE)
  first.save(path, save_all=True, append_images=[second], duration=100, loop=0)


FORMAT_CASES = [
    ("a.jpg", _save(_solid("RGB", (40, 30), (200, 40, 40)), quality=95), (200, 40, 40), 8),
    ("b.png", _save(_solid("RGB", (40, 30), (30, 180, 90))), (30, 180, 90), 0),
    ("c.bmp", _save(_solid("RGB", (40, 30), (10, 20, 230))), (10, 20, 230), 0),
    ("d.webp", _save(_solid("RGB", (40, 30), (120, 60, 200)), lossless=True), (120, 60, 200), 0),
    ("e.pgm", _save(_solid("L", (40, 30), 77)), (77, 77, 77), 0),
    ("f.ppm", _save(_solid("RGB", (40, 30), (5, 150, 250))), (5, 150, 250), 0),
    ("g.pbm", _save(_solid("1", (40, 30), 1)), (255, 255, 255), 0),
    ("h.tiff", _save(_solid("RGB", (40, 30), (66, 99, 33))), (66, 99, 33), 0),
    ("i.tif", _save(_solid("L", (40, 30), 140)), (140, 140, 140), 0),
    ("j.gif", _gif_two_frames, (200, 0, 0), 2),  # First frame only.
    ("k.png", _palette_png, (10, 200, 60), 0),
    ("l.png", _save(_solid("L", (40, 30), 33)), (33, 33, 33), 0),
    ("m.png", _grey16("PNG"), (156, 156, 156), 0),
    ("n.pgm", _grey16("PPM"), (156, 156, 156), 0),
    ("o.tif", _grey16("TIFF"), (156, 156, 156), 0),
    ("p.tga", _save(_solid("RGB", (40, 30), (1, 2, 3))), (1, 2, 3), 0),
    ("q.JPEG", _save(_solid("L", (40, 30), 90), quality=95), (90, 90, 90), 3),  # Grey JPEG.
    ("r.jpg", _save(_solid("CMYK", (40, 30), (0, 255, 255, 0)), quality=95), (255, 0, 0), 8),
]


@pytest.mark.parametrize("name,write,rgb,tol", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_every_format_decodes_to_rgb(tmp_path, name, write, rgb, tol):
  assert pathlib.Path(name).suffix.lower() in image_folder.IMAGE_EXTENSIONS
  write(tmp_path / name)
  out = image_folder.decode_image(tmp_path / name, (16, 16))
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  np.testing.assert_allclose(out[4:12, 4:12].reshape(-1, 3).astype(int),
                             np.broadcast_to(rgb, (64, 3)), atol=tol)


def test_alpha_is_composited_onto_black(tmp_path):
  _rgba_png(tmp_path / "a.png")
  out = image_folder.decode_image(tmp_path / "a.png", (30, 40))
  np.testing.assert_array_equal(out[15, 5], [250, 120, 0])
  np.testing.assert_array_equal(out[15, 35], [0, 0, 0])  # Not the hidden white.


def test_a_tree_in_every_format_loads(tmp_path):
  """One identity per format through scan + decode + labels: nothing is left out or skipped."""
  root = tmp_path / "faces"
  for i, (name, write, _, _) in enumerate(FORMAT_CASES):
    (root / f"id{i:02d}").mkdir(parents=True)
    write(root / f"id{i:02d}" / name)
  faces, stats = image_folder.load_image_folder(root, (16, 16))
  assert stats.num_image_files == len(FORMAT_CASES) and stats.num_other_files_ignored == 0
  assert stats.num_corrupt_skipped == 0 and faces.num_identities == len(FORMAT_CASES)
  for i, (_, _, rgb, tol) in enumerate(FORMAT_CASES):
    np.testing.assert_allclose(faces.images[i, 8, 8].astype(int), rgb, atol=tol)


def test_exif_orientation_is_applied(tmp_path):
  # Stored 40 wide x 20 high, red left half, blue right half; EXIF orientation 6 = "rotate 90
  # degrees clockwise to display", so the displayed image is 20 wide x 40 high, red on top.
  a = np.zeros((20, 40, 3), np.uint8)
  a[:, :20] = (220, 0, 0)
  a[:, 20:] = (0, 0, 220)
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(a).save(tmp_path / "o.jpg", quality=95, exif=exif)
  out = image_folder.decode_image(tmp_path / "o.jpg", (40, 20)).astype(int)
  np.testing.assert_allclose(out[5, 10], [220, 0, 0], atol=12)
  np.testing.assert_allclose(out[34, 10], [0, 0, 220], atol=12)


def test_fit_crop_or_pad(tmp_path):
  # 300x100 (W x H): a red centre square between green side bands.
  image = np.zeros((100, 300, 3), np.uint8)
  image[:, :] = (0, 255, 0)
  image[:, 100:200] = (255, 0, 0)
  Image.fromarray(image).save(tmp_path / "wide.png")
  crop = image_folder.decode_image(tmp_path / "wide.png", (60, 60), fit="crop")
  assert crop[:, :, 1].max() < 20  # Side bands cropped away, red fills the frame.
  pad = image_folder.decode_image(tmp_path / "wide.png", (60, 60), fit="pad")
  # The whole image scaled to 60x20 in the middle rows; black above and below.
  assert pad[:18].max() == 0 and pad[42:].max() == 0
  np.testing.assert_array_equal(pad[30, 2], [0, 255, 0])
  np.testing.assert_array_equal(pad[30, 30], [255, 0, 0])
  with pytest.raises(ValueError, match="fit='squash'"):
    image_folder.decode_image(tmp_path / "wide.png", (60, 60), fit="squash")


def test_load_faces_with_pad_fit(tmp_path):
  """`data.fit` reaches the decoder; a padded dataset never shares a cache with a cropped one."""
  _write(tmp_path / "r" / "a" / "x.png", size=(90, 30), colour=(0, 200, 0))
  c = data.default_data_config()
  c.name, c.root, c.image_size = "image_folder", str(tmp_path / "r"), (30, 30)
  c.data_dir, c.progress = str(tmp_path / "d"), False
  cropped, crop_info = data.load_faces_with_info(c)
  c.fit = "pad"
  padded, pad_info = data.load_faces_with_info(c)
  assert crop_info.path != pad_info.path and pad_info.built
  np.testing.assert_array_equal(cropped.images[0, 0, 15], [0, 200, 0])
  np.testing.assert_array_equal(padded.images[0, 0, 15], [0, 0, 0])
  np.testing.assert_array_equal(padded.images[0, 15, 15], [0, 200, 0])
  # The default keeps the name and dict it had before `fit` existed (prepared data stays valid).
  from fedface_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top
  cfg = tfds_builders.ImageFolderFacesConfig(root=tmp_path / "r", image_height=30, image_width=30)
  assert cfg.name.endswith("_30x30") and "fit" not in cfg.to_dict()
