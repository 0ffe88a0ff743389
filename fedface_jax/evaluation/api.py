"""One-call verification evaluation of a model on a labelled face set, and a results table.

Why: pretraining, every federated round and the final comparison all need the same numbers on
held-out identities (TAR@FAR, AUC, EER, LFW-style 10-fold accuracy), computed on the same pairs
and written in the same files, so that runs and methods are directly comparable. Exact
exhaustive impostor scoring is used whenever it is affordable, because TAR@FAR=1e-4 from a
sampled handful of impostors is noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import os
import time
from typing import Any

from absl import logging
import numpy as np

from fedface_jax.evaluation import embeddings as embeddings_lib
from fedface_jax.evaluation import pairs as pairs_lib
from fedface_jax.evaluation import protocols
from fedface_jax.evaluation import verification

DEFAULT_NUM_IMPOSTOR_PAIRS = 1_000_000
# All-pairs scoring up to this many impostor pairs (~6.3k images; 80 MB of float32 scores).
DEFAULT_EXHAUSTIVE_LIMIT = 20_000_000
# Pairs per class for the 10-fold accuracy: 3,000 + 3,000, the size of LFW's protocol.
DEFAULT_KFOLD_PAIRS_PER_CLASS = 3000
_ROC_JSON_POINTS = 200


def _balanced_kfold(genuine: np.ndarray, impostor: np.ndarray, per_class: int, seed: int,
                    n_folds: int = 10) -> dict[str, Any] | None:
  """LFW-like 10-fold accuracy on an equal number of genuine and impostor scores.

  Accuracy is only interpretable on balanced pairs (LFW: 300 + 300 per fold); each fold gets the
  same share of both classes.
  """
  n = min(genuine.size, impostor.size, per_class)
  if n < n_folds:
    logging.warning("only %d pairs per class; 10-fold accuracy skipped", n)
    return None
  rng = np.random.default_rng(seed + 1)
  g = genuine[np.sort(rng.choice(genuine.size, n, replace=False))]
  i = impostor[np.sort(rng.choice(impostor.size, n, replace=False))]
  scores = np.concatenate([g, i])
  same = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
  folds = np.concatenate([rng.permutation(n) % n_folds, rng.permutation(n) % n_folds])
  kf = verification.kfold_accuracy(scores, same, method="facepy", folds=folds)
  kf["pairs_per_class"] = int(n)
  return kf


def _json_ready(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {(verification.far_label(k) if isinstance(k, float) else str(k)): _json_ready(v)
            for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_ready(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x


def evaluate_embeddings(embeddings: Any, labels: Any, *,
                        num_impostor_pairs: int = DEFAULT_NUM_IMPOSTOR_PAIRS,
                        exhaustive_impostor_limit: int = DEFAULT_EXHAUSTIVE_LIMIT,
                        seed: int = 0, fars: Sequence[float] = verification.DEFAULT_FARS,
                        method: str = "facepy",
                        kfold_pairs_per_class: int = DEFAULT_KFOLD_PAIRS_PER_CLASS,
                        out_dir: str | None = None, name: str = "eval",
                        extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Verification report for precomputed embeddings [N, D] and labels [N].

  Same arguments and result as `evaluate_verification` (which calls it after embedding);
  `extra` entries are added to the report before it is written.
  """
  t0 = time.time()
  emb = np.asarray(embeddings, np.float32)
  lab = np.asarray(labels).reshape(-1)
  if emb.ndim != 2 or emb.shape[0] != lab.size:
    raise ValueError(f"embeddings {emb.shape} do not match {lab.size} labels")
  num_gen, num_imp = pairs_lib.count_pairs(lab)
  if num_gen == 0 or num_imp == 0:
    raise ValueError(f"need genuine and impostor pairs; labels give {num_gen} and {num_imp} "
                     "(every identity needs >= 2 images, and >= 2 identities)")
  if num_imp <= exhaustive_impostor_limit:
    genuine, impostor = pairs_lib.all_pairs_scores(emb, lab)
    pair_mode = "all"
  else:
    a, b, same = pairs_lib.make_verification_pairs(lab, num_impostor_pairs, seed)
    s = pairs_lib.pair_scores(emb, a, b)
    genuine, impostor = s[same], s[~same]
    pair_mode = "sampled"
  scores = verification.SortedScores(genuine, impostor)  # one sort for all metrics
  report = verification.verification_report(scores, fars=fars, method=method)
  kf = _balanced_kfold(genuine, impostor, kfold_pairs_per_class, seed)
  fpr, tpr, _ = scores.roc()
  roc_f, roc_t = _roc_for_json(fpr, tpr)
  report.update(
      name=name, num_images=int(lab.size), num_identities=int(np.unique(lab).size),
      embedding_dim=int(emb.shape[1]), pairs=pair_mode,
      accuracy=None if kf is None else kf["mean"],
      accuracy_std=None if kf is None else kf["std"], kfold=kf,
      roc={"fpr": roc_f.tolist(), "tpr": roc_t.tolist()},
      seconds=time.time() - t0)
  report.update(extra or {})
  logging.info("%s: %s pairs, %d genuine / %d impostor, TAR@FAR %s, AUC %.4f, EER %.4f", name,
               pair_mode, genuine.size, impostor.size,
               {verification.far_label(f): round(v, 4) for f, v in report["tar_at_far"].items()},
               report["auc"], report["eer"])
  if out_dir is not None:
    from fedface_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
      json.dump(_json_ready(report), f, indent=1)
    plots.save_roc_png({name: (fpr, tpr)}, os.path.join(out_dir, f"{name}_roc.png"),
                       fars_marked=fars, title=f"{name} ({pair_mode} pairs)")
  return report


