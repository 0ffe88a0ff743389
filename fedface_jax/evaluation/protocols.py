"""Readers and scoring for the public 1:1 benchmarks: LFW, IJB-A, IJB-B/C (FEDFACE.md section 5).

Why: the paper's numbers (and the reference numbers we compare with) are only reproducible when
the protocol files are parsed, templates pooled and TAR@FAR computed *exactly* as in the two
reference pipelines:

* FedFace / facepy (``lfw.py``, ``ijba.py``, ``ijbc.py``): L2-normalised image features, template
  = L2norm(mean of its image features), cosine score, facepy TAR@FAR rule, IJB-A averaged over
  10 splits.
* insightface ``eval_ijbc.py``: flip-summed un-normalised features, optionally weighted by the
  detector (faceness) score, media pooling (mean per media), template = L2norm(sum of media
  features), dot-product score, sklearn-ROC TAR@FAR rule.

Image decoding/alignment is not done here: callers pass features (per path / per file, or an
array aligned with the protocol's image list), so the same scoring serves any model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import csv
import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np

from fedface_jax.evaluation import pairs as pairs_lib
from fedface_jax.evaluation import verification

LFW_FARS = (1e-3, 1e-2, 1e-1)
IJBA_FARS = (1e-4, 1e-3, 1e-2)
IJBC_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
IJBC_VANILLA_FARS = (1e-5, 1e-4, 1e-3, 1e-2)


def _require_file(path: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"protocol file not found: {path}")
  return path


# --------------------------------------------------------------------------------------------
# LFW
# --------------------------------------------------------------------------------------------


def read_lfw_pairs(path: str, image_ext: str = ".jpg") -> list[tuple[str, str, bool, int]]:
  """Parses LFW ``pairs.txt`` into ``(path_a, path_b, same, fold)`` tuples, in file order.

  The header is ``"<folds> <pairs per class per fold>"`` ("10 300"); each fold has that many
  ``name n1 n2`` (same) lines then that many ``name1 n1 name2 n2`` (different) lines. A
  one-number header (``pairsDevTrain.txt``: "1100") is one fold. Paths are relative,
  ``name/name_%04d.jpg`` as in the LFW distribution.
  """
  with open(_require_file(path)) as f:
    lines = [ln.split() for ln in f if ln.strip()]
  if not lines:
    raise ValueError(f"empty pairs file: {path}")
  header = lines[0]
  try:
    if len(header) == 1:
      n_folds, n_per = 1, int(header[0])
    elif len(header) == 2:
      n_folds, n_per = int(header[0]), int(header[1])
    else:
      raise ValueError
  except ValueError:
    raise ValueError(f"{path}: bad header {' '.join(header)!r}, expected '10 300'") from None
  body = lines[1:]
  if len(body) != 2 * n_folds * n_per:
    raise ValueError(
        f"{path}: header promises {n_folds} x 2 x {n_per} = {2 * n_folds * n_per} pairs, "
        f"found {len(body)} lines")

  def img(name: str, num: str) -> str:
    return f"{name}/{name}_{int(num):04d}{image_ext}"

  pairs = []
  for k, tok in enumerate(body):
    fold = k // (2 * n_per)
    if len(tok) == 3:
      pairs.append((img(tok[0], tok[1]), img(tok[0], tok[2]), True, fold))
    elif len(tok) == 4:
      pairs.append((img(tok[0], tok[1]), img(tok[2], tok[3]), False, fold))
    else:
      raise ValueError(f"{path}: line {k + 2} has {len(tok)} fields, expected 3 or 4")
  return pairs


def evaluate_lfw(embeddings_by_path: Mapping[str, Any],
                 pairs: Sequence[tuple[str, str, bool, int]],
                 fars: Sequence[float] = LFW_FARS, kfold_method: str = "facepy",
                 tar_method: str = "facepy") -> dict[str, Any]:
  """LFW 10-fold accuracy (official folds) and TAR@FAR over all pairs.

  Args:
    embeddings_by_path: feature per relative image path (``name/name_0001.jpg``); normalised here.
    pairs: from `read_lfw_pairs`.
    fars: TAR@FAR targets (3,000 impostor pairs resolve FAR >= 1/3000 only; flagged otherwise).
    kfold_method: ``"facepy"`` (FedFace lfw.py) or ``"insightface"``.
    tar_method: TAR@FAR rule.

  Returns:
    the `verification_report` dict plus ``accuracy``, ``accuracy_std``, ``kfold``.
  """
  missing = sorted({p for a, b, _, _ in pairs for p in (a, b) if p not in embeddings_by_path})
  if missing:
    raise ValueError(f"{len(missing)} LFW images have no embedding, e.g. {missing[:3]}")
  emb_a = pairs_lib.l2_normalize(
      np.stack([np.asarray(embeddings_by_path[a], np.float32) for a, _, _, _ in pairs]))
  emb_b = pairs_lib.l2_normalize(
      np.stack([np.asarray(embeddings_by_path[b], np.float32) for _, b, _, _ in pairs]))
  scores = np.sum(emb_a * emb_b, axis=1)
  same = np.array([s for _, _, s, _ in pairs], bool)
  folds = np.array([f for _, _, _, f in pairs])
  kf = verification.kfold_accuracy(scores, same, method=kfold_method, folds=folds)
  report = verification.verification_report(scores[same], scores[~same], fars, tar_method)
  report.update(accuracy=kf["mean"], accuracy_std=kf["std"], kfold=kf)
  return report


# --------------------------------------------------------------------------------------------
# Template pooling (shared by IJB-A / IJB-B / IJB-C)
# --------------------------------------------------------------------------------------------


def _segment_sums(x: np.ndarray, seg: np.ndarray, num: int) -> np.ndarray:
  """Row sums of `x` per segment id in [0, num) (sort + reduceat; every id must occur)."""
  order = np.argsort(seg, kind="stable")
  seg_sorted = seg[order]
  starts = np.concatenate([[0], np.nonzero(np.diff(seg_sorted))[0] + 1])
  if starts.size != num:
    raise AssertionError("every segment must be non-empty")
  return np.add.reduceat(x[order], starts, axis=0)


def template_features(image_feats: Any, template_ids: Any, media_ids: Any = None,
                      mode: str = "insightface", scores: Any = None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Pools image features into one L2-normalised feature per template.

  Args:
    image_feats: [N, D] per-image features. For ``"insightface"`` pass them as insightface does:
      flip-summed and *not* normalised (``use_norm_score=True``).
    template_ids: [N] template id of each image.
    media_ids: [N] media id of each image (required for ``"insightface"``).
    mode: ``"insightface"``: optional multiplication by `scores` (detector / faceness score),
      mean per (template, media), sum over the template's media, L2-normalise.
      ``"vanilla"`` (FedFace facepy): L2-normalise each image, mean over all images of the
      template, L2-normalise; no media pooling, no scores.
    scores: [N] detector scores for ``"insightface"`` (None = unweighted).

  Returns:
    ``(features [T, D] float64, unique_template_ids [T] sorted)``.
  """
  x = np.asarray(image_feats, dtype=np.float64)
  tids = np.asarray(template_ids).reshape(-1)
  if x.ndim != 2 or x.shape[0] != tids.size:
    raise ValueError(f"image_feats {x.shape} does not match {tids.size} template ids")
  uniq_t, t_inv = np.unique(tids, return_inverse=True)
  t_inv = t_inv.reshape(-1)
  if mode == "vanilla":
    if scores is not None:
      raise ValueError("vanilla pooling takes no detector scores")
    x = pairs_lib.l2_normalize(x, dtype=np.float64)
    counts = np.bincount(t_inv, minlength=uniq_t.size)
    return pairs_lib.l2_normalize(
        _segment_sums(x, t_inv, uniq_t.size) / counts[:, None], dtype=np.float64), uniq_t
  if mode != "insightface":
    raise ValueError(f"unknown pooling mode {mode!r}; use 'insightface' or 'vanilla'")
  if media_ids is None:
    raise ValueError("insightface pooling needs media_ids")
  mids = np.asarray(media_ids).reshape(-1)
  if mids.size != tids.size:
    raise ValueError(f"{mids.size} media ids for {tids.size} images")
  if scores is not None:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size != tids.size:
      raise ValueError(f"{s.size} detector scores for {tids.size} images")
    x = x * s[:, None]
  uniq_m, m_inv = np.unique(mids, return_inverse=True)
  key = t_inv.astype(np.int64) * uniq_m.size + m_inv.reshape(-1)
  uniq_k, k_inv = np.unique(key, return_inverse=True)
  k_inv = k_inv.reshape(-1)
  media_mean = _segment_sums(x, k_inv, uniq_k.size) / np.bincount(k_inv)[:, None]
  media_template = uniq_k // uniq_m.size  # non-decreasing template index per media
  return pairs_lib.l2_normalize(_segment_sums(media_mean, media_template, uniq_t.size),
                                dtype=np.float64), uniq_t


