"""1:1 verification metrics: TAR@FAR, ROC, AUC, EER and k-fold accuracy.

Why a module of its own: published face-verification numbers are only comparable when the exact
rule that turns scores into "TAR at FAR = f" is the same, and the two pipelines we compare against
use different rules (FEDFACE.md section 5.1):

* ``"facepy"`` (FedFace's ``facepy/evaluation.py``): sort impostor scores descending, take
  ``k = int(|I| * f)`` and the threshold ``tau = s_neg[k - 1]`` (``max + 1e-7`` when ``k == 0``);
  TAR is the fraction of genuine scores ``>= tau``.
* ``"roc"`` (insightface ``eval_ijbc.py``): ``sklearn.metrics.roc_curve`` (with its default
  ``drop_intermediate=True``) and the TPR at ``argmin |fpr - f|``, the largest TPR winning ties.

Everything here is plain numpy and sort based (``O(n log n)``), so that tens of millions of
impostor scores (all pairs of a few thousand images, or IJB-C's 15.6M impostor template pairs)
are evaluated in seconds; nothing loops in Python over thresholds or scores.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

from absl import logging
import numpy as np

DEFAULT_FARS = (1e-4, 1e-3, 1e-2, 1e-1)
# facepy adds this to the largest impostor score when k == 0 (written `10e-8` there).
FACEPY_EPSILON = 1e-7
# insightface eval/verification.py: squared-L2 thresholds for the k-fold accuracy.
INSIGHTFACE_DIST_THRESHOLDS = np.arange(0, 4, 0.01)


def _sorted_scores(x: Any, name: str) -> np.ndarray:
  """Ascending float64 copy of 1-D scores; NaN/inf would silently corrupt every rule below.

  Sorted in the input dtype (float32 sorts ~3x faster) and widened afterwards, which keeps the
  order and every equality.
  """
  arr = np.asarray(x).reshape(-1)
  if not np.issubdtype(arr.dtype, np.floating):
    arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} scores contain NaN or inf ({np.sum(~np.isfinite(arr))} values)")
  return np.sort(arr).astype(np.float64, copy=False)


class SortedScores:
  """Genuine and impostor scores sorted once, shared by every metric of a report.

  The ROC counts are built in O(n) from the two sorted arrays (a merge, then sklearn's cumulative
  sums), so a report on ~10M impostor scores costs one sort instead of one argsort per metric.
  """

  def __init__(self, genuine: Any, impostor: Any):
    self.genuine = _sorted_scores(genuine, "genuine")
    self.impostor = _sorted_scores(impostor, "impostor")
    if self.genuine.size == 0 or self.impostor.size == 0:
      raise ValueError(
          f"need at least one genuine and one impostor score, got {self.genuine.size} and "
          f"{self.impostor.size}")
    self._counts = None
    self._roc = {}

  def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's ``_binary_clf_curve``: (fps, tps, thresholds), thresholds descending."""
    if self._counts is None:
      g, i = self.genuine, self.impostor
      n = g.size + i.size
      # Merge the sorted arrays: genuine k lands after k genuine and #(impostor < g_k) impostors.
      is_gen = np.zeros(n, bool)
      is_gen[np.searchsorted(i, g, side="left") + np.arange(g.size)] = True
      merged = np.empty(n, np.float64)
      merged[is_gen] = g
      merged[~is_gen] = i
      desc, lab = merged[::-1], is_gen[::-1]
      thr_idx = np.concatenate([np.nonzero(np.diff(desc))[0], [n - 1]])
      tps = np.cumsum(lab, dtype=np.int64)[thr_idx]
      fps = 1 + thr_idx - tps
      self._counts = (fps, tps, desc[thr_idx])
    return self._counts

  def roc(self, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same as `roc_curve_points` (cached: a report needs it three times)."""
    if drop_intermediate in self._roc:
      return self._roc[drop_intermediate]
    fps, tps, thr = self.counts()
    if drop_intermediate and fps.size > 2:
      keep = np.concatenate(
          [[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
      keep = np.nonzero(keep)[0]
      fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps = np.concatenate([[0], fps])
    tps = np.concatenate([[0], tps])
    thr = np.concatenate([[np.inf], thr])
    self._roc[drop_intermediate] = (fps / fps[-1], tps / tps[-1], thr)
    return self._roc[drop_intermediate]

  def auc(self) -> float:
    """Area under the ROC curve (trapezoids; ties count one half, as in sklearn)."""
    fpr, tpr, _ = self.roc(drop_intermediate=True)
    return float(np.trapezoid(tpr, fpr))

  def eer(self) -> float:
    """See `equal_error_rate`."""
    fpr, tpr, _ = self.roc(drop_intermediate=False)
    h = fpr + tpr - 1.0
    k = int(np.argmax(h >= 0.0))  # h[-1] == 1: a crossing exists; h[0] == -1: k >= 1.
    if h[k] == h[k - 1]:
      return float(fpr[k])
    t = -h[k - 1] / (h[k] - h[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))

  def tar_far_threshold(self, fars: Sequence[float], method: str = "roc"
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """See `tar_far_threshold`."""
    fars_arr = np.asarray(fars, dtype=np.float64).reshape(-1)
    g, i = self.genuine, self.impostor
    if method == "facepy":
      # Same float product and truncation as `(num_neg * FARs).astype(np.int32)` in facepy.
      ks = (i.size * fars_arr).astype(np.int64)
      if np.any(ks > i.size) or np.any(ks < 0):
        raise ValueError(f"FARs must lie in [0, 1], got {fars_arr}")
      # s_neg = impostors descending; s_neg[k - 1] is i[size - k] in ascending order.
      thr = np.where(ks == 0, i[-1] + FACEPY_EPSILON, i[i.size - np.maximum(ks, 1)])
      tar = (g.size - np.searchsorted(g, thr, side="left")) / g.size
      far = (i.size - np.searchsorted(i, thr, side="left")) / i.size
      return tar, far, thr
    if method == "roc":
      fpr, tpr, thr = self.roc(drop_intermediate=True)
      idx = np.empty(fars_arr.size, dtype=np.int64)
      for n, target in enumerate(fars_arr):
        # insightface flips the arrays and takes min over (|fpr - f|, flipped index): smallest
        # distance, ties to the last original index, i.e. the largest tpr.
        d = np.abs(fpr - target)[::-1]
        idx[n] = fpr.size - 1 - int(np.argmin(d))
      return tpr[idx], fpr[idx], thr[idx]
    raise ValueError(f"unknown TAR@FAR method {method!r}; use 'roc' or 'facepy'")


def roc_curve_points(genuine: Any, impostor: Any, drop_intermediate: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve identical to ``sklearn.metrics.roc_curve(labels, scores)``.

  Reimplemented (instead of calling sklearn) so that no label vector and no argsort of the
  |G| + |I| concatenation are needed. The points, including sklearn's ``drop_intermediate``
  pruning of collinear points and the leading ``(0, 0)`` point with threshold ``inf``, are
  sklearn's, because insightface's TAR@FAR picks among exactly these points.

  Args:
    genuine: scores of same-identity pairs (higher = more similar).
    impostor: scores of different-identity pairs.
    drop_intermediate: sklearn's default pruning of collinear points.

  Returns:
    ``(fpr, tpr, thresholds)``, fpr/tpr ascending, thresholds descending.
  """
  return SortedScores(genuine, impostor).roc(drop_intermediate)


def roc_auc(genuine: Any, impostor: Any) -> float:
  """Area under the ROC curve (equals sklearn's roc_auc_score)."""
  return SortedScores(genuine, impostor).auc()


def equal_error_rate(genuine: Any, impostor: Any) -> float:
  """Rate where FAR equals FRR = 1 - TAR, linearly interpolated on the ROC curve.

  ``fpr + tpr - 1`` is non-decreasing along the curve (-1 at (0,0), +1 at (1,1)), so the EER is
  found at its first sign change; this equals the usual ``brentq(1 - x - interp1d(fpr, tpr)(x))``
  recipe without its failure on vertical ROC segments.
  """
  return SortedScores(genuine, impostor).eer()


def tar_far_threshold(genuine: Any, impostor: Any, fars: Sequence[float] = DEFAULT_FARS,
                      method: str = "roc") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """TAR, the FAR actually achieved, and the threshold, per target FAR (arrays like `fars`).

  Args:
    genuine: genuine scores.
    impostor: impostor scores.
    fars: target false accept rates.
    method: ``"roc"`` (insightface) or ``"facepy"`` (FedFace); see the module docstring.
  """
  return SortedScores(genuine, impostor).tar_far_threshold(fars, method)


def tar_at_far(genuine: Any, impostor: Any, fars: Sequence[float] = DEFAULT_FARS,
               method: str = "roc") -> tuple[dict[float, float], dict[float, float]]:
  """TAR at each target FAR; returns ``({far: tar}, {far: threshold})``."""
  tar, _, thr = tar_far_threshold(genuine, impostor, fars, method)
  keys = [float(f) for f in np.asarray(fars, dtype=np.float64).reshape(-1)]
  return ({f: float(t) for f, t in zip(keys, tar)}, {f: float(t) for f, t in zip(keys, thr)})


def _contiguous_folds(n: int, n_folds: int) -> np.ndarray:
  """Fold id per pair as sklearn's KFold(n_folds, shuffle=False): first n % k folds one larger."""
  if n < n_folds:
    raise ValueError(f"{n} pairs cannot be split into {n_folds} folds")
  folds = np.empty(n, dtype=np.int64)
  for k, part in enumerate(np.array_split(np.arange(n), n_folds)):
    folds[part] = k
  return folds


def _facepy_best_threshold(scores: np.ndarray, is_same: np.ndarray) -> float:
  """facepy.evaluation.accuracy without thresholds: best of the genuine scores, ties averaged."""
  cands = np.sort(scores[is_same])  # the candidates are the (sorted) genuine scores themselves
  if cands.size == 0:
    raise ValueError("a training split has no genuine pair; no candidate threshold")
  imp = np.sort(scores[~is_same])
  # accuracy(tau) = (#genuine >= tau + #impostor < tau) / n, the integer count of the facepy loop.
  correct = (cands.size - np.searchsorted(cands, cands, side="left")) + np.searchsorted(
      imp, cands, side="left")
  acc = correct / scores.size
  return np.mean(cands[acc == acc.max()])


def kfold_accuracy(scores: Any, is_same: Any, n_folds: int = 10, method: str = "facepy",
                   folds: Any = None) -> dict[str, Any]:
  """k-fold verification accuracy with the threshold chosen on the other folds.

  Args:
    scores: similarity per pair (cosine of L2-normalised embeddings).
    is_same: bool per pair.
    n_folds: number of folds when `folds` is None; folds are then contiguous blocks in the given
      order (sklearn ``KFold(n_folds, shuffle=False)``), which for LFW's ``pairs.txt`` order are
      exactly the 10 official folds of 600 pairs.
    method: ``"facepy"`` (FedFace ``lfw.py``): candidates are all genuine training scores, ties
      of the best accuracy are averaged, same iff ``s >= tau``; the threshold is stored as
      float32 as ``lfw.py`` does. ``"insightface"`` (``eval/verification.py``): squared L2
      distance ``d = 2 - 2 s`` (exact for unit vectors), thresholds ``arange(0, 4, 0.01)``,
      same iff ``d < tau``, first best threshold.
    folds: optional explicit fold id per pair (e.g. LFW's fold column).

  Returns:
    dict with ``mean``, ``std`` (population std over folds), ``accuracies`` and ``thresholds``
    (per fold; similarity for facepy, squared distance for insightface).
  """
  s = np.asarray(scores).reshape(-1)
  y = np.asarray(is_same).reshape(-1).astype(bool)
  if s.shape != y.shape:
    raise ValueError(f"scores {s.shape} and is_same {y.shape} differ in length")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores contain NaN or inf")
  fold_ids = _contiguous_folds(s.size, n_folds) if folds is None else np.asarray(folds)
  if fold_ids.shape != s.shape:
    raise ValueError(f"folds {fold_ids.shape} and scores {s.shape} differ in length")
  unique_folds = np.unique(fold_ids)
  accs, thrs = [], []
  for f in unique_folds:
    test = fold_ids == f
    train = ~test
    if method == "facepy":
      thr = np.float32(_facepy_best_threshold(s[train], y[train]))
      pred = s[test] >= thr
    elif method == "insightface":
      d_train = 2.0 - 2.0 * s[train].astype(np.float64)
      thr = float(_insightface_best_threshold(d_train, y[train]))
      pred = (2.0 - 2.0 * s[test].astype(np.float64)) < thr
    else:
      raise ValueError(f"unknown k-fold method {method!r}; use 'facepy' or 'insightface'")
    accs.append(float(np.mean(pred == y[test])))
    thrs.append(float(thr))
  accs_arr = np.asarray(accs)
  return {"mean": float(accs_arr.mean()), "std": float(accs_arr.std()),
          "accuracies": accs, "thresholds": thrs, "method": method,
          "num_folds": int(unique_folds.size)}


def _insightface_best_threshold(dist: np.ndarray, is_same: np.ndarray) -> float:
  """Best of arange(0, 4, 0.01) on training distances; argmax keeps the first (smallest)."""
  thresholds = INSIGHTFACE_DIST_THRESHOLDS
  dg = np.sort(dist[is_same])
  di = np.sort(dist[~is_same])
  tp = np.searchsorted(dg, thresholds, side="left")  # genuine with d < tau
  tn = di.size - np.searchsorted(di, thresholds, side="left")  # impostor with d >= tau
  acc = (tp + tn) / dist.size
  return thresholds[int(np.argmax(acc))]


def insightface_kfold_accuracy(embeddings1: Any, embeddings2: Any, is_same: Any,
                               n_folds: int = 10) -> dict[str, Any]:
  """insightface's LFW-style accuracy computed from the (normalised) embeddings themselves.

  Same as ``kfold_accuracy(..., method="insightface")`` but with ``||e1 - e2||^2`` computed as
  insightface does, for bit-faithful comparisons with its published numbers.
  """
  e1 = np.asarray(embeddings1, dtype=np.float64)
  e2 = np.asarray(embeddings2, dtype=np.float64)
  dist = np.sum(np.square(e1 - e2), axis=1)
  y = np.asarray(is_same).reshape(-1).astype(bool)
  fold_ids = _contiguous_folds(dist.size, n_folds)
  accs, thrs = [], []
  for f in range(n_folds):
    test = fold_ids == f
    thr = _insightface_best_threshold(dist[~test], y[~test])
    accs.append(float(np.mean((dist[test] < thr) == y[test])))
    thrs.append(float(thr))
  accs_arr = np.asarray(accs)
  return {"mean": float(accs_arr.mean()), "std": float(accs_arr.std()),
          "accuracies": accs, "thresholds": thrs, "method": "insightface",
          "num_folds": n_folds}


def verification_report(genuine: Any, impostor: Any = None,
                        fars: Sequence[float] = DEFAULT_FARS,
                        method: str = "facepy") -> dict[str, Any]:
  """Everything we report for one set of scores, as a JSON-friendly dict.

  TAR@FAR is only meaningful when at least one impostor may be accepted, i.e. ``|I| * far >= 1``;
  otherwise the value is still computed (facepy then thresholds above the largest impostor) but
  ``far_resolved[far]`` is False and a warning is logged, so tables can mark it instead of
  presenting, e.g., TAR@FAR=1e-4 from 2,000 impostor pairs as if it were measured.

  Args:
    genuine: genuine scores, or a `SortedScores` (then `impostor` is ignored).
    impostor: impostor scores.
    fars: target FARs.
    method: TAR@FAR rule, ``"facepy"`` (FedFace, default) or ``"roc"`` (insightface).

  Returns:
    dict with ``num_genuine``, ``num_impostor``, ``method``, ``tar_at_far``, ``threshold_at_far``,
    ``actual_far``, ``far_resolved`` (each keyed by float FAR), ``auc``, ``eer``, and the
    scalars ``"tar@far=<far_label>"``.
  """
  if isinstance(genuine, SortedScores):
    scores = genuine
  elif impostor is None:
    raise ValueError("verification_report needs impostor scores")
  else:
    scores = SortedScores(genuine, impostor)
  num_imp = scores.impostor.size
  fars_list = [float(f) for f in fars]
  tar, far_actual, thr = scores.tar_far_threshold(fars_list, method)
  resolved = {}
  for f in fars_list:
    resolved[f] = bool(num_imp * f >= 1.0)
    if not resolved[f]:
      logging.warning(
          "TAR@FAR=%g is not meaningful with %d impostor pairs (|I|*FAR = %.3g < 1); "
          "flagged far_resolved=False", f, num_imp, num_imp * f)
  return {
      "num_genuine": int(scores.genuine.size),
      "num_impostor": int(num_imp),
      "method": method,
      "tar_at_far": dict(zip(fars_list, map(float, tar))),
      "threshold_at_far": dict(zip(fars_list, map(float, thr))),
      "actual_far": dict(zip(fars_list, map(float, far_actual))),
      "far_resolved": resolved,
      "auc": scores.auc(),
      "eer": scores.eer(),
      # Flat scalar copies ("tar@far=1e-3"), so metric loggers that keep only top-level numbers
      # (JSONL/TensorBoard) record TAR@FAR too.
      **{f"tar@far={far_label(f)}": float(t) for f, t in zip(fars_list, tar)},
  }


def far_label(far: float) -> str:
  """Compact printable FAR, e.g. 1e-3 -> '1e-3', 0.1 -> '1e-1', 0.05 -> '0.05'."""
  if far > 0:
    e = math.log10(far)
    if abs(e - round(e)) < 1e-9:
      return f"1e{int(round(e))}"
  return f"{far:g}"
