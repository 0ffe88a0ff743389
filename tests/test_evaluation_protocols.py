"""Tests of pairs, embeddings, benchmark protocol readers/pooling, plots and the evaluation API."""

import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.evaluation import api
from fedface_jax.evaluation import embeddings as E
from fedface_jax.evaluation import pairs as PR
from fedface_jax.evaluation import plots
from fedface_jax.evaluation import protocols as P
from fedface_jax.evaluation import verification as V

# --------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------


def test_make_verification_pairs_small():
  labels = np.array([0, 0, 0, 1, 1, 2])
  a, b, same = PR.make_verification_pairs(labels, num_impostor_pairs=5, seed=0)
  gen = list(zip(a[same].tolist(), b[same].tolist()))
  assert gen == [(0, 1), (0, 2), (1, 2), (3, 4)]
  imp = set(zip(a[~same].tolist(), b[~same].tolist()))
  assert len(imp) == 5 and (~same).sum() == 5
  assert all(i < j and labels[i] != labels[j] for i, j in imp)
  a2, b2, same2 = PR.make_verification_pairs(labels, 5, seed=0)
  np.testing.assert_array_equal(a, a2)
  np.testing.assert_array_equal(b, b2)
  np.testing.assert_array_equal(same, same2)
  # More than exist: every one of the 15 - 4 = 11 impostor pairs, once.
  a, b, same = PR.make_verification_pairs(labels, 100, seed=3)
  assert (~same).sum() == 11
  assert PR.count_pairs(labels) == (4, 11)


def test_impostor_sampling_rejection_path_is_unique_and_uniformish():
  labels = np.repeat(np.arange(40), 5)  # 200 images, 19,900 pairs, 400 genuine
  n_gen, n_imp = PR.count_pairs(labels)
  assert (n_gen, n_imp) == (400, 19500)
  a, b = PR.sample_impostor_pairs(labels, 5000, seed=1)
  assert a.size == 5000
  assert np.unique(a * 200 + b).size == 5000
  assert np.all(a < b) and np.all(labels[a] != labels[b])
  # Every image appears in about 2 * 5000 / 200 = 50 sampled pairs.
  counts = np.bincount(np.concatenate([a, b]), minlength=200)
  assert 25 < counts.min() and counts.max() < 80
  a3, _ = PR.sample_impostor_pairs(labels, 5000, seed=2)
  assert not np.array_equal(a, a3)


def test_pair_scores_cosine():
  emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
  s = PR.pair_scores(emb, [0, 0, 1], [2, 1, 2], chunk=2)
  np.testing.assert_allclose(s, [1 / np.sqrt(2), 0.0, 1 / np.sqrt(2)], atol=1e-6)


def test_all_pairs_scores_matches_brute_force():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(53, 8))
  labels = rng.integers(0, 7, size=53)
  g, i = PR.all_pairs_scores(emb, labels, block=7)
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  s = e @ e.T
  iu, ju = np.triu_indices(53, k=1)
  same = labels[iu] == labels[ju]
  np.testing.assert_allclose(g, s[iu, ju][same], atol=1e-5)  # same row-major order
  np.testing.assert_allclose(i, s[iu, ju][~same], atol=1e-5)


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


