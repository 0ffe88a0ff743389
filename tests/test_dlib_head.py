"""dlib's frozen-trunk head (`models.dlib_head`) on cached trunk features equals the full network.

The byte containers must carry the features bit-for-bit through `models.preprocess` and the
engine's W-axis flip, and `DlibHead(pack(trunk(chip)))` must be `DlibResNet(chip)`: otherwise a
frozen-trunk study would not start from dlib. Skips the dlib parts when the model package or the
shared faces are absent.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import data
from fedface_jax import models
from fedface_jax.models import dlib_head
from fedface_jax.models import dlib_resnet
from fedface_jax.models.common import preprocess

NUM_CHIPS = 20


def _random_features(n, seed=0):
  rng = np.random.default_rng(seed)
  # Post-ReLU means like dlib's, plus awkward values: zeros, tiny and large magnitudes.
  f = rng.gamma(2.0, 0.5, (n, dlib_head.FEATURE_DIM)).astype(np.float32)
  f[0, :4] = [0.0, 1e-30, 3.4e38, -2.5]
  return f


def test_containers_round_trip_bit_exact_and_flip_gives_the_mirror_view():
  feats, mirrored = _random_features(5), _random_features(5, seed=1)
  boxes = dlib_head.pack_features(feats, mirrored)
  assert boxes.shape == (5,) + dlib_head.CONTAINER_SHAPE and boxes.dtype == np.uint8
  np.testing.assert_array_equal(dlib_head.unpack_features(boxes).view(np.uint32),
                                feats.view(np.uint32))
  # Through preprocess, as the engine feeds the model, and through the engine's flip.
  got = jax.jit(dlib_head._features_from_preprocessed)(jnp.asarray(preprocess(boxes)))
  np.testing.assert_array_equal(np.asarray(got).view(np.uint32), feats.view(np.uint32))
  x = jnp.asarray(preprocess(boxes))
  got_flip = jax.jit(dlib_head._features_from_preprocessed)(x[:, :, ::-1])
  np.testing.assert_array_equal(np.asarray(got_flip).view(np.uint32), mirrored.view(np.uint32))


def test_pack_rejects_wrong_shapes_and_head_rejects_images():
  with pytest.raises(ValueError, match="256"):
    dlib_head.pack_features(np.zeros((2, 128)), np.zeros((2, 128)))
  head = models.create_model("dlib_head", 128)
  with pytest.raises(ValueError, match="dlib_trunk_features"):
    head.init(jax.random.key(0), jnp.zeros((1, 150, 150, 3)))


def test_head_is_the_fc_layer_on_the_features():
  head = models.create_model("dlib_head", 16)
  params = models.init_params(head, jax.random.key(0), models.DEFAULT_INPUT_SHAPES["dlib_head"])
  assert jax.tree.map(jnp.shape, params) == {"fc": {"kernel": (256, 16)}}
  feats = _random_features(3)
  feats[0, :4] = 1.0
  out = head.apply({"params": params}, preprocess(dlib_head.pack_features(feats, feats)))
  want = feats @ np.asarray(params["fc"]["kernel"])
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def dlib_loaded():
  try:
    return dlib_resnet.load_dlib_resnet()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_pretrained_head_is_dlibs_fc(dlib_loaded):
  _, full = dlib_loaded
  params = models.load_pretrained_params("dlib_head", models.create_model("dlib_head", 128))
  np.testing.assert_array_equal(np.asarray(params["fc"]["kernel"]),
                                np.asarray(full["fc"]["kernel"]))
  with pytest.raises(ValueError, match="needs model"):
    models.load_pretrained_params("dlib_head", models.create_model("dlib_resnet", 128))



def test_head_on_cached_features_equals_the_full_network(dlib_loaded, celeba_chips):
  module, params = dlib_loaded
  chips = celeba_chips(NUM_CHIPS)
  feats, mirrored = dlib_head.trunk_features(module, params, chips, batch_size=8)
  boxes = dlib_head.pack_features(feats, mirrored)
  head, head_params = dlib_head.load_dlib_head()
  full = jax.jit(module.apply)
  for flip in (False, True):
    b = boxes[:, :, ::-1] if flip else boxes
    c = chips[:, :, ::-1] if flip else chips
    got = np.asarray(head.apply({"params": head_params}, preprocess(b)), np.float64)
    want = np.asarray(full({"params": params}, preprocess(c)), np.float64)
    cosine = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(f"head(cached) vs DlibResNet(chip), flip={flip}, {len(chips)} chips: min cosine "
          f"{cosine.min():.8f}, max |diff| {np.max(np.abs(got - want)):.2e}")
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-5)
  # The features discriminate chips and the mirror view is a different input.
  assert np.mean(np.abs(feats[1:] - feats[:-1])) > 1e-2
  assert np.mean(np.abs(feats - mirrored)) > 1e-3


@pytest.fixture
def small_tree(celeba_root, tmp_path, dlib_loaded):
  """3 real identities x 3 faces copied to tmp_path (never into the repository)."""
  del dlib_loaded
  pytest.importorskip("dlib")
  root = tmp_path / "faces"
  for d in sorted(p for p in celeba_root.iterdir() if p.is_dir())[:3]:
    (root / d.name).mkdir(parents=True)
    for f in sorted(d.glob("*.jpg"))[:3]:
      shutil.copy(f, root / d.name / f.name)
  return root


def test_feature_dataset_is_the_image_dataset_through_the_trunk(small_tree, tmp_path):
  c = data.default_data_config()
  c.name, c.root, c.image_size = "dlib_trunk_features", str(small_tree), (150, 150)
  c.align = "dlib5"
  c.data_dir, c.progress = str(tmp_path / "d"), False
  feats, info = data.load_faces_with_info(c)
  c.name = "image_folder"
  chips = data.load_faces(c)
  assert info.built and feats.image_shape == dlib_head.CONTAINER_SHAPE
  np.testing.assert_array_equal(feats.labels, chips.labels)   # hence the same identity splits
  assert feats.identity_names == chips.identity_names
  module, params = dlib_resnet.load_dlib_resnet()
  want, want_mirror = dlib_head.trunk_features(module, params, np.asarray(chips.images))
  np.testing.assert_allclose(dlib_head.unpack_features(feats.images), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dlib_head.unpack_features(np.asarray(feats.images)[:, :, ::-1]),
                             want_mirror, rtol=1e-5, atol=1e-6)
  c.name = "dlib_trunk_features"
  assert not data.load_faces_with_info(c)[1].built   # reused
  meta = json.loads((info.path / "meta.json").read_text())
  meta["model_crc32"] += 1                            # another model file: rebuilt
  (info.path / "meta.json").write_text(json.dumps(meta))
  assert data.load_faces_with_info(c)[1].built
  c.image_size = (112, 112)
  with pytest.raises(ValueError, match="150"):
    data.load_faces(c)
