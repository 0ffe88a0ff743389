"""TFDS (ArrayRecord, no TensorFlow) -> decoded memmap cache -> FaceArrays -> identity splits."""

import json
import os
import sys

import numpy as np
import pytest

from fedface_jax import data
from fedface_jax.data import cache
from fedface_jax.data import synthetic_faces
from fedface_jax.data import tfds_builders
from fedface_jax.data.faces import FaceArrays

NUM_IDS, PER_ID, SIZE = 6, 4, (32, 32)


def _config(tmp_path, **overrides):
  c = data.default_data_config()
  c.num_identities, c.images_per_identity, c.image_size = NUM_IDS, PER_ID, SIZE
  c.data_dir = str(tmp_path / "data")
  c.progress = False
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _tiny_synthetic_config(**kw):
  args = dict(num_identities=NUM_IDS, images_per_identity=PER_ID, image_height=SIZE[0],
              image_width=SIZE[1], seed=0, difficulty=1.0)
  args.update(kw)
  return tfds_builders.SyntheticFacesConfig(**args)


def test_tfds_build_reads_back_renderer_output_without_tensorflow(tmp_path):
  config = _tiny_synthetic_config()
  builder = tfds_builders.prepare(config, tmp_path)
  files = list(builder.data_path.glob("synthetic_faces-train.array_record-*"))
  assert files, list(builder.data_path.iterdir())
  source = tfds_builders.data_source(config, tmp_path)
  assert len(source) == NUM_IDS * PER_ID
  expected = synthetic_faces.render_dataset(NUM_IDS, PER_ID, SIZE, seed=0, difficulty=1.0)
  seen = set()
  for i in range(len(source)):
    ex = source[i]
    image_id = ex["image_id"].decode()
    identity, image_index = image_id.split("/")
    k = int(ex["label"])
    assert identity == ex["identity"].decode() == synthetic_faces.identity_name(k)
    np.testing.assert_array_equal(ex["image"], expected.images[k * PER_ID + int(image_index)])
    seen.add(image_id)
  assert len(seen) == NUM_IDS * PER_ID
  assert "tensorflow" not in sys.modules


def test_config_names_never_collide():
  names = {
      _tiny_synthetic_config().name,
      _tiny_synthetic_config(seed=1).name,
      _tiny_synthetic_config(difficulty=1.5).name,
      _tiny_synthetic_config(difficulty=15.0).name,
      _tiny_synthetic_config(image_width=28).name,
      _tiny_synthetic_config(images_per_identity=5).name,
      _tiny_synthetic_config(num_identities=7).name,
  }
  assert len(names) == 7
  a = tfds_builders.ImageFolderFacesConfig(root="/x/faces", image_height=56, image_width=56)
  b = tfds_builders.ImageFolderFacesConfig(root="/y/faces", image_height=56, image_width=56)
  c = tfds_builders.ImageFolderFacesConfig(root="/x/faces", image_height=56, image_width=48)
  assert len({a.name, b.name, c.name}) == 3
  assert a.name.startswith("faces_") and a.name.endswith("_56x56")


def test_load_faces_cache_round_trip_and_reuse(tmp_path):
  c = _config(tmp_path)
  faces, info = data.load_faces_with_info(c)
  assert info.built
  assert isinstance(faces.images, np.memmap)
  assert faces.images.shape == (NUM_IDS * PER_ID, *SIZE, 3)
  expected = synthetic_faces.render_dataset(NUM_IDS, PER_ID, SIZE, seed=0, difficulty=1.0)
  np.testing.assert_array_equal(np.asarray(faces.images), expected.images)
  np.testing.assert_array_equal(faces.labels, expected.labels)
  assert faces.identity_names == expected.identity_names
  for name in ("images.u8", "labels.npy", "identities.json", "meta.json"):
    assert (info.path / name).is_file()
  meta = json.loads((info.path / "meta.json").read_text())
  assert meta["num_images"] == NUM_IDS * PER_ID
  assert meta["image_shape"] == [NUM_IDS * PER_ID, *SIZE, 3]
  assert meta["skip_stats"]["num_corrupt_skipped"] == 0
  stamp = os.stat(info.path / "images.u8").st_mtime_ns

  again, info2 = data.load_faces_with_info(c)
  assert not info2.built
  assert os.stat(info.path / "images.u8").st_mtime_ns == stamp
  np.testing.assert_array_equal(np.asarray(again.images), expected.images)
  assert data.load_faces(c).num_identities == NUM_IDS
  assert "tensorflow" not in sys.modules