def test_compute_embeddings_padding_flip_and_single_compile():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(10, 4, 5, 3), dtype=np.uint8)
  traces = []

  @jax.jit
  def embed(x):
    traces.append(x.shape)
    return x[:, 0].reshape(x.shape[0], -1) + 0.5  # first image row, not flip-invariant

  def ref_f(imgs):
    return ((imgs.astype(np.float32) - 127.5) / 128.0)[:, 0].reshape(len(imgs), -1) + 0.5

  def l2n(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  out = E.compute_embeddings(embed, images, batch_size=4)
  assert traces == [(4, 4, 5, 3)]  # 3 batches (4 + 4 + 2 padded), one compilation
  np.testing.assert_allclose(out, l2n(ref_f(images)), atol=1e-5)
  flipped = images[:, :, ::-1]
  out = E.compute_embeddings(embed, images, batch_size=4, flip=True, mode="sum")
  np.testing.assert_allclose(out, l2n(ref_f(images) + ref_f(flipped)), atol=1e-5)
  out = E.compute_embeddings(embed, images, batch_size=4, flip=True, mode="concat")
  assert out.shape == (10, 30)
  np.testing.assert_allclose(out, np.concatenate([ref_f(images), ref_f(flipped)], 1), atol=1e-5)
  assert traces == [(4, 4, 5, 3)]
  with pytest.raises(ValueError):
    E.compute_embeddings(embed, images.astype(np.float32))


# --------------------------------------------------------------------------------------------
# LFW
# --------------------------------------------------------------------------------------------


def _unit(deg):
  r = np.deg2rad(deg)
  return np.array([np.cos(r), np.sin(r)], np.float32)


def test_read_and_evaluate_lfw(tmp_path):
  lines = ["2\t2",
           "Alice\t1\t2", "Bob\t1\t3", "Alice\t1\tCarl\t1", "Bob\t2\tDan\t4",
           "Carl\t1\t2", "Dan\t2\t4", "Alice\t2\tBob\t3", "Carl\t2\tDan\t1"]
  path = tmp_path / "pairs.txt"
  path.write_text("\n".join(lines) + "\n")
  pairs = P.read_lfw_pairs(str(path))
  assert pairs[0] == ("Alice/Alice_0001.jpg", "Alice/Alice_0002.jpg", True, 0)
  assert pairs[3] == ("Bob/Bob_0002.jpg", "Dan/Dan_0004.jpg", False, 0)
  assert pairs[4] == ("Carl/Carl_0001.jpg", "Carl/Carl_0002.jpg", True, 1)
  assert [p[3] for p in pairs] == [0] * 4 + [1] * 4
  assert [p[2] for p in pairs] == [True, True, False, False] * 2
  # Embeddings on the unit circle: cos of the angle difference is the score. Unnormalised
  # (x3) on purpose: evaluate_lfw must normalise.
  ang = {"Alice/Alice_0001.jpg": 0, "Alice/Alice_0002.jpg": 10, "Alice/Alice_0003.jpg": 0,
         "Bob/Bob_0001.jpg": 90, "Bob/Bob_0002.jpg": 95, "Bob/Bob_0003.jpg": 100,
         "Carl/Carl_0001.jpg": 180, "Carl/Carl_0002.jpg": 200, "Dan/Dan_0001.jpg": 270,
         "Dan/Dan_0002.jpg": 300, "Dan/Dan_0004.jpg": 340}
  emb = {k: 3.0 * _unit(v) for k, v in ang.items()}
  emb["Alice/Alice_0002.jpg"] = _unit(10)
  # Scores: fold 0 same cos10, cos10; diff cos180, cos(95-340); fold 1 same cos20, cos40; diff
  # cos(10-100)=0, cos(200-270)=cos70. facepy candidates are genuine training scores only:
  # fold 0 is tested with tau = cos40 (trained on fold 1: 4/4) -> 1.0; fold 1 with tau = cos10
  # (fold 0's genuine scores) which rejects both its genuine pairs -> 0.5.
  rep = P.evaluate_lfw(emb, pairs, fars=(0.5,))
  np.testing.assert_allclose(rep["kfold"]["accuracies"], [1.0, 0.5])
  np.testing.assert_allclose(rep["kfold"]["thresholds"], np.cos(np.deg2rad([40, 10])), rtol=1e-6)
  assert rep["accuracy"] == 0.75 and rep["accuracy_std"] == 0.25
  # facepy: impostors cos70 > cos90 = 0 > cos245 > -1; k = 2 -> tau = 0; all genuine accepted,
  # recomputed FAR = 2/4.
  assert rep["tar_at_far"][0.5] == 1.0
  assert rep["threshold_at_far"][0.5] == pytest.approx(0.0, abs=1e-6)
  assert rep["actual_far"][0.5] == 0.5
  assert rep["num_genuine"] == 4 and rep["num_impostor"] == 4
  del emb["Dan/Dan_0004.jpg"]
  with pytest.raises(ValueError, match="no embedding"):
    P.evaluate_lfw(emb, pairs)


def test_read_lfw_pairs_rejects_bad_files(tmp_path):
  p = tmp_path / "pairs.txt"
  p.write_text("10 300\nAlice 1 2\n")
  with pytest.raises(ValueError, match="header promises"):
    P.read_lfw_pairs(str(p))
  with pytest.raises(FileNotFoundError):
    P.read_lfw_pairs(str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------------------------
# Template pooling, IJB-A, IJB-B/C
# --------------------------------------------------------------------------------------------


def _write_ijba_split(root, split, rows, comparisons):
  d = root / f"split{split}"
  d.mkdir(parents=True)
  text = ["TEMPLATE_ID,SUBJECT_ID,FILE,MEDIA_ID,SIGHTING_ID,FRAME,FACE_X"]
  text += [f"{t},{s},{f},{m},0,0,0" for t, s, f, m in rows]
  (d / f"verify_metadata_{split}.csv").write_text("\n".join(text) + "\n")
  (d / f"verify_comparisons_{split}.csv").write_text(
      "\n".join(f"{a},{b}" for a, b in comparisons) + "\n")


def test_ijba_reader_pooling_and_split_statistics(tmp_path):
  # Template 1 (subject 7): a=[2,0] and b=[0,1] -> per-image normalised mean (0.5,0.5) -> t1 =
  # (1,1)/sqrt2. Without per-image normalisation it would be (1, 0.5) - the test tells them apart.
  # Template 2 (subject 7): c=[1,0]. Template 3 (subject 8): d=[0,5] and e (no feature).
  rows = [(1, 7, "img/a.jpg", 11), (1, 7, "img/b.jpg", 12), (2, 7, "frame/c.png", 13),
          (3, 8, "img/d.jpg", 14), (3, 8, "img/e.jpg", 15)]
  _write_ijba_split(tmp_path, 1, rows, [(1, 2), (1, 3), (2, 3)])
  # Split 2: genuine pair (2, 3') scores 0 while the impostor (1, 3') scores 1/sqrt2.
  rows2 = [(1, 7, "img/a.jpg", 11), (1, 7, "img/b.jpg", 12), (2, 8, "frame/c.png", 13),
           (3, 8, "img/d.jpg", 14)]
  _write_ijba_split(tmp_path, 2, rows2, [(2, 3), (1, 3)])
  feats = {"img/a.jpg": [2.0, 0.0], "img/b.jpg": [0.0, 1.0], "frame/c.png": [1.0, 0.0],
           "img/d.jpg": [0.0, 5.0]}

  meta, pairs = P.read_ijba_split(str(tmp_path), 1)
  np.testing.assert_array_equal(meta.template_ids, [1, 1, 2, 3, 3])
  np.testing.assert_array_equal(meta.subject_ids, [7, 7, 7, 8, 8])
  assert meta.files == ("img/a.jpg", "img/b.jpg", "frame/c.png", "img/d.jpg", "img/e.jpg")
  assert meta.template_subjects() == {1: 7, 2: 7, 3: 8}
  np.testing.assert_array_equal(pairs, [[1, 2], [1, 3], [2, 3]])

  r = 1 / np.sqrt(2)
  rep1 = P.evaluate_template_pairs(feats, meta, pairs, fars=(0.5,))
  assert rep1["num_images_missing"] == 1 and rep1["num_pairs_dropped"] == 0
  assert (rep1["num_genuine"], rep1["num_impostor"]) == (1, 2)
  # Impostors: (1,3) = r, (2,3) = 0; facepy k = 1 -> tau = r; genuine (1,2) = r >= tau.
  assert rep1["threshold_at_far"][0.5] == pytest.approx(r)
  assert rep1["tar_at_far"][0.5] == 1.0

  res = P.evaluate_ijba(feats, str(tmp_path), splits=(1, 2), fars=(0.5,))
  # Split 2: impostor r, genuine 0 -> k = 0 -> tau = r + 1e-7 -> TAR 0.
  assert [s["tar_at_far"][0.5] for s in res["splits"]] == [1.0, 0.0]
  assert res["tar_mean"][0.5] == pytest.approx(0.5)
  assert res["tar_std"][0.5] == pytest.approx(0.5)
  assert res["far_mean"][0.5] == pytest.approx((0.5 + 0.0) / 2)


def _write_ijb_meta(d, with_scores=True):
  # image, template, media. Template 1: media 10 = {f1, f2}, media 11 = {f3}. Template 2: f4.
  # Template 3: f5.
  (d / "ijbc_face_tid_mid.txt").write_text(
      "1.jpg 1 10\n2.jpg 1 10\n3.jpg 1 11\n4.jpg 2 20\n5.jpg 3 30\n")
  (d / "ijbc_template_pair_label.txt").write_text("1 2 0\n1 3 1\n2 3 0\n")
  if with_scores:
    lmk = " ".join(str(float(v)) for v in range(10))
    (d / "ijbc_name_5pts_score.txt").write_text("".join(
        f"{k}.jpg {lmk} {s}\n" for k, s in zip(range(1, 6), [1.0, 3.0, 0.5, 1.0, 2.0])))


IJB_FEATS = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0], [0, 0, 1.0], [1.0, 1.0, 0]])


