"""Tests of the verification metrics against hand-computed numbers and the reference rules."""

import collections
import sys

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

from fedface_jax.evaluation import verification as V


def _insightface_tars(genuine, impostor, fars):
  """insightface eval_ijbc.py, verbatim logic: sklearn roc_curve, flip, min over tuples."""
  label = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
  score = np.concatenate([genuine, impostor])
  fpr, tpr, _ = roc_curve(label, score)
  fpr, tpr = np.flipud(fpr), np.flipud(tpr)
  out = []
  for target in fars:
    _, min_index = min(list(zip(abs(fpr - target), range(len(fpr)))))
    out.append(tpr[min_index])
  return np.array(out)


def _facepy_tars(genuine, impostor, fars):
  """facepy find_thresholds_by_FAR + ROC, as a plain loop."""
  score_neg = np.sort(impostor)[::-1]
  ks = (len(score_neg) * np.array(fars)).astype(np.int32)
  tars, thrs = [], []
  for k in ks:
    thr = score_neg[0] + 10e-8 if k == 0 else score_neg[k - 1]
    thrs.append(thr)
    tars.append(np.mean(genuine >= thr))
  return np.array(tars), np.array(thrs)


def _facepy_accuracy(score_vec, label_vec, thresholds=None):
  """facepy.evaluation.accuracy, loop version."""
  if thresholds is None:
    thresholds = np.sort(score_vec[label_vec])
  accuracies = np.zeros(np.size(thresholds))
  for i, threshold in enumerate(thresholds):
    accuracies[i] = np.mean((score_vec >= threshold) == label_vec)
  accuracy = accuracies[np.argmax(accuracies)]
  return accuracy, np.mean(thresholds[accuracies == accuracy])


FARS = (1e-4, 1e-3, 1e-2, 0.05, 1e-1, 0.3)