def test_stale_cache_is_rebuilt(tmp_path):
  c = _config(tmp_path)
  _, info = data.load_faces_with_info(c)
  meta = json.loads((info.path / "meta.json").read_text())
  meta["builder_version"] = "0.0.1"
  (info.path / "meta.json").write_text(json.dumps(meta))
  faces, info2 = data.load_faces_with_info(c)
  assert info2.built and faces.num_images == NUM_IDS * PER_ID
  assert not [p for p in info.path.parent.iterdir() if p.name.startswith(".")]


def test_crash_while_building_leaves_no_cache(tmp_path):
  class Exploding:
    def __len__(self):
      return 10

    def __getitem__(self, i):
      if i == 7:
        raise RuntimeError("disk on fire")
      return {"image": np.zeros((8, 8, 3), np.uint8), "label": i, "identity": f"id{i}",
              "image_id": f"id{i}/0"}

  with pytest.raises(RuntimeError, match="disk on fire"):
    cache.load_or_build(tmp_path, "boom", {"builder": "x"}, lambda: (Exploding(), {}),
                        progress=False)
  assert not (tmp_path / "cache" / "boom").exists()
  assert list((tmp_path / "cache").iterdir()) == []


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(ValueError, match="synthetic_faces, image_folder"):
    data.load_faces(_config(tmp_path, name="imagenet"))


def test_data_config_without_a_key_is_refused(tmp_path):
  """No silent default: a data section lacking a key of `default_data_config` is an error."""
  for key in ("align", "progress"):
    c = _config(tmp_path).to_dict()
    del c[key]
    with pytest.raises(ValueError, match=f"lacks data.{key}"):
      data.load_faces(c)


# ---- FaceArrays.


def _faces(counts):
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  images = np.zeros((labels.size, 4, 4, 3), np.uint8)
  images[:, 0, 0, 0] = np.arange(labels.size)  # Tag each image with its index.
  names = tuple(f"p{i}" for i in range(len(counts)))
  return FaceArrays(images=images, labels=labels, identity_names=names)


def test_face_arrays_subset_relabels_and_keeps_order():
  faces = _faces([2, 3, 1, 4])
  np.testing.assert_array_equal(faces.counts(), [2, 3, 1, 4])
  np.testing.assert_array_equal(faces.indices_of_identity(1), [2, 3, 4])
  sub = faces.subset([3, 1])
  assert sub.identity_names == ("p3", "p1")
  np.testing.assert_array_equal(sub.labels, [1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(sub.images[:, 0, 0, 0], [2, 3, 4, 6, 7, 8, 9])
  contiguous = faces.subset([1, 2])
  assert np.shares_memory(contiguous.images, faces.images)  # A view, not a copy.
  assert faces.image_shape == (4, 4, 3) and faces.num_images == 10
  with pytest.raises(ValueError):
    faces.subset([1, 1])
  with pytest.raises(ValueError):
    faces.subset([4])


def test_face_arrays_validates():
  with pytest.raises(ValueError):
    FaceArrays(images=np.zeros((2, 4, 4, 3), np.float32), labels=np.zeros(2), identity_names=("a",))
  with pytest.raises(ValueError):
    FaceArrays(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 1]),
               identity_names=("a",))


# ---- Identity splits.


