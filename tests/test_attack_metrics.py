"""Reconstruction metrics against hand-computed values and independent re-implementations."""

import math

import numpy as np
import pytest

from fedface_jax.attack import grids
from fedface_jax.attack import matching
from fedface_jax.attack import metrics


def _rand_u8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------------


def test_psnr_of_known_mse():
  a = np.zeros((2, 4, 4, 3), np.uint8)
  b = a.copy()
  b[0, 0, 0, 0] = 48                 # squared error 2304 over 48 values -> MSE 48
  b[1] = 10                          # MSE 100
  got = metrics.psnr(a, b)
  np.testing.assert_allclose(
      got, [10 * math.log10(255 ** 2 / 48), 10 * math.log10(255 ** 2 / 100)], rtol=1e-12)
  assert metrics.psnr(a, a).tolist() == [100.0, 100.0]   # the reference's cap for identical images


def test_psnr_rounds_floats_like_the_reference():
  # 0.5 / 255 rounds half-to-even to 0, 1.5 / 255 to 2; values outside [0, 1] are clipped first.
  x = np.array([0.5, 1.5, 2.4, -3.0, 300.0]) / 255.0
  np.testing.assert_array_equal(metrics.to_uint8(x), [0, 2, 2, 0, 255])
  f = np.full((1, 2, 2, 3), 10.0 / 255.0)
  assert metrics.psnr(f, np.zeros((1, 2, 2, 3), np.uint8))[0] == pytest.approx(
      10 * math.log10(255 ** 2 / 100))
  with pytest.raises(ValueError):
    metrics.psnr(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 3, 3)))


# --------------------------------------------------------------------------------------------------
# Windowed SSIM
# --------------------------------------------------------------------------------------------------


def _brute_force_ssim_channel(a, b):
  """Independent: explicit loop over every 11x11 window with a 2D Gaussian (Wang et al. 2004)."""
  r = np.arange(-5, 6)
  w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
  w /= w.sum()
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  vals = []
  for i in range(a.shape[0] - 10):
    for j in range(a.shape[1] - 10):
      pa, pb = a[i:i + 11, j:j + 11].astype(float), b[i:i + 11, j:j + 11].astype(float)
      ma, mb = (w * pa).sum(), (w * pb).sum()
      va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
      cov = (w * (pa - ma) * (pb - mb)).sum()
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
  return np.mean(vals)


def test_windowed_ssim_identical_constant_and_brute_force():
  a = _rand_u8((2, 13, 14, 3), seed=1)
  np.testing.assert_allclose(metrics.ssim(a, a), [1.0, 1.0], rtol=1e-12)
  # Constant images: variances 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) exactly.
  ca, cb = np.full((1, 12, 12, 3), 100, np.uint8), np.full((1, 12, 12, 3), 140, np.uint8)
  c1 = (0.01 * 255) ** 2
  assert metrics.ssim(ca, cb)[0] == pytest.approx(
      (2 * 100 * 140 + c1) / (100 ** 2 + 140 ** 2 + c1), rel=1e-12)
  b = np.clip(a.astype(int) + _rand_u8(a.shape, seed=2) // 4 - 32, 0, 255).astype(np.uint8)
  expected = [np.mean([_brute_force_ssim_channel(a[n, ..., c], b[n, ..., c]) for c in range(3)])
              for n in range(2)]
  np.testing.assert_allclose(metrics.ssim(a, b), expected, rtol=1e-10)
  assert np.all(metrics.ssim(a, b) < 0.99)
  with pytest.raises(ValueError):
    metrics.ssim(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))


