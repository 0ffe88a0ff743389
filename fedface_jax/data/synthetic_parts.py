"""The parts of a synthetic face, each drawn by one function onto a shared canvas.

Why one function per part: the renderer (`synthetic_faces`) is a long sequence of layers; split
by part, each can be read and changed alone. The order in `draw` is the compositing order and is
part of the rendered bytes (`synthetic_faces.RENDERER_VERSION`), as is every expression here.
"""

from __future__ import annotations

import numpy as np

from fedface_jax.data import synthetic_canvas as sc


class Face:
  """What the parts of one batch share: parameters, geometry, canvas, pose, and the head's shape."""

  def __init__(self, p: dict[str, np.ndarray], h: int, w: int):
    f32 = np.float32
    self.p, self.h, self.w = p, h, w
    self.fr = fr = sc.Frame(p, h, w)
    self.n = n = fr.n
    self.ip = fr.inv_pix
    self.ip_img = fr.inv_pix_img
    # Channel-first canvas: broadcasting a [n,h,w] mask over a leading channel axis is ~5x faster
    # in numpy than over a trailing one. `canvas` is premultiplied, `alpha` its coverage.
    self.canvas = np.zeros((3, n, h, w), f32)
    self.alpha = np.zeros((n, h, w), f32)
    self.head_mask = np.zeros((n, h, w), f32)
    self.yaw, pitch = p["yaw"], p["pitch"]
    self.cyaw, self.syaw = np.cos(self.yaw), np.sin(self.yaw)
    self.cpitch, self.spitch = np.cos(pitch), np.sin(pitch)
    self.head_b = p["head_b"]
    self.head_a = p["head_b"] * p["head_ratio"]
    self.skin = sc.rgb(p["skin"])
    self.hair = sc.rgb(p["hair"])
    self.style = p["hair_style"]
    hair_angle = sc.s(p["hair_angle"])
    self.hair_cos, self.hair_sin = np.cos(hair_angle), np.sin(hair_angle)
    self.vol = p["hair_vol"] + p["hair_jitter"]
    self.feature_shift = self.syaw * 0.65 * self.head_a  # Where the face's midline lies under yaw.
    self.mouth_v0 = p["eye_v"] + p["nose_len"] + p["mouth_dv"]

  def over(self, reg, a, colour):
    reg.over(a, colour, self.canvas, self.alpha)

  def project(self, x0, y0, depth=0.0):
    """Image position and horizontal foreshortening of a point on the head ellipsoid (per image)."""
    head_a, head_b, yaw = self.head_a, self.head_b, self.yaw
    cyaw, syaw, cpitch, spitch = self.cyaw, self.syaw, self.cpitch, self.spitch
    z0 = head_a * np.sqrt(np.clip(1 - (x0 / head_a) ** 2 - (y0 / head_b) ** 2, 0.02, 1.0)) + depth
    xp = x0 * cyaw + z0 * syaw
    yp = y0 * cpitch + z0 * spitch * 0.6
    ang = np.arctan2(x0, z0)
    fore = np.clip(np.cos(ang + yaw) / np.maximum(np.cos(ang), 0.2), 0.0, 1.3)
    return xp, yp, fore

  def hair_texture(self, reg):
    p, hair, hair_cos, hair_sin = self.p, self.hair, self.hair_cos, self.hair_sin
    u, v = reg.u, reg.v
    # Curved strands as a triangle wave (much cheaper than a sine in numpy).
    phase = sc.s(p["hair_freq"] / (2 * np.pi)) * (u * hair_cos + v * hair_sin) + 0.8 * u * u
    strands = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
    return hair * (0.82 + 0.2 * strands)


