"""The attack's identity judges: the configured judge per suite, and the dlib judge on real faces.

The dlib judge (dlib's pretrained ResNet, independent of the attack) must identify real photos of
enrolled identities against templates built from their other photos, and must not identify noise
images better than about chance; otherwise its rank-1 on reconstructions would mean nothing. The
real-face test skips when the model package or the shared faces are absent.
"""

import numpy as np
import pytest
from PIL import Image

from experiments import attack_celeba
from experiments import attack_sweeps as sweep_configs
from experiments import attack_synthetic
from fedface_jax.attack import judges as judges_lib
from fedface_jax.attack import pipeline
from fedface_jax.models import dlib_resnet
from reporting import attack_tables


def test_judge_defaults_and_names():
  assert attack_synthetic.get_config("variant=tiny").attack.judge == "model"
  assert attack_celeba.get_config().attack.judge == "dlib"
  assert attack_celeba.get_config("judge=both").attack.judge == "both"
  scfg = sweep_configs.sweep_config("synthetic", variant="tiny", judge="both")
  config = sweep_configs.point_config(scfg, sweep_configs.base_point(scfg), 0)
  assert config.attack.judge == "both"
  assert judges_lib.judge_names("both") == ("model", "dlib")
  assert judges_lib.judge_keys("model") == ("similarity", "rank1")
  assert judges_lib.judge_keys("dlib") == ("similarity_dlib", "rank1_dlib")
  with pytest.raises(ValueError, match="judge"):
    judges_lib.judge_names("arcface")
  # Tables name the judge in their column headers.
  rows = [{"name": "x: raw", "summary": {"psnr": 10.0, "ssim": 0.1, "reference_ssim": 0.1,
                                         "similarity_dlib": 0.5, "rank1_dlib": 0.25,
                                         "chance_rank1": 0.1, "judges": ["dlib"]}}]
  md = attack_tables.markdown_table(rows)
  assert "rank-1 (dlib judge" in md and "not dlib-aligned" in md and "model judge" not in md


def _identities(root, num_ids, per_id):
  """per_id photos of each of num_ids identities spread over the folder, and their labels."""
  dirs = sorted(d for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= per_id)
  if len(dirs) < num_ids:
    pytest.skip(f"only {len(dirs)} identities with {per_id} photos under {root}")
  images, labels = [], []
  for i, d in enumerate(dirs[::len(dirs) // num_ids][:num_ids]):
    for f in sorted(d.glob("*.jpg"))[:per_id]:
      images.append(np.asarray(Image.open(f).convert("RGB")))
      labels.append(i)
  return np.stack(images), np.asarray(labels)


def test_dlib_judge_identifies_real_photos_not_noise(celeba_root):
  pytest.importorskip("face_recognition_models")
  try:
    dlib_resnet.packaged_model_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  num_ids, per_id = 6, 5
  images, labels = _identities(celeba_root, num_ids, per_id)
  query = np.arange(labels.size) % per_id == per_id - 1   # last photo of each identity
  judge = judges_lib.make_judge("dlib", images[~query], labels[~query])
  real = judge.score(images[query].astype(np.float32) / 255.0, labels[query])
  assert real["chance"] == pytest.approx(1 / num_ids)
  assert real["rank1"] >= 4 / num_ids, real   # "most" identities: measured 6/6
  # Genuine cosine above the cosine to the other identities' templates.
  emb = judge.embed(images[query])
  tmpl = np.stack([judge.templates[i] for i in range(num_ids)])
  cos = emb @ tmpl.T
  impostor = cos[~np.eye(num_ids, dtype=bool)].mean()
  assert real["similarity"].mean() > impostor + 0.05, (real["similarity"], impostor)

  noise = np.random.default_rng(0).uniform(size=(4 * num_ids, 112, 112, 3)).astype(np.float32)
  fake = judge.score(noise, np.arange(4 * num_ids) % num_ids)
  assert fake["rank1"] <= 0.4, fake   # near chance (1/6), far from the real photos'


def _faces(num_ids, per_id=5, size=32, seed=0):
  from fedface_jax.data.faces import FaceArrays  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


def test_score_reports_every_judge():
  """`attack.judges.score` with two judges (toy embedders): each judge's keys, one chance."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 8))
  # Toy embedders read the identity off the image's mean colour; "b" is the same but shifted.
  embed_a = lambda x: centers[np.clip(np.round(np.asarray(x).mean((1, 2, 3)) * 3), 0, 3)
                              .astype(int)]
  embed_b = lambda x: embed_a(x) + 0.1
  gallery = np.repeat(np.arange(4), 2)
  flat = lambda ids: np.broadcast_to(ids[:, None, None, None] / 3.0, (ids.size, 16, 16, 3))
  gal_images = flat(gallery)
  judges = {"model": judges_lib.Judge("model", embed_a, embed_a(gal_images), gallery),
            "dlib": judges_lib.Judge("dlib", embed_b, embed_b(gal_images), gallery)}
  victims = np.array([1, 2])
  images = np.array(flat(victims), np.float32)
  out = judges_lib.score(images, images, victims, judges)
  s = out["summary"]
  assert s["judges"] == ["model", "dlib"]
  assert s["rank1"] == s["rank1_dlib"] == 1.0 and s["chance_rank1"] == 0.25
  np.testing.assert_allclose([s["similarity"], s["similarity_dlib"]], 1.0, atol=1e-6)
  assert set(out["per_image"]) == {"psnr", "ssim", "reference_ssim", "similarity",
                                   "rank1_correct", "similarity_dlib", "rank1_dlib_correct"}
  wrong = judges_lib.score(images, images, victims[::-1], judges)["summary"]
  assert wrong["rank1"] == wrong["rank1_dlib"] == 0.0


@pytest.mark.slow
def test_attack_scored_by_both_judges(tmp_path):
  """judge=both: every row carries the model's and dlib's cosine and rank-1, and the sweep table
  shows both under named headers (toy faces, so only shapes and plumbing are checked)."""
  pytest.importorskip("face_recognition_models")
  try:
    dlib_resnet.packaged_model_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  import jax  # pylint: disable=g-import-not-at-top
  from fedface_jax import models  # pylint: disable=g-import-not-at-top
  from fedface_jax import sharding as sh  # pylint: disable=g-import-not-at-top
  from reporting import attack_sweeps  # pylint: disable=g-import-not-at-top
  scfg = sweep_configs.sweep_config("synthetic", variant="tiny", sweeps=("tau",), taus=(1,),
                                    base_victims=2, base_images=1, iterations=2, judge="both",
                                    base_seeds=(0,))
  splits = {"pretrain": _faces(4, seed=1), "federated": _faces(5),
            "evaluation": _faces(3, seed=2)}
  config = sweep_configs.base_attack_config(scfg, scfg.objective)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.kwargs)
  params = models.init_params(model, jax.random.key(0), splits["federated"].image_shape)
  out = attack_sweeps.run_sweeps(scfg, str(tmp_path), splits=splits, backbone_params=params,
                                 mesh=sh.make_mesh(1, 1, jax.devices()[:1]))
  (row,) = out["rows"]
  assert row["judges"] == ["model", "dlib"]
  for key in ("similarity", "rank1", "similarity_dlib", "rank1_dlib"):
    assert np.isfinite(row[key]) and key in row["ci"], key
    assert f"noise_{key}" in row and f"ceiling_{key}" in row
  md = attack_tables.markdown_tables(out)
  assert "cos sim to victim (model judge)" in md and "rank-1 (dlib judge" in md
