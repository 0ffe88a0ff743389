"""The reference setting (`attack_celeba.py:variant=reference128`) and its report (no attack)."""

import json

import jax
import numpy as np
import pytest

from experiments import attack_celeba
from fedface_jax import config_utils
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.data.faces import FaceArrays
from reporting import attack_reference


def test_reference128_has_the_reference_hyper_parameters():
  c = attack_celeba.get_config("variant=reference128")
  a = c.attack
  # ATTACK.md 3, exactly.
  assert (a.objective, a.num_clients, a.images_per_client, a.tau) == ("paper_faithful", 4, 16, 3)
  assert a.eta == pytest.approx(0.003)
  assert (a.image_size, a.sf, a.image_size // a.sf) == (128, 4, 32)
  assert (a.iterations, a.lr, a.lr_min) == (100, 0.1, 0.01)
  assert (a.matching, a.tv_weight, a.client_momentum, a.model_seed) == ("l2", 0.0, 0.0, 0)
  assert a.judge == "dlib"
  assert tuple(c.data.image_size) == (128, 128)   # crops loaded at 128, not upsampled from 64
  # The size-setting arguments cannot move it; the seed moves participants, round and init.
  c = attack_celeba.get_config("variant=reference128,clients=2,images=2,tau=1,iterations=5,seed=3")
  assert (c.attack.num_clients, c.attack.images_per_client, c.attack.tau) == (4, 16, 3)
  assert c.attack.iterations == 100
  assert (c.attack.participants_seed, c.attack.attack_seed, c.federated.seed) == (3, 3, 3)
  # The default (CPU-sized) config is unchanged.
  d = attack_celeba.get_config()
  assert (d.attack.image_size, d.attack.sf) == (32, 2)
  assert (d.attack.images_per_client, d.attack.tau) == (2, 1)
  assert tuple(d.data.image_size) == (64, 64)
  with pytest.raises(ValueError, match="variant"):
    attack_celeba.get_config("variant=reference256")


def _fake_out(seed, victims=3, n=4):
  rng = np.random.default_rng(seed)
  m = victims * n
  per = {"psnr": rng.uniform(10, 20, m), "ssim": rng.uniform(0, 1, m),
         "reference_ssim": rng.uniform(0, 1, m), "similarity_dlib": rng.uniform(0, 1, m),
         "rank1_dlib_correct": rng.integers(0, 2, m).astype(float)}
  summ = {k.replace("_correct", ""): float(np.mean(v)) for k, v in per.items()}
  summ.update(chance_rank1=1 / 60, judges=["dlib"])
  attack = attack_celeba.get_config("variant=reference128").attack.to_dict()
  attack.update(num_clients=victims + 1, images_per_client=n)
  return {"attack": attack, "timing_s": 100.0 + seed, "loss_first": 5.0, "loss_last": 0.5,
          "results": {"paper_faithful": {"raw": {
              "summary": summ, "per_image": {k: v.tolist() for k, v in per.items()}},
              "timing": {"per_iteration_s": 20.0 + seed}}},
          "rows": [{"name": "paper_faithful: raw", "summary": summ},
                   {"name": "baseline: uniform noise", "summary": summ},
                   {"name": "ceiling: originals", "summary": summ}]}


def test_summary_json_and_block(tmp_path):
  outs = [dict(_fake_out(s), seed=s) for s in (0, 1)]
  s = attack_reference.summarize(outs)
  assert s["seeds"] == [0, 1] and s["units"] == 6
  psnr = s["metrics"]["psnr"]
  assert psnr["ci_low"] <= psnr["mean"] <= psnr["ci_high"]
  table = attack_reference.markdown(s)
  assert "quoted from the paper" in table and "different dataset" in table
  assert "19.887" in table and "0.855" in table
  md = tmp_path / "RESULTS.md"
  path = attack_reference.write(s, "python -m launch.attack_reference --seeds=0,1",
                                str(tmp_path / "results"), str(md))
  payload = json.load(open(path))
  assert payload["block"] == "attack-celeba-reference"
  assert payload["iterations"] == 100 and payload["wall_time_total_s"] == pytest.approx(201.0)
  assert payload["iteration_s"] == [20.0, 21.0]
  assert any("20.0-21.0 s per iteration" in f for f in attack_reference.facts(s))
  assert payload["reference_quoted"]["psnr"] == pytest.approx(19.887)
  assert set(payload["rows"][0]["metrics"]) == {"psnr", "ssim", "reference_ssim",
                                                "similarity_dlib", "rank1_dlib"}
  text = md.read_text()
  assert "<!-- BEGIN attack-celeba-reference -->" in text and "- Machine:" in text


def test_tiny_run_at_128px_writes_the_block(tmp_path):
  """The variant's 128 px pipeline end to end on random 128 px faces (the reference's 32 px latent
  x4 and eta): 1 victim x 1 photo, tau=1 and 2 iterations to stay fast, summarised like the real
  run. The model judge is a backbone trained at 64 px (as runs/celeba/pretrain's) judging 128 px
  photos: it must run at its own size."""
  def faces(num_ids, seed, per_id=4):
    labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
    images = np.random.default_rng(seed).integers(0, 256, (labels.size, 128, 128, 3), np.uint8)
    return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))

  splits = {"pretrain": faces(2, 1), "federated": faces(3, 0), "evaluation": faces(2, 2)}
  config = attack_celeba.get_config("variant=reference128,judge=model")
  config.attack.update(dict(num_clients=2, images_per_client=1, holdout_images=2, iterations=2,
                            tau=1, progress=False))
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.kwargs)
  params = models.init_params(model, jax.random.key(0), (64, 64, 3))
  assert config.attack.model_judge_size == 64
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  outs = attack_reference.run_seeds(config, [0], str(tmp_path / "runs"), splits=splits,
                                    backbone_params=params, mesh=mesh)
  a = outs[0]["attack"]
  assert (a["image_size"], a["sf"], a["eta"], a["iterations"]) == (128, 4, 0.003, 2)
  assert (tmp_path / "runs" / "seed0" / "metrics.json").exists()
  s = attack_reference.summarize(outs)
  assert s["units"] == 1 and s["metrics"]["psnr"]["ci_low"] is None   # one unit: no interval
  for k in ("psnr", "ssim", "reference_ssim"):
    assert np.isfinite(s["metrics"][k]["mean"]), k
  # A second call reuses the finished seed's metrics.json instead of rerunning it.
  again = attack_reference.run_seeds(config, [0], str(tmp_path / "runs"), splits=splits,
                                     backbone_params=params, mesh=mesh)
  assert again[0]["timing_s"] == outs[0]["timing_s"]
  # Under another config the finished seed is neither reused nor silently rerun.
  config.attack.iterations = 3
  with pytest.raises(config_utils.ConfigMismatchError, match="attack.iterations"):
    attack_reference.run_seeds(config, [0], str(tmp_path / "runs"), splits=splits,
                               backbone_params=params, mesh=mesh)