def draw(p: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
  """The face over its background, lit and photometrically perturbed: float `[3, n, H, W]`.

  The parts are composited in this order (later ones cover earlier ones).
  """
  f = Face(p, h, w)
  bg = background(f)
  for draw_part in (torso_and_neck, back_hair, ears, head, cheeks, beard, front_hair, eyes, nose,
                    mouth, mole):
    draw_part(f)
  img = shade(f, bg)
  occluder(f, img)
  return photometric(f, img)


def background(f: Face) -> np.ndarray:
  """Smooth random colour field and clutter shapes, independent of the identity."""
  p, fr, h, w, ip_img = f.p, f.fr, f.h, f.w, f.ip_img
  f32 = np.float32
  by, bx = sc.bilinear_matrix(h, 5), sc.bilinear_matrix(w, 5)
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
      dist = np.maximum(np.abs(xr - sc.s(cu)) - sc.s(au), np.abs(yr - sc.s(cv)) - sc.s(av))
    else:
      dist = sc.ellipse(xr, yr, sc.s(cu), sc.s(cv), sc.s(au), sc.s(av))
    a = sc.soft(dist, ip_img) * sc.s(0.5 + 0.5 * s[:, 5])
    colour = sc.rgb(np.stack([s[:, 6], s[:, 7], 1 - s[:, 6]], axis=1))
    colour = 0.5 * colour + 0.5 * sc.rgb(p["bg_grid"][:, 0, 0])  # Desaturated towards the backdrop.
    reg.over(a, colour, bg)
    reg.commit()
  return bg


def torso_and_neck(f: Face) -> None:
  """Clothing and neck, below and behind the head."""
  p, fr, ip, over, head_a, skin = f.p, f.fr, f.ip, f.over, f.head_a, f.skin
  reg = fr.region(0.0, 2.35, 1.9, 0.95)
  if reg is not None:
    over(reg, sc.soft(sc.ellipse(reg.u, reg.v, 0.0, 2.35, 1.9, 0.95), ip), sc.rgb(p["cloth"]))
    reg.commit()
  reg = fr.region(0.0, 1.05, head_a * 0.5, 0.75)
  if reg is not None:
    u, v = reg.u, reg.v
    neck = np.maximum(np.abs(u) - sc.s(head_a * 0.5), np.maximum(0.3 - v, v - 1.8))
    over(reg, sc.soft(neck, ip), skin * 0.82)
    reg.commit()


def back_hair(f: Face) -> None:
  """Long styles fall to the shoulders, short ones only frame the crown."""
  fr, ip, over, style, vol = f.fr, f.ip, f.over, f.style, f.vol
  head_a, head_b, syaw, hair_texture = f.head_a, f.head_b, f.syaw, f.hair_texture
  f32 = np.float32
  is_long, is_vol = (style == 1).astype(f32), (style == 5).astype(f32)
  back_x = -0.25 * head_a * syaw
  back_au = head_a * (1.0 + vol + 0.25 * is_long + 0.15 * is_vol)
  back_av = head_b * (1.0 + vol + 0.45 * is_long + 0.1 * is_vol)
  back_cv = -0.08 + 0.45 * is_long
  reg = fr.region(back_x, back_cv, back_au, back_av, active=style != 2)
  if reg is not None:
    u, v = reg.u, reg.v
    back = sc.ellipse(u, v, sc.s(back_x), sc.s(back_cv), sc.s(back_au), sc.s(back_av))
    cut = np.where(sc.s(is_long) > 0, v - 1.35, v - sc.s(-0.05 + 0.1 * is_vol))
    over(reg, sc.soft(np.maximum(back, cut), ip) * sc.s(style != 2), hair_texture(reg))
    reg.commit()


def ears(f: Face) -> None:
  """Behind the head; the one the face turns away from slides behind it."""
  p, fr, ip, over, head_a, syaw, skin = f.p, f.fr, f.ip, f.over, f.head_a, f.syaw, f.skin
  es = p["ear_s"]
  for side in (-1.0, 1.0):
    ex = side * head_a * 0.99 - 0.3 * head_a * syaw
    reg = fr.region(ex, 0.12, es * 0.55 + 0.02, es + 0.02)
    if reg is not None:
      ear = sc.ellipse(reg.u, reg.v, sc.s(ex), 0.12, sc.s(es * 0.55), sc.s(es))
      over(reg, sc.soft(ear, ip), skin * 0.88)
      reg.commit()


def head(f: Face) -> None:
  """An egg-shaped ellipse, narrower at the chin; also fills `f.head_mask`."""
  p, fr, ip, over, skin = f.p, f.fr, f.ip, f.over, f.skin
  head_a, head_b, head_mask = f.head_a, f.head_b, f.head_mask
  reg = fr.region(0.0, 0.0, head_a + 0.03, head_b + 0.03)
  if reg is not None:
    u, v = reg.u, reg.v
    ha = sc.s(head_a) * (1.0 - sc.s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
    head = sc.soft(sc.ellipse(u, v, 0.0, 0.0, ha, sc.s(head_b)), ip)
    over(reg, head, skin)
    reg.over(head, 1.0, head_mask)
    reg.commit()


def cheeks(f: Face) -> None:
  """A faint blush that gives some 3D feel."""
  p, fr, over, project = f.p, f.fr, f.over, f.project
  head_a, head_mask, skin = f.head_a, f.head_mask, f.skin
  f32 = np.float32
  for side in (-1.0, 1.0):
    cxp, cyp, fore = project(side * 0.38 * head_a, 0.3)
    cw = 0.16 * np.maximum(fore, 0.3)
    reg = fr.region(cxp, cyp, cw + 0.06, 0.17)
    if reg is not None:
      blush = sc.soft(sc.ellipse(reg.u, reg.v, sc.s(cxp), sc.s(cyp), sc.s(cw), 0.11), 12.5)
      blush *= sc.s(p["cheek"] * np.clip(fore, 0, 1)) * reg.take(head_mask)
      over(reg, blush, skin * np.array([1.0, 0.8, 0.8], f32).reshape(3, 1, 1, 1))
      reg.commit()


def beard(f: Face) -> None:
  """Under the mouth; drawn before it so lips stay visible."""
  p, fr, ip, over, hair, head_mask = f.p, f.fr, f.ip, f.over, f.hair, f.head_mask
  head_a, feature_shift, mouth_v0 = f.head_a, f.feature_shift, f.mouth_v0
  reg = fr.region(0.0, 0.42, head_a + 0.03, 0.68, active=p["beard"] > 0)
  if reg is not None:
    u, v = reg.u, reg.v
    t = np.abs(u - sc.s(feature_shift)) / sc.s(head_a)
    beard_top = sc.s(mouth_v0 - 0.08) - 0.6 * t * t * np.sqrt(t)
    beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
    beard = sc.soft(beard_top - v, ip) * reg.take(head_mask) * sc.s(p["beard"] * p["beard_density"])
    over(reg, beard, beard_tex)
    reg.commit()


def front_hair(f: Face) -> None:
  """Inside the head above a per-identity, per-style hairline."""
  p, fr, ip, over, style, vol = f.p, f.fr, f.ip, f.over, f.style, f.vol
  head_a, head_b, feature_shift = f.head_a, f.head_b, f.feature_shift
  hair_texture = f.hair_texture
  reg = fr.region(0.0, -0.73, head_a * (1.0 + 0.5 * vol) + 0.03, 0.65)
  if reg is not None:
    u, v = reg.u, reg.v
    uh = u - sc.s(feature_shift * 0.6)
    uh2 = np.square(uh)
    hairline = sc.s(p["hairline"] + p["hair_jitter"]) + 0.35 * uh2 + sc.s(p["hair_tilt"]) * uh
    # Style-specific hairlines, computed only for styles present in the batch.
    if np.any(style == 2):  # Receding.
      hairline = np.where(sc.s(style == 2), hairline - 0.35 + 0.6 * uh2, hairline)
    if np.any(style == 3):  # Fringe with a ragged edge.
      saw = 7.0 * uh
      saw = np.abs(saw - np.floor(saw) - 0.5)
      hairline = np.where(sc.s(style == 3), hairline + 0.15 + 0.06 * saw, hairline)
    if np.any(style == 4):  # Side part.
      part = 0.35 * np.abs(uh - sc.s(0.3 * head_a)) - 0.08
      hairline = np.where(sc.s(style == 4), hairline + part, hairline)
    hairline = np.minimum(hairline, -0.24)
    ha = sc.s(head_a) * (1.0 - sc.s(p["chin_taper"]) * np.square(np.clip(v, 0.0, 1.2)))
    cap = sc.ellipse(u, v, 0.0, -0.03, ha * sc.s(1.0 + 0.5 * vol), sc.s(head_b * (1.0 + vol)))
    side_hair = np.maximum(sc.s(head_a * 0.8) - np.abs(u - sc.s(feature_shift * 0.3)), v + 0.1)
    front = np.maximum(cap, np.minimum(v - hairline, side_hair))
    over(reg, sc.soft(front, ip) * sc.s(np.where(style == 2, 0.9, 1.0)), hair_texture(reg))
    reg.commit()


def eyes(f: Face) -> None:
  """Socket shading, lash outline, sclera, iris, pupil, glint; brows; glasses."""
  p, fr, ip, over, project, skin, hair = f.p, f.fr, f.ip, f.over, f.project, f.skin, f.hair
  head_mask, f32 = f.head_mask, np.float32
  eye_w, eye_v = p["eye_w"], p["eye_v"]
  eye_h = np.maximum(eye_w * p["eye_h"] * p["eye_open"], 0.008)
  sclera = np.array([0.93, 0.9, 0.88], f32).reshape(3, 1, 1, 1)
  black = np.array([0.03, 0.03, 0.03], f32).reshape(3, 1, 1, 1)
  white_c = np.ones((3, 1, 1, 1), f32)
  has_glasses = p["glasses"] > 0
  gr = p["glasses_r"]
  gcol = sc.rgb(p["glasses_col"])
  for side in (-1.0, 1.0):
    ex, ey, fore = project(side * p["eye_dx"], eye_v)
    ew = eye_w * np.maximum(fore, 0.05)
    vis = sc.s(np.clip((fore - 0.1) * 5.0, 0.0, 1.0))
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
    sex, sey, sew, seh = sc.s(ex), sc.s(ey), sc.s(ew), sc.s(eye_h)
    socket = sc.ellipse(u, v, sex, sey - 0.03, sew * 1.4, sc.s(eye_w * 0.7))
    over(reg, sc.soft(socket, 16.0) * 0.35 * vis, skin * 0.75)
    du, dv = np.abs(u - sex), np.abs(v - sey)
    lw, lh = sew + 0.015, seh + 0.015
    lash = (np.sqrt(sc.pow15(du / lw) + np.square(dv / lh)) - 1.0) * lh
    over(reg, sc.soft(lash, ip) * vis, hair * 0.35)
    white = sc.soft((np.sqrt(sc.pow15(du / sew) + np.square(dv / seh)) - 1.0) * seh, ip) * vis
    over(reg, white, sclera)
    ir = sc.s(eye_w * p["iris_r"] * np.maximum(fore, 0.3))
    gx = sex + sc.s(p["gaze_x"]) * sew
    gy = sey + sc.s(p["gaze_y"]) * sew
    over(reg, sc.soft(sc.ellipse(u, v, gx, gy, ir * 0.9, ir), ip) * white, sc.rgb(p["iris"]))
    over(reg, sc.soft(sc.ellipse(u, v, gx, gy, ir * 0.42, ir * 0.45), ip) * white, black)
    glint = sc.ellipse(u, v, gx - ir * 0.35, gy - ir * 0.35, ir * 0.18, ir * 0.18)
    over(reg, sc.soft(glint, ip) * white * 0.7, white_c)

    # Brow: an arched, tapering band above the eye.
    theta = side * p["brow_angle"]
    ct, st = sc.s(np.cos(theta)), sc.s(np.sin(theta))
    sblen = sc.s(blen)
    su = (u - sc.s(bx)) * ct + (v - sc.s(by)) * st
    sv = (v - sc.s(by)) * ct - (u - sc.s(bx)) * st
    t = np.clip(su / sblen, -1.5, 1.5)
    sv = sv + sc.s(p["brow_arch"]) * 0.06 * (1 - t * t)
    thick = sc.s(p["brow_t"]) * (1.0 - 0.45 * (t * side + 1) / 2)
    brow = np.maximum(np.abs(sv) - thick, (np.abs(su) - sblen) * 0.5)
    brow_vis = sc.s(np.clip((bfore - 0.1) * 5.0, 0.0, 1.0) * p["brow_dark"])
    over(reg, sc.soft(brow, ip) * brow_vis, hair * 0.8)

    if has_glasses.any():
      rad = np.sqrt(np.square((u - sex) / sc.s(np.maximum(fore, 0.2))) + np.square(v - sey))
      ring = np.abs(rad - sc.s(gr)) - 0.012
      over(reg, sc.soft(ring, ip) * sc.s(p["glasses"]) * vis, gcol)
    reg.commit()

    # Glasses arm, from the ring towards the ear.
    arm_x = ex + side * gr * np.maximum(fore, 0.2)
    reg = fr.region(arm_x + side * 0.23, ey - 0.03, 0.26, 0.05, active=has_glasses)
    if reg is not None:
      u, v = reg.u, reg.v
      du = side * (u - sc.s(arm_x))
      arm = np.maximum(np.abs(v - sc.s(ey) + 0.03) - 0.01, np.where(du > 0, du - 0.45, 1.0))
      over(reg, sc.soft(arm, ip) * sc.s(p["glasses"]) * reg.take(head_mask), gcol)
      reg.commit()

  if has_glasses.any():
    lx, ly, _ = project(0.0, eye_v)
    half = np.maximum(p["eye_dx"] - p["glasses_r"], 0.02)
    reg = fr.region(lx, ly - 0.02, half + 0.02, 0.04, active=has_glasses)
    if reg is not None:
      u, v = reg.u, reg.v
      bridge = np.maximum(np.abs(v - sc.s(ly) + 0.02) - 0.012, np.abs(u - sc.s(lx)) - sc.s(half))
      over(reg, sc.soft(bridge, ip) * sc.s(p["glasses"]), gcol)
      reg.commit()


def nose(f: Face) -> None:
  """Bridge shading line, wings, nostrils, tip highlight."""
  p, fr, ip, over, project, skin = f.p, f.fr, f.ip, f.over, f.project, f.skin
  cyaw, syaw, eye_v = f.cyaw, f.syaw, p["eye_v"]
  white_c = np.ones((3, 1, 1, 1), np.float32)
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
    stx, sty, srx, sry, snw = sc.s(tx), sc.s(ty), sc.s(rx), sc.s(ry), sc.s(nw)
    frac = np.clip((v - sry) / np.maximum(sty - sry, 0.05), 0.0, 1.0)
    line_x = srx + (stx - srx) * frac + 0.04 * sc.s(side_sign)
    line = np.maximum(np.abs(u - line_x) - 0.013, np.maximum(sry - v, v - sty + 0.02))
    over(reg, sc.soft(line, ip) * 0.35, skin * 0.6)
    over(reg, sc.soft(sc.ellipse(u, v, stx, sty + 0.02, snw, snw * 0.55), 25.0) * 0.45, skin * 0.8)
    nfore = sc.s(np.clip(cyaw, 0.3, 1.0))
    nostrils = np.minimum(
        sc.ellipse(u, v, stx - snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13),
        sc.ellipse(u, v, stx + snw * 0.5 * nfore, sty + 0.035, snw * 0.26 * nfore, snw * 0.13))
    over(reg, sc.soft(nostrils, ip) * 0.8, skin * 0.35)
    tip = sc.ellipse(u, v, stx - 0.02, sty - 0.02, snw * 0.35, snw * 0.25)
    over(reg, sc.soft(tip, 25.0) * 0.25, white_c)
    reg.commit()


def mouth(f: Face) -> None:
  """Curved lips, optional opening, moustache above."""
  p, fr, ip, over, project, hair = f.p, f.fr, f.ip, f.over, f.project, f.hair
  mouth_v0, f32 = f.mouth_v0, np.float32
  mx, my, mfore = project(0.0, mouth_v0)
  mw = p["mouth_w"] * np.clip(mfore, 0.3, 1.0)
  curve = p["mouth_curve"] + p["smile"]
  reg = fr.region(mx, my - 0.04, 1.2 * mw + 0.04, np.abs(curve) + 0.25, ops=100)
  if reg is not None:
    u, v = reg.u, reg.v
    smx, smy, smw = sc.s(mx), sc.s(my), sc.s(mw)
    s = np.clip((u - smx) / smw, -1.2, 1.2)
    centre = smy - sc.s(curve) * s * s
    taper = np.sqrt(np.clip(1 - s * s, 0.0, 1.0))
    opening = sc.s(p["mouth_open"]) * taper
    lt = sc.s(p["lip_t"])
    outside = np.abs(u - smx) - smw
    if np.any(p["moustache"] > 0):
      moust = np.maximum(np.abs(v - (smy - 0.1)) - 0.045 * (0.6 + 0.4 * taper),
                         np.abs(u - smx) - smw * 1.15)
      beard_tex = hair * (0.75 + 0.25 * np.sin(60.0 * u + 5.0 * np.sin(40.0 * v)))
      over(reg, sc.soft(moust, ip) * sc.s(np.minimum(p["moustache"], 1.0)), beard_tex)
    gap = np.maximum(np.abs(v - centre) - opening - 0.006, outside + 0.01)
    over(reg, sc.soft(gap, ip), np.array([0.18, 0.06, 0.06], f32).reshape(3, 1, 1, 1))
    upper = np.maximum(centre - opening - v - lt * (0.3 + 0.7 * taper), v - centre + opening * 0.5)
    upper = np.maximum(upper, outside)
    over(reg, sc.soft(upper, ip), sc.rgb(p["lip"]) * 0.9)
    lower = np.maximum(v - centre - opening - lt * 1.3 * (0.3 + 0.7 * taper), centre - v)
    lower = np.maximum(lower, outside)
    over(reg, sc.soft(lower, ip), sc.rgb(p["lip"]))
    reg.commit()


def mole(f: Face) -> None:
  """A small dark spot on the face, where the identity has one."""
  p, fr, ip, over, project = f.p, f.fr, f.ip, f.over, f.project
  head_a, head_mask, skin = f.head_a, f.head_mask, f.skin
  mox, moy, mofore = project(p["mole_u"] * head_a, p["mole_v"])
  reg = fr.region(mox, moy, 0.06, 0.06, active=p["mole"] > 0)
  if reg is not None:
    mole = sc.soft(sc.ellipse(reg.u, reg.v, sc.s(mox), sc.s(moy), 0.035, 0.035), ip)
    over(reg, mole * sc.s(p["mole"] * (mofore > 0.3)) * reg.take(head_mask), skin * 0.4)
    reg.commit()


def shade(f: Face, bg: np.ndarray) -> np.ndarray:
  """Lambert on an ellipsoid around the head, plus ambient; then onto the background `bg`."""
  p, fr, alpha, canvas = f.p, f.fr, f.alpha, f.canvas
  head_a, head_b, feature_shift = f.head_a, f.head_b, f.feature_shift
  u, v = fr.to_face(fr.x, fr.y)
  nx = (u + sc.s(feature_shift * 0.2)) * sc.s(1.0 / (head_a * 1.15))
  ny = v * sc.s(1.0 / (head_b * 1.15))
  nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.0, 1.0))
  light = p["light"]
  lam = np.clip(nx * sc.s(light[:, 0]) + ny * sc.s(light[:, 1]) + nz * sc.s(light[:, 2]), 0.0, 1.0)
  ls = sc.s(p["light_strength"])
  shade = (1.0 - ls) + (ls * 1.5) * lam
  img = bg
  img *= 1.0 - alpha
  img += canvas * shade
  return img