def test_splits_disjoint_deterministic_and_sized():
  faces = _faces([3] * 20)
  cfg = dict(pretrain=8, federated=0.25, evaluation=-1, min_images_per_identity=2)
  a = data.split_identities(faces, cfg, seed=3)
  b = data.split_identities(faces, cfg, seed=3)
  c = data.split_identities(faces, cfg, seed=4)
  assert [a[k].num_identities for k in data.SPLITS] == [8, 5, 0, 7]   # no validation asked
  names = [set(a[k].identity_names) for k in data.SPLITS]
  assert not (names[0] & names[1] or names[0] & names[3] or names[1] & names[3])
  assert set.union(*names) == set(faces.identity_names)
  for k in data.SPLITS:
    assert a[k].identity_names == b[k].identity_names
    np.testing.assert_array_equal(a[k].images, b[k].images)
    np.testing.assert_array_equal(np.unique(a[k].labels), np.arange(a[k].num_identities))
  assert any(a[k].identity_names != c[k].identity_names for k in data.SPLITS)


def test_split_drops_identities_with_too_few_images(caplog):
  faces = _faces([1, 5, 2, 1, 4, 3, 1, 6])
  plan = data.plan_split(faces.counts(), dict(pretrain=2, federated=2, evaluation=-1,
                                              min_images_per_identity=2), seed=0)
  assert plan.num_dropped == 3
  np.testing.assert_array_equal(plan.dropped, [0, 3, 6])
  with caplog.at_level("WARNING"):
    splits = data.split_identities(faces, dict(pretrain=2, federated=2, evaluation=-1,
                                               min_images_per_identity=2), seed=0)
  assert "dropped 3 of 8 identities" in caplog.text
  assert sum(s.num_identities for s in splits.values()) == 5
  for s in splits.values():
    assert s.num_identities == 0 or s.counts().min() >= 2


@pytest.mark.parametrize("cfg", [
    dict(pretrain=10, federated=10, evaluation=1),  # Over-subscribed.
    dict(pretrain=-1, federated=-1, evaluation=1),  # Two "rest"s.
    dict(pretrain=1.5, federated=1, evaluation=1),  # Fraction out of range.
    dict(pretrain=1, federated=1),  # Missing size.
])
def test_bad_split_configs_raise(cfg):
  with pytest.raises(ValueError):
    data.split_identities(_faces([2] * 12), cfg, seed=0)


def test_split_config_from_config_dict():
  cfg = data.default_split_config()
  splits = data.split_identities(_faces([2] * 10), cfg)
  assert [splits[k].num_identities for k in data.SPLITS] == [5, 3, 0, 2]


def test_validation_split_is_disjoint_and_leaves_the_others_alone_when_empty():
  faces = _faces([3] * 30)
  base = dict(pretrain=6, federated=8, evaluation=-1)
  without = data.split_identities(faces, base, seed=1)
  zero = data.split_identities(faces, dict(base, validation=0), seed=1)
  withval = data.split_identities(faces, dict(base, validation=5), seed=1)
  for k in data.SPLITS:   # an explicit 0 is the same as no key
    assert zero[k].identity_names == without[k].identity_names
  assert [withval[k].num_identities for k in data.SPLITS] == [6, 8, 5, 11]
  # Pretrain and federated identities do not move; validation comes out of the rest.
  for k in ("pretrain", "federated"):
    assert withval[k].identity_names == without[k].identity_names
  val, ev = set(withval["validation"].identity_names), set(withval["evaluation"].identity_names)
  assert not val & ev and val | ev == set(without["evaluation"].identity_names)


def test_concatenate_offsets_labels_and_keeps_images():
  faces = _faces([2, 3, 1, 4])
  a, b = faces.subset([0, 2]), faces.subset([3, 1])
  both = FaceArrays.concatenate([a, b])
  assert both.identity_names == a.identity_names + b.identity_names
  np.testing.assert_array_equal(both.labels, np.r_[a.labels, b.labels + 2])
  np.testing.assert_array_equal(both.images, np.concatenate([a.images, b.images]))
