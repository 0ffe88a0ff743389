"""The curious-client attack's sweeps (RESULTS.md `attack-<suite>` block), all through `run_attack`.

Why a sweep module: a single attack says little about FL's privacy; what matters is how its success
falls as the honest protocol dilutes or perturbs the update the attacker inverts (docs/ATTACK.md 9):
more victims in the aggregate (K), more images per victim (n_k), more local steps (tau), DP-FedAvg
noise (z at clip norm S, with the user-level epsilon of `federated/privacy.py`), and that secure
aggregation changes nothing (the curious client reads w_{t+1}, which masking does not alter). The
fedface objective is compared across what the attacker knows of the victims' class embeddings
(known / mean_feature / joint). Every point is one `pipeline.run_attack` call, i.e. one honest
round of the real federated engine followed by inversion and scoring, so the sweep measures the
same attack the demo runs, not a re-implementation.

The axes and each point's config are `experiments/attack_sweeps.py`; here the points run, once
each (a point shared by several sweeps, the base, runs once), on one data load, backbone and
mesh, and become the rows of the tables (`reporting/attack_tables.py`). The cost of the DP
defence to the face recogniser is `reporting/defence_cost.py`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from experiments import attack_sweeps as sweep_configs
from fedface_jax import data as data_lib
from fedface_jax import sharding as sh
from fedface_jax.attack import pipeline
from fedface_jax.attack import updates
from fedface_jax.federated import privacy
from fedface_jax.federated import secure_aggregation as sa_lib
from reporting import attack_tables

# The keys every sweep row carries (the acceptance table's columns).
ROW_KEYS = ("psnr", "ssim", "similarity", "rank1", "chance_rank1")


def check_backbone(pretrained: str, suite: str):
  """Fails early, with the command that makes it, when the suite's backbone is missing."""
  path = os.path.join(pretrained, "backbone")
  if not os.path.isdir(path):
    cmd = {"synthetic": "python -m launch.pretrain --config experiments/pretrain_synthetic.py "
                        f"--workdir {pretrained}   (or: make demo)",
           "celeba": "python -m launch.pretrain --config experiments/pretrain_celeba.py "
                     f"--workdir {pretrained}"}[suite]
    raise FileNotFoundError(f"no pretrained face backbone at {path}; the attack is scored with it "
                            f"and the fedface objective attacks it. Pretrain first: {cmd}")


def _summary_row(out: dict, name: str) -> dict:
  for r in out["rows"]:
    if r["name"] == name:
      return r["summary"]
  raise KeyError(f"no row {name!r} in the attack output ({[r['name'] for r in out['rows']]})")


def _tree_diff(a, b) -> tuple[float, float]:
  """(max |a - b|, ||a - b|| / ||b||) over all leaves."""
  diff = jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64), a, b)
  max_abs = max(float(np.max(np.abs(d))) for d in jax.tree.leaves(diff))
  rel = float(updates.tree_l2_norm(diff)) / max(float(updates.tree_l2_norm(b)), 1e-30)
  return max_abs, rel


class _Runner:
  """Runs points once each (the base point is shared) on one data load, backbone and mesh."""

  def __init__(self, scfg, workroot, splits, backbone_params, mesh):
    self.scfg, self.workroot = scfg, workroot
    self.splits, self.backbone, self.mesh = splits, backbone_params, mesh
    self.cache: dict[sweep_configs.Point, dict] = {}

  def run(self, p: sweep_configs.Point) -> dict:
    if p not in self.cache:
      config = sweep_configs.point_config(self.scfg, p)
      logging.info("attack sweep point %s", p.name)
      t0 = time.time()
      out = attack_tables.run_attack(config, os.path.join(self.workroot, p.name),
                                     backbone_params=self.backbone, splits=self.splits,
                                     mesh=self.mesh, return_target=True)
      out["wall_s"] = time.time() - t0
      out["num_federated_identities"] = self.splits["federated"].num_identities
      self.cache[p] = out
    return self.cache[p]


def _epsilon_one_round(noise: float, num_identities: int) -> tuple[float, float]:
  """User-level (epsilon, delta) of the attacked round alone: every participant sampled (q = 1).

  delta = `privacy.default_delta` of the whole federation, the delta `defence_cost` reports too.
  """
  delta = privacy.default_delta(num_identities)
  return privacy.compute_epsilon(float(noise), 1.0, 1, delta), delta


def _row(sweep: str, setting: str, p: sweep_configs.Point, out: dict, method: str) -> dict:
  s = _summary_row(out, f"{method}: raw")
  noise = _summary_row(out, "baseline: uniform noise")
  ceiling = _summary_row(out, "ceiling: originals")
  res = out["results"][method]
  row = {
      "sweep": sweep, "setting": setting, "method": method, "objective": p.objective,
      "victims": p.victims, "num_clients": p.victims + 1, "images_per_client": p.images,
      "victim_images": p.victims * p.images, "tau": p.tau,
      "dp_noise_multiplier": p.noise, "dp_clip_norm": p.clip,
      "secure_aggregation": p.secure_aggregation,
      **{k: float(s[k]) for k in ROW_KEYS},
      "reference_ssim": float(s["reference_ssim"]),
      "noise_psnr": float(noise["psnr"]), "noise_similarity": float(noise["similarity"]),
      "noise_rank1": float(noise["rank1"]),
      "ceiling_similarity": float(ceiling["similarity"]), "ceiling_rank1": float(ceiling["rank1"]),
      "target_recovery_rel_err": out["target_recovery_rel_err"],
      "matching_loss_first": res["loss_first"], "matching_loss_last": res["loss_last"],
      "iterations": int(out["attack"]["iterations"]), "wall_s": round(out["wall_s"], 1),
      "workdir": out["workdir"],
  }
  if p.noise is not None:
    eps, delta = _epsilon_one_round(p.noise, out["num_federated_identities"])
    row.update(epsilon=eps, delta=delta,
               dp_noise_std_pseudograd=p.noise * p.clip / ((p.victims + 1) * float(
                   out["attack"]["eta"])),
               dp_clip_fraction=out["round_metrics"].get("dp_clip_fraction"))
  return row


