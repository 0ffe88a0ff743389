"""Verification pairs from a labelled image set, and their cosine scores.

Why: our held-out evaluation identities are not LFW/IJB, so genuine/impostor pairs have to be
built from labels. Low-FAR numbers need many impostors: for a few thousand images *every* pair is
cheap to score blockwise (``all_pairs_scores``), which gives exact TAR@FAR down to 1/|I|; for
larger sets ``make_verification_pairs`` keeps every genuine pair and samples impostor pairs
uniformly without duplicates, deterministically from a seed so that rounds and methods are scored
on identical pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_CHUNK = 65536


def _labels(labels: Any) -> np.ndarray:
  lab = np.asarray(labels).reshape(-1)
  if lab.size < 2:
    raise ValueError(f"need at least two images, got {lab.size}")
  return lab


def count_pairs(labels: Any) -> tuple[int, int]:
  """Number of genuine and impostor unordered pairs (i < j) for these labels."""
  lab = _labels(labels)
  _, counts = np.unique(lab, return_counts=True)
  counts = counts.astype(np.int64)
  n = lab.size
  genuine = int(np.sum(counts * (counts - 1) // 2))
  return genuine, int(n * (n - 1) // 2 - genuine)


def genuine_pairs(labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """All (i, j), i < j, with equal labels, sorted by (i, j)."""
  lab = _labels(labels)
  order = np.argsort(lab, kind="stable")
  _, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
  idx_a, idx_b = [], []
  for start, c in zip(starts, counts):
    if c < 2:
      continue
    members = np.sort(order[start:start + c])
    a, b = np.triu_indices(c, k=1)
    idx_a.append(members[a])
    idx_b.append(members[b])
  if not idx_a:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  a = np.concatenate(idx_a).astype(np.int64)
  b = np.concatenate(idx_b).astype(np.int64)
  o = np.lexsort((b, a))
  return a[o], b[o]


def sample_impostor_pairs(labels: Any, num_pairs: int, seed: int
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Uniform sample, without replacement, of distinct-label unordered pairs (i < j).

  Rejection sampling of ordered index pairs maps uniformly onto unordered pairs; keeping first
  occurrences in draw order makes the result a uniform sample without replacement. When more
  than half of all impostor pairs are requested, all are enumerated and a random subset taken
  (rejection would stall). Output is sorted by (i, j).
  """
  lab = _labels(labels)
  n = lab.size
  _, total = count_pairs(lab)
  if num_pairs < 0:
    raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
  num = min(int(num_pairs), total)
  rng = np.random.default_rng(seed)
  if num == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  if 2 * num > total:
    a, b = np.triu_indices(n, k=1)
    keep = lab[a] != lab[b]
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    pick = np.sort(rng.choice(a.size, size=num, replace=False))
    return a[pick], b[pick]
  keys = np.zeros(0, np.int64)
  while keys.size < num:
    draw = max(1024, int(1.3 * (num - keys.size) * (n * (n - 1) / 2) / total))
    i = rng.integers(0, n, size=draw, dtype=np.int64)
    j = rng.integers(0, n, size=draw, dtype=np.int64)
    ok = lab[i] != lab[j]  # also excludes i == j
    lo, hi = np.minimum(i[ok], j[ok]), np.maximum(i[ok], j[ok])
    keys = np.concatenate([keys, lo * n + hi])
    _, first = np.unique(keys, return_index=True)
    keys = keys[np.sort(first)]  # dedupe, keeping draw order
  keys = np.sort(keys[:num])
  return keys // n, keys % n


def make_verification_pairs(labels: Any, num_impostor_pairs: int, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All genuine pairs plus sampled impostor pairs: ``(idx_a, idx_b, is_same)``.

  Genuine pairs come first (sorted), then impostor pairs (sorted); ``idx_a < idx_b`` always.
  The same labels, count and seed always give the same pairs.
  """
  ga, gb = genuine_pairs(labels)
  ia, ib = sample_impostor_pairs(labels, num_impostor_pairs, seed)
  is_same = np.concatenate([np.ones(ga.size, bool), np.zeros(ia.size, bool)])
  return np.concatenate([ga, ia]), np.concatenate([gb, ib]), is_same


def l2_normalize(x: Any, eps: float = 1e-12, dtype=np.float32) -> np.ndarray:
  """Row-wise L2 normalisation in `dtype` (zero rows stay zero, like sklearn's normalize).

  The one numpy definition (evaluation, protocols); the jax one is `fedface_jax.losses`.
  """
  x = np.asarray(x, dtype=dtype)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norm, eps)


def pair_scores(embeddings: Any, idx_a: Any, idx_b: Any, chunk: int = DEFAULT_CHUNK
                ) -> np.ndarray:
  """Cosine similarity of each pair, gathered in chunks to bound memory (float32)."""
  emb = l2_normalize(embeddings)
  a = np.asarray(idx_a, dtype=np.int64)
  b = np.asarray(idx_b, dtype=np.int64)
  if a.shape != b.shape:
    raise ValueError(f"idx_a {a.shape} and idx_b {b.shape} differ")
  out = np.empty(a.size, dtype=np.float32)
  for s in range(0, a.size, chunk):
    out[s:s + chunk] = np.einsum("nd,nd->n", emb[a[s:s + chunk]], emb[b[s:s + chunk]])
  return out


def all_pairs_scores(embeddings: Any, labels: Any, block: int = 2048
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Cosine score of every unordered pair, split into (genuine, impostor), float32.

  Computed in row blocks of the upper triangle (one ``block x N`` matmul at a time), so memory is
  the outputs plus ``block * N`` floats. Order: row-major over (i, j), i < j.
  """
  emb = l2_normalize(embeddings)
  lab = _labels(labels)
  if emb.shape[0] != lab.size:
    raise ValueError(f"{emb.shape[0]} embeddings but {lab.size} labels")
  n = lab.size
  num_gen, num_imp = count_pairs(lab)
  genuine = np.empty(num_gen, np.float32)
  impostor = np.empty(num_imp, np.float32)
  pg = pi = 0
  for r0 in range(0, n, block):
    r1 = min(n, r0 + block)
    sims = emb[r0:r1] @ emb[r0:].T  # [rows, n - r0]
    rows = np.arange(r0, r1)[:, None]
    cols = np.arange(r0, n)[None, :]
    upper = cols > rows
    same = lab[r0:r1, None] == lab[None, r0:]
    g = sims[upper & same]
    i = sims[upper & ~same]
    genuine[pg:pg + g.size] = g
    impostor[pi:pi + i.size] = i
    pg += g.size
    pi += i.size
  assert pg == num_gen and pi == num_imp
  return genuine, impostor