def test_read_ijb_protocol(tmp_path):
  _write_ijb_meta(tmp_path)
  proto = P.read_ijb_protocol(str(tmp_path), "IJBC")
  assert proto.image_names == ("1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg")
  np.testing.assert_array_equal(proto.template_ids, [1, 1, 1, 2, 3])
  np.testing.assert_array_equal(proto.media_ids, [10, 10, 11, 20, 30])
  np.testing.assert_array_equal(proto.pair_t1, [1, 1, 2])
  np.testing.assert_array_equal(proto.pair_t2, [2, 3, 3])
  np.testing.assert_array_equal(proto.pair_label, [False, True, False])
  assert proto.landmarks.shape == (5, 5, 2) and proto.landmarks[0, 1, 0] == 2.0
  np.testing.assert_allclose(proto.detector_scores, [1.0, 3.0, 0.5, 1.0, 2.0])


def test_template_pooling_insightface_and_vanilla():
  tids = np.array([1, 1, 1, 2, 3])
  mids = np.array([10, 10, 11, 20, 30])
  # insightface, no scores: media 10 -> mean (0.5,0.5,0); media 11 -> (0,0,2); sum (0.5,0.5,2).
  feats, uniq = P.template_features(IJB_FEATS, tids, mids, mode="insightface")
  np.testing.assert_array_equal(uniq, [1, 2, 3])
  np.testing.assert_allclose(feats[0], np.array([0.5, 0.5, 2.0]) / np.sqrt(4.5))
  np.testing.assert_allclose(feats[2], np.array([1.0, 1.0, 0.0]) / np.sqrt(2))
  s = P.template_pair_scores(feats, uniq, [1, 1], [2, 3])
  np.testing.assert_allclose(s, [2 / np.sqrt(4.5), (0.5 + 0.5) / np.sqrt(4.5) / np.sqrt(2)])
  # With detector scores [1, 3, .5]: media 10 -> mean([1,0,0],[0,3,0]) = (.5,1.5,0); media 11 ->
  # (0,0,1); template (.5,1.5,1) / sqrt(3.5).
  feats, _ = P.template_features(IJB_FEATS, tids, mids, mode="insightface",
                                 scores=[1.0, 3.0, 0.5, 1.0, 2.0])
  np.testing.assert_allclose(feats[0], np.array([0.5, 1.5, 1.0]) / np.sqrt(3.5))
  # Vanilla: per-image L2 -> (1,0,0), (0,1,0), (0,0,1) -> mean -> (1,1,1)/sqrt3.
  feats, _ = P.template_features(IJB_FEATS, tids, mids, mode="vanilla")
  np.testing.assert_allclose(feats[0], np.ones(3) / np.sqrt(3))
  with pytest.raises(ValueError):
    P.template_features(IJB_FEATS, tids, mids, mode="vanilla", scores=np.ones(5))


