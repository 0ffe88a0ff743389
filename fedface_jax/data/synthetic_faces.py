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

from fedface_jax.data import synthetic_canvas as sc
from fedface_jax.data import synthetic_parts
from fedface_jax.data.faces import FaceArrays

# Bump whenever the rendered bytes change: it is part of the TFDS config name, so stale prepared
# datasets and caches are never reused (tests/test_data_synthetic.py pins a summary of the output).
RENDERER_VERSION = 1

# Domain tags keep the identity, image and background random streams apart.
_IDENTITY_STREAM = 0x1D3A
_IMAGE_STREAM = 0x1A6E
_NOISE_STREAM = 0x7015

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


def _render_batch(p: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
  """Renders a batch from per-image parameters (identity + nuisance); returns uint8 [n, H, W, 3]."""
  img = synthetic_parts.draw(p, h, w)
  # Optics and sensor: blur, then noise.
  img = sc.blur(img, p["blur"])
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
