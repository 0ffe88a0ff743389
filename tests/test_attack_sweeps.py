"""The attack sweeps on toy data: rows carry the acceptance table's keys and CIs over (seed,
victim) units, the shared base point runs once per seed, DP rows carry epsilon, secure aggregation
leaves the attacker's target (hence the reconstruction) unchanged to float rounding, seeds change
the reconstruction, and the results JSON has the block schema."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import attack_sweeps as sweep_configs
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.attack import pipeline
from fedface_jax.attack.diffusion import train_prior
from fedface_jax.data.faces import FaceArrays
from reporting import attack_sweeps
from reporting import attack_tables


def _faces(num_ids, per_id=5, size=32, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


def _toy(scfg):
  splits = {"pretrain": _faces(4, seed=1), "federated": _faces(5), "evaluation": _faces(3, seed=2)}
  config = sweep_configs.base_attack_config(scfg, scfg.objective)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.kwargs)
  params = models.init_params(model, jax.random.key(0), splits["federated"].image_shape)
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  return splits, params, mesh


def test_sweep_rows_and_secure_aggregation_leave_target_unchanged(tmp_path):
  scfg = sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("dp", "secure_aggregation"), noise=(0.5,),
      base_victims=2, base_images=1, iterations=3, seeds=(0,), base_seeds=(0, 1))
  splits, params, mesh = _toy(scfg)
  out = attack_sweeps.run_sweeps(scfg, str(tmp_path), splits=splits, backbone_params=params,
                                 mesh=mesh)

  # The base point (shared by the DP-off and SA-off rows), DP at it, SA at it: 3 points; the
  # base runs base_seeds (2), the others seeds (1): 4 attacks.
  assert out["points"] == 3 and out["attacks"] == 4
  assert [r["sweep"] for r in out["rows"]] == ["dp", "dp", "secure_aggregation",
                                               "secure_aggregation"]
  for r in out["rows"]:
    for k in attack_sweeps.ROW_KEYS:
      assert np.isfinite(r[k]), (r["setting"], k)
    assert r["chance_rank1"] == 1 / 5
    # CIs over (seed, victim) units: 2 victims x the point's seeds.
    assert r["units"] == 2 * len(r["seeds"])
    for k in ("psnr", "similarity", "rank1"):
      c = r["ci"][k]
      assert c["ci_low"] <= c["mean"] <= c["ci_high"], (r["setting"], k, c)
      np.testing.assert_allclose(np.mean(r["per_seed"][k]), c["mean"])
  assert out["rows"][0]["seeds"] == [0, 1] and out["rows"][1]["seeds"] == [0]
  dp_off, dp_on = out["rows"][0], out["rows"][1]
  assert dp_off["dp_noise_multiplier"] is None and "epsilon" not in dp_off
  assert 0 < dp_on["epsilon"] < np.inf
  assert out["dp_clip_norm"] > 0
  # Noise on the aggregate: the target is far from the victims' true update.
  assert dp_on["target_recovery_rel_err"] > 10 * dp_off["target_recovery_rel_err"]

  sa = out["secure_aggregation_check"]
  assert sa["seeds"] == [0] and len(sa["per_seed"]) == 1
  assert sa["same_participants"]
  # Float masks of std 1 cancel to float32 rounding (not exactly): a bound in target units.
  assert 0 < sa["target_max_abs_diff"] < sa["float_rounding_bound"], sa
  assert sa["target_rel_diff"] < 0.02, sa
  assert sa["psnr_abs_diff"] < 0.1, sa
  md = attack_tables.markdown_tables(out)
  assert "Secure aggregation check" in md and "ε (this round)" in md
  c = out["rows"][0]["ci"]["psnr"]
  assert f"{c['mean']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" in md

  # The results JSON: the block schema, one row per table row, with the seeds and CIs.
  path = attack_tables.write_results_json(str(tmp_path / "results"), "synthetic", "cmd", out)
  assert path.endswith("attack-synthetic.json")
  with open(path) as f:
    js = json.load(f)
  assert {"block", "command", "date", "machine", "rows", "seeds", "base_seeds"} <= set(js)
  assert js["block"] == "attack-synthetic" and js["command"] == "cmd"
  assert js["seeds"] == [0] and js["base_seeds"] == [0, 1]
  floor = js["uniform_noise_base_point"]
  assert set(floor) == {"psnr", "similarity", "rank1"} and np.isfinite(floor["psnr"])
  assert len(js["rows"]) == len(out["rows"])
  for jr, r in zip(js["rows"], out["rows"]):
    assert jr["point"] == r["point"] and jr["seeds"] == r["seeds"] and jr["variant"] == r["setting"]
    for k in ("psnr", "ssim", "reference_ssim", "similarity", "rank1"):
      assert set(jr["metrics"][k]) == {"mean", "ci_low", "ci_high"}
      assert jr["metrics"][k]["mean"] == r["ci"][k]["mean"]


def test_seeds_differ_and_set_participants_and_init(tmp_path):
  """Two seeds of one point: other participants, other attack init, other reconstructions."""
  scfg = sweep_configs.sweep_config("synthetic", variant="tiny", base_victims=2, base_images=1,
                                    iterations=3)
  splits, params, mesh = _toy(scfg)
  p = sweep_configs.base_point(scfg)
  assert sweep_configs.point_seeds(scfg, p) == (0, 1, 2, 3, 4)
  assert sweep_configs.point_seeds(scfg, dataclasses.replace(p, tau=2)) == (0, 1, 2)
  recon, parts = [], []
  for seed in (0, 1):
    config = sweep_configs.point_config(scfg, p, seed)
    a = config.attack
    assert a.participants_seed == a.attack_seed == config.federated.seed == seed
    out = attack_tables.run_attack(config, str(tmp_path / f"s{seed}"), backbone_params=params,
                                   splits=splits, mesh=mesh, return_images=True)
    recon.append(out["reconstructions"]["paper_faithful"])
    parts.append(out["participants"])
  assert parts[0] != parts[1]
  assert recon[0].shape == recon[1].shape
  assert np.max(np.abs(recon[0] - recon[1])) > 1e-2
  # The seed reaches the inversion's initialisation (its random latent).
  config = sweep_configs.point_config(scfg, p, 1)
  icfg = pipeline._inversion_config(config, 16)  # pylint: disable=protected-access
  assert icfg.seed == 1


def test_matching_override_reaches_every_point_and_the_inversion():
  """`--matching` sets the gradient-matching loss of every point; unset, the config's l2 stays."""
  scfg = sweep_configs.sweep_config("synthetic", variant="tiny")
  fedface = dataclasses.replace(sweep_configs.base_point(scfg), objective="fedface")
  assert sweep_configs.point_config(scfg, fedface).attack.matching == "l2"
  scfg = sweep_configs.sweep_config("synthetic", variant="tiny", matching="cosine")
  for p in (sweep_configs.base_point(scfg), fedface):
    config = sweep_configs.point_config(scfg, p)
    assert config.attack.matching == "cosine"
    icfg = pipeline._inversion_config(config, 16)  # pylint: disable=protected-access
    assert icfg.matching == "cosine"