def test_evaluate_ijb_insightface(tmp_path):
  _write_ijb_meta(tmp_path)
  proto = P.read_ijb_protocol(str(tmp_path), "ijbc")
  rep = P.evaluate_ijb(IJB_FEATS, proto, fars=(0.5, 1.0))
  # Weighted templates: t1 = (.5,1.5,1)/sqrt3.5, t2 = (0,0,1), t3 = (1,1,0)/sqrt2.
  t1 = np.array([0.5, 1.5, 1.0]) / np.sqrt(3.5)
  gen = t1 @ (np.array([1.0, 1, 0]) / np.sqrt(2))  # (1,3) label 1
  imp = np.array([t1[2], 0.0])  # (1,2), (2,3)
  assert gen > imp.max()
  assert rep["tar_at_far"][0.5] == 1.0 and rep["auc"] == 1.0
  assert rep["detector_score"] and rep["pooling"] == "insightface"
  assert (rep["num_genuine"], rep["num_impostor"]) == (1, 2)
  os.remove(tmp_path / "ijbc_name_5pts_score.txt")
  proto = P.read_ijb_protocol(str(tmp_path), "ijbc")
  assert proto.detector_scores is None
  with pytest.raises(ValueError, match="5pts"):
    P.evaluate_ijb(IJB_FEATS, proto)
  rep = P.evaluate_ijb(IJB_FEATS, proto, use_detector_score=False, fars=(0.5,))
  # Scores: impostors (1,2) = 2/sqrt4.5, (2,3) = 0; genuine (1,3) = 1/3. ROC points fpr
  # [0, .5, .5, 1], tpr [0, 0, 1, 1]: FAR=0.5 ties, the larger TPR wins -> threshold 1/3, TAR 1.
  assert rep["threshold_at_far"][0.5] == pytest.approx(1 / 3)
  assert rep["tar_at_far"][0.5] == 1.0
  rep = P.evaluate_ijb(IJB_FEATS, proto, use_detector_score=False, fars=(0.5,), method="facepy")
  assert rep["threshold_at_far"][0.5] == pytest.approx(2 / np.sqrt(4.5))  # k=1: best impostor
  assert rep["tar_at_far"][0.5] == 0.0