def run_sweeps(scfg: mlc.ConfigDict, workroot: str, splits: dict | None = None,
               backbone_params: Any = None, mesh=None) -> dict:
  """Runs the sweeps of `scfg.sweeps`; returns {"rows", "secure_aggregation_check", ...}.

  Args:
    scfg: `experiments.attack_sweeps.sweep_config(...)`.
    workroot: folder of the per-point attack workdirs (keep it under runs/).
    splits: precomputed `data.load_splits` of the suite's data (tests pass toy splits).
    backbone_params: the face backbone; None loads `<scfg.pretrained>/backbone`.
    mesh: default: one device mesh from the config.
  """
  t_start = time.time()
  unknown = set(scfg.sweeps) - set(sweep_configs.SWEEPS)
  if unknown:
    raise ValueError(f"unknown sweeps {sorted(unknown)}; valid: {sweep_configs.SWEEPS}")
  config0 = sweep_configs.base_attack_config(scfg, scfg.objective)
  if splits is None:
    splits = data_lib.load_splits(config0)
  if backbone_params is None:
    check_backbone(scfg.pretrained, scfg.suite)
    _, backbone_params = pipeline.load_face_backbone(config0, splits["federated"].image_shape)
  if mesh is None:
    mesh = sh.make_mesh(None if config0.mesh.data < 0 else config0.mesh.data,
                        config0.mesh.classes)
  runner = _Runner(scfg, workroot, splits, backbone_params, mesh)
  obj = str(scfg.objective)
  base = sweep_configs.Point(int(scfg.base_victims), int(scfg.base_images), int(scfg.base_tau),
                             obj)
  rows = []
  sweeps = tuple(scfg.sweeps)

  def add(sweep, setting, p):
    out = runner.run(p)
    methods = [m for m in out["results"]]
    for m in methods:
      rows.append(_row(sweep, setting, p, out, m))
    logging.info("%s %s: PSNR %.2f dB, cos %.3f, rank-1 %.2f (%.0f s)", sweep, setting,
                 rows[-1]["psnr"], rows[-1]["similarity"], rows[-1]["rank1"], out["wall_s"])

  if "victims" in sweeps:
    for v in scfg.victims:
      add("victims", f"V={v} victims (K={v + 1})", dataclasses.replace(base, victims=int(v)))
  if "images" in sweeps:
    for n in scfg.images:
      add("images", f"n={n} photos/client", dataclasses.replace(base, images=int(n)))
  if "tau" in sweeps:
    for t in scfg.taus:
      add("tau", f"tau={t}", dataclasses.replace(base, tau=int(t)))
  clip = None
  if "dp" in sweeps:
    clip = float(scfg.clip_norm)
    if clip <= 0:   # the ATTACK.md 9 suggestion: S near the median ||delta_k||
      norms = runner.run(base)["client_delta_norms"]
      if not norms:
        raise ValueError("clip_norm=0 needs the victims' delta norms (knows_num_clients=True)")
      clip = float(np.median(norms))
    add("dp", "DP off", base)
    for z in scfg.noise:
      add("dp", f"z={z:g}, S={clip:.3g}", dataclasses.replace(base, noise=float(z), clip=clip))
  sa_check = None
  if "secure_aggregation" in sweeps:
    plain = runner.run(base)
    masked = runner.run(dataclasses.replace(base, secure_aggregation=True))
    add("secure_aggregation", "off", base)
    add("secure_aggregation", "on", dataclasses.replace(base, secure_aggregation=True))
    max_abs, rel = _tree_diff(masked["target"], plain["target"])
    m = next(iter(plain["results"]))
    sa_check = {
        "target_max_abs_diff": max_abs, "target_rel_diff": rel,
        "target_norm": float(updates.tree_l2_norm(plain["target"])),
        "psnr_off": float(plain["results"][m]["raw"]["summary"]["psnr"]),
        "psnr_on": float(masked["results"][m]["raw"]["summary"]["psnr"]),
        "same_participants": plain["participants"] == masked["participants"],
    }
    sa_check["psnr_abs_diff"] = abs(sa_check["psnr_on"] - sa_check["psnr_off"])
    # The engine's float masks (std MASK_STD per pair) cancel up to float32 rounding of numbers of
    # size ~MASK_STD * sqrt(K), i.e. ~eps32 * MASK_STD * K per delta coordinate, which the target
    # divides by eta (and the own-update removal scales by K / (K - 1)): this is the bound below.
    k = base.victims + 1
    sa_check["float_rounding_bound"] = float(
        8 * np.finfo(np.float32).eps * sa_lib.MASK_STD * k / float(plain["attack"]["eta"])
        * k / (k - 1))
  if "class_embedding" in sweeps:
    add("class_embedding", "fedface objective",
        dataclasses.replace(base, objective="fedface", tau=1))
  for out in runner.cache.values():
    out.pop("target", None)   # large; not part of the results
  return {"rows": rows, "secure_aggregation_check": sa_check, "dp_clip_norm": clip,
          "image_size": int(config0.attack.image_size), "sf": int(config0.attack.sf),
          "eta": float(config0.attack.eta),
          "sweep_config": scfg.to_dict(), "points": len(runner.cache),
          "timing_s": time.time() - t_start, "date": datetime.date.today().isoformat()}