def test_one_unit_point_shows_no_interval():
  row = {"ci": {"psnr": {"mean": 12.345, "ci_low": None, "ci_high": None}}}
  assert attack_tables.ci_cell(row, "psnr", 2) == "12.35 [n/a]"
  rows = [{"method": "m", "setting": "V=1", "ci": {"psnr": {"mean": 10.0, "ci_low": 9.0,
                                                            "ci_high": 11.0}}},
          {"method": "m", "setting": "V=8", "ci": {"psnr": {"mean": 5.0, "ci_low": 4.0,
                                                            "ci_high": 6.0}}}]
  lines = attack_tables.trend_lines(rows, "victims")
  assert any("PSNR (dB) falls" in l and "CIs separate" in l for l in lines), lines
  rows[1]["ci"]["psnr"] = {"mean": 9.5, "ci_low": 8.5, "ci_high": 10.5}
  lines = attack_tables.trend_lines(rows, "victims")
  assert not any("falls" in l or "rises" in l for l in lines), lines
  assert any("overlap" in l for l in lines)


def test_a_rerun_reuses_finished_units_and_reruns_changed_ones(tmp_path):
  """An interrupted or extended sweep reruns only what is missing, with identical rows."""
  scfg = sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("secure_aggregation",),
      base_victims=2, base_images=1, iterations=3, seeds=(0,), base_seeds=(0,))
  splits, params, mesh = _toy(scfg)
  run = lambda c: attack_sweeps.run_sweeps(c, str(tmp_path), splits=splits,
                                           backbone_params=params, mesh=mesh)
  first = run(scfg)
  assert first["attacks"] == 2 and first["attacks_reused"] == 0
  # Every unit finished: nothing runs, the rows and the secure-aggregation check are the same.
  second = run(scfg)
  assert second["attacks_reused"] == 2
  assert json.dumps(second["rows"], sort_keys=True) == json.dumps(first["rows"], sort_keys=True)
  for k in ("target_max_abs_diff", "target_rel_diff", "psnr_off", "psnr_on"):
    assert second["secure_aggregation_check"][k] == first["secure_aggregation_check"][k], k
  # More iterations change every unit's config: all of them run again.
  third = run(sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("secure_aggregation",),
      base_victims=2, base_images=1, iterations=4, seeds=(0,), base_seeds=(0,)))
  assert third["attacks_reused"] == 0