def template_pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray, t1: Any,
                         t2: Any, chunk: int = 100_000) -> np.ndarray:
  """Dot product of the two templates' features for every pair (ids looked up, chunked)."""
  a = np.searchsorted(unique_templates, np.asarray(t1))
  b = np.searchsorted(unique_templates, np.asarray(t2))
  for name, idx, t in (("t1", a, t1), ("t2", b, t2)):
    bad = (idx >= unique_templates.size) | (
        unique_templates[np.minimum(idx, unique_templates.size - 1)] != np.asarray(t))
    if np.any(bad):
      raise ValueError(f"{int(bad.sum())} {name} template ids have no features")
  out = np.empty(a.size, dtype=np.float64)
  for s in range(0, a.size, chunk):
    out[s:s + chunk] = np.sum(template_feats[a[s:s + chunk]] * template_feats[b[s:s + chunk]], -1)
  return out


# --------------------------------------------------------------------------------------------
# CSV template metadata (IJB-A splits, FedFace's IJB-C files)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemplateMetadata:
  """One row per (template, image) line of a metadata CSV, in file order."""
  template_ids: np.ndarray  # [M] int64
  subject_ids: np.ndarray  # [M] int64
  files: tuple[str, ...]  # [M], as written in the CSV
  media_ids: np.ndarray  # [M] str

  def template_subjects(self) -> dict[int, int]:
    """Subject of every template; a template spanning two subjects is a corrupt file."""
    out: dict[int, int] = {}
    for t, s in zip(self.template_ids.tolist(), self.subject_ids.tolist()):
      if out.setdefault(t, s) != s:
        raise ValueError(f"template {t} has images of subjects {out[t]} and {s}")
    return out


