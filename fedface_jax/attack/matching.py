"""Pairing reconstructions with originals when the attack does not fix the order.

The paper-faithful attack ties dummy image i to label i, so the reference scores by index
(ATTACK.md 6). Attacks without that tie (unknown labels, repeated labels, FedFace victims whose
images are interchangeable within a victim) can return the right images in a different order;
breaching re-orders by Hungarian matching before scoring (ATTACK.md 8). Matching always *raises*
average scores, so report which pairing was used.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from fedface_jax.attack import metrics


def cost_matrix(originals: Any, reconstructions: Any,
                cost: str | Callable[[np.ndarray, np.ndarray], float] = "mse") -> np.ndarray:
  """[N_orig, N_rec] pairwise cost on uint8-rounded images.

  ``cost`` is 'mse', 'neg_psnr', or a callable(orig, rec) -> float.
  """
  a, b = metrics.to_uint8(originals), metrics.to_uint8(reconstructions)
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(f"image shapes differ: {a.shape[1:]} vs {b.shape[1:]}")
  if cost in ("mse", "neg_psnr"):
    af = a.reshape(len(a), -1).astype(np.float64)
    bf = b.reshape(len(b), -1).astype(np.float64)
    # ||a||^2 + ||b||^2 - 2 a.b: exact for uint8 values in float64, and no [N, N, D] intermediate.
    sq = (af ** 2).sum(1)[:, None] + (bf ** 2).sum(1)[None, :] - 2.0 * af @ bf.T
    mse = np.maximum(sq, 0.0) / af.shape[1]
    if cost == "mse":
      return mse
    with np.errstate(divide="ignore"):
      return -np.where(mse < 1e-10, 100.0, 10.0 * np.log10(255.0 ** 2 / mse))
  if callable(cost):
    return np.array([[float(cost(x, y)) for y in b] for x in a])
  raise ValueError(f"unknown cost {cost!r}; use 'mse', 'neg_psnr' or a callable")


def match_reconstructions(originals: Any, reconstructions: Any,
                          cost: str | Callable[[np.ndarray, np.ndarray], float] = "mse",
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Minimum-cost one-to-one pairing; ``reconstructions[perm[i]]`` is matched to ``originals[i]``.

  Needs at least as many reconstructions as originals. Returns (perm [N_orig], cost matrix).
  """
  c = cost_matrix(originals, reconstructions, cost)
  if c.shape[1] < c.shape[0]:
    raise ValueError(
        f"{c.shape[1]} reconstructions cannot be matched one-to-one to {c.shape[0]} originals")
  rows, cols = linear_sum_assignment(c)
  perm = np.empty(c.shape[0], dtype=np.int64)
  perm[rows] = cols
  return perm, c