def test_windowed_ssim_matches_skimage_if_installed():
  skm = pytest.importorskip("skimage.metrics")
  a = _rand_u8((1, 24, 20, 3), seed=3)
  b = np.clip(a.astype(int) + _rand_u8(a.shape, seed=4) // 3 - 40, 0, 255).astype(np.uint8)
  ref = skm.structural_similarity(a[0], b[0], channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=255)
  assert metrics.ssim(a, b)[0] == pytest.approx(ref, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# The reference's global YCrCb SSIM
# --------------------------------------------------------------------------------------------------


def test_ycrcb_fixed_point_values():
  # Worked by hand from OpenCV's 14-bit formula, e.g. red: Y = (255*4899 + 8192) >> 14 = 76,
  # Cr = ((255-76)*11682 + 128*16384 + 8192) >> 14 = 256 -> saturated 255,
  # Cb = ((0-76)*9241 + ...) >> 14 = 85.
  rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
  expected = [[255, 128, 128], [0, 128, 128], [76, 255, 85], [150, 21, 43], [29, 107, 255]]
  np.testing.assert_array_equal(metrics.rgb_to_ycrcb(rgb)[0], expected)


def test_ycrcb_fixed_point_and_float_agree_within_one_level():
  x = _rand_u8((64, 64, 3), seed=5)
  d = np.abs(metrics.rgb_to_ycrcb(x, "opencv").astype(int)
             - metrics.rgb_to_ycrcb(x, "float").astype(int))
  assert d.max() <= 1
  assert d.mean() < 0.5


def _reference_ssim_independent(im1, im2):
  """Independent transcription of [C:src/metric.py]: one uint8 RGB image, float YCrCb, per pixel."""

  def ycrcb(img):
    out = np.zeros(img.shape, float)
    for i in range(img.shape[0]):
      for j in range(img.shape[1]):
        r, g, b = (float(v) for v in img[i, j])
        y = 0.299 * r + 0.587 * g + 0.114 * b
        out[i, j] = [min(max(round(v), 0), 255)
                     for v in (y, (r - y) * 0.713 + 128, (b - y) * 0.564 + 128)]
    return out

  def global_ssim(a, b):
    mu1, mu2 = a.mean(), b.mean()
    s1, s2 = math.sqrt(((a - mu1) ** 2).mean()), math.sqrt(((b - mu2) ** 2).mean())
    s12 = ((a - mu1) * (b - mu2)).mean()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    c3 = c2 / 2
    return ((2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)
            * (2 * s1 * s2 + c2) / (s1 ** 2 + s2 ** 2 + c2)
            * (s12 + c3) / (s1 * s2 + c3))

  a, b = ycrcb(im1), ycrcb(im2)
  return 0.8 * global_ssim(a[..., 0], b[..., 0]) + 0.1 * global_ssim(a[..., 1], b[..., 1]) + \
      0.1 * global_ssim(a[..., 2], b[..., 2])


def test_reference_ssim_hand_computed_2x2():
  # Grey images: Y = value, Cr = Cb = 128 (constant channels score exactly 1).
  a = np.array([[[0, 0, 0], [100, 100, 100]], [[200, 200, 200], [50, 50, 50]]], np.uint8)
  b = np.array([[[10, 10, 10], [100, 100, 100]], [[180, 180, 180], [60, 60, 60]]], np.uint8)
  ya, yb = np.array([0., 100, 200, 50]), np.array([10., 100, 180, 60])
  mu1, mu2 = 87.5, 87.5
  v1, v2 = ((ya - mu1) ** 2).mean(), ((yb - mu2) ** 2).mean()      # 5468.75, 3818.75
  cov = ((ya - mu1) * (yb - mu2)).mean()                           # 4543.75
  c1, c2 = 6.5025, 58.5225
  s_y = ((2 * mu1 * mu2 + c1) / (2 * mu1 ** 2 + c1) * (2 * math.sqrt(v1 * v2) + c2) / (v1 + v2 + c2)
         * (cov + c2 / 2) / (math.sqrt(v1 * v2) + c2 / 2))
  expected = 0.8 * s_y + 0.2
  for mode in ("opencv", "float"):
    assert metrics.reference_ssim(a[None], b[None], ycrcb=mode)[0] == pytest.approx(
        expected, rel=1e-12)
  assert metrics.reference_ssim(a[None], a[None])[0] == pytest.approx(1.0, rel=1e-12)


def test_reference_ssim_matches_independent_transcription():
  a = _rand_u8((3, 9, 7, 3), seed=6)
  b = np.clip(a.astype(int) + _rand_u8(a.shape, seed=7) // 2 - 64, 0, 255).astype(np.uint8)
  got = metrics.reference_ssim(a, b, ycrcb="float")
  np.testing.assert_allclose(got, [_reference_ssim_independent(a[i], b[i]) for i in range(3)],
                             rtol=1e-12)
  # OpenCV's fixed-point conversion moves the score only slightly.
  np.testing.assert_allclose(metrics.reference_ssim(a, b), got, atol=5e-3)


# --------------------------------------------------------------------------------------------------
# Recognisability, matching, grids
# --------------------------------------------------------------------------------------------------


def test_identity_similarity_and_rank1():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 8))
  # "Images" are just feature vectors here; embed_fn is the identity.
  real = [centres[v] + 0.1 * rng.normal(size=(4, 8)) for v in range(3)]
  recon = np.stack([centres[v] + 0.3 * rng.normal(size=(2, 8)) for v in range(3)])
  out = metrics.identity_similarity(lambda x: x, recon, real)
  assert out["genuine"].shape == (6,) and out["cosine_matrix"].shape == (6, 3)
  assert out["genuine_mean"] > 0.8 and out["genuine_mean"] > out["impostor_mean"] + 0.3
  np.testing.assert_array_equal(out["victim_index"], [0, 0, 1, 1, 2, 2])
  t0 = np.mean([r / np.linalg.norm(r) for r in real[0]], axis=0)
  t0 /= np.linalg.norm(t0)
  assert out["genuine"][0] == pytest.approx(recon[0, 0] @ t0 / np.linalg.norm(recon[0, 0]),
                                            rel=1e-10)

  gallery = np.concatenate(real)
  gl = np.repeat([10, 11, 12], 4)
  true = np.array([10, 10, 11, 11, 12, 12])
  for mode in ("template", "nearest"):
    r1 = metrics.rank1_identification(recon.reshape(6, 8), gallery, gl, true, mode=mode)
    assert r1["accuracy"] == 1.0 and r1["chance"] == pytest.approx(1 / 3)
  wrong = metrics.rank1_identification(recon.reshape(6, 8), gallery, gl, np.roll(true, 2))
  assert wrong["accuracy"] == 0.0
  with pytest.raises(ValueError):
    metrics.rank1_identification(recon.reshape(6, 8), gallery, gl, np.full(6, 99))


def test_hungarian_matching_recovers_permutation():
  orig = _rand_u8((5, 6, 6, 3), seed=8)
  perm_true = np.array([3, 0, 4, 1, 2])
  recon = np.empty_like(orig)
  # recon[perm[i]] ~ orig[i]
  recon[perm_true] = np.clip(orig.astype(int) + 5, 0, 255).astype(np.uint8)
  for cost in ("mse", "neg_psnr"):
    perm, c = matching.match_reconstructions(orig, recon, cost)
    np.testing.assert_array_equal(perm, perm_true)
    assert c.shape == (5, 5)
  mse = np.mean((orig[1].astype(float) - recon[2].astype(float)) ** 2)
  assert matching.cost_matrix(orig, recon)[1, 2] == pytest.approx(mse, rel=1e-12)
  perm, _ = matching.match_reconstructions(orig[:3], recon, cost=lambda a, b: float(np.abs(
      a.astype(int) - b.astype(int)).sum()))
  np.testing.assert_array_equal(perm, perm_true[:3])
  with pytest.raises(ValueError):
    matching.match_reconstructions(orig, recon[:2])


def test_save_attack_grid(tmp_path):
  orig = _rand_u8((3, 16, 16, 3), seed=9)
  recon = np.random.default_rng(1).uniform(size=(3, 8, 8, 3))
  path = tmp_path / "sub" / "grid.png"
  arr = grids.save_attack_grid(path, orig, recon, enhanced=orig, psnr_values=[10.0, 20.0, 30.0])
  assert path.is_file()
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    assert im.size == (arr.shape[1], arr.shape[0])
  # 3 rows of 32-px cells + padding + footer, 3 columns + the label column.
  assert arr.shape == (3 * 34 + 2 + 14, 110 + 3 * 34 + 2, 3)
  # The first original is pasted (nearest x2) at the first cell.
  np.testing.assert_array_equal(arr[2:4, 112:114],
                                np.repeat(np.repeat(orig[0, :1, :1], 2, 0), 2, 1))
  with pytest.raises(ValueError):
    grids.save_grid(tmp_path / "bad.png", [orig, orig[:2]], ["a", "b"])