def read_template_csv(path: str) -> TemplateMetadata:
  """Reads TEMPLATE_ID, SUBJECT_ID, FILE (or FILENAME), MEDIA_ID columns of an IJB metadata CSV.

  Columns are found by header name; without a recognisable header the first four columns are
  taken in that order (FedFace reads them positionally).
  """
  with open(_require_file(path), newline="") as f:
    rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
  if not rows:
    raise ValueError(f"empty metadata file: {path}")
  head = [c.strip().upper() for c in rows[0]]
  if "TEMPLATE_ID" in head:
    def col(*names: str) -> int:
      for n in names:
        if n in head:
          return head.index(n)
      raise ValueError(f"{path}: none of the columns {names} in header {rows[0]}")
    cols = (col("TEMPLATE_ID"), col("SUBJECT_ID"), col("FILE", "FILENAME"), col("MEDIA_ID"))
    rows = rows[1:]
  else:
    cols = (0, 1, 2, 3)
  try:
    tids = np.array([int(r[cols[0]]) for r in rows], np.int64)
    sids = np.array([int(r[cols[1]]) for r in rows], np.int64)
  except (ValueError, IndexError) as e:
    raise ValueError(f"{path}: bad TEMPLATE_ID/SUBJECT_ID value ({e})") from None
  files = tuple(r[cols[2]].strip() for r in rows)
  media = np.array([r[cols[3]].strip() for r in rows])
  return TemplateMetadata(tids, sids, files, media)


