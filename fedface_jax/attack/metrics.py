"""How good a reconstruction is: pixel metrics as the reference computes them, and recognisability.

Pixel metrics (host-side numpy, float64, per image):
- ``psnr``: on uint8-rounded images (clip to [0, 1], x255, round half to even like ``torch.round``),
  peak 255, 100 dB when MSE < 1e-10; exactly [C:src/metric.py].
- ``ssim``: the standard windowed SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03, population covariances, 'valid' windows only), mean over the map and then over RGB
  channels. It equals ``skimage.metrics.structural_similarity(a, b, channel_axis=-1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``. Use it to
  compare with the wider literature.
- ``reference_ssim``: the non-standard metric the paper's code reports (ATTACK.md 6): convert to
  YCrCb as OpenCV's ``COLOR_RGB2YCrCb`` does on uint8, then ONE global (unwindowed) SSIM per channel
  with C3 = C2 / 2, and 0.8 Y + 0.1 Cr + 0.1 Cb. The conversion defaults to OpenCV's 14-bit
  fixed-point arithmetic (what ``cv2`` does for uint8 input); ``ycrcb="float"`` uses the textbook
  float formula rounded to uint8, which differs by at most one grey level. Values are not comparable
  to windowed SSIM (global statistics score much higher).

Recognisability (the paper has none, ATTACK.md 6): ``identity_similarity`` (cosine between a face
model's embedding of a reconstruction and the victim's template, against impostor templates as the
chance level) and ``rank1_identification`` (closed-set identification of reconstructions in a
gallery; chance = 1 / #identities).
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def to_uint8(images: Any) -> np.ndarray:
  """uint8 images pass through; float images are taken to be in [0, 1].

  Floats are clipped to [0, 1], scaled x255 and rounded half to even.
  """
  x = np.asarray(images)
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
  return np.round(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _pair(originals: Any, reconstructions: Any) -> tuple[np.ndarray, np.ndarray]:
  a, b = to_uint8(originals), to_uint8(reconstructions)
  if a.shape != b.shape:
    raise ValueError(f"originals {a.shape} and reconstructions {b.shape} differ in shape")
  if a.ndim == 3:
    a, b = a[None], b[None]
  if a.ndim != 4 or a.shape[-1] != 3:
    raise ValueError(f"expected [N, H, W, 3] or [H, W, 3] images, got {a.shape}")
  return a, b


def psnr(originals: Any, reconstructions: Any) -> np.ndarray:
  """Per-image PSNR in dB on uint8 images, peak 255; 100 where MSE < 1e-10 (the reference's cap)."""
  a, b = _pair(originals, reconstructions)
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    out = 10.0 * np.log10(255.0 ** 2 / mse)
  return np.where(mse < 1e-10, 100.0, out)


def gaussian_window_1d(win_size: int = 11, sigma: float = 1.5) -> np.ndarray:
  r = (win_size - 1) // 2
  g = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float64) / sigma) ** 2)
  return g / g.sum()


