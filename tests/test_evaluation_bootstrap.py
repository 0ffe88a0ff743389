"""Tests of the identity bootstrap: weights equal a materialised resample; sound CIs."""

import numpy as np
import pytest

from fedface_jax.evaluation import api
from fedface_jax.evaluation import bootstrap as B
from fedface_jax.evaluation import pairs as PR
from fedface_jax.evaluation import verification as V

FARS = (1e-3, 1e-2, 1e-1)


def _clusters(num_ids, per_id, noise, seed, dim=16, centers_seed=0):
  """Gaussian identity clusters: embedding = center(identity) + noise * N(0, I)."""
  centers = np.random.default_rng(centers_seed).normal(size=(num_ids, dim))
  labels = np.repeat(np.arange(num_ids), per_id)
  rng = np.random.default_rng(seed)
  emb = centers[labels] + noise * rng.normal(size=(labels.size, dim))
  return emb.astype(np.float32), labels


def _similarity(emb):
  e = PR.l2_normalize(emb)
  return e @ e.T


def _unweighted(genuine, impostor, fars):
  tars, _ = V.tar_at_far(genuine, impostor, fars, method="facepy")
  return [100 * tars[f] for f in fars] + [V.roc_auc(genuine, impostor)]


def _materialised(sim, labels, mult):
  """Genuine/impostor scores of the resample built image by image, independent of the weights.

  Identity c appears as m_c copies, each a separate person; pairs inside a copy are genuine, pairs
  across copies of different identities impostors, pairs across copies of one identity skipped.
  """
  base, copy = [], []
  for c, m in enumerate(mult):
    for k in range(m):
      members = np.nonzero(labels == c)[0]
      base.extend(members)
      copy.extend([(c, k)] * members.size)
  base = np.array(base)
  copy_id = np.unique(np.array(copy), axis=0, return_inverse=True)[1].reshape(-1)
  ident = labels[base]
  a, b = np.triu_indices(base.size, k=1)
  same_copy = copy_id[a] == copy_id[b]
  keep = same_copy | (ident[a] != ident[b])
  scores = sim[base[a], base[b]]
  return scores[keep & same_copy], scores[keep & ~same_copy]


@pytest.mark.parametrize("num_ids,per_id", [(8, 3), (12, 5)])
def test_weights_equal_materialised_resample(num_ids, per_id):
  # Genuine-impostor ties (rounded scores), a FAR with k == 0 (8 x 3 gives 252 impostors) and
  # zero weights (identities not drawn).
  emb, labels = _clusters(num_ids, per_id, noise=1.2, seed=1)
  sim = np.round(_similarity(emb), 1)
  pairs = B.identity_pairs(labels, num_impostor_pairs=10**9)
  assert (~pairs.is_same).sum() == PR.count_pairs(labels)[1]  # every impostor pair
  scores = sim[pairs.idx_a, pairs.idx_b]
  for mult in B.resample_identities(num_ids, 5, seed=3):
    got = B.weighted_metrics(scores, pairs, mult, FARS)
    g, i = _materialised(sim, labels, mult)
    want = _unweighted(g, i, FARS)
    np.testing.assert_array_equal(list(got.values())[:-1], want[:-1])
    np.testing.assert_allclose(got["auc"], want[-1], rtol=1e-12)
    np.testing.assert_array_equal(B.pair_weights(pairs, mult)[pairs.is_same],
                                  mult[pairs.id_a[pairs.is_same]])


def test_all_ones_weights_equal_unweighted_metrics():
  emb, labels = _clusters(30, 6, noise=1.0, seed=2)
  pairs = B.identity_pairs(labels, num_impostor_pairs=5000, seed=4)
  scores = PR.pair_scores(emb, pairs.idx_a, pairs.idx_b)
  got = B.weighted_metrics(scores, pairs, np.ones(30, np.int64), FARS)
  want = _unweighted(scores[pairs.is_same], scores[~pairs.is_same], FARS)
  np.testing.assert_array_equal(list(got.values())[:-1], want[:-1])
  np.testing.assert_allclose(got["auc"], want[-1], rtol=1e-12)
  np.testing.assert_array_equal(B.pair_weights(pairs, np.ones(30)), 1.0)