def read_template_pairs_csv(path: str) -> np.ndarray:
  """``t1,t2`` lines (IJB-A ``verify_comparisons_i.csv``) -> int64 [P, 2]."""
  with open(_require_file(path), newline="") as f:
    rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
  try:
    return np.array([(int(r[0]), int(r[1])) for r in rows], np.int64).reshape(-1, 2)
  except (ValueError, IndexError) as e:
    raise ValueError(f"{path}: bad template pair line ({e})") from None


def evaluate_template_pairs(features_by_file: Mapping[str, Any], meta: TemplateMetadata,
                            pairs: np.ndarray, fars: Sequence[float],
                            method: str = "facepy", mode: str = "vanilla") -> dict[str, Any]:
  """Scores template pairs from per-file features; label = same SUBJECT_ID.

  Images without a feature are skipped like FedFace's ijba.py does, but counted; pairs whose
  template ends up empty are dropped and counted (FedFace would score them as NaN).
  """
  have = np.array([f in features_by_file for f in meta.files], bool)
  num_missing = int((~have).sum())
  if num_missing:
    logging.warning("%d of %d template images have no feature; skipped", num_missing, have.size)
  if not have.any():
    raise ValueError("no template image has a feature")
  feats = np.stack([np.asarray(features_by_file[f], np.float32)
                    for f, h in zip(meta.files, have) if h])
  tfeats, uniq = template_features(feats, meta.template_ids[have], meta.media_ids[have], mode=mode)
  subjects = meta.template_subjects()
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  unknown = sorted({int(t) for t in pairs.reshape(-1)} - set(subjects))
  if unknown:
    raise ValueError(f"{len(unknown)} compared templates are not in the metadata, e.g. "
                     f"{unknown[:3]}")
  enrolled = np.isin(pairs[:, 0], uniq) & np.isin(pairs[:, 1], uniq)
  num_dropped = int((~enrolled).sum())
  if num_dropped:
    logging.warning("%d of %d pairs involve a template without any feature; dropped",
                    num_dropped, len(pairs))
  pairs = pairs[enrolled]
  scores = template_pair_scores(tfeats, uniq, pairs[:, 0], pairs[:, 1])
  same = np.array([subjects[a] == subjects[b] for a, b in pairs.tolist()], bool)
  report = verification.verification_report(scores[same], scores[~same], fars, method)
  report.update(num_images_missing=num_missing, num_pairs_dropped=num_dropped,
                pooling=mode)
  return report


# --------------------------------------------------------------------------------------------
# IJB-A
# --------------------------------------------------------------------------------------------


def read_ijba_split(proto_dir: str, split: int) -> tuple[TemplateMetadata, np.ndarray]:
  """``split{i}/verify_metadata_{i}.csv`` and ``split{i}/verify_comparisons_{i}.csv`` (1-based)."""
  d = os.path.join(proto_dir, f"split{split}")
  meta = read_template_csv(os.path.join(d, f"verify_metadata_{split}.csv"))
  pairs = read_template_pairs_csv(os.path.join(d, f"verify_comparisons_{split}.csv"))
  return meta, pairs