def test_ijbc_vanilla_reader(tmp_path):
  head = "TEMPLATE_ID,SUBJECT_ID,FILENAME,MEDIA_ID\n"
  (tmp_path / "ijbc_1N_gallery_G1.csv").write_text(head + "1,5,img/1.jpg,100\n")
  (tmp_path / "ijbc_1N_gallery_G2.csv").write_text(head + "2,6,img/2.jpg,101\n")
  (tmp_path / "ijbc_1N_probe_mixed.csv").write_text(
      head + "3,5,img/3.jpg,102\n3,5,frames/4.png,103\n")
  (tmp_path / "ijbc_11_G1_G2_matches.csv").write_text("3,1\n3,2\n")
  meta, pairs = P.read_ijbc_vanilla_protocol(str(tmp_path))
  np.testing.assert_array_equal(meta.template_ids, [1, 2, 3, 3])
  np.testing.assert_array_equal(pairs, [[3, 1], [3, 2]])
  feats = {"img/1.jpg": [1.0, 0], "img/2.jpg": [0, 1.0], "img/3.jpg": [1.0, 0],
           "frames/4.png": [0, 3.0]}
  rep = P.evaluate_ijbc_vanilla(feats, str(tmp_path), fars=(1.0,))
  # Template 3 = (1,1)/sqrt2: genuine (3,1) and impostor (3,2) both 1/sqrt2 -> k = 1, tau = r.
  assert rep["threshold_at_far"][1.0] == pytest.approx(1 / np.sqrt(2))
  assert rep["tar_at_far"][1.0] == 1.0


# --------------------------------------------------------------------------------------------
# plots and API
# --------------------------------------------------------------------------------------------


def test_plots_write_pngs(tmp_path):
  rng = np.random.default_rng(0)
  fpr, tpr, _ = V.roc_curve_points(rng.normal(1, 1, 3000), rng.normal(0, 1, 30000))
  p = plots.save_roc_png({"a": (fpr, tpr), "b": (fpr, np.sqrt(tpr))}, str(tmp_path / "r.png"))
  with open(p, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  f, t = plots.downsample_roc(fpr, tpr, num=100)
  assert f.size <= 102 and f[0] == 0.0 and f[-1] == 1.0
  q = plots.save_metric_curve_png([1, 2, 3], {"fedface": [0.5, 0.6, 0.7], "fedavg": [.5, .5, .6]},
                                  str(tmp_path / "sub" / "m.png"), "round", "TAR@FAR=1e-3")
  assert os.path.getsize(q) > 1000


FaceArrays = collections.namedtuple("FaceArrays", ["images", "labels"])


def _toy_faces(num_ids=6, per_id=5, noise=8.0, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 255, size=(num_ids, 8, 8, 3))
  imgs = base[:, None] + rng.normal(0, noise, size=(num_ids, per_id, 8, 8, 3))
  imgs = np.clip(imgs, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 3)
  return FaceArrays(imgs, np.repeat(np.arange(num_ids), per_id).astype(np.int32))


def test_evaluate_verification_end_to_end(tmp_path):
  faces = _toy_faces()
  embed = jax.jit(lambda x: jnp.reshape(x, (x.shape[0], -1)))
  rep = api.evaluate_verification(embed, faces, batch_size=8, fars=(1e-2, 1e-1),
                                  out_dir=str(tmp_path), name="toy")
  # 6 ids x 5 images: 60 genuine, 435 - 60 = 375 impostor pairs, all scored.
  assert rep["pairs"] == "all"
  assert (rep["num_genuine"], rep["num_impostor"]) == (60, 375)
  assert rep["tar_at_far"] == {1e-2: 1.0, 1e-1: 1.0}
  assert rep["auc"] == 1.0 and rep["eer"] == 0.0
  # Separable, but facepy thresholds at a training genuine score, so a test genuine below the
  # training minimum is rejected: accuracy is just below 1.
  assert 0.95 < rep["accuracy"] <= 1.0
  assert rep["kfold"]["pairs_per_class"] == 60
  with open(tmp_path / "toy.json") as f:
    saved = json.load(f)
  assert saved["tar_at_far"] == {"1e-2": 1.0, "1e-1": 1.0}
  assert os.path.getsize(tmp_path / "toy_roc.png") > 1000
  table = api.format_results_table({"toy": rep, "saved": saved}, fars=(1e-2, 1e-3))
  lines = table.splitlines()
  assert lines[0].startswith("| Model | TAR@FAR=1e-2 (%) | TAR@FAR=1e-3 (%) |")
  acc = f"{100 * rep['accuracy']:.2f} ± {100 * rep['accuracy_std']:.2f}"
  assert f"| toy | 100.00 | – | {acc} | 1.0000 | 0.00 |" in lines
  assert f"| saved | 100.00 | – | {acc} | 1.0000 | 0.00 |" in lines


def test_evaluate_embeddings_sampled_and_flagged():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(30), 4)
  centers = rng.normal(size=(30, 16))
  emb = centers[labels] + 0.8 * rng.normal(size=(120, 16))
  rep = api.evaluate_embeddings(emb, labels, num_impostor_pairs=500, exhaustive_impostor_limit=10,
                                fars=(1e-3, 1e-2), seed=1)
  assert rep["pairs"] == "sampled"
  assert (rep["num_genuine"], rep["num_impostor"]) == (180, 500)
  assert rep["far_resolved"] == {1e-3: False, 1e-2: True}
  # Same result as scoring the same sampled pairs by hand.
  a, b, same = PR.make_verification_pairs(labels, 500, seed=1)
  s = PR.pair_scores(emb, a, b)
  ref = V.verification_report(s[same], s[~same], fars=(1e-3, 1e-2))
  assert rep["tar_at_far"] == ref["tar_at_far"] and rep["auc"] == ref["auc"]
  table = api.format_results_table({"m": rep}, fars=(1e-3, 1e-2))
  assert "†" in table


