"""Embeddings of a uint8 image set with a jitted model function, optionally with flip test.

Why: every evaluation (held-out identities, LFW, IJB) starts by embedding thousands to hundreds of
thousands of images. Doing it batch by batch with a fixed padded batch shape means the jitted
function compiles exactly once, and dispatching batch k+1 before fetching batch k keeps an
accelerator busy while the host gathers and preprocesses the next batch (memmaps included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedface_jax.evaluation import pairs

# Show a progress bar (with ETA) once a loop has at least this many batches.
_PROGRESS_MIN_BATCHES = 20


def _preprocess_fn() -> Callable[[np.ndarray], Any]:
  """FedFace's normalisation `(x - 127.5) / 128`, from models.common when it exists.

  Imported lazily so that this module works before (and independently of) the models package,
  while a single definition wins as soon as `fedface_jax.models.common.preprocess` is present.
  """
  try:
    from fedface_jax.models.common import preprocess  # pylint: disable=g-import-not-at-top
    return preprocess
  except ImportError:
    return lambda x: (np.asarray(x, np.float32) - 127.5) / 128.0


def compute_embeddings(embed_fn: Callable[[Any], Any], images_u8: Any, batch_size: int = 256,
                       flip: bool = False, mode: str = "sum", progress: bool | None = None,
                       desc: str = "embed") -> np.ndarray:
  """Embeds `images_u8` ([N, H, W, 3] uint8, e.g. a memmap) batch by batch.

  Args:
    embed_fn: ``embed_fn(float_images [B, H, W, 3]) -> [B, D]``, typically a jitted
      ``lambda x: model.apply({"params": p}, x)``. Always called with exactly `batch_size` rows
      (the last batch is zero-padded) so it compiles once.
    images_u8: uint8 images, NHWC.
    batch_size: rows per call.
    flip: also embed the horizontally flipped images (test-time augmentation).
    mode: with flip, ``"sum"``: L2norm(f(x) + f(flip x)) (insightface F2 / common practice);
      ``"concat"``: ``[f(x), f(flip x)]`` un-normalised, [N, 2D], so that callers can pool the
      halves themselves (insightface IJB pipeline with detector-score weighting).
    progress: tqdm bar with ETA; default: when there are at least 20 batches.
    desc: label of the progress bar.

  Returns:
    float32 [N, D] (L2-normalised unless ``flip and mode == "concat"``).
  """
  if mode not in ("sum", "concat"):
    raise ValueError(f"unknown flip mode {mode!r}; use 'sum' or 'concat'")
  images = images_u8
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected [N, H, W, 3] images, got shape {images.shape}")
  if images.dtype != np.uint8:
    raise ValueError(f"expected uint8 images, got {images.dtype}")
  n = images.shape[0]
  if n == 0:
    raise ValueError("no images to embed")
  preprocess = _preprocess_fn()
  num_batches = -(-n // batch_size)
  show = num_batches >= _PROGRESS_MIN_BATCHES if progress is None else progress
  bar = None
  if show:
    from fedface_jax import progress as progress_lib  # pylint: disable=g-import-not-at-top
    bar = progress_lib.progress(n, desc, unit="img")

  def dispatch(start: int) -> tuple[int, Any, Any]:
    batch = np.asarray(images[start:start + batch_size])
    count = batch.shape[0]
    if count < batch_size:  # fixed shape -> no recompile for the tail
      pad = np.zeros((batch_size - count,) + batch.shape[1:], np.uint8)
      batch = np.concatenate([batch, pad])
    out = embed_fn(preprocess(batch))
    out_flip = embed_fn(preprocess(batch[:, :, ::-1, :])) if flip else None
    return count, out, out_flip

  chunks = []
  try:
    pending = dispatch(0)
    for start in range(batch_size, n + batch_size, batch_size):
      nxt = dispatch(start) if start < n else None  # async: device works on it meanwhile
      count, out, out_flip = pending
      emb = np.asarray(out, dtype=np.float32)[:count]
      if flip:
        emb_flip = np.asarray(out_flip, dtype=np.float32)[:count]
        emb = (pairs.l2_normalize(emb + emb_flip) if mode == "sum"
               else np.concatenate([emb, emb_flip], axis=1))
      else:
        emb = pairs.l2_normalize(emb)
      chunks.append(emb)
      if bar is not None:
        bar.update(count)
      pending = nxt
  finally:
    if bar is not None:
      bar.close()
  return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)