def evaluate_ijba(features_by_file: Mapping[str, Any], proto_dir: str,
                  splits: Iterable[int] = range(1, 11), fars: Sequence[float] = IJBA_FARS,
                  method: str = "facepy") -> dict[str, Any]:
  """IJB-A 1:1 as in FedFace's ijba.py: per-split TAR@FAR (facepy), mean and std over splits.

  Args:
    features_by_file: image feature per FILE value of the metadata CSVs (normalised here).
    proto_dir: the ``IJB-A_11_sets`` folder holding ``split1`` ... ``split10``.
    splits: 1-based split numbers.
    fars: target FARs (FedFace: 1e-4, 1e-3, 1e-2; 0 is allowed and uses max impostor + 1e-7).
    method: TAR@FAR rule.

  Returns:
    dict with ``splits`` (per-split reports), ``tar_mean``, ``tar_std`` (population std, as
    ``np.std`` in ijba.py), ``far_mean`` (recomputed FAR), keyed by FAR.
  """
  per_split = []
  for i in splits:
    meta, pairs = read_ijba_split(proto_dir, i)
    rep = evaluate_template_pairs(features_by_file, meta, pairs, fars, method, mode="vanilla")
    rep["split"] = int(i)
    per_split.append(rep)
  if not per_split:
    raise ValueError("no IJB-A split requested")
  fars_f = [float(f) for f in fars]
  tars = np.array([[r["tar_at_far"][f] for f in fars_f] for r in per_split])
  far_act = np.array([[r["actual_far"][f] for f in fars_f] for r in per_split])
  return {
      "splits": per_split,
      "tar_mean": dict(zip(fars_f, tars.mean(0).tolist())),
      "tar_std": dict(zip(fars_f, tars.std(0).tolist())),
      "far_mean": dict(zip(fars_f, far_act.mean(0).tolist())),
      "method": method,
      "pooling": "vanilla",
  }


# --------------------------------------------------------------------------------------------
# IJB-B / IJB-C
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IJBProtocol:
  """insightface's IJB-B/C meta files, arrays aligned with the ``*_face_tid_mid.txt`` rows."""
  image_names: tuple[str, ...]
  template_ids: np.ndarray  # [N] int64
  media_ids: np.ndarray  # [N] int64
  pair_t1: np.ndarray  # [P] int64
  pair_t2: np.ndarray  # [P] int64
  pair_label: np.ndarray  # [P] bool
  landmarks: np.ndarray | None = None  # [N, 5, 2] float32
  detector_scores: np.ndarray | None = None  # [N] float32 (faceness score)


def _read_table(path: str) -> list[list[str]]:
  with open(_require_file(path)) as f:
    return [ln.split() for ln in f if ln.strip()]


def read_ijb_protocol(meta_dir: str, name: str = "ijbc") -> IJBProtocol:
  """Reads ``{name}_face_tid_mid.txt``, ``{name}_template_pair_label.txt`` and, when present,
  ``{name}_name_5pts_score.txt`` (image, 10 landmark coordinates, faceness score)."""
  name = name.lower()
  rows = _read_table(os.path.join(meta_dir, f"{name}_face_tid_mid.txt"))
  try:
    names = tuple(r[0] for r in rows)
    tids = np.array([int(r[1]) for r in rows], np.int64)
    mids = np.array([int(r[2]) for r in rows], np.int64)
  except (ValueError, IndexError) as e:
    raise ValueError(f"{name}_face_tid_mid.txt: bad line ({e})") from None
  prow = _read_table(os.path.join(meta_dir, f"{name}_template_pair_label.txt"))
  try:
    p = np.array([[int(r[0]), int(r[1]), int(r[2])] for r in prow], np.int64).reshape(-1, 3)
  except (ValueError, IndexError) as e:
    raise ValueError(f"{name}_template_pair_label.txt: bad line ({e})") from None
  if not np.isin(p[:, 2], (0, 1)).all():
    raise ValueError(f"{name}_template_pair_label.txt: labels must be 0 or 1")
  landmarks = det = None
  score_path = os.path.join(meta_dir, f"{name}_name_5pts_score.txt")
  if os.path.isfile(score_path):
    srows = _read_table(score_path)
    if len(srows) != len(rows) or any(s[0] != n for s, n in zip(srows, names)):
      raise ValueError(f"{score_path}: image list does not match {name}_face_tid_mid.txt")
    if any(len(s) != 12 for s in srows):
      raise ValueError(f"{score_path}: expected 12 fields (name, 10 coordinates, score)")
    vals = np.array([[float(v) for v in s[1:]] for s in srows], np.float32)
    landmarks, det = vals[:, :10].reshape(-1, 5, 2), vals[:, 10]
  return IJBProtocol(names, tids, mids, p[:, 0], p[:, 1], p[:, 2].astype(bool), landmarks, det)