def _tied_scores(seed, n_gen=400, n_imp=5000, decimals=2):
  """Overlapping genuine/impostor scores, rounded so that many ties and collinear ROC runs occur."""
  rng = np.random.default_rng(seed)
  g = np.round(rng.normal(0.5, 0.2, n_gen), decimals)
  i = np.round(rng.normal(0.1, 0.2, n_imp), decimals)
  return g, i


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_roc_rule_matches_sklearn_insightface(seed, decimals):
  g, i = _tied_scores(seed, decimals=decimals)
  tars, _ = V.tar_at_far(g, i, FARS, method="roc")
  np.testing.assert_array_equal(np.array([tars[f] for f in FARS]),
                                _insightface_tars(g, i, FARS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_points_equal_sklearn(seed):
  g, i = _tied_scores(seed, n_gen=300, n_imp=2000, decimals=2)
  label = np.concatenate([np.ones(g.size), np.zeros(i.size)])
  score = np.concatenate([g, i])
  for drop in (True, False):
    fpr, tpr, thr = roc_curve(label, score, drop_intermediate=drop)
    fpr2, tpr2, thr2 = V.roc_curve_points(g, i, drop_intermediate=drop)
    np.testing.assert_array_equal(fpr2, fpr)
    np.testing.assert_array_equal(tpr2, tpr)
    np.testing.assert_array_equal(thr2, thr)


def test_roc_rule_collinear_points_are_dropped_like_sklearn():
  # Each threshold adds one genuine and one impostor: (.2,.2), (.4,.4), ... are collinear and
  # sklearn keeps only the ends, so the point nearest to FAR=0.4 is (0.2, 0.2), not (0.4, 0.4).
  g = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
  i = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
  fpr, tpr, _ = V.roc_curve_points(g, i)
  np.testing.assert_array_equal(fpr, [0.0, 0.2, 1.0])
  np.testing.assert_array_equal(tpr, [0.0, 0.2, 1.0])
  tars, _ = V.tar_at_far(g, i, [0.4], method="roc")
  assert tars[0.4] == 0.2
  assert tars[0.4] == _insightface_tars(g, i, [0.4])[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_facepy_rule_matches_reference_loop(seed):
  g, i = _tied_scores(seed, decimals=3)
  fars = (0.0, 1e-4, 1e-3, 1e-2, 0.29, 1e-1)
  tars, thrs = V.tar_at_far(g, i, fars, method="facepy")
  ref_tars, ref_thrs = _facepy_tars(g, i, fars)
  np.testing.assert_array_equal([tars[f] for f in fars], ref_tars)
  np.testing.assert_allclose([thrs[f] for f in fars], ref_thrs, rtol=0, atol=1e-12)


def test_facepy_rule_hand_computed():
  impostor = np.arange(1000) / 1000.0  # 0.000 ... 0.999
  genuine = np.array([1.0, 0.9995, 0.995, 0.99, 0.5])
  tars, thrs = V.tar_at_far(genuine, impostor, (1e-4, 1e-3, 1e-2), method="facepy")
  # k=0 -> tau = 0.999 + 1e-7: only 1.0 and 0.9995 pass.
  assert thrs[1e-4] == pytest.approx(0.999 + 1e-7, abs=1e-15)
  assert tars[1e-4] == pytest.approx(2 / 5)
  # k=1 -> tau = 0.999 (largest impostor).
  assert thrs[1e-3] == 0.999
  assert tars[1e-3] == pytest.approx(2 / 5)
  # k=10 -> tau = 10th largest = 0.990: four genuine scores >= 0.99.
  assert thrs[1e-2] == 0.990
  assert tars[1e-2] == pytest.approx(4 / 5)
  tar, far, _ = V.tar_far_threshold(genuine, impostor, [1e-2], method="facepy")
  assert far[0] == pytest.approx(10 / 1000)  # recomputed FAR
  assert tar[0] == pytest.approx(0.8)


@pytest.mark.parametrize("method", ["roc", "facepy"])
def test_perfect_separation(method):
  rng = np.random.default_rng(0)
  g = rng.uniform(0.6, 1.0, 500)
  i = rng.uniform(-1.0, 0.5, 20000)
  tars, _ = V.tar_at_far(g, i, (1e-4, 1e-3, 1e-2), method=method)
  assert all(t == 1.0 for t in tars.values())
  assert V.roc_auc(g, i) == 1.0
  assert V.equal_error_rate(g, i) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn(seed):
  g, i = _tied_scores(seed, decimals=2)
  label = np.concatenate([np.ones(g.size), np.zeros(i.size)])
  assert V.roc_auc(g, i) == pytest.approx(roc_auc_score(label, np.concatenate([g, i])),
                                          abs=1e-12)


def test_eer_hand_computed_and_interpolated():
  # At tau in (0.4, 0.5]: one genuine (0.4) rejected, one impostor (0.5) accepted -> 1/4 each.
  assert V.equal_error_rate([0.4, 0.6, 0.8, 0.9], [0.1, 0.2, 0.3, 0.5]) == pytest.approx(0.25)
  rng = np.random.default_rng(0)
  g, i = rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
  label = np.concatenate([np.ones(g.size), np.zeros(i.size)])
  fpr, tpr, _ = roc_curve(label, np.concatenate([g, i]))
  ref = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
  assert V.equal_error_rate(g, i) == pytest.approx(ref, abs=1e-9)
  # Two unit-variance Gaussians one sigma apart: EER = Phi(-0.5) = 0.3085.
  assert V.equal_error_rate(g, i) == pytest.approx(0.3085, abs=0.02)


def test_kfold_accuracy_facepy_constructed():
  # 10 folds of (genuine, impostor). Fold 0 has a hard genuine (0.3), fold 1 a hard impostor (0.9).
  g = np.full(10, 0.8)
  g[0] = 0.3
  i = np.full(10, 0.2)
  i[1] = 0.9
  scores = np.stack([g, i], axis=1).reshape(-1)  # fold k = pairs 2k, 2k+1
  same = np.tile([True, False], 10)
  kf = V.kfold_accuracy(scores, same, n_folds=10, method="facepy")
  # Fold 0: trained tau = 0.8 (17/18) -> rejects 0.3 -> 1/2. Fold 1: tau = 0.3 (18/18) accepts
  # the 0.9 impostor -> 1/2. Others: tau = 0.3 (17/18 beats 16/18) -> 2/2.
  np.testing.assert_allclose(kf["accuracies"], [0.5, 0.5] + [1.0] * 8)
  np.testing.assert_allclose(kf["thresholds"], [0.8] + [0.3] * 9, rtol=1e-7)
  assert kf["mean"] == pytest.approx(0.9)
  assert kf["std"] == pytest.approx(0.2)


def test_facepy_threshold_ties_are_averaged():
  scores = np.array([0.5, 0.7, 0.9, 0.1, 0.2, 0.6])
  same = np.array([True, True, True, False, False, False])
  # tau = 0.5 and 0.7 both give 5/6; 0.9 gives 4/6 -> mean(0.5, 0.7).
  assert V._facepy_best_threshold(scores, same) == pytest.approx(0.6)
  assert _facepy_accuracy(scores, same) == pytest.approx((5 / 6, 0.6))


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_accuracy_facepy_matches_lfw_loop(seed):
  rng = np.random.default_rng(seed)
  scores = np.round(np.concatenate([rng.normal(0.5, 0.2, 300), rng.normal(0.1, 0.2, 300)]),
                    2).astype(np.float32)
  same = np.concatenate([np.ones(300, bool), np.zeros(300, bool)])
  perm = rng.permutation(600)
  scores, same = scores[perm], same[perm]
  folds = np.repeat(np.arange(10), 60)
  ref = []
  for k in range(10):
    tr, te = folds != k, folds == k
    _, thr = _facepy_accuracy(scores[tr], same[tr])
    ref.append(np.mean((scores[te] >= np.float32(thr)) == same[te]))
  kf = V.kfold_accuracy(scores, same, method="facepy")
  np.testing.assert_array_equal(kf["accuracies"], ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_accuracy_insightface_matches_reference(seed):
  rng = np.random.default_rng(seed)
  n = 605  # not a multiple of 10: KFold makes the first 5 folds one larger
  base = rng.normal(size=(n, 16))
  same = rng.random(n) < 0.5
  other = np.where(same[:, None], base + 0.9 * rng.normal(size=(n, 16)), rng.normal(size=(n, 16)))
  e1 = base / np.linalg.norm(base, axis=1, keepdims=True)
  e2 = other / np.linalg.norm(other, axis=1, keepdims=True)
  # insightface eval/verification.py calculate_roc, accuracy part.
  thresholds = np.arange(0, 4, 0.01)
  dist = np.sum(np.square(e1 - e2), 1)
  ref = []
  for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(n)):
    acc_train = [np.mean(np.less(dist[train], t) == same[train]) for t in thresholds]
    best = thresholds[int(np.argmax(acc_train))]
    ref.append(np.mean(np.less(dist[test], best) == same[test]))
  kf = V.insightface_kfold_accuracy(e1, e2, same)
  np.testing.assert_allclose(kf["accuracies"], ref, rtol=0, atol=1e-12)
  kf2 = V.kfold_accuracy(np.sum(e1 * e2, 1), same, method="insightface")
  assert kf2["mean"] == pytest.approx(np.mean(ref), abs=2e-3)


def test_verification_report_flags_unresolved_fars():
  rng = np.random.default_rng(0)
  g = rng.uniform(0.6, 1.0, 100)
  i = rng.uniform(-1.0, 0.7, 500)
  rep = V.verification_report(g, i, fars=(1e-3, 1e-2, 1e-1))
  assert rep["num_genuine"] == 100 and rep["num_impostor"] == 500
  assert rep["far_resolved"] == {1e-3: False, 1e-2: True, 1e-1: True}
  # facepy k=0 at FAR=1e-3: threshold above the largest impostor.
  assert rep["threshold_at_far"][1e-3] > i.max()
  assert rep["actual_far"][1e-2] == pytest.approx(5 / 500)
  assert 0.9 < rep["auc"] <= 1.0 and 0.0 <= rep["eer"] < 0.2
  assert rep["tar@far=1e-2"] == rep["tar_at_far"][1e-2]  # flat scalar for metric loggers
  rep_roc = V.verification_report(g, i, fars=(1e-2,), method="roc")
  assert rep_roc["tar_at_far"][1e-2] == _insightface_tars(g, i, [1e-2])[0]


def test_bad_inputs_raise():
  with pytest.raises(ValueError):
    V.tar_at_far([0.5, np.nan], [0.1], method="roc")
  with pytest.raises(ValueError):
    V.tar_at_far([0.5], [], method="facepy")
  with pytest.raises(ValueError):
    V.tar_at_far([0.5], [0.1], method="bogus")


def _work_done(fn, *args, **kwargs):
  """Counts what `fn` does: function calls, Python lines run, and each sort with its size.

  A count, not a stopwatch: it does not depend on the machine's load, and it still tells an
  O(n log n) sort-based metric from one that loops over scores or sorts once per metric."""
  counts = collections.Counter()
  originals = {name: getattr(np, name) for name in ("sort", "argsort", "lexsort")}

  def counting(name):
    def wrapped(a, *a_args, **a_kwargs):
      counts[name] += 1
      counts[f"{name}_elements"] += int(np.size(a))
      return originals[name](a, *a_args, **a_kwargs)
    return wrapped

  def profile(frame, event, arg):  # Python and C function calls.
    del frame, arg
    if event in ("call", "c_call"):
      counts["calls"] += 1

  def trace(frame, event, arg):  # Python lines executed: a loop over scores shows here.
    del frame, arg
    if event == "line":
      counts["lines"] += 1
    return trace

  for name in originals:
    setattr(np, name, counting(name))
  sys.setprofile(profile)
  sys.settrace(trace)
  try:
    fn(*args, **kwargs)
  finally:
    sys.settrace(None)
    sys.setprofile(None)
    for name, original in originals.items():
      setattr(np, name, original)
  return counts


def test_large_impostor_sets_cost_one_sort_and_no_per_score_python():
  """What keeps 10M-score reports in seconds: each score array is sorted once per call, nothing
  else is sorted, and the Python-level work does not grow with the number of scores."""
  rng = np.random.default_rng(0)
  g = rng.normal(0.5, 0.2, 2000).astype(np.float32)

  def both(impostor):
    V.verification_report(g, impostor, method="roc")
    V.tar_at_far(g, impostor, method="facepy")

  small = _work_done(both, rng.normal(0.0, 0.2, 20_000).astype(np.float32))
  large = _work_done(both, rng.normal(0.0, 0.2, 200_000).astype(np.float32))
  for counts, n in ((small, 20_000), (large, 200_000)):
    assert counts["sort"] == 4 and counts["sort_elements"] == 2 * (g.size + n), counts
    assert counts["argsort"] == counts["lexsort"] == 0, counts
  assert large["calls"] == small["calls"] < 1000, (small, large)
  assert large["lines"] == small["lines"] < 5000, (small, large)