def occluder(f: Face, img: np.ndarray) -> None:
  """A patch over the image (image coordinates), drawn into `img` in place."""
  p, fr, ip_img = f.p, f.fr, f.ip_img
  reg = fr.image_region(p["occ_x"], p["occ_y"], p["occ_w"], p["occ_h"], active=p["occ"] > 0)
  if reg is not None:
    xr, yr = reg.x, reg.y
    ox, oy, ow, oh = sc.s(p["occ_x"]), sc.s(p["occ_y"]), sc.s(p["occ_w"]), sc.s(p["occ_h"])
    obox = np.maximum(np.abs(xr - ox) - ow, np.abs(yr - oy) - oh)
    oell = sc.ellipse(xr, yr, ox, oy, ow, oh)
    odist = np.where(sc.s(p["occ_round"]) > 0, oell, obox)
    otex = sc.rgb(p["occ_col"]) * (0.8 + 0.2 * np.sin(sc.s(p["occ_freq"]) * (xr + 0.5 * yr)))
    reg.over(sc.soft(odist, ip_img) * sc.s(p["occ"]), otex, img)
    reg.commit()


def photometric(f: Face, img: np.ndarray) -> np.ndarray:
  """Light gradient, brightness, colour cast, contrast, gamma; in place."""
  p, fr = f.p, f.fr
  gd = p["grad_dir"]
  grad = 1.0 + sc.s(p["grad_strength"]) * (fr.x * sc.s(np.cos(gd)) + fr.y * sc.s(np.sin(gd)))
  grad *= sc.s(p["brightness"])
  contrast = sc.s(p["contrast"])
  img *= grad * contrast
  img *= sc.rgb(p["cast"])
  img += 0.5 * (1.0 - contrast)
  np.clip(img, 0.0, 1.0, out=img)
  # Tone curve x / (x + g (1 - x)): gamma-like (g < 1 brightens), without a costly power.
  g = sc.s(p["gamma"])
  img /= img * (1.0 - g) + g
  return img
