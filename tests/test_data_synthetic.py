"""The procedural face renderer: determinism, shapes, and identity signal above nuisance."""

import numpy as np
import pytest

from fedface_jax.data import synthetic_faces


def test_same_seed_same_bytes_different_seed_different():
  a = synthetic_faces.render_identity_images(3, 4, (32, 32), seed=7)
  b = synthetic_faces.render_identity_images(3, 4, (32, 32), seed=7)
  c = synthetic_faces.render_identity_images(3, 4, (32, 32), seed=8)
  assert a.tobytes() == b.tobytes()
  assert not np.array_equal(a, c)
  # Images of one identity differ from each other (nuisance), and identities differ.
  assert not np.array_equal(a[0], a[1])
  assert not np.array_equal(a, synthetic_faces.render_identity_images(4, 4, (32, 32), seed=7))


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (112, 96), (40, 56)])
def test_shapes_and_dtypes(size):
  images = synthetic_faces.render_identity_images(0, 3, size, seed=0)
  assert images.shape == (3, *size, 3)
  assert images.dtype == np.uint8
  assert images.std() > 10  # Not blank.


def test_image_does_not_depend_on_batch():
  """Image i of identity k is the same whatever else is rendered with it."""
  full = synthetic_faces.render_identity_images(5, 6, (32, 32), seed=1)
  tail = synthetic_faces.render_identity_images(5, 2, (32, 32), seed=1, first_image=4)
  np.testing.assert_array_equal(full[4:], tail)
  faces = synthetic_faces.render_dataset(6, 6, (32, 32), seed=1)
  np.testing.assert_array_equal(faces.images[faces.indices_of_identity(5)], full)
  assert faces.identity_names[5] == synthetic_faces.identity_name(5)
  np.testing.assert_array_equal(faces.counts(), [6] * 6)


def test_identities_differ_more_than_images_of_one_identity():
  faces = synthetic_faces.render_dataset(12, 6, (32, 32), seed=0, difficulty=1.0)
  x = faces.images.reshape(faces.num_images, -1).astype(np.float32)
  d = np.sqrt(np.maximum(
      (x * x).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * x @ x.T, 0.0)) / np.sqrt(x.shape[1])
  same = faces.labels[:, None] == faces.labels[None]
  off_diag = ~np.eye(len(x), dtype=bool)
  within = d[same & off_diag].mean()
  between = d[~same].mean()
  assert within < 0.95 * between, (within, between)


def test_difficulty_scales_nuisance():
  """With no nuisance the face is fixed (only background and clothes change), so images of one
  identity are much closer to each other than at the default difficulty."""
  spread = []
  for difficulty in (0.0, 1.0):
    x = synthetic_faces.render_identity_images(2, 6, (32, 32), seed=0, difficulty=difficulty)
    x = x.astype(np.float32)
    centre = x[:, 8:24, 8:24]  # Face region.
    spread.append(np.abs(centre - centre.mean(0)).mean())
  assert spread[0] < 0.5 * spread[1], spread


def test_identity_params_vary_across_population():
  params = [synthetic_faces.identity_params(k, seed=0) for k in range(50)]
  for key in ("head_ratio", "eye_dx", "nose_len", "mouth_w"):
    values = np.array([p[key] for p in params])
    assert values.std() > 0, key
  skins = np.array([p["skin"] for p in params])
  assert skins.shape == (50, 3) and skins.std(0).min() > 0.02


@pytest.mark.parametrize("kwargs", [
    dict(identity_index=-1, num_images=1, image_size=32, seed=0),
    dict(identity_index=0, num_images=1, image_size=32, seed=-1),
    dict(identity_index=0, num_images=1, image_size=(4, 32), seed=0),
    dict(identity_index=0, num_images=-1, image_size=32, seed=0),
    dict(identity_index=0, num_images=1, image_size=32, seed=0, difficulty=-0.5),
])
def test_invalid_arguments_raise(kwargs):
  with pytest.raises(ValueError):
    synthetic_faces.render_identity_images(**kwargs)


def test_zero_images():
  assert synthetic_faces.render_identity_images(0, 0, (16, 16), seed=0).shape == (0, 16, 16, 3)


def test_renderer_output_is_pinned():
  """Per-image channel means of a few renders. If this fails, the renderer's output changed: bump
  `synthetic_faces.RENDERER_VERSION` (so prepared datasets and caches are rebuilt) and update these
  numbers. The tolerance absorbs float32 differences between CPUs / numpy builds."""
  x = synthetic_faces.render_identity_images(0, 4, (32, 32), seed=0).astype(np.float64)
  y = synthetic_faces.render_identity_images(7, 4, (32, 32), seed=3, difficulty=0.5)
  assert synthetic_faces.RENDERER_VERSION == 1
  np.testing.assert_allclose(x.mean(axis=(1, 2)), [
      [198.21, 66.22, 183.45], [117.78, 138.83, 142.09], [136.3, 132.01, 114.3],
      [135.66, 143.21, 115.22]], atol=0.5)
  np.testing.assert_allclose(y.astype(np.float64).mean(axis=(1, 2)), [
      [112.74, 92.62, 102.43], [146.91, 134.48, 91.75], [99.14, 108.02, 118.8],
      [107.88, 77.46, 73.22]], atol=0.5)