def _roc_for_json(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  from fedface_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  f, t = plots.downsample_roc(fpr, tpr, num=_ROC_JSON_POINTS)
  return np.round(f, 9), np.round(t, 6)


def evaluate_verification(embed_fn: Callable[[Any], Any], faces: Any, *, flip: bool = False,
                          batch_size: int = 256,
                          num_impostor_pairs: int = DEFAULT_NUM_IMPOSTOR_PAIRS,
                          exhaustive_impostor_limit: int = DEFAULT_EXHAUSTIVE_LIMIT,
                          seed: int = 0, fars: Sequence[float] = verification.DEFAULT_FARS,
                          method: str = "facepy",
                          kfold_pairs_per_class: int = DEFAULT_KFOLD_PAIRS_PER_CLASS,
                          out_dir: str | None = None, name: str = "eval") -> dict[str, Any]:
  """Embeds `faces` and reports 1:1 verification on all of its identities.

  Args:
    embed_fn: jitted ``float_images [B, H, W, 3] -> [B, D]`` (see `compute_embeddings`).
    faces: anything with ``.images`` uint8 [N, H, W, 3] and ``.labels`` [N] (FaceArrays).
    flip: flip test, L2norm(f(x) + f(flip x)).
    batch_size: embedding batch size (fixed; the tail is padded).
    num_impostor_pairs: sampled impostor pairs when exhaustive scoring is too big.
    exhaustive_impostor_limit: score every impostor pair when there are at most this many.
    seed: pair sampling and 10-fold subset seed.
    fars: TAR@FAR targets; values with |I| * FAR < 1 are flagged in ``far_resolved``.
    method: TAR@FAR rule, ``"facepy"`` (FedFace) or ``"roc"`` (insightface).
    kfold_pairs_per_class: genuine (= impostor) pairs for the balanced 10-fold accuracy.
    out_dir: when set, writes ``<name>.json`` and ``<name>_roc.png`` there.
    name: run / row name.

  Returns:
    `verification_report` keys plus ``accuracy``, ``accuracy_std``, ``kfold``, ``pairs``
    ("all" or "sampled"), counts, a downsampled ``roc`` and timings.
  """
  t0 = time.time()
  emb = embeddings_lib.compute_embeddings(embed_fn, faces.images, batch_size=batch_size,
                                          flip=flip, mode="sum", desc=name)
  t_embed = time.time() - t0
  return evaluate_embeddings(
      emb, faces.labels, num_impostor_pairs=num_impostor_pairs,
      exhaustive_impostor_limit=exhaustive_impostor_limit, seed=seed, fars=fars,
      method=method, kfold_pairs_per_class=kfold_pairs_per_class, out_dir=out_dir, name=name,
      extra={"flip": flip, "embed_seconds": t_embed})


def _load_lfw_images(root: str, paths: Sequence[str], image_size: tuple[int, int] | None
                     ) -> np.ndarray:
  """Decodes LFW images (RGB uint8), resizing to `image_size` (H, W) when they differ.

  LFW must already be aligned/cropped like the training faces (e.g. the common 112x112 aligned
  release); resizing only adapts the resolution, it does not align.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out, missing, resized = [], [], 0
  for rel in paths:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):  # aligned releases often re-encode as .png (or .jpg)
      stem = os.path.splitext(path)[0]
      path = next((stem + e for e in (".png", ".jpg", ".jpeg") if os.path.isfile(stem + e)),
                  None)
      if path is None:
        missing.append(rel)
        continue
    with Image.open(path) as im:
      im = im.convert("RGB")
      if image_size is not None and im.size != (image_size[1], image_size[0]):
        im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
        resized += 1
      out.append(np.asarray(im, np.uint8))
  if missing:
    raise FileNotFoundError(f"{len(missing)} LFW images not found under {root}, "
                            f"e.g. {missing[:3]}")
  if resized:
    logging.warning("resized %d of %d LFW images to %s", resized, len(paths), image_size)
  return np.stack(out)


def evaluate_lfw(embed_fn: Callable[[Any], Any], pairs_path: str, lfw_root: str, *,
                 image_size: tuple[int, int] | None = None, flip: bool = False,
                 batch_size: int = 256, fars: Sequence[float] = protocols.LFW_FARS,
                 kfold_method: str = "facepy", out_dir: str | None = None,
                 name: str = "lfw") -> dict[str, Any]:
  """LFW 1:1 protocol end to end: pairs.txt -> images -> embeddings -> 10-fold accuracy.

  Args:
    embed_fn: jitted ``float_images -> [B, D]``.
    pairs_path: LFW ``pairs.txt``.
    lfw_root: folder holding ``name/name_0001.jpg`` (aligned crops; ``.png`` also found).
    image_size: (H, W) the model expects; images of another size are resized (with a warning).
    flip: flip test (FedFace's lfw.py uses none; insightface sums both).
    batch_size: embedding batch size.
    fars: TAR@FAR targets over all 6,000 pairs (3,000 impostors).
    kfold_method: ``"facepy"`` (FedFace) or ``"insightface"`` thresholding.
    out_dir: when set, writes ``<name>.json``.
    name: output name.

  Returns:
    `protocols.evaluate_lfw`'s report (``accuracy``, ``accuracy_std``, ``kfold``, TAR@FAR, ...).
  """
  pairs = protocols.read_lfw_pairs(pairs_path)
  paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
  images = _load_lfw_images(lfw_root, paths, image_size)
  emb = embeddings_lib.compute_embeddings(embed_fn, images, batch_size=batch_size, flip=flip,
                                          mode="sum", desc=name)
  report = protocols.evaluate_lfw(dict(zip(paths, emb)), pairs, fars=fars,
                                  kfold_method=kfold_method)
  report.update(name=name, flip=flip, num_images=len(paths))
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
      json.dump(_json_ready(report), f, indent=1)
  return report


def _lookup_far(d: Mapping[Any, Any], far: float) -> Any:
  """Value for `far` in a dict keyed by float FAR or by its JSON string form."""
  if far in d:
    return d[far]
  for k, v in d.items():
    try:
      if float(k) == far:
        return v
    except (TypeError, ValueError):
      continue
  return None


def format_results_table(rows: Mapping[str, Mapping[str, Any]],
                         fars: Sequence[float] = (1e-3, 1e-2)) -> str:
  """Markdown table: TAR@FAR in %, 10-fold accuracy (when present), AUC, EER in %.

  Accepts `verification_report`/`evaluate_verification` dicts (float or JSON-string FAR keys)
  and `evaluate_ijba` dicts (shown as mean ± std over splits). A TAR whose FAR is not resolved
  by the number of impostors is marked with a dagger.
  """
  has_acc = any(r.get("accuracy") is not None for r in rows.values())
  head = ["Model"] + [f"TAR@FAR={verification.far_label(f)} (%)" for f in fars]
  if has_acc:
    head.append("10-fold acc (%)")
  head += ["AUC", "EER (%)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
  mark = False
  for name, r in rows.items():
    cells = [str(name)]
    for f in fars:
      if "tar_at_far" in r:
        v = _lookup_far(r["tar_at_far"], f)
        ok = _lookup_far(r.get("far_resolved", {}), f)
        cell = "–" if v is None else f"{100 * v:.2f}"
        if v is not None and ok is False:
          cell += " †"
          mark = True
      elif "tar_mean" in r:
        m, s = _lookup_far(r["tar_mean"], f), _lookup_far(r.get("tar_std", {}), f)
        cell = "–" if m is None else f"{100 * m:.2f} ± {100 * (s or 0):.2f}"
      else:
        cell = "–"
      cells.append(cell)
    if has_acc:
      acc = r.get("accuracy")
      cells.append("–" if acc is None else
                   f"{100 * acc:.2f} ± {100 * (r.get('accuracy_std') or 0):.2f}")
    auc, eer = r.get("auc"), r.get("eer")
    cells.append("–" if auc is None else f"{auc:.4f}")
    cells.append("–" if eer is None else f"{100 * eer:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  table = "\n".join(lines)
  if mark:
    table += "\n\n† fewer than 1/FAR impostor pairs: TAR at this FAR is not resolved."
  return table
