"""Drawing primitives of the synthetic face renderer: soft masks, regions, the batch's geometry.

Why apart from the face parts: these know nothing about faces. Layers are anti-aliased masks from
signed distances, composited "over" a channel-first canvas `[3, n, H, W]`, and evaluated only on the
pixels a feature can touch (`Frame.region`). `synthetic_parts` draws the face with them.
"""

from __future__ import annotations

import numpy as np

# Head half-height (face units) as a fraction of the image half-height.
_HEAD_SCALE = 0.84
# Vertical offset of the head centre in image half-heights (positive = down), as in aligned crops.
_HEAD_OFFSET = -0.09


def soft(dist, inv_pix):
  """Anti-aliased inside-mask from a signed distance (negative inside), in [0, 1]."""
  return np.clip(0.5 - dist * inv_pix, 0.0, 1.0)


def pow15(a):
  return a * np.sqrt(a)


def s(a):
  """Per-image scalars `[n]` -> `[n, 1, 1]`, to broadcast against masks `[n, h, w]`."""
  return np.asarray(a, np.float32).reshape(-1, 1, 1)


def rgb(c):
  """A colour `[3]` or per-image colours `[n, 3]` -> `[3, n|1, 1, 1]` (channel-first canvas)."""
  c = np.asarray(c, np.float32)
  return c.reshape(3, 1, 1, 1) if c.ndim == 1 else c.T.reshape(3, -1, 1, 1)


def ellipse(u, v, cu, cv, au, av):
  """Approximate signed distance to an axis-aligned ellipse."""
  k = np.sqrt(np.square((u - cu) / au) + np.square((v - cv) / av))
  return (k - 1.0) * np.minimum(au, av)


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
  pos = (np.arange(out_size) + 0.5) / out_size * (in_size - 1)
  lo = np.clip(np.floor(pos).astype(int), 0, in_size - 2)
  frac = pos - lo
  m = np.zeros((out_size, in_size), np.float32)
  m[np.arange(out_size), lo] = 1 - frac
  m[np.arange(out_size), lo + 1] = frac
  return m


def blur(img, sigma):
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


class Region:
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


class Frame:
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
    self._inv_scale = s(1.0 / self.scale)
    self.inv_pix_img = f32(h / 2.0)
    self.inv_pix = s(self.scale) * self.inv_pix_img  # 1 / (one pixel in face units).

  def to_face(self, x, y):
    dx, dy = x - s(self.cx), y - s(self.cy)
    cr, sr = s(self.cr), s(self.sr)
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
      return Region(self, np.clip(r_lo, 0, h - ph), np.clip(c_lo, 0, w - pw), per_image=(ph, pw))
    return Region(self, slice(r0, r1), slice(c0, c1), per_image=None)

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