def test_api_evaluate_lfw_from_image_tree(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  pairs_txt = ["2 2", "Ann 1 2", "Ben 1 2", "Ann 1 Ben 1", "Ann 2 Ben 2",
               "Cid 1 2", "Dee 1 2", "Cid 1 Dee 2", "Cid 2 Dee 1"]
  (tmp_path / "pairs.txt").write_text("\n".join(pairs_txt) + "\n")
  base = {n: rng.uniform(0, 255, (10, 10, 3)) for n in ("Ann", "Ben", "Cid", "Dee")}
  for n, b in base.items():
    (tmp_path / "lfw" / n).mkdir(parents=True)
    for k in (1, 2):
      img = np.clip(b + rng.normal(0, 5, b.shape), 0, 255).astype(np.uint8)
      ext = ".png" if n == "Dee" else ".jpg"  # .png found for a .jpg name in pairs.txt
      Image.fromarray(img).save(tmp_path / "lfw" / n / f"{n}_{k:04d}{ext}", quality=95)
  embed = jax.jit(lambda x: jnp.reshape(x, (x.shape[0], -1)))
  rep = api.evaluate_lfw(embed, str(tmp_path / "pairs.txt"), str(tmp_path / "lfw"),
                         image_size=(8, 8), batch_size=4, fars=(0.5,), out_dir=str(tmp_path))
  assert rep["num_images"] == 8 and (rep["num_genuine"], rep["num_impostor"]) == (4, 4)
  # Same numbers as embedding the decoded, resized images by hand and scoring them.
  pairs = P.read_lfw_pairs(str(tmp_path / "pairs.txt"))
  paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
  imgs = api._load_lfw_images(str(tmp_path / "lfw"), paths, (8, 8))
  assert imgs.shape == (8, 8, 8, 3)
  ref = P.evaluate_lfw(dict(zip(paths, E.compute_embeddings(embed, imgs))), pairs, fars=(0.5,))
  assert rep["accuracy"] == ref["accuracy"] and rep["tar_at_far"] == ref["tar_at_far"]
  assert rep["auc"] == 1.0
  assert (tmp_path / "lfw.json").exists()
  os.remove(tmp_path / "lfw" / "Ann" / "Ann_0002.jpg")
  with pytest.raises(FileNotFoundError, match="1 LFW images"):
    api.evaluate_lfw(embed, str(tmp_path / "pairs.txt"), str(tmp_path / "lfw"))