def test_point_estimate_equals_evaluate_embeddings():
  emb, labels = _clusters(40, 5, noise=1.0, seed=5)
  res = B.bootstrap_verification(emb, labels, num_resamples=50, seed=7,
                                 num_impostor_pairs=3000)
  report = api.evaluate_embeddings(emb, labels, num_impostor_pairs=3000,
                                   exhaustive_impostor_limit=0, seed=7, fars=B.DEFAULT_FARS,
                                   kfold_pairs_per_class=10)
  assert report["pairs"] == "sampled"
  assert res["tar@1e-3"]["mean"] == 100 * report["tar_at_far"][1e-3]
  assert res["tar@1e-2"]["mean"] == 100 * report["tar_at_far"][1e-2]
  assert res["auc"]["mean"] == report["auc"]
  for s in res.values():
    assert s["ci_low"] <= s["mean"] <= s["ci_high"] and s["ci_low"] < s["ci_high"]


def test_identity_pairs_are_the_evaluation_pairs():
  labels = np.repeat(np.array([5, 2, 9, 7]), [3, 4, 2, 5])
  pairs = B.identity_pairs(labels, num_impostor_pairs=20, seed=1)
  a, b, same = PR.make_verification_pairs(labels, 20, 1)
  np.testing.assert_array_equal(pairs.idx_a, a)
  np.testing.assert_array_equal(pairs.idx_b, b)
  np.testing.assert_array_equal(pairs.is_same, same)
  uniq = np.unique(labels)
  np.testing.assert_array_equal(uniq[pairs.id_a], labels[a])
  np.testing.assert_array_equal(uniq[pairs.id_b], labels[b])
  assert pairs.num_identities == 4


def test_separable_embeddings_collapse_the_ci():
  labels = np.repeat(np.arange(20), 4)
  emb = np.eye(32, dtype=np.float32)[labels] + 1e-3 * np.random.default_rng(0).normal(
      size=(80, 32)).astype(np.float32)
  res = B.bootstrap_verification(emb, labels, num_resamples=200)
  for name, s in res.items():
    want = 1.0 if name == "auc" else 100.0
    assert s["mean"] == s["ci_low"] == s["ci_high"] == want, name


def test_paired_difference_of_a_model_with_itself_is_zero():
  emb, labels = _clusters(30, 5, noise=1.0, seed=8)
  res = B.paired_bootstrap(emb, emb, labels, num_resamples=200)
  for s in res["delta"].values():
    assert s["mean"] == s["ci_low"] == s["ci_high"] == 0.0
  assert res["a"] == res["b"]
  assert res["a"]["tar@1e-2"]["ci_low"] < res["a"]["tar@1e-2"]["ci_high"]


def test_paired_difference_detects_a_better_model_and_not_a_noisy_twin():
  shape = dict(num_ids=60, per_id=6)
  worse, labels = _clusters(noise=1.3, seed=10, **shape)
  better, _ = _clusters(noise=0.9, seed=11, **shape)
  twin, _ = _clusters(noise=1.3, seed=12, **shape)
  res = B.bootstrap_models({"a": worse, "b": better, "twin": twin}, labels, baseline="a",
                           num_impostor_pairs=20000)
  for name, s in res["b"]["delta"].items():
    assert s["ci_low"] > 0, (name, s)
  for name, s in res["twin"]["delta"].items():
    assert s["ci_low"] < 0 < s["ci_high"], (name, s)
  # Pairing: the delta CI is narrower than the gap between the two unpaired CIs allows.
  d = res["b"]["delta"]["tar@1e-2"]
  a, b = res["a"]["metrics"]["tar@1e-2"], res["b"]["metrics"]["tar@1e-2"]
  assert d["ci_high"] - d["ci_low"] < (a["ci_high"] - a["ci_low"]) + (b["ci_high"] - b["ci_low"])


