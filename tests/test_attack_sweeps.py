"""The attack sweeps on toy data: rows carry the acceptance table's keys, the shared base point
runs once, DP rows carry epsilon, and secure aggregation leaves the attacker's target (hence the
reconstruction) unchanged to float rounding."""

import jax
import numpy as np

from experiments import attack_sweeps as sweep_configs
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.data.faces import FaceArrays
from reporting import attack_sweeps
from reporting import attack_tables


def _faces(num_ids, per_id=5, size=32, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


def test_sweep_rows_and_secure_aggregation_leave_target_unchanged(tmp_path):
  scfg = sweep_configs.sweep_config(
      "synthetic", variant="tiny", sweeps=("dp", "secure_aggregation"), noise=(0.5,),
      base_victims=2, base_images=1, iterations=3)
  splits = {"pretrain": _faces(4, seed=1), "federated": _faces(5), "evaluation": _faces(3, seed=2)}
  config = sweep_configs.base_attack_config(scfg, scfg.objective)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.kwargs)
  params = models.init_params(model, jax.random.key(0), splits["federated"].image_shape)
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  out = attack_sweeps.run_sweeps(scfg, str(tmp_path), splits=splits, backbone_params=params,
                                 mesh=mesh)

  # The base point (shared by the DP-off and SA-off rows), DP at it, SA at it: 3 attacks.
  assert out["points"] == 3
  assert [r["sweep"] for r in out["rows"]] == ["dp", "dp", "secure_aggregation",
                                               "secure_aggregation"]
  for r in out["rows"]:
    for k in attack_sweeps.ROW_KEYS:
      assert np.isfinite(r[k]), (r["setting"], k)
    assert r["chance_rank1"] == 1 / 5
  dp_off, dp_on = out["rows"][0], out["rows"][1]
  assert dp_off["dp_noise_multiplier"] is None and "epsilon" not in dp_off
  assert 0 < dp_on["epsilon"] < np.inf
  assert out["dp_clip_norm"] > 0
  # Noise on the aggregate: the target is far from the victims' true update.
  assert dp_on["target_recovery_rel_err"] > 10 * dp_off["target_recovery_rel_err"]

  sa = out["secure_aggregation_check"]
  assert sa["same_participants"]
  # Float masks of std 1 cancel to float32 rounding (not exactly): a bound in target units.
  assert 0 < sa["target_max_abs_diff"] < sa["float_rounding_bound"], sa
  assert sa["target_rel_diff"] < 0.02, sa
  assert sa["psnr_abs_diff"] < 0.1, sa
  md = attack_tables.markdown_tables(out)
  assert "Secure aggregation check" in md and "ε (this round)" in md