def _valid_filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation of [N, H, W, C] with the 1D window g along H then W."""
  k = g.shape[0]
  x = sliding_window_view(x, k, axis=1) @ g  # [N, H-k+1, W, C]
  return sliding_window_view(x, k, axis=2) @ g  # [N, H-k+1, W-k+1, C]


def ssim(originals: Any, reconstructions: Any, data_range: float = 255.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
  """Per-image windowed SSIM (mean over valid windows, then channels), on uint8-rounded images."""
  a, b = _pair(originals, reconstructions)
  if min(a.shape[1:3]) < win_size:
    raise ValueError(
        f"images {a.shape[1:3]} are smaller than the {win_size}x{win_size} SSIM window")
  a, b = a.astype(np.float64), b.astype(np.float64)
  g = gaussian_window_1d(win_size, sigma)
  mu_a, mu_b = _valid_filter(a, g), _valid_filter(b, g)
  s_aa = _valid_filter(a * a, g) - mu_a ** 2
  s_bb = _valid_filter(b * b, g) - mu_b ** 2
  s_ab = _valid_filter(a * b, g) - mu_a * mu_b
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  smap = (((2 * mu_a * mu_b + c1) * (2 * s_ab + c2))
          / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2)))
  return smap.mean(axis=(1, 2, 3))


# OpenCV's fixed-point RGB -> YCrCb for 8-bit images (modules/imgproc color_yuv: yuv_shift = 14).
_YUV_SHIFT = 14
_R2Y, _G2Y, _B2Y = 4899, 9617, 1868        # 0.299, 0.587, 0.114 x 2^14
_YCRI, _YCBI = 11682, 9241                 # 0.713, 0.564 x 2^14


def rgb_to_ycrcb(images_u8: Any, method: str = "opencv") -> np.ndarray:
  """uint8 RGB -> uint8 [Y, Cr, Cb] like ``cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)``.

  ``"opencv"``: Y = descale(R*4899 + G*9617 + B*1868), Cr = descale((R - Y)*11682 + 128*2^14),
  Cb = descale((B - Y)*9241 + 128*2^14), descale(v) = (v + 2^13) >> 14, saturated to [0, 255].
  ``"float"``: Y = 0.299R + 0.587G + 0.114B, Cr = (R - Y)*0.713 + 128, Cb = (B - Y)*0.564 + 128,
  rounded, saturated.
  """
  x = np.asarray(images_u8)
  if x.dtype != np.uint8 or x.shape[-1] != 3:
    raise ValueError(f"expected uint8 RGB images [..., 3], got {x.dtype} {x.shape}")
  if method == "opencv":
    r, g, b = (x[..., i].astype(np.int64) for i in range(3))
    half = 1 << (_YUV_SHIFT - 1)
    delta = 128 << _YUV_SHIFT
    y = (r * _R2Y + g * _G2Y + b * _B2Y + half) >> _YUV_SHIFT
    cr = ((r - y) * _YCRI + delta + half) >> _YUV_SHIFT
    cb = ((b - y) * _YCBI + delta + half) >> _YUV_SHIFT
  elif method == "float":
    r, g, b = (x[..., i].astype(np.float64) for i in range(3))
    yf = 0.299 * r + 0.587 * g + 0.114 * b
    y, cr, cb = np.round(yf), np.round((r - yf) * 0.713 + 128.0), np.round((b - yf) * 0.564 + 128.0)
  else:
    raise ValueError(f"unknown YCrCb method {method!r}; use 'opencv' or 'float'")
  return np.clip(np.stack([y, cr, cb], axis=-1), 0, 255).astype(np.uint8)


def _global_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[N, H, W] -> [N]: the reference's one-window SSIM, population statistics, C3 = C2 / 2."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  mu1, mu2 = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))
  d1, d2 = a - mu1[:, None, None], b - mu2[:, None, None]
  s1, s2 = np.sqrt((d1 ** 2).mean(axis=(1, 2))), np.sqrt((d2 ** 2).mean(axis=(1, 2)))
  s12 = (d1 * d2).mean(axis=(1, 2))
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  c3 = c2 / 2
  return ((2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)
          * (2 * s1 * s2 + c2) / (s1 ** 2 + s2 ** 2 + c2)
          * (s12 + c3) / (s1 * s2 + c3))


def reference_ssim(originals: Any, reconstructions: Any, ycrcb: str = "opencv") -> np.ndarray:
  """Per-image 0.8 SSIM_Y + 0.1 SSIM_Cr + 0.1 SSIM_Cb with the reference's global SSIM.

  As in [C:src/metric.py].
  """
  a, b = _pair(originals, reconstructions)
  ya, yb = rgb_to_ycrcb(a, ycrcb), rgb_to_ycrcb(b, ycrcb)
  per = [_global_ssim(ya[..., i], yb[..., i]) for i in range(3)]
  return 0.8 * per[0] + 0.1 * per[1] + 0.1 * per[2]


# --------------------------------------------------------------------------------------------------
# Recognisability.
# --------------------------------------------------------------------------------------------------


def _l2n(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def identity_similarity(embed_fn: Callable[[Any], Any], recon: Sequence[Any] | np.ndarray,
                        real_images_by_victim: Sequence[Any]) -> dict[str, Any]:
  """Cosine between each reconstruction's embedding and its victim's template.

  A template is the normalised mean embedding of the victim's real photos.

  Args:
    embed_fn: images -> embeddings [N, D]; it receives the arrays exactly as given (the caller
      converts them to the model's input format).
    recon: reconstructions grouped by victim: a sequence of V arrays [n_v, ...] or one array [V, n,
      ...].
    real_images_by_victim: V arrays [m_v, ...] of the victims' real photos (ideally not the attacked
      ones).

  Returns:
    ``genuine`` [sum n_v] cosine to the own victim's template, ``genuine_mean``, ``impostor``
    (cosine to the other victims' templates, the chance level of the score), ``impostor_mean``,
    ``per_victim_mean`` [V], ``victim_index`` [sum n_v] and the full ``cosine_matrix`` [sum n_v, V].
  """
  v_count = len(real_images_by_victim)
  if len(recon) != v_count:
    raise ValueError(f"{len(recon)} reconstruction groups for {v_count} victims")
  templates = np.stack(
      [_l2n(_l2n(np.asarray(embed_fn(r))).mean(axis=0)) for r in real_images_by_victim])
  rec_emb = [_l2n(np.asarray(embed_fn(r))) for r in recon]
  victim_index = np.concatenate([np.full(len(e), v) for v, e in enumerate(rec_emb)])
  cos = np.concatenate(rec_emb) @ templates.T
  genuine = cos[np.arange(len(cos)), victim_index]
  mask = np.ones_like(cos, bool)
  mask[np.arange(len(cos)), victim_index] = False
  impostor = cos[mask]
  return {
      "genuine": genuine,
      "genuine_mean": float(genuine.mean()),
      "impostor": impostor,
      "impostor_mean": float(impostor.mean()) if impostor.size else float("nan"),
      "per_victim_mean": np.array([genuine[victim_index == v].mean() for v in range(v_count)]),
      "victim_index": victim_index,
      "cosine_matrix": cos,
  }


def rank1_identification(recon_embeddings: Any, gallery_embeddings: Any, gallery_labels: Any,
                         true_labels: Any, mode: str = "template") -> dict[str, Any]:
  """Closed-set rank-1 identification of reconstructions against a gallery of real photos.

  ``mode="template"`` compares with one normalised mean embedding per identity; ``"nearest"`` with
  every gallery image (nearest neighbour). Returns ``accuracy``, ``predictions`` and
  ``chance`` = 1 / #gallery identities.
  """
  r = _l2n(recon_embeddings)
  g = _l2n(gallery_embeddings)
  gl = np.asarray(gallery_labels)
  tl = np.asarray(true_labels)
  if len(g) != len(gl) or len(r) != len(tl):
    raise ValueError("embeddings and labels differ in length")
  ids = np.unique(gl)
  missing = np.setdiff1d(tl, ids)
  if missing.size:
    raise ValueError(
        f"true labels {missing.tolist()} have no gallery images (closed-set identification)")
  if mode == "template":
    templates = np.stack([_l2n(g[gl == i].mean(axis=0)) for i in ids])
    pred = ids[np.argmax(r @ templates.T, axis=1)]
  elif mode == "nearest":
    pred = gl[np.argmax(r @ g.T, axis=1)]
  else:
    raise ValueError(f"unknown mode {mode!r}; use 'template' or 'nearest'")
  return {"accuracy": float(np.mean(pred == tl)), "predictions": pred, "chance": chance_rank1(gl)}


def chance_rank1(gallery_labels: Any) -> float:
  """Rank-1 accuracy of a random guess: 1 / number of gallery identities."""
  return 1.0 / len(np.unique(np.asarray(gallery_labels)))
