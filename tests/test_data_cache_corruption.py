"""A decoded-image cache damaged after it was written is detected, and rebuilt with a warning.

The damage is done to real files that `cache.load_or_build` wrote; the source is a list of
random examples, so a rebuilt cache can be compared with what it must hold.
"""

import json
import logging
import os

import numpy as np
import pytest

from fedface_jax import errors
from fedface_jax.data import cache
from tests import file_damage

EXPECTED = {"builder": "test", "config_name": "tiny"}


def _source(num_identities=4, per_identity=3, size=8, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
           "label": i // per_identity, "identity": f"id{i // per_identity}",
           "image_id": f"id{i // per_identity}/{i}"}
          for i in range(num_identities * per_identity)]


class _Builds:
  """make_source that counts how often the cache had to be (re)built."""

  def __init__(self, source):
    self.source, self.calls = source, 0

  def __call__(self):
    self.calls += 1
    return self.source, {}


def _load(tmp_path, builds):
  return cache.load_or_build(tmp_path, "tiny", EXPECTED, builds, progress=False)


CASES = [(f, how) for f in ("images.u8", "labels.npy", "identities.json")
         for how in file_damage.KINDS]


@pytest.mark.parametrize("name,how", CASES + [("meta.json", "truncate_half")])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, name, how):
  source = _source()
  builds = _Builds(source)
  faces, info = _load(tmp_path, builds)
  expected_images = np.array(faces.images)
  expected_labels = np.array(faces.labels)
  del faces
  assert builds.calls == 1
  _load(tmp_path, builds)
  assert builds.calls == 1  # intact: reused

  file_damage.damage(info.path / name, how)
  if name != "meta.json":
    with pytest.raises(errors.CorruptCacheError) as e:
      cache.open_cache(info.path)
    assert name in str(e.value) and str(info.path) in str(e.value)
    assert "\n" not in str(e.value) and isinstance(e.value, errors.UserError)
  with caplog.at_level(logging.WARNING):
    faces, info2 = _load(tmp_path, builds)
  assert builds.calls == 2 and info2.built
  assert f"decoded cache {info.path} is damaged (" in caplog.text
  assert "rebuilding it" in caplog.text
  np.testing.assert_array_equal(np.asarray(faces.images), expected_images)
  np.testing.assert_array_equal(faces.labels, expected_labels)
  assert faces.identity_names == tuple(f"id{i}" for i in range(4))


def test_large_cache_checks_sampled_blocks_of_images(tmp_path, caplog):
  """Over 1 MiB, images.u8 is sampled: a zeroed tail (e.g. a preallocated copy) is caught."""
  builds = _Builds(_source(num_identities=8, per_identity=12, size=64))  # 1.18 MB of images
  _, info = _load(tmp_path, builds)
  images = info.path / "images.u8"
  size = os.path.getsize(images)
  assert size > 16 * 65536
  assert len(json.loads((info.path / "meta.json").read_text())
             ["checksums"]["images.u8"]["sample_crc32"]) == 16
  with open(images, "r+b") as f:
    f.seek(size - 4096)
    f.write(bytes(4096))
  assert "images.u8 differs from what was written" in cache.damage(
      info.path, json.loads((info.path / "meta.json").read_text()))
  with caplog.at_level(logging.WARNING):
    _load(tmp_path, builds)
  assert builds.calls == 2 and "is damaged" in caplog.text


def test_cache_without_checksum_record_is_still_size_checked(tmp_path):
  """Caches written before the record: reused when intact, rebuilt when truncated."""
  builds = _Builds(_source())
  _, info = _load(tmp_path, builds)
  meta = json.loads((info.path / "meta.json").read_text())
  del meta["checksums"]
  (info.path / "meta.json").write_text(json.dumps(meta))
  _load(tmp_path, builds)
  assert builds.calls == 1
  file_damage.damage(info.path / "images.u8", "truncate_half")
  _load(tmp_path, builds)
  assert builds.calls == 2
