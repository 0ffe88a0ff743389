"""Procedural face renderer: any number of identities, deterministic, no download.

Why it exists: every command of the project (pretrain -> FedFace -> evaluate -> attack) must run on a fresh
machine, and FedFace needs *many* identities with several images each. Real face sets cannot be shipped,
so this module draws faces from a parametric model in pure numpy:

* An **identity** is a vector of latent parameters (head shape, skin tone, eyes, brows, nose, mouth, hair,
  ears, glasses, beard, a mole) drawn from one shared population distribution with moderate spread, seeded
  by `(seed, identity_index)`. Identities therefore look alike the way real people do.
* Each **image** adds nuisance seeded by `(seed, identity_index, image_index)`: yaw (features slide over an
  ellipsoidal head and foreshorten), pitch, in-plane roll, scale, shift, light direction and strength,
  colour cast, gamma, expression (smile, open mouth, eye openness, gaze), clothing, a cluttered
  background, an occluding patch, blur and sensor noise. `difficulty` scales all nuisance strengths, so
  a recogniser can be made neither trivial nor hopeless.

Image `i` of identity `k` does not depend on how many other images or identities are rendered, which makes
datasets of different sizes consistent with each other. Rendering is vectorised over a batch of images
(all layers are soft-edged masks evaluated on the pixel grid), so ~10k 64x64 images take seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from fedface_jax.data.faces import FaceArrays

# Domain tags keep the identity, image and background random streams apart.
_IDENTITY_STREAM = 0x1D3A
_IMAGE_STREAM = 0x1A6E

# Head half-height (face units) as a fraction of the image half-height.
_HEAD_SCALE = 0.6
# Vertical offset of the head centre in image half-heights (positive = down), as in aligned face crops.
_HEAD_OFFSET = 0.1
# Pixels rendered per chunk: bounds memory (~40 float32 temporaries of this size).
_CHUNK_PIXELS = 1 << 19

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


def identity_params(identity_index: int, seed: int) -> dict[str, np.ndarray]:
  """Latent parameters of one identity (face units: head half-height ~1, v points down).

  Drawn from a shared population distribution so that identities differ moderately, as real faces do.
  """
  _check_seed(seed, identity_index)
  rng = np.random.default_rng([_IDENTITY_STREAM, int(seed), int(identity_index)])
  n = rng.standard_normal(40)
  u = rng.random(24)
  p = {}
  p["head_b"] = 1.0 + 0.04 * n[0]
  p["head_ratio"] = np.clip(0.78 + 0.05 * n[1], 0.66, 0.92)
  p["chin_taper"] = np.clip(0.22 + 0.08 * n[2], 0.02, 0.45)
  tone = u[0] ** 1.3
  p["skin"] = np.clip(_SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone
                      + 0.025 * n[3:6], 0.05, 1.0).astype(np.float32)
  p["eye_v"] = -0.16 + 0.04 * n[6]
  p["eye_dx"] = 0.33 + 0.03 * n[7]
  p["eye_w"] = np.clip(0.125 + 0.014 * n[8], 0.08, 0.17)
  p["eye_h"] = np.clip(0.52 + 0.08 * n[9], 0.32, 0.75)
  p["iris"] = np.clip(_IRIS_PALETTE[rng.choice(len(_IRIS_PALETTE), p=_IRIS_WEIGHTS)]
                      + 0.04 * n[10:13], 0.0, 1.0).astype(np.float32)
  p["iris_r"] = np.clip(0.48 + 0.05 * n[13], 0.35, 0.6)
  hair = _HAIR_PALETTE[rng.choice(len(_HAIR_PALETTE), p=_HAIR_WEIGHTS)]
  p["hair"] = np.clip(hair * (1.0 + 0.15 * n[14]) + 0.03 * n[15:18], 0.0, 1.0).astype(np.float32)
  p["brow_dv"] = 0.13 + 0.025 * n[18]
  p["brow_t"] = np.clip(0.035 + 0.01 * n[19], 0.018, 0.06)
  p["brow_angle"] = 0.08 + 0.12 * n[20]
  p["brow_len"] = np.clip(1.35 + 0.15 * n[21], 1.0, 1.8)
  p["brow_arch"] = 0.25 + 0.2 * n[22]
  p["brow_dark"] = np.clip(0.75 + 0.15 * n[23], 0.4, 1.0)
  p["nose_len"] = np.clip(0.36 + 0.05 * n[24], 0.24, 0.5)
  p["nose_w"] = np.clip(0.12 + 0.022 * n[25], 0.07, 0.18)
  p["nose_depth"] = np.clip(0.25 + 0.06 * n[26], 0.1, 0.4)
  p["mouth_dv"] = np.clip(0.19 + 0.03 * n[27], 0.12, 0.27)
  p["mouth_w"] = np.clip(0.23 + 0.03 * n[28], 0.15, 0.32)
  p["lip_t"] = np.clip(0.04 + 0.01 * n[29], 0.02, 0.065)
  p["mouth_curve"] = 0.02 * n[30]
  p["lip"] = np.clip(p["skin"] * np.array([0.9, 0.62, 0.62], np.float32) + 0.03 * n[31:34],
                     0.0, 1.0).astype(np.float32)
  p["ear_s"] = np.clip(0.2 + 0.03 * n[34], 0.12, 0.28)
  p["hair_style"] = float(rng.integers(_NUM_HAIR_STYLES))
  p["hairline"] = np.clip(-0.55 + 0.08 * n[35], -0.75, -0.35)
  p["hair_vol"] = np.clip(0.1 + 0.04 * n[36], 0.03, 0.2)
  p["hair_tilt"] = 0.15 * n[37]
  p["hair_freq"] = 25.0 + 15.0 * u[1]
  p["hair_angle"] = np.pi * u[2]
  p["glasses"] = float(u[3] < 0.18)
  p["glasses_r"] = 0.17 + 0.03 * u[4]
  p["glasses_col"] = np.array([0.05, 0.05, 0.05], np.float32) + 0.4 * u[5:8].astype(np.float32)
  p["beard"] = float(u[8] < 0.2)
  p["beard_density"] = 0.5 + 0.45 * u[9]
  p["moustache"] = float(u[10] < 0.5) * p["beard"] + float(u[11] < 0.06)
  p["mole"] = float(u[12] < 0.35)
  p["mole_u"] = (u[13] - 0.5) * 1.0
  p["mole_v"] = -0.3 + 0.9 * u[14]
  p["cheek"] = 0.25 * u[15]
  return p


def image_params(identity_index: int, image_index: int, seed: int,
                 difficulty: float, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
  """Nuisance of one image; all strengths scale with `difficulty`."""
  _check_seed(seed, identity_index)
  rng = np.random.default_rng([_IMAGE_STREAM, int(seed), int(identity_index), int(image_index)])
  d = float(difficulty)
  n = rng.standard_normal(32)
  u = rng.random(40)
  h, w = image_size
  q = {}
  q["yaw"] = np.clip(0.35 * d * n[0], -1.1, 1.1)
  q["pitch"] = np.clip(0.15 * d * n[1], -0.5, 0.5)
  q["roll"] = np.clip(0.14 * d * n[2], -0.6, 0.6)
  q["scale"] = np.exp(0.09 * d * n[3])
  q["shift_x"] = 0.06 * d * n[4]
  q["shift_y"] = 0.05 * d * n[5]
  light_az = 2 * np.pi * u[0]
  light_el = 0.3 + 0.9 * u[1]
  q["light"] = np.array([np.cos(light_az) * np.cos(light_el), np.sin(light_az) * np.cos(light_el),
                         np.sin(light_el)], np.float32)
  q["light_strength"] = np.clip(0.45 * d * u[2], 0.0, 0.9)
  q["brightness"] = np.exp(0.2 * d * n[6])
  q["cast"] = np.exp(0.07 * d * n[7:10]).astype(np.float32)
  q["gamma"] = np.exp(0.15 * d * n[10])
  q["contrast"] = np.exp(0.15 * d * n[11])
  q["grad_dir"] = 2 * np.pi * u[3]
  q["grad_strength"] = 0.3 * d * u[4]
  q["smile"] = 0.05 * d * n[12]
  q["mouth_open"] = np.clip(0.06 * d * n[13], 0.0, 0.1) * (u[5] < 0.4)
  q["eye_open"] = np.clip(1.0 - 0.25 * d * abs(n[14]), 0.1, 1.0) * (0.15 if u[6] < 0.04 * d else 1.0)
  q["gaze_x"] = 0.18 * d * n[15]
  q["gaze_y"] = 0.08 * d * n[16]
  q["brow_raise"] = 0.025 * d * n[17]
  q["cloth"] = u[7:10].astype(np.float32) * 0.8 + 0.1
  q["hair_jitter"] = 0.03 * d * n[18]
  # Occluding patch (sunglasses, hand, scarf, microphone...): a textured box or ellipse, image units.
  q["occ"] = float(u[10] < min(1.0, 0.3 * d))
  q["occ_x"] = (u[11] - 0.5) * 1.4
  q["occ_y"] = (u[12] - 0.5) * 1.4
  q["occ_w"] = 0.12 + 0.3 * u[13]
  q["occ_h"] = 0.12 + 0.3 * u[14]
  q["occ_round"] = float(u[15] < 0.5)
  q["occ_col"] = u[16:19].astype(np.float32)
  q["occ_freq"] = 5 + 25 * u[19]
  # Background: low-frequency colour field plus three clutter shapes.
  q["bg_grid"] = (rng.random((5, 5, 3)) * 0.9 + 0.05).astype(np.float32)
  q["bg_shapes"] = rng.random((3, 8)).astype(np.float32)
  q["blur"] = abs(0.6 * d * n[19]) * (h / 64.0)
  q["noise"] = 0.03 * d * u[20]
  q["noise_field"] = rng.standard_normal((h, w, 3), dtype=np.float32)
  return q


def _soft(dist, inv_pix):
  """Anti-aliased inside-mask from a signed distance (negative inside), in [0, 1]."""
  return np.clip(0.5 - dist * inv_pix, 0.0, 1.0)


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
  """Separable Gaussian blur of `[3, n, H, W]` with a per-image sigma (pixels)."""
  radius = int(np.ceil(3 * float(np.max(sigma))))
  if radius < 1:
    return img
  offsets = np.arange(-radius, radius + 1, dtype=np.float32)
  k = np.exp(-0.5 * np.square(offsets[None] / np.maximum(sigma, 1e-3)[:, None]))
  k /= k.sum(axis=1, keepdims=True)
  for axis in (2, 3):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = np.pad(img, pad, mode="edge")
    out = np.zeros_like(img)
    size = img.shape[axis]
    for t in range(2 * radius + 1):
      sl = [slice(None)] * 4
      sl[axis] = slice(t, t + size)
      out += k[:, t].reshape(1, -1, 1, 1) * padded[tuple(sl)]
    img = out
  return img


def _stack(dicts: Sequence[dict]) -> dict[str, np.ndarray]:
  return {key: np.stack([np.asarray(d[key], np.float32) for d in dicts]) for key in dicts[0]}


class _Frame:
  """Geometry of one batch: pixel grid, face coordinates, and pixel windows of face-space boxes.

  Small features (an eye, a nostril) cover a few pixels; evaluating them on the full grid would dominate
  the cost. `window` maps a per-image face-space box to the union of its pixel bounding boxes over the
  batch, and layers are evaluated and composited on that window only.
  """

  def __init__(self, p, h, w):
    f32 = np.float32
    self.n, self.h, self.w = p["yaw"].shape[0], h, w
    self.scale = (p["scale"] * _HEAD_SCALE).astype(f32)
    self.cx = p["shift_x"].astype(f32)
    self.cy = (p["shift_y"] + _HEAD_OFFSET).astype(f32)
    self.cr, self.sr = np.cos(p["roll"]).astype(f32), np.sin(p["roll"]).astype(f32)
    # Image coordinates in units of the image half-height; x spans +-w/h.
    self.y = (((np.arange(h, dtype=f32) + 0.5) - h / 2) / (h / 2)).reshape(1, h, 1)
    self.x = (((np.arange(w, dtype=f32) + 0.5) - w / 2) / (h / 2)).reshape(1, 1, w)
    dx, dy = self.x - _s(self.cx), self.y - _s(self.cy)
    inv = 1.0 / _s(self.scale)
    self.u = (_s(self.cr) * dx + _s(self.sr) * dy) * inv
    self.v = (_s(self.cr) * dy - _s(self.sr) * dx) * inv
    self.inv_pix_img = f32(h / 2.0)
    self.inv_pix = _s(self.scale) * self.inv_pix_img  # 1 / (one pixel in face units).
    self.full = (slice(0, h), slice(0, w))

  def _bounds(self, xs, ys, active):
    if active is not None:
      active = np.asarray(active, bool)
      if not active.any():
        return None
      xs, ys = xs[:, active], ys[:, active]
    cols = xs * (self.h / 2) + self.w / 2 - 0.5
    rows = ys * (self.h / 2) + self.h / 2 - 0.5
    r0, r1 = max(0, int(np.floor(rows.min())) - 2), min(self.h, int(np.ceil(rows.max())) + 3)
    c0, c1 = max(0, int(np.floor(cols.min())) - 2), min(self.w, int(np.ceil(cols.max())) + 3)
    if r0 >= r1 or c0 >= c1:
      return None
    return slice(r0, r1), slice(c0, c1)

  def window(self, cu, cv, ru, rv, active=None):
    """Pixel window covering face-space boxes `cu +- ru, cv +- rv` of all (active) images."""
    n = self.n
    cu, cv, ru, rv = (np.broadcast_to(np.asarray(a, np.float32), (n,)) for a in (cu, cv, ru, rv))
    us = np.stack([cu - ru, cu + ru, cu - ru, cu + ru])
    vs = np.stack([cv - rv, cv - rv, cv + rv, cv + rv])
    xs = self.cx + self.scale * (self.cr * us - self.sr * vs)
    ys = self.cy + self.scale * (self.sr * us + self.cr * vs)
    return self._bounds(xs, ys, active)

  def image_window(self, cx, cy, rx, ry, active=None):
    """Pixel window covering image-space boxes (image half-height units)."""
    n = self.n
    cx, cy, rx, ry = (np.broadcast_to(np.asarray(a, np.float32), (n,)) for a in (cx, cy, rx, ry))
    return self._bounds(np.stack([cx - rx, cx + rx]), np.stack([cy - ry, cy + ry]), active)

  def uv(self, win):
    return self.u[:, win[0], win[1]], self.v[:, win[0], win[1]]


def _render_batch(p: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
  """Renders a batch from stacked per-image parameters (identity + nuisance). Returns uint8 [n,H,W,3]."""
  f32 = np.float32
  fr = _Frame(p, h, w)
  n = fr.n
  ip = fr.inv_pix
  ip_img = fr.inv_pix_img
  x, y = fr.x, fr.y

  # Channel-first canvas: broadcasting a [n,h,w] mask over a leading channel axis is ~5x faster in
  # numpy than over a trailing one.
  canvas = np.zeros((3, n, h, w), f32)
  alpha = np.zeros((n, h, w), f32)

  def over(win, a, colour):
    """Premultiplied 'over' of coverage `a` (window-sized) with `colour` onto the canvas window."""
    if win is None:
      return
    c = canvas[:, :, win[0], win[1]]
    c += a * (colour - c)
    al = alpha[:, win[0], win[1]]
    al += a * (1.0 - al)

  def ipw(win):
    return ip  # [n,1,1] broadcasts against any window.

  # ---- Background: smooth random colour field + clutter shapes, independent of the identity.
  by, bx = _bilinear_matrix(h, 5), _bilinear_matrix(w, 5)
  bg = np.einsum("hy,nyxc,wx->cnhw", by, p["bg_grid"], bx, optimize=True).astype(f32)
  bgs = p["bg_shapes"]
  for j in range(bgs.shape[1]):
    s = bgs[:, j]
    cu, cv, au, av = s[:, 0] * 2 - 1, s[:, 1] * 2 - 1, 0.1 + 0.45 * s[:, 2], 0.1 + 0.45 * s[:, 3]
    win = fr.image_window(cu, cv, au, av)
    if win is None:
      continue
    xw, yw = x[:, :, win[1]], y[:, win[0], :]
    box = np.maximum(np.abs(xw - _s(cu)) - _s(au), np.abs(yw - _s(cv)) - _s(av))
    ell = _ellipse(xw, yw, _s(cu), _s(cv), _s(au), _s(av))
    a = _soft(np.where(_s(s[:, 4]) < 0.5, box, ell), ip_img) * _s(0.5 + 0.5 * s[:, 5])
    colour = 0.5 * _rgb(np.stack([s[:, 6], s[:, 7], 1 - s[:, 6]], axis=1)) + 0.5 * _rgb(p["bg_grid"][:, 0, 0])
    b = bg[:, :, win[0], win[1]]
    b += a * (colour - b)

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

  def hair_texture(win):
    u, v = fr.uv(win)
    strands = np.sin(_s(p["hair_freq"]) * (u * hair_cos + v * hair_sin) + 2.0 * np.sin(6.0 * v + 4.0 * u))
    return hair * (0.9 + 0.1 * strands)

  # ---- Torso and neck.
  win = fr.window(0.0, 2.35, 1.9, 0.95)
  if win is not None:
    u, v = fr.uv(win)
    over(win, _soft(_ellipse(u, v, 0.0, 2.35, 1.9, 0.95), ip), _rgb(p["cloth"]))
  win = fr.window(0.0, 1.05, head_a * 0.5, 0.75)
  if win is not None:
    u, v = fr.uv(win)
    neck = np.maximum(np.abs(u) - _s(head_a * 0.5), np.maximum(0.3 - v, v - 1.8))
    over(win, _soft(neck, ip), skin * 0.82)

  # ---- Back hair: long styles fall to the shoulders, short ones only frame the crown.
  vol = p["hair_vol"] + p["hair_jitter"]
  is_long, is_vol = (style == 1).astype(f32), (style == 5).astype(f32)
  back_x = -0.25 * head_a * syaw
  back_au = head_a * (1.0 + vol + 0.25 * is_long + 0.15 * is_vol)
  back_av = head_b * (1.0 + vol + 0.45 * is_long + 0.1 * is_vol)
  back_cv = -0.08 + 0.45 * is_long
  win = fr.window(back_x, back_cv, back_au, back_av, active=style != 2)
  if win is not None:
    u, v = fr.uv(win)
    back = _ellipse(u, v, _s(back_x), _s(back_cv), _s(back_au), _s(back_av))
    cut = np.where(_s(is_long) > 0, v - 1.35, v - _s(-0.05 + 0.1 * is_vol))
    over(win, _soft(np.maximum(back, cut), ip) * _s(style != 2), hair_texture(win))

  # ---- Ears (behind the head; the one the face turns away from slides behind it).
  es = p["ear_s"]
  for side in (-1.0, 1.0):
    ex = side * head_a * 0.99 - 0.3 * head_a * syaw
    win = fr.window(ex, 0.12, es * 0.55 + 0.02, es + 0.02)
    if win is not None:
      u, v = fr.uv(win)
      over(win, _soft(_ellipse(u, v, _s(ex), 0.12, _s(es * 0.55), _s(es)), ip), skin * 0.88)

  # ---- Head: an egg-shaped ellipse, narrower at the chin.
  head_win = fr.window(0.0, 0.0, head_a + 0.03, head_b + 0.03)
  u, v = fr.uv(head_win)
  ha = _s(head_a) * (1.0 - _s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
  head_mask_w = _soft(_ellipse(u, v, 0.0, 0.0, ha, _s(head_b)), ip)
  over(head_win, head_mask_w, skin)
  head_mask = np.zeros((n, h, w), f32)
  head_mask[:, head_win[0], head_win[1]] = head_mask_w
  feature_shift = syaw * 0.65 * head_a  # Where the face's midline lies under yaw.

  # ---- Cheeks (a faint blush that gives some 3D feel).
  for side in (-1.0, 1.0):
    cxp, cyp, fore = project(side * 0.38 * head_a, 0.3)
    cw = 0.16 * np.maximum(fore, 0.3)
    win = fr.window(cxp, cyp, cw + 0.06, 0.17)
    if win is not None:
      u, v = fr.uv(win)
      blush = _soft(_ellipse(u, v, _s(cxp), _s(cyp), _s(cw), 0.11), 12.5) * _s(p["cheek"] * np.clip(fore, 0, 1))
      over(win, blush * head_mask[:, win[0], win[1]], skin * np.array([1.0, 0.8, 0.8], f32).reshape(3, 1, 1, 1))

  # ---- Beard (under the mouth; drawn before it so lips stay visible).
  mouth_v0 = p["eye_v"] + p["nose_len"] + p["mouth_dv"]
  win = fr.window(0.0, 0.42, head_a + 0.03, 0.68, active=p["beard"] > 0)
  if win is not None:
    u, v = fr.uv(win)
    t = np.abs(u - _s(feature_shift)) / _s(head_a)
    beard_top = _s(mouth_v0 - 0.08) - 0.6 * t * t * np.sqrt(t)
    beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
    beard = _soft(beard_top - v, ip) * head_mask[:, win[0], win[1]] * _s(p["beard"] * p["beard_density"])
    over(win, beard, beard_tex)

  # ---- Front hair: inside the head above a per-identity, per-style hairline.
  win = fr.window(0.0, -0.73, head_a * (1.0 + 0.5 * vol) + 0.03, 0.65)
  if win is not None:
    u, v = fr.uv(win)
    uh = u - _s(feature_shift * 0.6)
    uh2 = np.square(uh)
    hairline = _s(p["hairline"] + p["hair_jitter"]) + 0.35 * uh2 + _s(p["hair_tilt"]) * uh
    hairline = np.where(_s(style == 2), hairline - 0.35 + 0.6 * uh2, hairline)
    hairline = np.where(_s(style == 3), hairline + 0.17 + 0.025 * np.sin(45.0 * uh), hairline)
    hairline = np.where(_s(style == 4), hairline + 0.35 * np.abs(uh - _s(0.3 * head_a)) - 0.08, hairline)
    hairline = np.minimum(hairline, -0.24)
    ha_w = _s(head_a) * (1.0 - _s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
    cap = _ellipse(u, v, 0.0, -0.03, ha_w * _s(1.0 + 0.5 * vol), _s(head_b * (1.0 + vol)))
    side_hair = np.maximum(_s(head_a * 0.8) - np.abs(u - _s(feature_shift * 0.3)), v + 0.1)
    front = np.maximum(cap, np.minimum(v - hairline, side_hair))
    over(win, _soft(front, ip) * _s(np.where(style == 2, 0.9, 1.0)), hair_texture(win))

  # ---- Eyes: lash outline, sclera, iris, pupil, glint; socket shading above; brows; glasses.
  eye_w, eye_v = p["eye_w"], p["eye_v"]
  eye_h = np.maximum(eye_w * p["eye_h"] * p["eye_open"], 0.008)
  sclera = np.array([0.93, 0.9, 0.88], f32).reshape(3, 1, 1, 1)
  black = np.array([0.03, 0.03, 0.03], f32).reshape(3, 1, 1, 1)
  white_c = np.ones((3, 1, 1, 1), f32)
  has_glasses = p["glasses"] > 0
  for side in (-1.0, 1.0):
    ex, ey, fore = project(side * p["eye_dx"], eye_v)
    ew = eye_w * np.maximum(fore, 0.05)
    vis = _s(np.clip((fore - 0.1) * 5.0, 0.0, 1.0))
    win = fr.window(ex, ey - 0.03, 1.4 * ew + 0.05, 0.7 * eye_w + 0.08)
    if win is not None:
      u, v = fr.uv(win)
      sex, sey, sew, seh = _s(ex), _s(ey), _s(ew), _s(eye_h)
      socket = _ellipse(u, v, sex, sey - 0.03, sew * 1.4, _s(eye_w * 0.7))
      over(win, _soft(socket, 16.0) * 0.35 * vis, skin * 0.75)
      du, dv = np.abs(u - sex), np.abs(v - sey)
      lash = (np.sqrt((du / (sew + 0.015)) ** 1.6 + np.square(dv / (seh + 0.015))) - 1.0) * (seh + 0.015)
      over(win, _soft(lash, ip) * vis, hair * 0.35)
      white = _soft((np.sqrt((du / sew) ** 1.6 + np.square(dv / seh)) - 1.0) * seh, ip) * vis
      over(win, white, sclera)
      ir = _s(eye_w * p["iris_r"] * np.maximum(fore, 0.3))
      gx = sex + _s(p["gaze_x"]) * sew
      gy = sey + _s(p["gaze_y"]) * sew
      over(win, _soft(_ellipse(u, v, gx, gy, ir * 0.9, ir), ip) * white, _rgb(p["iris"]))
      over(win, _soft(_ellipse(u, v, gx, gy, ir * 0.42, ir * 0.45), ip) * white, black)
      glint = _ellipse(u, v, gx - ir * 0.35, gy - ir * 0.35, ir * 0.18, ir * 0.18)
      over(win, _soft(glint, ip) * white * 0.7, white_c)

    # Brow: an arched, tapering band above the eye.
    bx, by, bfore = project(side * (p["eye_dx"] + 0.02), eye_v - p["brow_dv"] - p["brow_raise"])
    blen = eye_w * p["brow_len"] * np.maximum(bfore, 0.05)
    win = fr.window(bx, by, blen * 1.05 + 0.04, 0.5 * blen + 0.1)
    if win is not None:
      u, v = fr.uv(win)
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
      over(win, _soft(brow, ip) * brow_vis, hair * 0.8)

    # Glasses: a ring around each eye and an arm towards the ear.
    if has_glasses.any():
      gr = p["glasses_r"]
      gcol = _rgb(p["glasses_col"])
      win = fr.window(ex, ey, (gr + 0.02) * 1.3 + 0.03, gr + 0.05, active=has_glasses)
      if win is not None:
        u, v = fr.uv(win)
        rad = np.sqrt(np.square((u - _s(ex)) / _s(np.maximum(fore, 0.2))) + np.square(v - _s(ey)))
        ring = np.abs(rad - _s(gr)) - 0.012
        over(win, _soft(ring, ip) * _s(p["glasses"]) * vis, gcol)
      arm_x = ex + side * gr * np.maximum(fore, 0.2)
      win = fr.window(arm_x + side * 0.23, ey - 0.03, 0.26, 0.05, active=has_glasses)
      if win is not None:
        u, v = fr.uv(win)
        du = side * (u - _s(arm_x))
        arm = np.maximum(np.abs(v - _s(ey) + 0.03) - 0.01, np.where(du > 0, du - 0.45, 1.0))
        over(win, _soft(arm, ip) * _s(p["glasses"]) * head_mask[:, win[0], win[1]], gcol)

  if has_glasses.any():
    lx, ly, _ = project(0.0, eye_v)
    half = np.maximum(p["eye_dx"] - p["glasses_r"], 0.02)
    win = fr.window(lx, ly - 0.02, half + 0.02, 0.04, active=has_glasses)
    if win is not None:
      u, v = fr.uv(win)
      bridge = np.maximum(np.abs(v - _s(ly) + 0.02) - 0.012, np.abs(u - _s(lx)) - _s(half))
      over(win, _soft(bridge, ip) * _s(p["glasses"]), _rgb(p["glasses_col"]))

  # ---- Nose: bridge shading line, wings, nostrils, tip highlight.
  tip_v = eye_v + p["nose_len"]
  tx, ty, _ = project(0.0, tip_v, p["nose_depth"])
  rx, ry, _ = project(0.0, eye_v + 0.05, p["nose_depth"] * 0.3)
  nw = p["nose_w"]
  side_sign = np.where(syaw < 0, -1.0, 1.0)
  top, bottom = ry - 0.03, ty + 0.03 + 0.6 * nw
  win = fr.window((tx + rx) / 2, (top + bottom) / 2, np.abs(tx - rx) / 2 + 1.1 * nw + 0.08,
                  (bottom - top) / 2)
  if win is not None:
    u, v = fr.uv(win)
    stx, sty, srx, sry, snw = _s(tx), _s(ty), _s(rx), _s(ry), _s(nw)
    frac = np.clip((v - sry) / np.maximum(sty - sry, 0.05), 0.0, 1.0)
    line_x = srx + (stx - srx) * frac + 0.04 * _s(side_sign)
    line = np.maximum(np.abs(u - line_x) - 0.013, np.maximum(sry - v, v - sty + 0.02))
    over(win, _soft(line, ip) * 0.35, skin * 0.6)
    over(win, _soft(_ellipse(u, v, stx, sty + 0.02, snw, snw * 0.55), 25.0) * 0.45, skin * 0.8)
    nfore = _s(np.clip(cyaw, 0.3, 1.0))
    nostrils = np.minimum(
        _ellipse(u, v, stx - snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13),
        _ellipse(u, v, stx + snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13))
    over(win, _soft(nostrils, ip) * 0.8, skin * 0.35)
    tip = _ellipse(u, v, stx - 0.02, sty - 0.02, snw * 0.35, snw * 0.25)
    over(win, _soft(tip, 25.0) * 0.25, white_c)

  # ---- Mouth: curved lips, optional opening, moustache above.
  mx, my, mfore = project(0.0, mouth_v0)
  mw = p["mouth_w"] * np.clip(mfore, 0.3, 1.0)
  curve = p["mouth_curve"] + p["smile"]
  win = fr.window(mx, my - 0.04, 1.2 * mw + 0.04, np.abs(curve) + 0.25)
  if win is not None:
    u, v = fr.uv(win)
    smx, smy, smw = _s(mx), _s(my), _s(mw)
    s = np.clip((u - smx) / smw, -1.2, 1.2)
    centre = smy - _s(curve) * s * s
    taper = np.sqrt(np.clip(1 - s * s, 0.0, 1.0))
    opening = _s(p["mouth_open"]) * taper
    lt = _s(p["lip_t"])
    outside = np.abs(u - smx) - smw
    moust = np.maximum(np.abs(v - (smy - 0.1)) - 0.045 * (0.6 + 0.4 * taper), np.abs(u - smx) - smw * 1.15)
    beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
    over(win, _soft(moust, ip) * _s(np.minimum(p["moustache"], 1.0)), beard_tex)
    gap = np.maximum(np.abs(v - centre) - opening - 0.006, outside + 0.01)
    over(win, _soft(gap, ip), np.array([0.18, 0.06, 0.06], f32).reshape(3, 1, 1, 1))
    upper = np.maximum(np.maximum(centre - opening - v - lt * (0.3 + 0.7 * taper), v - centre + opening * 0.5),
                       outside)
    over(win, _soft(upper, ip), _rgb(p["lip"]) * 0.9)
    lower = np.maximum(np.maximum(v - centre - opening - lt * 1.3 * (0.3 + 0.7 * taper), centre - v), outside)
    over(win, _soft(lower, ip), _rgb(p["lip"]))

  # ---- Mole.
  mox, moy, mofore = project(p["mole_u"] * head_a, p["mole_v"])
  win = fr.window(mox, moy, 0.06, 0.06, active=p["mole"] > 0)
  if win is not None:
    u, v = fr.uv(win)
    mole = _soft(_ellipse(u, v, _s(mox), _s(moy), 0.035, 0.035), ip)
    over(win, mole * _s(p["mole"] * (mofore > 0.3)) * head_mask[:, win[0], win[1]], skin * 0.4)

  # ---- Shading: Lambert on an ellipsoid around the head, plus ambient; then onto the background.
  u, v = fr.u, fr.v
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
  win = fr.image_window(p["occ_x"], p["occ_y"], p["occ_w"], p["occ_h"], active=p["occ"] > 0)
  if win is not None:
    xw, yw = x[:, :, win[1]], y[:, win[0], :]
    ox, oy, ow, oh = _s(p["occ_x"]), _s(p["occ_y"]), _s(p["occ_w"]), _s(p["occ_h"])
    obox = np.maximum(np.abs(xw - ox) - ow, np.abs(yw - oy) - oh)
    oell = _ellipse(xw, yw, ox, oy, ow, oh)
    odist = np.where(_s(p["occ_round"]) > 0, oell, obox)
    otex = _rgb(p["occ_col"]) * (0.8 + 0.2 * np.sin(_s(p["occ_freq"]) * (xw + 0.5 * yw)))
    oa = _soft(odist, ip_img) * _s(p["occ"])
    iw = img[:, :, win[0], win[1]]
    iw += oa * (otex - iw)

  # ---- Photometric nuisance: light gradient, brightness, colour cast, contrast, gamma.
  gd = p["grad_dir"]
  grad = 1.0 + _s(p["grad_strength"]) * (x * _s(np.cos(gd)) + y * _s(np.sin(gd)))
  img *= grad * _s(p["brightness"])
  img *= _rgb(p["cast"])
  contrast = _rgb(np.repeat(p["contrast"][:, None], 3, axis=1))
  img = (img - 0.5) * contrast + 0.5
  np.clip(img, 0.0, 1.0, out=img)
  img **= _rgb(np.repeat(p["gamma"][:, None], 3, axis=1))

  # ---- Optics and sensor: blur, then noise.
  img = _blur(img, p["blur"])
  img += _rgb(np.repeat(p["noise"][:, None], 3, axis=1)) * p["noise_field"].transpose(3, 0, 1, 2)
  out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return np.ascontiguousarray(out.transpose(1, 2, 3, 0))


def _chunks(h: int, w: int) -> int:
  return max(1, _CHUNK_PIXELS // (h * w))


def _render_pairs(pairs: Sequence[tuple[int, int]], image_size: tuple[int, int], seed: int,
                  difficulty: float) -> Iterator[np.ndarray]:
  """Renders `(identity, image)` pairs in memory-bounded chunks; yields uint8 batches in order."""
  h, w = image_size
  cache = {}
  step = _chunks(h, w)
  for start in range(0, len(pairs), step):
    params = []
    for ident, img in pairs[start:start + step]:
      if ident not in cache:
        cache = {ident: identity_params(ident, seed)}  # Pairs are grouped by identity: keep one.
      params.append({**cache[ident], **image_params(ident, img, seed, difficulty, (h, w))})
    yield _render_batch(_stack(params), h, w)


def render_identity_images(identity_index: int, num_images: int, image_size, seed: int,
                           difficulty: float = 1.0) -> np.ndarray:
  """Images `0..num_images-1` of one identity.

  Args:
    identity_index: which identity (any non-negative int).
    num_images: how many images.
    image_size: `(H, W)` or an int for square images.
    seed: dataset seed; the same arguments always give identical bytes.
    difficulty: nuisance strength (0 = frontal, clean, same light; 1 = default; >1 harder).

  Returns:
    uint8 `[num_images, H, W, 3]`.
  """
  h, w = _check_size(image_size)
  _check_seed(seed, identity_index)
  if num_images < 0:
    raise ValueError(f"num_images must be >= 0, got {num_images}")
  if difficulty < 0:
    raise ValueError(f"difficulty must be >= 0, got {difficulty}")
  pairs = [(int(identity_index), i) for i in range(num_images)]
  if not pairs:
    return np.zeros((0, h, w, 3), np.uint8)
  return np.concatenate(list(_render_pairs(pairs, (h, w), seed, difficulty)), axis=0)


def identity_name(identity_index: int) -> str:
  """Stable, sortable name of a synthetic identity."""
  return f"synth_{identity_index:07d}"


def iter_dataset(num_identities: int, images_per_identity: int, image_size, seed: int,
                 difficulty: float = 1.0) -> Iterator[tuple[int, int, np.ndarray]]:
  """Yields `(identity_index, image_index, uint8 [H, W, 3])`, identity-major, in bounded memory."""
  h, w = _check_size(image_size)
  _check_seed(seed)
  pairs = [(k, i) for k in range(num_identities) for i in range(images_per_identity)]
  pos = 0
  for batch in _render_pairs(pairs, (h, w), seed, difficulty):
    for image in batch:
      yield pairs[pos][0], pairs[pos][1], image
      pos += 1


def render_dataset(num_identities: int, images_per_identity: int, image_size, seed: int,
                   difficulty: float = 1.0) -> FaceArrays:
  """All images of identities `0..num_identities-1`, in memory, identity-major."""
  h, w = _check_size(image_size)
  _check_seed(seed)
  if num_identities < 1 or images_per_identity < 1:
    raise ValueError(
        f"need >= 1 identity and image, got {num_identities} x {images_per_identity}")
  images = np.empty((num_identities * images_per_identity, h, w, 3), np.uint8)
  pos = 0
  pairs = [(k, i) for k in range(num_identities) for i in range(images_per_identity)]
  for batch in _render_pairs(pairs, (h, w), seed, difficulty):
    images[pos:pos + len(batch)] = batch
    pos += len(batch)
  labels = np.repeat(np.arange(num_identities, dtype=np.int32), images_per_identity)
  names = tuple(identity_name(k) for k in range(num_identities))
  return FaceArrays(images=images, labels=labels, identity_names=names)


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
