"""Procedural face renderer: any number of identities, deterministic, no download.

Why it exists: every command of the project (pretrain -> FedFace -> evaluate -> attack) must run on
a fresh machine, and FedFace needs *many* identities with several images each. Real face sets cannot
be shipped, so this module draws faces from a parametric model in pure numpy:

* An **identity** is a vector of latent parameters (head shape, skin tone, eyes, brows, nose, mouth,
  hair, ears, glasses, beard, a mole) drawn from one shared population distribution with moderate
  spread, seeded by `(seed, identity_index)`. Identities therefore look alike the way real people
  do.
* Each **image** adds nuisance seeded by `(seed, identity_index, image_index)`: yaw (features slide
  over an ellipsoidal head and foreshorten), pitch, in-plane roll, scale, shift, light direction and
  strength, colour cast, gamma, expression (smile, open mouth, eye openness, gaze), clothing, a
  cluttered background, an occluding patch, blur and sensor noise. `difficulty` scales all nuisance
  strengths, so a recogniser can be made neither trivial nor hopeless.

Image `i` of identity `k` does not depend on how many other images or identities are rendered, which
makes datasets of different sizes consistent with each other. Rendering is vectorised over a batch
of images (layers are soft-edged masks; small features are evaluated on per-image patches only), so
10k 64x64 images take ~20 s of one CPU core.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from fedface_jax.data.faces import FaceArrays

# Bump whenever the rendered bytes change: it is part of the TFDS config name, so stale prepared
# datasets and caches are never reused (tests/test_data_synthetic.py pins a summary of the output).
RENDERER_VERSION = 1

# Domain tags keep the identity, image and background random streams apart.
_IDENTITY_STREAM = 0x1D3A
_IMAGE_STREAM = 0x1A6E
_NOISE_STREAM = 0x7015

# Head half-height (face units) as a fraction of the image half-height.
_HEAD_SCALE = 0.84
# Vertical offset of the head centre in image half-heights (positive = down), as in aligned crops.
_HEAD_OFFSET = -0.09
# Pixels rendered per chunk (32 images at 64x64): bounds memory and keeps temporaries in cache.
_CHUNK_PIXELS = 1 << 17

_HAIR_PALETTE = np.array([
    [0.06, 0.05, 0.05], [0.17, 0.11, 0.07], [0.30, 0.19, 0.11], [0.45, 0.25, 0.13],
    [0.55, 0.23, 0.10], [0.75, 0.60, 0.38], [0.62, 0.60, 0.58], [0.36, 0.33, 0.31],
], dtype=np.float32)
_HAIR_WEIGHTS = np.array([0.3, 0.22, 0.16, 0.08, 0.05, 0.08, 0.06, 0.05])
_IRIS_PALETTE = np.array([
    [0.22, 0.13, 0.07], [0.35, 0.22, 0.11], [0.42, 0.36, 0.17], [0.28, 0.40, 0.26],
    [0.30, 0.45, 0.62], [0.45, 0.50, 0.55],
], dtype=np.float32)
_IRIS_WEIGHTS = np.array([0.35, 0.25, 0.12, 0.09, 0.12, 0.07])
_SKIN_LIGHT = np.array([0.95, 0.80, 0.69], dtype=np.float32)
_SKIN_DARK = np.array([0.38, 0.25, 0.17], dtype=np.float32)
# Hair styles: 0 short, 1 long, 2 receding, 3 fringe, 4 side part, 5 voluminous.
_NUM_HAIR_STYLES = 6


def _check_size(image_size) -> tuple[int, int]:
  if isinstance(image_size, (int, np.integer)):
    image_size = (int(image_size), int(image_size))
  h, w = (int(s) for s in image_size)
  if h < 8 or w < 8:
    raise ValueError(f"image_size must be at least 8x8, got {(h, w)}")
  return h, w


def _check_seed(seed: int, identity_index: int = 0):
  if int(seed) < 0 or int(identity_index) < 0:
    raise ValueError(f"seed and identity_index must be >= 0, got {seed}, {identity_index}")


_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
  z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
  return z ^ (z >> _U64(31))


def _uniforms(stream: int, seed: int, a, b, count: int) -> np.ndarray:
  """Counter-based uniforms in (0, 1), `[n, count]` float64, one row per key `(stream, seed, a, b)`.

  A hash of the key rather than a stateful generator: image `b` of identity `a` gets the same
  numbers whatever batch it is rendered in, and a whole batch is drawn with a few vectorised ops.
  """
  a = np.atleast_1d(np.asarray(a, dtype=np.int64)).astype(_U64)
  b = np.atleast_1d(np.asarray(b, dtype=np.int64)).astype(_U64)
  h = _mix64(np.full(a.shape, _U64(stream), _U64) * _GOLDEN + _U64(seed))
  h = _mix64(h + _GOLDEN + a)
  h = _mix64(h + _GOLDEN + b)
  h = _mix64(h[:, None] + _GOLDEN * (np.arange(count, dtype=_U64)[None] + _U64(1)))
  return ((h >> _U64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def _normals(u: np.ndarray) -> np.ndarray:
  """Box-Muller: `[n, 2k]` uniforms -> `[n, k]` standard normals."""
  k = u.shape[1] // 2
  return np.sqrt(-2.0 * np.log(u[:, :k])) * np.cos(2.0 * np.pi * u[:, k:2 * k])


def _choice(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
  cdf = np.cumsum(weights) / np.sum(weights)
  return np.minimum(np.searchsorted(cdf, u), len(weights) - 1)


def _identity_params(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """Latent parameters of identities `ids`, `[n, ...]` (face units: head half-height 1, v down).

  All identities share one population distribution with moderate spread, so they look alike the way
  real faces do; what separates them is a combination of many small differences.
  """
  r = _uniforms(_IDENTITY_STREAM, seed, ids, np.zeros_like(ids), 104)
  n, u = _normals(r[:, :80]), r[:, 80:]
  f32 = np.float32
  clip = np.clip
  p = {}
  p["head_b"] = 1.0 + 0.04 * n[:, 0]
  p["head_ratio"] = clip(0.78 + 0.05 * n[:, 1], 0.66, 0.92)
  p["chin_taper"] = clip(0.22 + 0.08 * n[:, 2], 0.02, 0.45)
  tone = u[:, 0:1] ** 1.3
  p["skin"] = clip(_SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone + 0.025 * n[:, 3:6], 0.05, 1.0)
  p["eye_v"] = -0.04 + 0.035 * n[:, 6]
  p["eye_dx"] = 0.34 + 0.03 * n[:, 7]
  p["eye_w"] = clip(0.14 + 0.015 * n[:, 8], 0.09, 0.19)
  p["eye_h"] = clip(0.52 + 0.08 * n[:, 9], 0.32, 0.75)
  iris = _IRIS_PALETTE[_choice(u[:, 16], _IRIS_WEIGHTS)]
  p["iris"] = clip(iris + 0.04 * n[:, 10:13], 0.0, 1.0)
  p["iris_r"] = clip(0.48 + 0.05 * n[:, 13], 0.35, 0.6)
  hair = _HAIR_PALETTE[_choice(u[:, 17], _HAIR_WEIGHTS)]
  p["hair"] = clip(hair * (1.0 + 0.15 * n[:, 14:15]) + 0.03 * n[:, 15:18], 0.0, 1.0)
  p["brow_dv"] = 0.13 + 0.025 * n[:, 18]
  p["brow_t"] = clip(0.035 + 0.01 * n[:, 19], 0.018, 0.06)
  p["brow_angle"] = 0.08 + 0.12 * n[:, 20]
  p["brow_len"] = clip(1.35 + 0.15 * n[:, 21], 1.0, 1.8)
  p["brow_arch"] = 0.25 + 0.2 * n[:, 22]
  p["brow_dark"] = clip(0.75 + 0.15 * n[:, 23], 0.4, 1.0)
  p["nose_len"] = clip(0.4 + 0.045 * n[:, 24], 0.28, 0.52)
  p["nose_w"] = clip(0.13 + 0.022 * n[:, 25], 0.08, 0.19)
  p["nose_depth"] = clip(0.25 + 0.06 * n[:, 26], 0.1, 0.4)
  p["mouth_dv"] = clip(0.19 + 0.03 * n[:, 27], 0.12, 0.27)
  p["mouth_w"] = clip(0.25 + 0.03 * n[:, 28], 0.16, 0.34)
  p["lip_t"] = clip(0.04 + 0.01 * n[:, 29], 0.02, 0.065)
  p["mouth_curve"] = 0.02 * n[:, 30]
  p["lip"] = clip(p["skin"] * np.array([0.9, 0.62, 0.62]) + 0.03 * n[:, 31:34], 0.0, 1.0)
  p["ear_s"] = clip(0.2 + 0.03 * n[:, 34], 0.12, 0.28)
  p["hair_style"] = np.floor(u[:, 18] * _NUM_HAIR_STYLES)
  p["hairline"] = clip(-0.6 + 0.08 * n[:, 35], -0.8, -0.4)
  p["hair_vol"] = clip(0.1 + 0.04 * n[:, 36], 0.03, 0.2)
  p["hair_tilt"] = 0.15 * n[:, 37]
  p["hair_freq"] = 25.0 + 15.0 * u[:, 1]
  p["hair_angle"] = np.pi * u[:, 2]
  p["glasses"] = (u[:, 3] < 0.18) * 1.0
  p["glasses_r"] = 0.17 + 0.03 * u[:, 4]
  p["glasses_col"] = 0.05 + 0.4 * u[:, 5:8]
  p["beard"] = (u[:, 8] < 0.2) * 1.0
  p["beard_density"] = 0.5 + 0.45 * u[:, 9]
  p["moustache"] = (u[:, 10] < 0.5) * p["beard"] + (u[:, 11] < 0.06)
  p["mole"] = (u[:, 12] < 0.35) * 1.0
  p["mole_u"] = (u[:, 13] - 0.5) * 1.0
  p["mole_v"] = -0.3 + 0.9 * u[:, 14]
  p["cheek"] = 0.25 * u[:, 15]
  return {k: np.asarray(v, f32) for k, v in p.items()}


def _image_params(ids: np.ndarray, imgs: np.ndarray, seed: int, difficulty: float,
                  image_size: tuple[int, int]) -> dict[str, np.ndarray]:
  """Nuisance of images `imgs` of identities `ids`, `[n, ...]`, scaled by `difficulty`."""
  r = _uniforms(_IMAGE_STREAM, seed, ids, imgs, 64 + 24 + 78 + 24)
  n, u = _normals(r[:, :64]), r[:, 64:88]
  bg, shapes = r[:, 88:166], r[:, 166:190]
  d = float(difficulty)
  h, _ = image_size
  clip = np.clip
  q = {}
  q["yaw"] = clip(0.35 * d * n[:, 0], -1.1, 1.1)
  q["pitch"] = clip(0.15 * d * n[:, 1], -0.5, 0.5)
  q["roll"] = clip(0.14 * d * n[:, 2], -0.6, 0.6)
  q["scale"] = np.exp(0.09 * d * n[:, 3])
  q["shift_x"] = 0.06 * d * n[:, 4]
  q["shift_y"] = 0.05 * d * n[:, 5]
  light_az = 2 * np.pi * u[:, 0]
  light_el = 0.3 + 0.9 * u[:, 1]
  q["light"] = np.stack([np.cos(light_az) * np.cos(light_el), np.sin(light_az) * np.cos(light_el),
                         np.sin(light_el)], axis=1)
  q["light_strength"] = clip(0.45 * d * u[:, 2], 0.0, 0.9)
  q["brightness"] = np.exp(0.2 * d * n[:, 6])
  q["cast"] = np.exp(0.07 * d * n[:, 7:10])
  q["gamma"] = np.exp(0.15 * d * n[:, 10])
  q["contrast"] = np.exp(0.15 * d * n[:, 11])
  q["grad_dir"] = 2 * np.pi * u[:, 3]
  q["grad_strength"] = 0.3 * d * u[:, 4]
  q["smile"] = 0.05 * d * n[:, 12]
  q["mouth_open"] = clip(0.06 * d * n[:, 13], 0.0, 0.1) * (u[:, 5] < 0.4)
  blink = np.where(u[:, 6] < 0.04 * d, 0.15, 1.0)
  q["eye_open"] = clip(1.0 - 0.25 * d * np.abs(n[:, 14]), 0.1, 1.0) * blink
  q["gaze_x"] = 0.18 * d * n[:, 15]
  q["gaze_y"] = 0.08 * d * n[:, 16]
  q["brow_raise"] = 0.025 * d * n[:, 17]
  q["cloth"] = u[:, 7:10] * 0.8 + 0.1
  q["hair_jitter"] = 0.03 * d * n[:, 18]
  # Occluding patch (sunglasses, hand, scarf, microphone...): textured box or ellipse, image units.
  q["occ"] = (u[:, 10] < min(1.0, 0.3 * d)) * 1.0
  q["occ_x"] = (u[:, 11] - 0.5) * 1.4
  q["occ_y"] = (u[:, 12] - 0.5) * 1.4
  q["occ_w"] = 0.12 + 0.3 * u[:, 13]
  q["occ_h"] = 0.12 + 0.3 * u[:, 14]
  q["occ_round"] = (u[:, 15] < 0.5) * 1.0
  q["occ_col"] = u[:, 16:19]
  q["occ_freq"] = 5 + 25 * u[:, 19]
  # Background: low-frequency colour field plus three clutter shapes.
  base = 0.15 + 0.7 * bg[:, :3]
  grid = base[:, None, None, :] + 0.45 * (bg[:, 3:].reshape(-1, 5, 5, 3) - 0.5)
  q["bg_grid"] = clip(grid, 0.0, 1.0)
  q["bg_shapes"] = shapes.reshape(-1, 3, 8)
  q["blur"] = np.abs(0.6 * d * n[:, 19]) * (h / 64.0)
  q["noise"] = 0.03 * d * u[:, 20]
  q["noise_offset"] = np.floor(u[:, 21:23] * 4096.0)
  q["noise_sign"] = np.where(u[:, 23] < 0.5, -1.0, 1.0)
  return {k: np.asarray(v, np.float32) for k, v in q.items()}


def identity_params(identity_index: int, seed: int) -> dict[str, np.ndarray]:
  """Latent parameters of one identity (scalars or RGB triples), e.g. to inspect or plot them."""
  _check_seed(seed, identity_index)
  return {k: v[0] for k, v in _identity_params(np.array([identity_index]), int(seed)).items()}


@functools.lru_cache(maxsize=8)
def _noise_bank(h: int, w: int) -> np.ndarray:
  """A fixed `[3, 2h, 2w]` Gaussian field; each image takes a shifted crop as its sensor noise."""
  r = _uniforms(_NOISE_STREAM, 0, np.arange(3 * 2 * h), np.zeros(3 * 2 * h), 4 * w)
  return _normals(r).astype(np.float32).reshape(3, 2 * h, 2 * w)


def _soft(dist, inv_pix):
  """Anti-aliased inside-mask from a signed distance (negative inside), in [0, 1]."""
  return np.clip(0.5 - dist * inv_pix, 0.0, 1.0)


def _pow15(a):
  return a * np.sqrt(a)


def _s(a):
  """Per-image scalars `[n]` -> `[n, 1, 1]`, to broadcast against masks `[n, h, w]`."""
  return np.asarray(a, np.float32).reshape(-1, 1, 1)


def _rgb(c):
  """A colour `[3]` or per-image colours `[n, 3]` -> `[3, n|1, 1, 1]` (channel-first canvas)."""
  c = np.asarray(c, np.float32)
  return c.reshape(3, 1, 1, 1) if c.ndim == 1 else c.T.reshape(3, -1, 1, 1)


def _ellipse(u, v, cu, cv, au, av):
  """Approximate signed distance to an axis-aligned ellipse."""
  k = np.sqrt(np.square((u - cu) / au) + np.square((v - cv) / av))
  return (k - 1.0) * np.minimum(au, av)


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
  pos = (np.arange(out_size) + 0.5) / out_size * (in_size - 1)
  lo = np.clip(np.floor(pos).astype(int), 0, in_size - 2)
  frac = pos - lo
  m = np.zeros((out_size, in_size), np.float32)
  m[np.arange(out_size), lo] = 1 - frac
  m[np.arange(out_size), lo + 1] = frac
  return m


def _blur(img, sigma):
  """Separable Gaussian blur of `[3, n, H, W]` in place, with a per-image sigma (pixels).

  Images are grouped by kernel radius so that the cost follows each image's own sigma; below a
  quarter pixel the blur is invisible and skipped.
  """
  radius = np.ceil(2.5 * sigma).astype(int) * (sigma >= 0.25)
  for r in np.unique(radius):
    if r < 1:
      continue
    idx = np.flatnonzero(radius == r)
    offsets = np.arange(r + 1, dtype=np.float32)
    k = np.exp(-0.5 * np.square(offsets[None] / sigma[idx, None]))
    k /= 2 * k.sum(axis=1, keepdims=True) - k[:, :1]
    sub = img[:, idx]
    for axis in (2, 3):
      pad = [(0, 0)] * 4
      pad[axis] = (r, r)
      padded = np.pad(sub, pad, mode="edge")
      size = sub.shape[axis]

      def tap(t):
        sl = [slice(None)] * 4
        sl[axis] = slice(r + t, r + t + size)
        return padded[tuple(sl)]

      out = sub * k[:, 0].reshape(1, -1, 1, 1)
      tmp = np.empty_like(sub)
      for t in range(1, r + 1):
        np.add(tap(t), tap(-t), out=tmp)
        tmp *= k[:, t].reshape(1, -1, 1, 1)
        out += tmp
      sub = out
    img[:, idx] = sub
  return img


class _Region:
  """Where a layer is evaluated: a shared pixel window (a view) or per-image patches (gathered).

  Small features (an eye, a nostril) cover a few pixels, so evaluating them on the full grid would
  dominate the cost. A window is the union over the batch of the feature's pixel boxes; when
  features move a lot between images (pose, shift), per-image patches of one common size are much
  smaller, at the price of a gather and a scatter. Layers see `u, v` (face units) and `x, y` (image
  units) of the region's pixels and composite with `over`; `commit` writes patches back.
  """

  def __init__(self, frame, rows, cols, per_image):
    self.frame = frame
    self.per_image = per_image
    self._targets = {}
    n, h, w = frame.n, frame.h, frame.w
    if per_image:
      ph, pw = per_image
      rr = rows[:, None, None] + np.arange(ph)[None, :, None]
      cc = cols[:, None, None] + np.arange(pw)[None, None, :]
      self._flat = ((np.arange(n)[:, None, None] * h + rr) * w + cc).reshape(-1)
      self._shape = (n, ph, pw)
      self.x = frame.x1d[cc]
      self.y = frame.y1d[rr]
    else:
      self._rows, self._cols = rows, cols
      self.x = frame.x[:, :, cols]
      self.y = frame.y[:, rows, :]
    self._u = self._v = None

  @property
  def u(self):
    if self._u is None:
      self._u, self._v = self.frame.to_face(self.x, self.y)
    return self._u

  @property
  def v(self):
    if self._v is None:
      self._u, self._v = self.frame.to_face(self.x, self.y)
    return self._v

  def take(self, full):
    """The region of a `[..., n, H, W]` array (a view for windows, a copy for patches)."""
    if self.per_image:
      lead = full.shape[:-3]
      return np.take(full.reshape(*lead, -1), self._flat, axis=-1).reshape(*lead, *self._shape)
    return full[..., self._rows, self._cols]

  def _local(self, full):
    key = id(full)
    if key not in self._targets:
      self._targets[key] = (full, self.take(full))
    return self._targets[key][1]

  def over(self, a, colour, target, alpha=None):
    """Premultiplied 'over' of coverage `a` with `colour` onto `target` (and coverage `alpha`)."""
    c = self._local(target)
    c += a * (colour - c)
    if alpha is not None:
      al = self._local(alpha)
      al += a * (1.0 - al)

  def commit(self):
    if self.per_image:
      for full, local in self._targets.values():
        lead = full.shape[:-3]
        full.reshape(*lead, -1)[..., self._flat] = local.reshape(*lead, -1)
    self._targets = {}


class _Frame:
  """Geometry of one batch: pixel grid, the image -> face coordinate map, and regions of boxes."""

  def __init__(self, p, h, w):
    f32 = np.float32
    self.n, self.h, self.w = p["yaw"].shape[0], h, w
    self.scale = (p["scale"] * _HEAD_SCALE).astype(f32)
    self.cx = p["shift_x"].astype(f32)
    self.cy = (p["shift_y"] + _HEAD_OFFSET).astype(f32)
    self.cr, self.sr = np.cos(p["roll"]).astype(f32), np.sin(p["roll"]).astype(f32)
    # Image coordinates in units of the image half-height; x spans +-w/h.
    self.y1d = ((np.arange(h, dtype=f32) + 0.5) - h / 2) / (h / 2)
    self.x1d = ((np.arange(w, dtype=f32) + 0.5) - w / 2) / (h / 2)
    self.y = self.y1d.reshape(1, h, 1)
    self.x = self.x1d.reshape(1, 1, w)
    self._inv_scale = _s(1.0 / self.scale)
    self.inv_pix_img = f32(h / 2.0)
    self.inv_pix = _s(self.scale) * self.inv_pix_img  # 1 / (one pixel in face units).

  def to_face(self, x, y):
    dx, dy = x - _s(self.cx), y - _s(self.cy)
    cr, sr = _s(self.cr), _s(self.sr)
    return (cr * dx + sr * dy) * self._inv_scale, (cr * dy - sr * dx) * self._inv_scale

  def _region(self, xs, ys, active, ops):
    """Region covering, per image, the bounding box of points `xs, ys` `[k, n]` (image units).

    `ops` is roughly how many array operations the caller will run on the region; it decides whether
    per-image patches (which cost a gather and a scatter) beat a shared window.
    """
    h, w = self.h, self.w
    cols = xs * (h / 2) + w / 2 - 0.5
    rows = ys * (h / 2) + h / 2 - 0.5
    r_lo = np.floor(rows.min(axis=0)).astype(int) - 1
    r_hi = np.ceil(rows.max(axis=0)).astype(int) + 2
    c_lo = np.floor(cols.min(axis=0)).astype(int) - 1
    c_hi = np.ceil(cols.max(axis=0)).astype(int) + 2
    on = np.ones(self.n, bool) if active is None else np.asarray(active, bool)
    on &= (r_hi > 0) & (r_lo < h) & (c_hi > 0) & (c_lo < w)
    if not on.any():
      return None
    r0, r1 = max(0, int(r_lo[on].min())), min(h, int(r_hi[on].max()))
    c0, c1 = max(0, int(c_lo[on].min())), min(w, int(c_hi[on].max()))
    ph = min(h, int((r_hi - r_lo)[on].max()))
    pw = min(w, int((c_hi - c_lo)[on].max()))
    # A gather + scatter of the canvas costs about as much as ~40 array operations on its pixels.
    if (ops + 40) * ph * pw < ops * (r1 - r0) * (c1 - c0):
      return _Region(self, np.clip(r_lo, 0, h - ph), np.clip(c_lo, 0, w - pw), per_image=(ph, pw))
    return _Region(self, slice(r0, r1), slice(c0, c1), per_image=None)

  def region(self, cu, cv, ru, rv, active=None, ops=20):
    """Region covering face-space boxes `cu +- ru, cv +- rv` of all (active) images."""
    n = self.n
    cu, cv, ru, rv = (np.broadcast_to(np.asarray(a, np.float32), (n,)) for a in (cu, cv, ru, rv))
    us = np.stack([cu - ru, cu + ru, cu - ru, cu + ru])
    vs = np.stack([cv - rv, cv - rv, cv + rv, cv + rv])
    xs = self.cx + self.scale * (self.cr * us - self.sr * vs)
    ys = self.cy + self.scale * (self.sr * us + self.cr * vs)
    return self._region(xs, ys, active, ops)

  def image_region(self, cx, cy, rx, ry, active=None, ops=20):
    """Region covering image-space boxes (image half-height units)."""
    n = self.n
    cx, cy, rx, ry = (np.broadcast_to(np.asarray(a, np.float32), (n,)) for a in (cx, cy, rx, ry))
    return self._region(np.stack([cx - rx, cx + rx]), np.stack([cy - ry, cy + ry]), active, ops)


def _render_batch(p: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
  """Renders a batch from per-image parameters (identity + nuisance); returns uint8 [n, H, W, 3]."""
  f32 = np.float32
  fr = _Frame(p, h, w)
  n = fr.n
  ip = fr.inv_pix
  ip_img = fr.inv_pix_img

  # Channel-first canvas: broadcasting a [n,h,w] mask over a leading channel axis is ~5x faster in
  # numpy than over a trailing one. `canvas` is premultiplied, `alpha` its coverage.
  canvas = np.zeros((3, n, h, w), f32)
  alpha = np.zeros((n, h, w), f32)

  def over(reg, a, colour):
    reg.over(a, colour, canvas, alpha)

  # ---- Background: smooth random colour field + clutter shapes, independent of the identity.
  by, bx = _bilinear_matrix(h, 5), _bilinear_matrix(w, 5)
  bg = np.ascontiguousarray((by @ p["bg_grid"].transpose(3, 0, 1, 2) @ bx.T).astype(f32))
  bgs = p["bg_shapes"]
  for j in range(bgs.shape[1]):
    s = bgs[:, j]
    cu, cv, au, av = s[:, 0] * 2 - 1, s[:, 1] * 2 - 1, 0.1 + 0.45 * s[:, 2], 0.1 + 0.45 * s[:, 3]
    reg = fr.image_region(cu, cv, au, av)
    if reg is None:
      continue
    xr, yr = reg.x, reg.y
    if j % 2 == 0:
      dist = np.maximum(np.abs(xr - _s(cu)) - _s(au), np.abs(yr - _s(cv)) - _s(av))
    else:
      dist = _ellipse(xr, yr, _s(cu), _s(cv), _s(au), _s(av))
    a = _soft(dist, ip_img) * _s(0.5 + 0.5 * s[:, 5])
    colour = _rgb(np.stack([s[:, 6], s[:, 7], 1 - s[:, 6]], axis=1))
    colour = 0.5 * colour + 0.5 * _rgb(p["bg_grid"][:, 0, 0])  # Desaturated towards the backdrop.
    reg.over(a, colour, bg)
    reg.commit()

  yaw, pitch = p["yaw"], p["pitch"]
  cyaw, syaw = np.cos(yaw), np.sin(yaw)
  cpitch, spitch = np.cos(pitch), np.sin(pitch)
  head_b = p["head_b"]
  head_a = p["head_b"] * p["head_ratio"]

  def project(x0, y0, depth=0.0):
    """Image position and horizontal foreshortening of a point on the head ellipsoid (per image)."""
    z0 = head_a * np.sqrt(np.clip(1 - (x0 / head_a) ** 2 - (y0 / head_b) ** 2, 0.02, 1.0)) + depth
    xp = x0 * cyaw + z0 * syaw
    yp = y0 * cpitch + z0 * spitch * 0.6
    ang = np.arctan2(x0, z0)
    fore = np.clip(np.cos(ang + yaw) / np.maximum(np.cos(ang), 0.2), 0.0, 1.3)
    return xp, yp, fore

  skin = _rgb(p["skin"])
  hair = _rgb(p["hair"])
  style = p["hair_style"]
  hair_angle = _s(p["hair_angle"])
  hair_cos, hair_sin = np.cos(hair_angle), np.sin(hair_angle)

  def hair_texture(reg):
    u, v = reg.u, reg.v
    # Curved strands as a triangle wave (much cheaper than a sine in numpy).
    phase = _s(p["hair_freq"] / (2 * np.pi)) * (u * hair_cos + v * hair_sin) + 0.8 * u * u
    strands = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
    return hair * (0.82 + 0.2 * strands)

  # ---- Torso and neck.
  reg = fr.region(0.0, 2.35, 1.9, 0.95)
  if reg is not None:
    over(reg, _soft(_ellipse(reg.u, reg.v, 0.0, 2.35, 1.9, 0.95), ip), _rgb(p["cloth"]))
    reg.commit()
  reg = fr.region(0.0, 1.05, head_a * 0.5, 0.75)
  if reg is not None:
    u, v = reg.u, reg.v
    neck = np.maximum(np.abs(u) - _s(head_a * 0.5), np.maximum(0.3 - v, v - 1.8))
    over(reg, _soft(neck, ip), skin * 0.82)
    reg.commit()

  # ---- Back hair: long styles fall to the shoulders, short ones only frame the crown.
  vol = p["hair_vol"] + p["hair_jitter"]
  is_long, is_vol = (style == 1).astype(f32), (style == 5).astype(f32)
  back_x = -0.25 * head_a * syaw
  back_au = head_a * (1.0 + vol + 0.25 * is_long + 0.15 * is_vol)
  back_av = head_b * (1.0 + vol + 0.45 * is_long + 0.1 * is_vol)
  back_cv = -0.08 + 0.45 * is_long
  reg = fr.region(back_x, back_cv, back_au, back_av, active=style != 2)
  if reg is not None:
    u, v = reg.u, reg.v
    back = _ellipse(u, v, _s(back_x), _s(back_cv), _s(back_au), _s(back_av))
    cut = np.where(_s(is_long) > 0, v - 1.35, v - _s(-0.05 + 0.1 * is_vol))
    over(reg, _soft(np.maximum(back, cut), ip) * _s(style != 2), hair_texture(reg))
    reg.commit()

  # ---- Ears (behind the head; the one the face turns away from slides behind it).
  es = p["ear_s"]
  for side in (-1.0, 1.0):
    ex = side * head_a * 0.99 - 0.3 * head_a * syaw
    reg = fr.region(ex, 0.12, es * 0.55 + 0.02, es + 0.02)
    if reg is not None:
      over(reg, _soft(_ellipse(reg.u, reg.v, _s(ex), 0.12, _s(es * 0.55), _s(es)), ip), skin * 0.88)
      reg.commit()

  # ---- Head: an egg-shaped ellipse, narrower at the chin.
  head_mask = np.zeros((n, h, w), f32)
  reg = fr.region(0.0, 0.0, head_a + 0.03, head_b + 0.03)
  if reg is not None:
    u, v = reg.u, reg.v
    ha = _s(head_a) * (1.0 - _s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
    head = _soft(_ellipse(u, v, 0.0, 0.0, ha, _s(head_b)), ip)
    over(reg, head, skin)
    reg.over(head, 1.0, head_mask)
    reg.commit()
  feature_shift = syaw * 0.65 * head_a  # Where the face's midline lies under yaw.

  # ---- Cheeks (a faint blush that gives some 3D feel).
  for side in (-1.0, 1.0):
    cxp, cyp, fore = project(side * 0.38 * head_a, 0.3)
    cw = 0.16 * np.maximum(fore, 0.3)
    reg = fr.region(cxp, cyp, cw + 0.06, 0.17)
    if reg is not None:
      blush = _soft(_ellipse(reg.u, reg.v, _s(cxp), _s(cyp), _s(cw), 0.11), 12.5)
      blush *= _s(p["cheek"] * np.clip(fore, 0, 1)) * reg.take(head_mask)
      over(reg, blush, skin * np.array([1.0, 0.8, 0.8], f32).reshape(3, 1, 1, 1))
      reg.commit()

  # ---- Beard (under the mouth; drawn before it so lips stay visible).
  mouth_v0 = p["eye_v"] + p["nose_len"] + p["mouth_dv"]
  reg = fr.region(0.0, 0.42, head_a + 0.03, 0.68, active=p["beard"] > 0)
  if reg is not None:
    u, v = reg.u, reg.v
    t = np.abs(u - _s(feature_shift)) / _s(head_a)
    beard_top = _s(mouth_v0 - 0.08) - 0.6 * t * t * np.sqrt(t)
    beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
    beard = _soft(beard_top - v, ip) * reg.take(head_mask) * _s(p["beard"] * p["beard_density"])
    over(reg, beard, beard_tex)
    reg.commit()

  # ---- Front hair: inside the head above a per-identity, per-style hairline.
  reg = fr.region(0.0, -0.73, head_a * (1.0 + 0.5 * vol) + 0.03, 0.65)
  if reg is not None:
    u, v = reg.u, reg.v
    uh = u - _s(feature_shift * 0.6)
    uh2 = np.square(uh)
    hairline = _s(p["hairline"] + p["hair_jitter"]) + 0.35 * uh2 + _s(p["hair_tilt"]) * uh
    # Style-specific hairlines, computed only for styles present in the batch.
    if np.any(style == 2):  # Receding.
      hairline = np.where(_s(style == 2), hairline - 0.35 + 0.6 * uh2, hairline)
    if np.any(style == 3):  # Fringe with a ragged edge.
      saw = 7.0 * uh
      saw = np.abs(saw - np.floor(saw) - 0.5)
      hairline = np.where(_s(style == 3), hairline + 0.15 + 0.06 * saw, hairline)
    if np.any(style == 4):  # Side part.
      part = 0.35 * np.abs(uh - _s(0.3 * head_a)) - 0.08
      hairline = np.where(_s(style == 4), hairline + part, hairline)
    hairline = np.minimum(hairline, -0.24)
    ha = _s(head_a) * (1.0 - _s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
    cap = _ellipse(u, v, 0.0, -0.03, ha * _s(1.0 + 0.5 * vol), _s(head_b * (1.0 + vol)))
    side_hair = np.maximum(_s(head_a * 0.8) - np.abs(u - _s(feature_shift * 0.3)), v + 0.1)
    front = np.maximum(cap, np.minimum(v - hairline, side_hair))
    over(reg, _soft(front, ip) * _s(np.where(style == 2, 0.9, 1.0)), hair_texture(reg))
    reg.commit()

  # ---- Eyes: socket shading, lash outline, sclera, iris, pupil, glint; brows; glasses.
  eye_w, eye_v = p["eye_w"], p["eye_v"]
  eye_h = np.maximum(eye_w * p["eye_h"] * p["eye_open"], 0.008)
  sclera = np.array([0.93, 0.9, 0.88], f32).reshape(3, 1, 1, 1)
  black = np.array([0.03, 0.03, 0.03], f32).reshape(3, 1, 1, 1)
  white_c = np.ones((3, 1, 1, 1), f32)
  has_glasses = p["glasses"] > 0
  gr = p["glasses_r"]
  gcol = _rgb(p["glasses_col"])
  for side in (-1.0, 1.0):
    ex, ey, fore = project(side * p["eye_dx"], eye_v)
    ew = eye_w * np.maximum(fore, 0.05)
    vis = _s(np.clip((fore - 0.1) * 5.0, 0.0, 1.0))
    bx, by, bfore = project(side * (p["eye_dx"] + 0.02), eye_v - p["brow_dv"] - p["brow_raise"])
    blen = eye_w * p["brow_len"] * np.maximum(bfore, 0.05)
    # One region for the eye, its brow and its glasses ring.
    half_u = np.maximum(np.maximum(1.4 * ew + 0.05, np.abs(bx - ex) + blen * 1.05 + 0.04),
                        has_glasses * ((gr + 0.02) * 1.3 + 0.03))
    top = np.minimum(by - 0.5 * blen - 0.1, ey - has_glasses * (gr + 0.05))
    bottom = ey + np.maximum(0.7 * eye_w + 0.05, has_glasses * (gr + 0.05))
    reg = fr.region(ex, (top + bottom) / 2, half_u, (bottom - top) / 2, ops=250)
    if reg is None:
      continue
    u, v = reg.u, reg.v
    sex, sey, sew, seh = _s(ex), _s(ey), _s(ew), _s(eye_h)
    socket = _ellipse(u, v, sex, sey - 0.03, sew * 1.4, _s(eye_w * 0.7))
    over(reg, _soft(socket, 16.0) * 0.35 * vis, skin * 0.75)
    du, dv = np.abs(u - sex), np.abs(v - sey)
    lw, lh = sew + 0.015, seh + 0.015
    lash = (np.sqrt(_pow15(du / lw) + np.square(dv / lh)) - 1.0) * lh
    over(reg, _soft(lash, ip) * vis, hair * 0.35)
    white = _soft((np.sqrt(_pow15(du / sew) + np.square(dv / seh)) - 1.0) * seh, ip) * vis
    over(reg, white, sclera)
    ir = _s(eye_w * p["iris_r"] * np.maximum(fore, 0.3))
    gx = sex + _s(p["gaze_x"]) * sew
    gy = sey + _s(p["gaze_y"]) * sew
    over(reg, _soft(_ellipse(u, v, gx, gy, ir * 0.9, ir), ip) * white, _rgb(p["iris"]))
    over(reg, _soft(_ellipse(u, v, gx, gy, ir * 0.42, ir * 0.45), ip) * white, black)
    glint = _ellipse(u, v, gx - ir * 0.35, gy - ir * 0.35, ir * 0.18, ir * 0.18)
    over(reg, _soft(glint, ip) * white * 0.7, white_c)

    # Brow: an arched, tapering band above the eye.
    theta = side * p["brow_angle"]
    ct, st = _s(np.cos(theta)), _s(np.sin(theta))
    sblen = _s(blen)
    su = (u - _s(bx)) * ct + (v - _s(by)) * st
    sv = (v - _s(by)) * ct - (u - _s(bx)) * st
    t = np.clip(su / sblen, -1.5, 1.5)
    sv = sv + _s(p["brow_arch"]) * 0.06 * (1 - t * t)
    thick = _s(p["brow_t"]) * (1.0 - 0.45 * (t * side + 1) / 2)
    brow = np.maximum(np.abs(sv) - thick, (np.abs(su) - sblen) * 0.5)
    brow_vis = _s(np.clip((bfore - 0.1) * 5.0, 0.0, 1.0) * p["brow_dark"])
    over(reg, _soft(brow, ip) * brow_vis, hair * 0.8)

    if has_glasses.any():
      rad = np.sqrt(np.square((u - sex) / _s(np.maximum(fore, 0.2))) + np.square(v - sey))
      ring = np.abs(rad - _s(gr)) - 0.012
      over(reg, _soft(ring, ip) * _s(p["glasses"]) * vis, gcol)
    reg.commit()

    # Glasses arm, from the ring towards the ear.
    arm_x = ex + side * gr * np.maximum(fore, 0.2)
    reg = fr.region(arm_x + side * 0.23, ey - 0.03, 0.26, 0.05, active=has_glasses)
    if reg is not None:
      u, v = reg.u, reg.v
      du = side * (u - _s(arm_x))
      arm = np.maximum(np.abs(v - _s(ey) + 0.03) - 0.01, np.where(du > 0, du - 0.45, 1.0))
      over(reg, _soft(arm, ip) * _s(p["glasses"]) * reg.take(head_mask), gcol)
      reg.commit()

  if has_glasses.any():
    lx, ly, _ = project(0.0, eye_v)
    half = np.maximum(p["eye_dx"] - p["glasses_r"], 0.02)
    reg = fr.region(lx, ly - 0.02, half + 0.02, 0.04, active=has_glasses)
    if reg is not None:
      u, v = reg.u, reg.v
      bridge = np.maximum(np.abs(v - _s(ly) + 0.02) - 0.012, np.abs(u - _s(lx)) - _s(half))
      over(reg, _soft(bridge, ip) * _s(p["glasses"]), gcol)
      reg.commit()

  # ---- Nose: bridge shading line, wings, nostrils, tip highlight.
  tip_v = eye_v + p["nose_len"]
  tx, ty, _ = project(0.0, tip_v, p["nose_depth"])
  rx, ry, _ = project(0.0, eye_v + 0.05, p["nose_depth"] * 0.3)
  nw = p["nose_w"]
  side_sign = np.where(syaw < 0, -1.0, 1.0)
  top, bottom = ry - 0.03, ty + 0.03 + 0.6 * nw
  reg = fr.region((tx + rx) / 2, (top + bottom) / 2, np.abs(tx - rx) / 2 + 1.1 * nw + 0.08,
                  (bottom - top) / 2, ops=100)
  if reg is not None:
    u, v = reg.u, reg.v
    stx, sty, srx, sry, snw = _s(tx), _s(ty), _s(rx), _s(ry), _s(nw)
    frac = np.clip((v - sry) / np.maximum(sty - sry, 0.05), 0.0, 1.0)
    line_x = srx + (stx - srx) * frac + 0.04 * _s(side_sign)
    line = np.maximum(np.abs(u - line_x) - 0.013, np.maximum(sry - v, v - sty + 0.02))
    over(reg, _soft(line, ip) * 0.35, skin * 0.6)
    over(reg, _soft(_ellipse(u, v, stx, sty + 0.02, snw, snw * 0.55), 25.0) * 0.45, skin * 0.8)
    nfore = _s(np.clip(cyaw, 0.3, 1.0))
    nostrils = np.minimum(
        _ellipse(u, v, stx - snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13),
        _ellipse(u, v, stx + snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13))
    over(reg, _soft(nostrils, ip) * 0.8, skin * 0.35)
    tip = _ellipse(u, v, stx - 0.02, sty - 0.02, snw * 0.35, snw * 0.25)
    over(reg, _soft(tip, 25.0) * 0.25, white_c)
    reg.commit()

  # ---- Mouth: curved lips, optional opening, moustache above.
  mx, my, mfore = project(0.0, mouth_v0)
  mw = p["mouth_w"] * np.clip(mfore, 0.3, 1.0)
  curve = p["mouth_curve"] + p["smile"]
  reg = fr.region(mx, my - 0.04, 1.2 * mw + 0.04, np.abs(curve) + 0.25, ops=100)
  if reg is not None:
    u, v = reg.u, reg.v
    smx, smy, smw = _s(mx), _s(my), _s(mw)
    s = np.clip((u - smx) / smw, -1.2, 1.2)
    centre = smy - _s(curve) * s * s
    taper = np.sqrt(np.clip(1 - s * s, 0.0, 1.0))
    opening = _s(p["mouth_open"]) * taper
    lt = _s(p["lip_t"])
    outside = np.abs(u - smx) - smw
    if np.any(p["moustache"] > 0):
      moust = np.maximum(np.abs(v - (smy - 0.1)) - 0.045 * (0.6 + 0.4 * taper),
                         np.abs(u - smx) - smw * 1.15)
      beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
      over(reg, _soft(moust, ip) * _s(np.minimum(p["moustache"], 1.0)), beard_tex)
    gap = np.maximum(np.abs(v - centre) - opening - 0.006, outside + 0.01)
    over(reg, _soft(gap, ip), np.array([0.18, 0.06, 0.06], f32).reshape(3, 1, 1, 1))
    upper = np.maximum(centre - opening - v - lt * (0.3 + 0.7 * taper), v - centre + opening * 0.5)
    upper = np.maximum(upper, outside)
    over(reg, _soft(upper, ip), _rgb(p["lip"]) * 0.9)
    lower = np.maximum(v - centre - opening - lt * 1.3 * (0.3 + 0.7 * taper), centre - v)
    lower = np.maximum(lower, outside)
    over(reg, _soft(lower, ip), _rgb(p["lip"]))
    reg.commit()

  # ---- Mole.
  mox, moy, mofore = project(p["mole_u"] * head_a, p["mole_v"])
  reg = fr.region(mox, moy, 0.06, 0.06, active=p["mole"] > 0)
  if reg is not None:
    mole = _soft(_ellipse(reg.u, reg.v, _s(mox), _s(moy), 0.035, 0.035), ip)
    over(reg, mole * _s(p["mole"] * (mofore > 0.3)) * reg.take(head_mask), skin * 0.4)
    reg.commit()

  # ---- Shading: Lambert on an ellipsoid around the head, plus ambient; then onto the background.
  u, v = fr.to_face(fr.x, fr.y)
  nx = (u + _s(feature_shift * 0.2)) * _s(1.0 / (head_a * 1.15))
  ny = v * _s(1.0 / (head_b * 1.15))
  nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.0, 1.0))
  light = p["light"]
  lam = np.clip(nx * _s(light[:, 0]) + ny * _s(light[:, 1]) + nz * _s(light[:, 2]), 0.0, 1.0)
  ls = _s(p["light_strength"])
  shade = (1.0 - ls) + (ls * 1.5) * lam
  img = bg
  img *= 1.0 - alpha
  img += canvas * shade

  # ---- Occluder (image coordinates).
  reg = fr.image_region(p["occ_x"], p["occ_y"], p["occ_w"], p["occ_h"], active=p["occ"] > 0)
  if reg is not None:
    xr, yr = reg.x, reg.y
    ox, oy, ow, oh = _s(p["occ_x"]), _s(p["occ_y"]), _s(p["occ_w"]), _s(p["occ_h"])
    obox = np.maximum(np.abs(xr - ox) - ow, np.abs(yr - oy) - oh)
    oell = _ellipse(xr, yr, ox, oy, ow, oh)
    odist = np.where(_s(p["occ_round"]) > 0, oell, obox)
    otex = _rgb(p["occ_col"]) * (0.8 + 0.2 * np.sin(_s(p["occ_freq"]) * (xr + 0.5 * yr)))
    reg.over(_soft(odist, ip_img) * _s(p["occ"]), otex, img)
    reg.commit()

  # ---- Photometric nuisance: light gradient, brightness, colour cast, contrast, gamma.
  gd = p["grad_dir"]
  grad = 1.0 + _s(p["grad_strength"]) * (fr.x * _s(np.cos(gd)) + fr.y * _s(np.sin(gd)))
  grad *= _s(p["brightness"])
  contrast = _s(p["contrast"])
  img *= grad * contrast
  img *= _rgb(p["cast"])
  img += 0.5 * (1.0 - contrast)
  np.clip(img, 0.0, 1.0, out=img)
  # Tone curve x / (x + g (1 - x)): gamma-like (g < 1 brightens), without a costly power.
  g = _s(p["gamma"])
  img /= img * (1.0 - g) + g

  # ---- Optics and sensor: blur, then noise.
  img = _blur(img, p["blur"])
  bank = _noise_bank(h, w)
  oy, ox = p["noise_offset"][:, 0].astype(int) % h, p["noise_offset"][:, 1].astype(int) % w
  amp = p["noise"] * p["noise_sign"]
  for i in np.flatnonzero(amp):
    img[:, i] += bank[:, oy[i]:oy[i] + h, ox[i]:ox[i] + w] * amp[i]
  img *= 255.0
  img += 0.5
  np.clip(img, 0, 255, out=img)
  return img.astype(np.uint8).transpose(1, 2, 3, 0)


def _chunks(h: int, w: int) -> int:
  return max(1, _CHUNK_PIXELS // (h * w))


def _render_pairs(ids: np.ndarray, imgs: np.ndarray, image_size: tuple[int, int], seed: int,
                  difficulty: float) -> Iterator[np.ndarray]:
  """Renders images `imgs` of identities `ids` in bounded-memory chunks; yields uint8 batches."""
  h, w = image_size
  step = _chunks(h, w)
  for start in range(0, len(ids), step):
    i, j = ids[start:start + step], imgs[start:start + step]
    params = {**_identity_params(i, seed), **_image_params(i, j, seed, difficulty, (h, w))}
    yield _render_batch(params, h, w)


def render_identity_images(identity_index: int, num_images: int, image_size, seed: int,
                           difficulty: float = 1.0, first_image: int = 0) -> np.ndarray:
  """Images `first_image .. first_image+num_images-1` of one identity.

  Args:
    identity_index: which identity (any non-negative int).
    num_images: how many images.
    image_size: `(H, W)` or an int for square images.
    seed: dataset seed; the same arguments always give identical bytes.
    difficulty: nuisance strength (0 = frontal, clean, same light; 1 = default; >1 harder).
    first_image: index of the first image, to continue a sequence.

  Returns:
    uint8 `[num_images, H, W, 3]`.
  """
  h, w = _check_size(image_size)
  _check_seed(seed, identity_index)
  if num_images < 0 or first_image < 0:
    raise ValueError(f"num_images and first_image must be >= 0, got {num_images}, {first_image}")
  _check_difficulty(difficulty)
  if num_images == 0:
    return np.zeros((0, h, w, 3), np.uint8)
  ids = np.full(num_images, int(identity_index), np.int64)
  imgs = np.arange(first_image, first_image + num_images, dtype=np.int64)
  return np.concatenate(list(_render_pairs(ids, imgs, (h, w), int(seed), difficulty)), axis=0)


def identity_name(identity_index: int) -> str:
  """Stable, sortable name of a synthetic identity."""
  return f"synth_{identity_index:07d}"


def _check_difficulty(difficulty: float):
  if not np.isfinite(difficulty) or difficulty < 0:
    raise ValueError(f"difficulty must be finite and >= 0, got {difficulty}")


def _dataset_pairs(num_identities, images_per_identity, seed, difficulty):
  _check_seed(seed)
  _check_difficulty(difficulty)
  if num_identities < 1 or images_per_identity < 1:
    raise ValueError(
        f"need >= 1 identity and image, got {num_identities} x {images_per_identity}")
  ids = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
  imgs = np.tile(np.arange(images_per_identity, dtype=np.int64), num_identities)
  return ids, imgs


def iter_dataset(num_identities: int, images_per_identity: int, image_size, seed: int,
                 difficulty: float = 1.0) -> Iterator[tuple[int, int, np.ndarray]]:
  """Yields `(identity_index, image_index, uint8 [H, W, 3])`, identity-major, in bounded memory."""
  h, w = _check_size(image_size)
  ids, imgs = _dataset_pairs(num_identities, images_per_identity, seed, difficulty)
  pos = 0
  for batch in _render_pairs(ids, imgs, (h, w), int(seed), difficulty):
    for image in batch:
      yield int(ids[pos]), int(imgs[pos]), image
      pos += 1


def render_dataset(num_identities: int, images_per_identity: int, image_size, seed: int,
                   difficulty: float = 1.0) -> FaceArrays:
  """All images of identities `0..num_identities-1`, in memory, identity-major."""
  h, w = _check_size(image_size)
  ids, imgs = _dataset_pairs(num_identities, images_per_identity, seed, difficulty)
  images = np.empty((ids.size, h, w, 3), np.uint8)
  pos = 0
  for batch in _render_pairs(ids, imgs, (h, w), int(seed), difficulty):
    images[pos:pos + len(batch)] = batch
    pos += len(batch)
  names = tuple(identity_name(k) for k in range(num_identities))
  return FaceArrays(images=images, labels=ids.astype(np.int32), identity_names=names)


def save_grid(images: np.ndarray, path: str, columns: int = 8) -> None:
  """Writes a PNG contact sheet of uint8 `[N, H, W, 3]` images (for looking at the renderer)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n, h, w, _ = images.shape
  rows = -(-n // columns)
  sheet = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
  for i in range(n):
    r, c = divmod(i, columns)
    sheet[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[i]
  Image.fromarray(sheet).save(path)