def test_seeds_pool_replicate_by_replicate():
  labels = np.repeat(np.arange(25), 5)
  seeds = [_clusters(25, 5, noise=1.0, seed=s)[0] for s in (20, 21, 22)]
  pairs = B.identity_pairs(labels, num_impostor_pairs=2000)
  mult = B.resample_identities(25, 300)
  scores = [PR.pair_scores(e, pairs.idx_a, pairs.idx_b) for e in seeds]
  point, reps = B.bootstrap_scores(scores, pairs, mult)
  for s in range(3):  # each seed's replicates are its own bootstrap under the same resamples
    p1, r1 = B.bootstrap_scores(scores[s], pairs, mult)
    np.testing.assert_array_equal(point[s], p1[0])
    np.testing.assert_array_equal(reps[s], r1[0])
  res = B.bootstrap_verification(seeds, labels, num_resamples=300, num_impostor_pairs=2000)
  names = B.metric_names()
  pooled = reps.mean(axis=0)
  for k, name in enumerate(names):
    assert res[name]["mean"] == pytest.approx(point[:, k].mean(), rel=1e-12)
    assert res[name]["per_seed"] == point[:, k].tolist()
    lo, hi = np.percentile(pooled[:, k], [2.5, 97.5])
    assert res[name]["ci_low"] == pytest.approx(lo, rel=1e-12)
    assert res[name]["ci_high"] == pytest.approx(hi, rel=1e-12)
    assert res[name]["ci_low"] < res[name]["ci_high"]


def test_deterministic_with_a_fixed_seed():
  emb, labels = _clusters(30, 5, noise=1.0, seed=30)
  r1 = B.bootstrap_verification(emb, labels, num_resamples=100, seed=3)
  r2 = B.bootstrap_verification(emb, labels, num_resamples=100, seed=3)
  r3 = B.bootstrap_verification(emb, labels, num_resamples=100, seed=4)
  assert r1 == r2
  assert r1 != r3
  mult = B.resample_identities(30, 1000, seed=0)
  assert mult.shape == (1000, 30) and np.all(mult.sum(axis=1) == 30)
  np.testing.assert_array_equal(mult, B.resample_identities(30, 1000, seed=0))


def test_bootstrap_unit_means_known_data():
  # Units 0..9: the mean is 4.5; the resample means are `mult @ v / 10` of the module's own
  # multiplicities, so the percentiles are checked against a direct computation.
  v = np.arange(10.0)
  out = B.bootstrap_unit_means({"x": v, "y": 2 * v + 1}, num_resamples=500, seed=3)
  mult = B.resample_identities(10, 500, 3)
  reps = mult @ v / 10
  assert out["x"]["mean"] == 4.5 and out["x"]["units"] == 10
  np.testing.assert_allclose([out["x"]["ci_low"], out["x"]["ci_high"]],
                             np.percentile(reps, [2.5, 97.5]))
  # The same resamples serve every metric: y = 2x + 1 maps the interval exactly.
  np.testing.assert_allclose([out["y"]["ci_low"], out["y"]["ci_high"]],
                             [2 * out["x"]["ci_low"] + 1, 2 * out["x"]["ci_high"] + 1])
  # Normal data: the 95% interval is about mean +- 1.96 sd / sqrt(n).
  z = np.random.default_rng(0).normal(5.0, 2.0, 400)
  s = B.bootstrap_unit_means({"z": z}, num_resamples=2000)["z"]
  half = 1.96 * z.std(ddof=1) / np.sqrt(z.size)
  assert s["ci_low"] < z.mean() < s["ci_high"]
  np.testing.assert_allclose(s["ci_high"] - s["ci_low"], 2 * half, rtol=0.1)
  # Constant units: a zero-width interval is then correct.
  c = B.bootstrap_unit_means({"c": np.full(5, 0.25)})["c"]
  assert c["ci_low"] == c["ci_high"] == 0.25


def test_bootstrap_unit_means_one_unit_has_no_interval():
  s = B.bootstrap_unit_means({"x": [0.7]})["x"]
  assert s == {"mean": 0.7, "ci_low": None, "ci_high": None, "se": None, "units": 1}
  assert not B.intervals_separate(s, {"ci_low": 0.0, "ci_high": 0.1})
  with pytest.raises(ValueError, match="different numbers"):
    B.bootstrap_unit_means({"a": [1.0, 2.0], "b": [1.0]})
  with pytest.raises(ValueError, match="non-finite"):
    B.bootstrap_unit_means({"a": [1.0, np.nan]})


def test_intervals_separate():
  assert B.intervals_separate({"ci_low": 0.0, "ci_high": 0.2}, {"ci_low": 0.3, "ci_high": 0.5})
  assert B.intervals_separate({"ci_low": 0.3, "ci_high": 0.5}, {"ci_low": 0.0, "ci_high": 0.2})
  assert not B.intervals_separate({"ci_low": 0.0, "ci_high": 0.3}, {"ci_low": 0.3, "ci_high": 0.5})
