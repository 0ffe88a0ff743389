"""Confidence intervals for verification metrics: a paired bootstrap over evaluation identities.

Why identities and not pairs: every image of an identity enters many genuine pairs and thousands
of impostor pairs, so pairs that share an identity are strongly correlated (one hard identity, e.g.
a look-alike of another, moves hundreds of pairs at once). Resampling pairs as if they were
independent makes CIs far too narrow. The independent units are the evaluation identities, so we
resample those with replacement (a cluster bootstrap) and rebuild the pairs from the resample.

Scheme: a resample draws the C evaluation identities C times with replacement; identity c is drawn
``m_c`` times (a multinomial vector, ``sum(m) = C``). Each copy is treated as a distinct person,
which gives every pair of the original pair set an integer weight:

* genuine pair of identity c: ``m_c`` (one copy of its pairs per copy of the identity);
* impostor pair of identities a != b: ``m_a * m_b`` (every copy of a against every copy of b).

Pairs between two copies of the *same* identity are not formed: they would be "impostors" made
of one person's images. The weighted metrics below are exactly the metrics of that materialised
resample (tested), but are computed without materialising it: each model's scores are sorted once
and a resample costs one gather and one cumulative sum over the pairs.

Paired comparison: two models (or several seeds of one) are scored on the same images and the same
pairs, and every replicate applies the *same* identity resample to all of them, so the difference
``metric(B) - metric(A)`` keeps the pairing (the identity-to-identity difficulty cancels) and its CI
is much tighter than one read off two independent CIs.

Several training seeds: replicate r of a multi-seed row is the mean over seeds of each seed's
replicate r under the same identity resample, and the row's value is the mean of the per-seed point
estimates. Its CI therefore covers the sampling of evaluation identities for the seed-averaged
model; it does not add the between-seed (training) variance, whose per-seed values are reported
next to it (``per_seed``).

Units follow the results JSON of issue 9: TAR in percent, AUC in [0, 1]. The TAR@FAR rule is
FedFace's ``"facepy"`` rule, the project's default (`verification.verification_report`); the point
estimates are computed by `verification.SortedScores` itself. The ``"roc"`` rule is not offered: its
pick among sklearn's pruned ROC points depends on which tied points exist, which a weighted curve
with zero-weight pairs does not reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from absl import logging
import numpy as np

from fedface_jax.evaluation import pairs as pairs_lib
from fedface_jax.evaluation import verification

DEFAULT_NUM_RESAMPLES = 1000
DEFAULT_FARS = (1e-3, 1e-2)
# The evaluation default of the experiment configs (experiments/common.py); all impostor pairs are
# used when there are fewer. Cost is linear in it: see `bootstrap_scores`.
DEFAULT_NUM_IMPOSTOR_PAIRS = 200_000
CI_LEVEL = 0.95
TAR_UNIT = 100.0  # TAR in percent, as in the results tables and JSON.


@dataclasses.dataclass(frozen=True)
class IdentityPairs:
  """Verification pairs with the evaluation identity of each side.

  Attributes:
    idx_a, idx_b: image indices of each pair (``idx_a < idx_b``).
    is_same: True for genuine pairs.
    id_a, id_b: identity index in ``[0, num_identities)`` of each side (equal for genuine pairs).
    num_identities: number of distinct labels, the units that are resampled.
  """
  idx_a: np.ndarray
  idx_b: np.ndarray
  is_same: np.ndarray
  id_a: np.ndarray
  id_b: np.ndarray
  num_identities: int

  @property
  def cells(self) -> np.ndarray:
    """Flat index ``id_a * C + id_b`` into a C x C table of pair weights (genuine: diagonal)."""
    c = self.num_identities
    dtype = np.int32 if c * c < 2**31 else np.int64
    return self.id_a.astype(dtype) * c + self.id_b.astype(dtype)


def identity_pairs(labels: Any, num_impostor_pairs: int = DEFAULT_NUM_IMPOSTOR_PAIRS,
                   seed: int = 0) -> IdentityPairs:
  """All genuine pairs plus sampled impostor pairs, as `pairs.make_verification_pairs` builds them.

  Same labels, count and seed give the same pairs as `api.evaluate_embeddings` in its "sampled"
  mode, so a bootstrap and a report can be computed on identical pairs. (That API scores every
  impostor pair when there are <= 20M of them; a bootstrap over 20M pairs costs minutes per model,
  so here the impostors are capped at `num_impostor_pairs`, all of them when there are fewer.)
  """
  lab = np.asarray(labels).reshape(-1)
  uniq, ids = np.unique(lab, return_inverse=True)
  if uniq.size < 2:
    raise ValueError(f"need at least two identities to resample, got {uniq.size}")
  a, b, same = pairs_lib.make_verification_pairs(lab, num_impostor_pairs, seed)
  if not same.any() or same.all():
    raise ValueError(f"need genuine and impostor pairs, got {same.sum()} and {(~same).sum()}")
  return IdentityPairs(idx_a=a, idx_b=b, is_same=same, id_a=ids[a], id_b=ids[b],
                       num_identities=int(uniq.size))


def resample_identities(num_identities: int, num_resamples: int = DEFAULT_NUM_RESAMPLES,
                        seed: int = 0) -> np.ndarray:
  """Multiplicities [num_resamples, num_identities]: how often each identity is drawn.

  Each row is one bootstrap resample (C draws with replacement out of C identities). The generator
  is seeded with ``(seed, "bootstrap")`` so that it is not the stream that sampled the impostor
  pairs with the same integer seed.
  """
  if num_resamples < 1:
    raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
  rng = np.random.default_rng([seed, 0xB0075])
  c = int(num_identities)
  return rng.multinomial(c, np.full(c, 1.0 / c), size=int(num_resamples)).astype(np.int64)


def _weight_table(multiplicities: np.ndarray) -> np.ndarray:
  """Flat C x C pair weights: ``m_a * m_b`` off the diagonal (impostors), ``m_c`` on it."""
  m = np.asarray(multiplicities, np.float64).reshape(-1)
  table = np.outer(m, m)
  table[np.diag_indices(m.size)] = m
  return table.reshape(-1)


def pair_weights(pairs: IdentityPairs, multiplicities: Any) -> np.ndarray:
  """Weight of each pair in one resample (see the module docstring); float64, integer valued."""
  m = np.asarray(multiplicities).reshape(-1)
  if m.size != pairs.num_identities:
    raise ValueError(f"{m.size} multiplicities for {pairs.num_identities} identities")
  return _weight_table(m)[pairs.cells]


def metric_names(fars: Sequence[float] = DEFAULT_FARS) -> list[str]:
  """Keys of the results JSON: ``tar@1e-3``, ..., ``auc``."""
  return [f"tar@{verification.far_label(float(f))}" for f in fars] + ["auc"]


class _SortedModel:
  """One model's pair scores, split and sorted once, for cheap weighted metrics per resample.

  Also holds, per genuine score, the positions of the impostors strictly below it and not above
  it, so that the weighted Mann-Whitney count (the AUC) is two gathers of a cumulative sum.
  """

  def __init__(self, scores: Any, pairs: IdentityPairs):
    s = np.asarray(scores).reshape(-1)
    if s.size != pairs.is_same.size:
      raise ValueError(f"{s.size} scores for {pairs.is_same.size} pairs")
    if not np.all(np.isfinite(s)):
      raise ValueError("scores contain NaN or inf")
    cells = pairs.cells
    gen, imp = s[pairs.is_same], s[~pairs.is_same]
    og, oi = np.argsort(gen, kind="stable"), np.argsort(imp, kind="stable")
    self.genuine = gen[og].astype(np.float64)
    self.impostor = imp[oi].astype(np.float64)
    self.genuine_cells = cells[pairs.is_same][og]
    self.impostor_cells = cells[~pairs.is_same][oi]
    self.below = np.searchsorted(self.impostor, self.genuine, side="left")
    self.not_above = np.searchsorted(self.impostor, self.genuine, side="right")

  def point(self, fars: np.ndarray) -> np.ndarray:
    """Unweighted TAR per FAR (fraction) and AUC, by `verification.SortedScores` itself."""
    scores = verification.SortedScores(self.genuine, self.impostor)
    tar, _, _ = scores.tar_far_threshold(fars, method="facepy")
    return np.concatenate([tar, [scores.auc()]])

  def weighted(self, table: np.ndarray, fars: np.ndarray) -> np.ndarray:
    """TAR per FAR (fraction) and AUC with pair weights ``table[cell]``; NaN if a class is empty.

    With integer weights this is the facepy rule on the multiset where each pair appears weight
    times: ``k = int(W_imp * far)``, the threshold is the k-th largest impostor of that multiset
    (the largest plus 1e-7 when k == 0), TAR the weighted share of genuine scores >= it. The AUC
    is the weighted probability that a genuine score beats an impostor, ties counting one half,
    which equals the area under that multiset's ROC curve.
    """
    w_imp = table[self.impostor_cells]
    w_gen = table[self.genuine_cells]
    cum_imp = np.zeros(w_imp.size + 1)
    np.cumsum(w_imp, out=cum_imp[1:])
    cum_gen = np.zeros(w_gen.size + 1)
    np.cumsum(w_gen, out=cum_gen[1:])
    total_imp, total_gen = cum_imp[-1], cum_gen[-1]
    if total_imp == 0 or total_gen == 0:
      return np.full(fars.size + 1, np.nan)
    wins = 0.5 * np.dot(w_gen, cum_imp[self.below] + cum_imp[self.not_above])
    auc = wins / (total_gen * total_imp)
    k = (total_imp * fars).astype(np.int64)
    # Largest j whose impostors from j upwards weigh >= max(k, 1): the k-th largest of the
    # multiset (for k == 0 the largest with weight > 0).
    j = np.searchsorted(cum_imp[:-1], total_imp - np.maximum(k, 1), side="right") - 1
    threshold = self.impostor[j] + np.where(k == 0, verification.FACEPY_EPSILON, 0.0)
    accepted = total_gen - cum_gen[np.searchsorted(self.genuine, threshold, side="left")]
    return np.concatenate([accepted / total_gen, [auc]])


def _units(values: np.ndarray) -> np.ndarray:
  """TAR columns (all but the last) to percent; AUC (last column) unchanged."""
  out = np.array(values, np.float64, copy=True)
  out[..., :-1] *= TAR_UNIT
  return out


def weighted_metrics(scores: Any, pairs: IdentityPairs, multiplicities: Any,
                     fars: Sequence[float] = DEFAULT_FARS) -> dict[str, float]:
  """Metrics of one resample given its identity multiplicities (TAR in %, AUC in [0, 1])."""
  m = np.asarray(multiplicities).reshape(-1)
  if m.size != pairs.num_identities:
    raise ValueError(f"{m.size} multiplicities for {pairs.num_identities} identities")
  fars_arr = np.asarray(fars, np.float64)
  values = _units(_SortedModel(scores, pairs).weighted(_weight_table(m), fars_arr))
  return dict(zip(metric_names(fars), map(float, values)))


def _as_seed_list(scores: Any) -> list[np.ndarray]:
  """One array per seed from a 1-D array, a 2-D [seeds, pairs] array or a sequence of arrays."""
  if isinstance(scores, np.ndarray) and scores.ndim == 1:
    return [scores]
  out = [np.asarray(s).reshape(-1) for s in scores]
  if not out:
    raise ValueError("no scores given")
  return out


def bootstrap_scores(scores: Any, pairs: IdentityPairs, multiplicities: np.ndarray,
                     fars: Sequence[float] = DEFAULT_FARS) -> tuple[np.ndarray, np.ndarray]:
  """Point estimates and bootstrap replicates of one model's scores on `pairs`.

  Args:
    scores: similarity per pair [P], or one such array per training seed (all on the same pairs).
    pairs: the pairs the scores belong to (`identity_pairs`).
    multiplicities: [R, C] from `resample_identities`; pass the same array for every model that
      is to be compared, so that replicate r of each uses the same resample.
    fars: target FARs (facepy rule).

  Returns:
    ``(point [S, M], replicates [S, R, M])`` for S seeds and M = len(fars) + 1 metrics in the
    order of `metric_names` (TAR in %, AUC). A replicate whose resample has no genuine or no
    impostor pair is NaN (possible only with very few identities).

  Cost: per seed and resample one gather and one cumulative sum over the P pairs (a few ms at
  P ~ 300k on one core).
  """
  fars_arr = np.asarray(fars, np.float64)
  models = [_SortedModel(s, pairs) for s in _as_seed_list(scores)]
  mult = np.asarray(multiplicities)
  if mult.ndim != 2 or mult.shape[1] != pairs.num_identities:
    raise ValueError(f"multiplicities {mult.shape} do not match {pairs.num_identities} identities")
  point = np.stack([m.point(fars_arr) for m in models])
  reps = np.empty((len(models), mult.shape[0], fars_arr.size + 1))
  for r, counts in enumerate(mult):
    table = _weight_table(counts)
    for s, model in enumerate(models):
      reps[s, r] = model.weighted(table, fars_arr)
  return _units(point), _units(reps)


def summarize(point: np.ndarray, replicates: np.ndarray, names: Sequence[str],
              level: float = CI_LEVEL) -> dict[str, dict[str, Any]]:
  """Per metric: ``mean``, ``ci_low``, ``ci_high``, ``se``, ``per_seed``.

  Args:
    point: [S, M] per-seed point estimates on the original identities.
    replicates: [S, R, M] replicates; seeds are averaged per replicate (the same resample).
    names: the M metric names.
    level: coverage of the percentile interval (0.95: the 2.5% and 97.5% percentiles).

  ``mean`` is the mean over seeds of the point estimates (for one seed, the point estimate
  itself, not the mean of the replicates); ``se`` is the bootstrap standard deviation.
  """
  pooled = np.asarray(replicates).mean(axis=0)  # [R, M]
  ok = np.isfinite(pooled).all(axis=1)
  if not ok.all():
    logging.warning("%d of %d bootstrap resamples have no genuine or no impostor pair; "
                    "left out of the CIs", np.sum(~ok), ok.size)
  pooled = pooled[ok]
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(pooled, [tail, 100.0 - tail], axis=0)
  se = pooled.std(axis=0, ddof=1) if pooled.shape[0] > 1 else np.zeros(len(names))
  point = np.asarray(point)
  return {name: {"mean": float(point[:, k].mean()), "ci_low": float(low[k]),
                 "ci_high": float(high[k]), "se": float(se[k]),
                 "per_seed": [float(v) for v in point[:, k]]}
          for k, name in enumerate(names)}


def _as_embedding_list(embeddings: Any) -> list[np.ndarray]:
  """One [N, D] array per seed from an [N, D] array, an [S, N, D] array or a sequence."""
  if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
    return [embeddings]
  out = [np.asarray(e) for e in embeddings]
  if not out or any(e.ndim != 2 for e in out):
    raise ValueError("embeddings must be [N, D], [S, N, D] or a sequence of [N, D] arrays")
  return out


def bootstrap_models(embeddings: Mapping[str, Any], labels: Any, *,
                     baseline: str | None = None, fars: Sequence[float] = DEFAULT_FARS,
                     num_resamples: int = DEFAULT_NUM_RESAMPLES, seed: int = 0,
                     num_impostor_pairs: int = DEFAULT_NUM_IMPOSTOR_PAIRS,
                     level: float = CI_LEVEL) -> dict[str, dict[str, Any]]:
  """Metrics with CIs for several models on the same images, and paired deltas to a baseline.

  Args:
    embeddings: name -> [N, D] embeddings of the same N images (or one such array per seed).
    labels: [N] identity of each image.
    baseline: name whose metrics every other model is compared with, or None.
    fars: target FARs.
    num_resamples: identity resamples (>= 1,000 for the tables).
    seed: impostor-pair sampling and resampling seed; fixed, so that reruns agree.
    num_impostor_pairs: impostor pairs sampled (all when there are fewer).
    level: CI coverage.

  Returns:
    name -> ``{"seeds": S, "metrics": {metric: summary}}`` plus, for every model but the
    baseline, ``"delta"``: ``{metric: summary}`` of ``metric(model) - metric(baseline)`` under
    the same resamples, seeds averaged on each side (see `summarize` for a summary's keys; a
    delta's ``per_seed`` is each seed of the model minus the baseline's seed mean).
  """
  if baseline is not None and baseline not in embeddings:
    raise KeyError(f"baseline {baseline!r} not among {sorted(embeddings)}")
  pairs = identity_pairs(labels, num_impostor_pairs, seed)
  for far in fars:
    if (~pairs.is_same).sum() * far < 1:
      logging.warning("TAR@FAR=%g is not resolved by %d impostor pairs", far,
                      (~pairs.is_same).sum())
  mult = resample_identities(pairs.num_identities, num_resamples, seed)
  names = metric_names(fars)
  results = {}
  for name, emb in embeddings.items():
    scores = [pairs_lib.pair_scores(e, pairs.idx_a, pairs.idx_b)
              for e in _as_embedding_list(emb)]
    results[name] = bootstrap_scores(scores, pairs, mult, fars)
  out = {}
  for name, (point, reps) in results.items():
    out[name] = {"seeds": int(point.shape[0]), "metrics": summarize(point, reps, names, level)}
    if baseline is not None and name != baseline:
      base_point, base_reps = results[baseline]
      # Per seed minus the baseline's seed mean: the seed average is the difference of the means.
      delta_point = point - base_point.mean(axis=0)
      delta_reps = reps - base_reps.mean(axis=0)
      out[name]["delta"] = summarize(delta_point, delta_reps, names, level)
  return out


def bootstrap_verification(embeddings: Any, labels: Any, **kwargs: Any
                           ) -> dict[str, dict[str, Any]]:
  """Metric -> summary for one model ([N, D], or one array per seed).

  kwargs are those of `bootstrap_models` (fars, num_resamples, seed, num_impostor_pairs, level).
  """
  return bootstrap_models({"model": embeddings}, labels, **kwargs)["model"]["metrics"]


def paired_bootstrap(embeddings_a: Any, embeddings_b: Any, labels: Any, **kwargs: Any
                     ) -> dict[str, dict[str, Any]]:
  """``{"a": ..., "b": ..., "delta": ...}``: each model's summaries and those of B - A.

  A and B must embed the same images (same order, same labels); either may be a list of seeds.
  kwargs are those of `bootstrap_models`.
  """
  res = bootstrap_models({"a": embeddings_a, "b": embeddings_b}, labels, baseline="a", **kwargs)
  return {"a": res["a"]["metrics"], "b": res["b"]["metrics"], "delta": res["b"]["delta"]}


def bootstrap_unit_means(values: Mapping[str, Any], *, num_resamples: int = DEFAULT_NUM_RESAMPLES,
                         seed: int = 0, level: float = CI_LEVEL) -> dict[str, dict[str, Any]]:
  """Mean and percentile CI of per-unit values, resampling the units with replacement.

  Why: where the independent units are already one number each (the attack sweeps' (seed, victim)
  units: a victim's images share one label and one template, so they are not independent of each
  other, while different victims and different seeds are), the cluster bootstrap of this module
  reduces to resampling those numbers. The resamples are `resample_identities`' multiplicities
  (the same generator and seed convention), applied to every metric alike, so metrics of one
  point are resampled jointly.

  Args:
    values: metric name -> [U] per-unit values (every metric over the same U units, finite).
    num_resamples: bootstrap resamples.
    seed: resampling seed; fixed, so that reruns agree.
    level: CI coverage (0.95: the 2.5% and 97.5% percentiles).

  Returns:
    name -> ``{"mean", "ci_low", "ci_high", "se", "units"}``. With fewer than two units there is no
    interval: ``ci_low``, ``ci_high`` and ``se`` are None (a zero-width CI would claim certainty
    that one unit cannot give).
  """
  arrays = {k: np.asarray(v, np.float64).reshape(-1) for k, v in values.items()}
  sizes = {v.size for v in arrays.values()}
  if len(sizes) > 1:
    raise ValueError(f"metrics have different numbers of units: {sorted(sizes)}")
  if not arrays or 0 in sizes:
    raise ValueError("no units to summarise")
  for k, v in arrays.items():
    if not np.all(np.isfinite(v)):
      raise ValueError(f"metric {k!r} has non-finite unit values")
  (u,) = sizes
  if u < 2:
    return {k: {"mean": float(v.mean()), "ci_low": None, "ci_high": None, "se": None, "units": u}
            for k, v in arrays.items()}
  mult = resample_identities(u, num_resamples, seed).astype(np.float64)   # [R, U]
  tail = 100.0 * (1.0 - level) / 2.0
  out = {}
  for k, v in arrays.items():
    reps = mult @ v / u
    low, high = np.percentile(reps, [tail, 100.0 - tail])
    out[k] = {"mean": float(v.mean()), "ci_low": float(low), "ci_high": float(high),
              "se": float(reps.std(ddof=1)), "units": u}
  return out


def intervals_separate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """True when two `bootstrap_unit_means` summaries have CIs that exist and do not overlap."""
  if any(s.get(k) is None for s in (a, b) for k in ("ci_low", "ci_high")):
    return False
  return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]