@pytest.mark.slow
def test_class_embedding_sweep_carries_the_identifiability_measurement(tmp_path):
  """The fedface point runs the three embedding modes and measures, at the true images, what the
  update says about w_c; the table shows it."""
  scfg = sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("class_embedding",), base_victims=2, base_images=2,
      fedface_iterations=2, seeds=(0, 1))
  splits, params, mesh = _toy(scfg)
  out = attack_sweeps.run_sweeps(scfg, str(tmp_path), splits=splits, backbone_params=params,
                                 mesh=mesh)
  assert [r["method"] for r in out["rows"]] == [
      "fedface[known]", "fedface[mean_feature]", "fedface[joint]"]
  ident = out["rows"][0]["identifiability"]
  assert len(ident["per_seed"]) == 2 and ident["ci"]["cos_recovered"]["units"] == 4
  for seed in ident["per_seed"]:
    # The toy's rows are the round images' mean features under a random backbone, so they agree
    # with the mean-feature guess; where every image sits inside the margin the victims' update
    # is zero and the residual of the (zero) truth is 1.
    np.testing.assert_allclose(seed["cos_mean_feature"], 1.0, atol=1e-5)
    if seed["inside_margin_true"] == 1.0:
      assert abs(seed["residual_true"] - 1.0) < 1e-3 or seed["target_norm"] < 1e-6
    else:
      assert seed["residual_true"] < 1e-2   # float32 rounding of a small update
    assert seed["residual_recovered"] <= seed["residual_mean_feature"] + 1e-6
  md = attack_tables.markdown_tables(out)
  assert "Is w_c determined by the update?" in md and "mean feature of the true images" in md
  js = attack_tables.results_rows(out)
  assert js[0]["identifiability"]["ci"]["residual_true"] == ident["ci"]["residual_true"]


def test_enhance_sweep_pairs_raw_and_enhanced_on_the_same_attacks(tmp_path):
  """The enhance point scores the same reconstructions raw and enhanced; the paired difference
  is the per-unit mean of enhanced - raw; a missing prior stops the sweep instead of skipping."""
  scfg = sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("enhance",), base_victims=2, base_images=1,
      iterations=3, seeds=(0,), base_seeds=(0, 1), prior_variant="tiny", prior_num_steps=4,
      prior_workdir=str(tmp_path / "prior"))
  splits, params, mesh = _toy(scfg)
  run = lambda: attack_sweeps.run_sweeps(scfg, str(tmp_path / "runs"), splits=splits,
                                         backbone_params=params, mesh=mesh)
  with pytest.raises(FileNotFoundError, match="launch.train_prior"):
    run()
  pcfg = train_prior.default_prior_config("tiny")
  pcfg.train.update(num_steps=4, checkpoint_every=2, log_every=2)
  train_prior.load_or_train_prior(pcfg, splits["pretrain"].images, str(tmp_path / "prior"))
  out = run()
  raw, enhanced = out["rows"]
  assert [r["stage"] for r in out["rows"]] == ["raw", "enhanced"]
  assert raw["seeds"] == enhanced["seeds"] == [0, 1] and raw["units"] == enhanced["units"] == 4
  diff = enhanced["paired_difference"]
  for k in ("psnr", "similarity", "rank1"):
    np.testing.assert_allclose(diff[k]["mean"], enhanced["ci"][k]["mean"] - raw["ci"][k]["mean"],
                               atol=1e-9)
  assert enhanced["psnr"] != raw["psnr"]   # the enhancer changed the images
  prior = enhanced["prior"]
  assert prior["steps"] == 4 and prior["image_size"] == 16 and prior["train_s"] > 0
  assert prior["public_images"] == splits["pretrain"].images.shape[0]
  md = attack_tables.markdown_tables(out)
  assert "minus raw, paired over the same 4 (seed, victim) units" in md
  assert "trained 4 steps" in md
  js = attack_tables.results_rows(out)
  assert [r["stage"] for r in js] == ["raw", "enhanced"]
  assert js[1]["paired_difference"]["psnr"] == diff["psnr"] and js[1]["prior"]["steps"] == 4