def evaluate_ijb(image_feats: Any, protocol: IJBProtocol, mode: str = "insightface",
                 use_detector_score: bool = True, fars: Sequence[float] = IJBC_FARS,
                 method: str = "roc") -> dict[str, Any]:
  """IJB-B/C 1:1 template verification (insightface eval_ijbc.py by default).

  Args:
    image_feats: [N, D] aligned with the protocol's images. insightface: ``f(x) + f(flip x)``
      not normalised (``compute_embeddings(..., flip=True, mode="concat")`` then sum the halves);
      vanilla: any (normalised per image here).
    protocol: from `read_ijb_protocol`.
    mode: ``"insightface"`` or ``"vanilla"`` pooling (see `template_features`).
    use_detector_score: weight images by the faceness score (insightface only; requires the
      ``_name_5pts_score.txt`` file).
    fars: targets (insightface prints 1e-6 ... 1e-1).
    method: ``"roc"`` (insightface) or ``"facepy"``.
  """
  scores = None
  if mode == "insightface" and use_detector_score:
    if protocol.detector_scores is None:
      raise ValueError("use_detector_score=True needs the *_name_5pts_score.txt file")
    scores = protocol.detector_scores
  tfeats, uniq = template_features(image_feats, protocol.template_ids, protocol.media_ids,
                                   mode=mode, scores=scores)
  s = template_pair_scores(tfeats, uniq, protocol.pair_t1, protocol.pair_t2)
  lab = protocol.pair_label
  report = verification.verification_report(s[lab], s[~lab], fars, method)
  report.update(pooling=mode, detector_score=bool(scores is not None))
  return report


def read_ijbc_vanilla_protocol(proto_dir: str) -> tuple[TemplateMetadata, np.ndarray]:
  """FedFace ijbc.py files: templates of ``ijbc_1N_gallery_G1.csv``, ``ijbc_1N_gallery_G2.csv``,
  ``ijbc_1N_probe_mixed.csv`` and the pairs of ``ijbc_11_G1_G2_matches.csv``."""
  metas = [read_template_csv(os.path.join(proto_dir, n)) for n in (
      "ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv")]
  meta = TemplateMetadata(
      np.concatenate([m.template_ids for m in metas]),
      np.concatenate([m.subject_ids for m in metas]),
      tuple(f for m in metas for f in m.files),
      np.concatenate([m.media_ids for m in metas]))
  pairs = read_template_pairs_csv(os.path.join(proto_dir, "ijbc_11_G1_G2_matches.csv"))
  return meta, pairs


def evaluate_ijbc_vanilla(features_by_file: Mapping[str, Any], proto_dir: str,
                          fars: Sequence[float] = IJBC_VANILLA_FARS,
                          method: str = "facepy") -> dict[str, Any]:
  """IJB-C 1:1 as in FedFace's ijbc.py: vanilla mean templates, facepy TAR@FAR."""
  meta, pairs = read_ijbc_vanilla_protocol(proto_dir)
  return evaluate_template_pairs(features_by_file, meta, pairs, fars, method, mode="vanilla")
