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
per seed (a point shared by several sweeps, the base, runs once per seed), on one data load,
backbone and mesh, and become the rows of the tables (`reporting/attack_tables.py`). A seed sets
the round's participants, the engine's round seed and the attack's initialisation; a row is the
mean over (seed, victim) units with a 95% bootstrap CI over those units
(`evaluation.bootstrap.bootstrap_unit_means`): one seed's trend is not a result (float rounding
alone moved rank-1 from 0.67 to 0.33 at one point before seeds were added). The cost of the DP
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
from fedface_jax import config_utils
from fedface_jax import data as data_lib
from fedface_jax import metrics_io
from fedface_jax import sharding as sh
from fedface_jax.attack import judges as judges_lib
from fedface_jax.attack import pipeline
from fedface_jax.attack import updates
from fedface_jax.evaluation import bootstrap
from fedface_jax.federated import privacy
from fedface_jax.federated import secure_aggregation as sa_lib
from reporting import attack_tables
from reporting import results_md

# The keys every sweep row carries (the acceptance table's columns) under the model judge; other
# judges add theirs (`attack.judges.judge_keys`: similarity_dlib, rank1_dlib).
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


UNIT_FILE = "sweep_unit.json"     # a finished (point, seed): its config and result
TARGET_FILE = "sweep_target.npz"  # its attacker's target, for the secure-aggregation check


class _Runner:
  """Runs (point, seed) attacks once each (the base point is shared) on one data load, backbone
  and mesh.

  A finished unit is saved under its workdir with its config, so an interrupted or extended
  sweep reruns only what is missing; a unit whose config changed since is run again.
  """

  def __init__(self, scfg, workroot, splits, backbone_params, mesh):
    self.scfg, self.workroot = scfg, workroot
    self.splits, self.backbone, self.mesh = splits, backbone_params, mesh
    self.cache: dict[tuple[sweep_configs.Point, int], dict] = {}
    self.judge_cache: dict[str, np.ndarray] = {}   # judge -> embeddings of the federated images
    self.reused = 0

  def run(self, p: sweep_configs.Point, seed: int) -> dict:
    if (p, seed) not in self.cache:
      config = sweep_configs.point_config(self.scfg, p, seed)
      workdir = os.path.join(self.workroot, p.name, f"seed{seed}")
      out = load_unit(workdir, config)
      if out is None:
        logging.info("attack sweep point %s seed %d", p.name, seed)
        t0 = time.time()
        out = attack_tables.run_attack(config, workdir, backbone_params=self.backbone,
                                       splits=self.splits, mesh=self.mesh, return_target=True,
                                       judge_cache=self.judge_cache)
        if p.enhance and out["enhance_status"] != "ok":
          raise FileNotFoundError(
              f"enhance sweep: {out['enhance_status']} (prior_workdir {config.enhance.prior_workdir};"
              f" train it with `python -m launch.train_prior --config "
              f"experiments/prior_{self.scfg.suite}.py --workdir {config.enhance.prior_workdir}`)")
        out["wall_s"] = time.time() - t0
        out["num_federated_identities"] = self.splits["federated"].num_identities
        out["target"] = _flat_target(out["target"])
        save_unit(workdir, config, out)
      else:
        logging.info("attack sweep point %s seed %d: reused %s", p.name, seed, workdir)
        self.reused += 1
      self.cache[(p, seed)] = out
    return self.cache[(p, seed)]

  def run_seeds(self, p: sweep_configs.Point) -> list[dict]:
    return [self.run(p, s) for s in sweep_configs.point_seeds(self.scfg, p)]


def _flat_target(target) -> dict[str, np.ndarray]:
  """The target pytree as {key path: array}: the same form whether run now or read back."""
  leaves = jax.tree_util.tree_flatten_with_path(target)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_unit(workdir: str, config: mlc.ConfigDict, out: dict) -> None:
  """The unit's target, then its record (written last and atomically: the finished marker)."""
  np.savez(os.path.join(workdir, TARGET_FILE), **out["target"])
  record = {"config": config_utils.config_to_dict(config),
            "out": {k: v for k, v in out.items() if k != "target"}}
  results_md.save_json(os.path.join(workdir, UNIT_FILE), record)


def load_unit(workdir: str, config: mlc.ConfigDict) -> dict | None:
  """A finished unit's result if it ran under `config`; None if absent or its config differs."""
  path = os.path.join(workdir, UNIT_FILE)
  if not (os.path.exists(path) and os.path.exists(os.path.join(workdir, TARGET_FILE))):
    return None
  record = results_md.load_json(path)
  diffs = config_utils.config_diff(record["config"], config)
  if diffs:
    logging.info("%s ran under another config (%s): running it again", workdir,
                 config_utils.format_diff(diffs))
    return None
  out = record["out"]
  with np.load(os.path.join(workdir, TARGET_FILE)) as z:
    out["target"] = {k: z[k] for k in z.files}
  return out


def _epsilon_one_round(noise: float, num_identities: int) -> tuple[float, float]:
  """User-level (epsilon, delta) of the attacked round alone: every participant sampled (q = 1).

  delta = `privacy.default_delta` of the whole federation, the delta `defence_cost` reports too.
  """
  delta = privacy.default_delta(num_identities)
  return privacy.compute_epsilon(float(noise), 1.0, 1, delta), delta


def unit_values(per_image: dict, num_victims: int, n: int) -> dict[str, np.ndarray]:
  """Per-image metrics [V * n] (victim-major) -> per-victim means [V]: one value per unit.

  A victim's photos share its label and its template, so they are not independent; victims are.
  `rank1_correct` becomes `rank1` (the victim's share of images identified).
  """
  out = {}
  for k, v in per_image.items():
    a = np.asarray(v, np.float64)
    if a.size != num_victims * n:
      raise ValueError(f"{k}: {a.size} values for {num_victims} victims x {n} images")
    out[k.replace("_correct", "")] = a.reshape(num_victims, n).mean(axis=1)
  return out


def units_ci(units_per_seed: list[dict[str, np.ndarray]]) -> dict:
  """Mean and 95% CI per metric over the (seed, victim) units of several seeds (`unit_values`)."""
  return bootstrap.bootstrap_unit_means(
      {k: np.concatenate([u[k] for u in units_per_seed]) for k in units_per_seed[0]})


def point_summary(outs: list[dict], method: str, num_victims: int, n: int,
                  stage: str = "raw") -> tuple[dict, dict]:
  """(CI summary per metric over the (seed, victim) units, per-seed means per metric)."""
  per_seed_units = [unit_values(o["results"][method][stage]["per_image"], num_victims, n)
                    for o in outs]
  per_seed = {k: [float(np.mean(u[k])) for u in per_seed_units] for k in per_seed_units[0]}
  return units_ci(per_seed_units), per_seed


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def paired_difference(outs: list[dict], method: str, num_victims: int, n: int,
                      stage: str = "enhanced", reference: str = "raw") -> dict:
  """CI per metric of `stage` minus `reference` on the same (seed, victim) units.

  Why paired: both stages score the same reconstructions' victims, so the per-unit difference
  removes the victim-to-victim spread that two separate intervals would both carry.
  """
  units = lambda o, s: unit_values(o["results"][method][s]["per_image"], num_victims, n)
  return units_ci([{k: a[k] - b[k] for k in a}
                   for a, b in ((units(o, stage), units(o, reference)) for o in outs)])


def _row(sweep: str, setting: str, p: sweep_configs.Point, outs: list[dict], seeds, method: str,
         stage: str = "raw") -> dict:
  """One table row: a point's metrics over its seeds (means, and CIs over (seed, victim) units)."""
  ci, per_seed = point_summary(outs, method, p.victims, p.images, stage)
  summaries = [_summary_row(o, f"{method}: raw") for o in outs]
  noise = [_summary_row(o, "baseline: uniform noise") for o in outs]
  ceiling = [_summary_row(o, "ceiling: originals") for o in outs]
  res = [o["results"][method] for o in outs]
  row = {
      "sweep": sweep, "setting": setting, "point": p.name, "method": method, "stage": stage,
      "objective": p.objective,
      "victims": p.victims, "num_clients": p.victims + 1, "images_per_client": p.images,
      "victim_images": p.victims * p.images, "tau": p.tau,
      "dp_noise_multiplier": p.noise, "dp_clip_norm": p.clip,
      "secure_aggregation": p.secure_aggregation,
      "seeds": [int(s) for s in seeds], "units": int(next(iter(ci.values()))["units"]),
      **{k: v["mean"] for k, v in ci.items()},
      "chance_rank1": float(summaries[0]["chance_rank1"]),
      "ci": ci, "per_seed": per_seed, "judges": list(summaries[0].get("judges", ["model"])),
      "noise_psnr": _mean([s["psnr"] for s in noise]),
      "target_recovery_rel_err": _mean([o["target_recovery_rel_err"] for o in outs]),
      "matching_loss_first": _mean([r["loss_first"] for r in res]),
      "matching_loss_last": _mean([r["loss_last"] for r in res]),
      "iterations": int(outs[0]["attack"]["iterations"]),
      "wall_s": round(sum(o["wall_s"] for o in outs), 1),
      "workdir": [o["workdir"] for o in outs],
  }
  for j in row["judges"]:   # baselines under each judge: noise (floor), originals (ceiling)
    for key in judges_lib.judge_keys(j):
      row[f"noise_{key}"] = _mean([s[key] for s in noise])
      row[f"ceiling_{key}"] = _mean([s[key] for s in ceiling])
  idents = [o.get("identifiability") for o in outs]
  if all(idents):
    row["identifiability"] = attack_tables.identifiability_summary(idents)
  if p.noise is not None:
    eps, delta = _epsilon_one_round(p.noise, outs[0]["num_federated_identities"])
    row.update(epsilon=eps, delta=delta,
               dp_noise_std_pseudograd=p.noise * p.clip / ((p.victims + 1) * float(
                   outs[0]["attack"]["eta"])),
               dp_clip_fraction=_mean([o["round_metrics"].get("dp_clip_fraction")
                                       for o in outs]))
  return row


def prior_facts(prior_workdir: str) -> dict:
  """What the prior is and how long it trained, from its `prior_meta.json` and metrics log.

  `train_s` adds up the logged segments (a resumed run restarts its clock at 0).
  """
  facts: dict[str, Any] = {"workdir": prior_workdir}
  meta = results_md.load_json(os.path.join(prior_workdir, "prior_meta.json")) or {}
  facts.update(image_size=meta.get("image_size"), model=meta.get("model"))
  path = os.path.join(prior_workdir, "prior_metrics.jsonl")
  if os.path.exists(path):
    records = metrics_io.read_jsonl(path)
    train_s, last = 0.0, 0.0
    for r in records:
      if r["elapsed_s"] < last:
        train_s += last
      last = r["elapsed_s"]
    if records:
      facts.update(steps=int(records[-1]["step"]), final_loss=records[-1]["prior_loss"],
                   train_s=round(train_s + last, 1))
  return facts


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
  base = sweep_configs.base_point(scfg)
  rows = []
  sweeps = tuple(scfg.sweeps)

  def add(sweep, setting, p):
    outs = runner.run_seeds(p)
    seeds = sweep_configs.point_seeds(scfg, p)
    for m in outs[0]["results"]:
      rows.append(_row(sweep, setting, p, outs, seeds, m))
    sim, r1 = judges_lib.judge_keys(rows[-1]["judges"][0])
    logging.info("%s %s: PSNR %.2f dB, cos %.3f, rank-1 %.2f (%s judge; %d seeds, %.0f s)",
                 sweep, setting, rows[-1]["psnr"], rows[-1][sim], rows[-1][r1],
                 rows[-1]["judges"][0], len(seeds), rows[-1]["wall_s"])

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
    if clip <= 0:   # the ATTACK.md 9 suggestion: S near the median ||delta_k|| (all base seeds)
      norms = [x for o in runner.run_seeds(base) for x in o["client_delta_norms"]]
      if not norms:
        raise ValueError("clip_norm=0 needs the victims' delta norms (knows_num_clients=True)")
      clip = float(np.median(norms))
    add("dp", "DP off", base)
    for z in scfg.noise:
      add("dp", f"z={z:g}, S={clip:.3g}", dataclasses.replace(base, noise=float(z), clip=clip))
  sa_check = None
  if "secure_aggregation" in sweeps:
    sa_point = dataclasses.replace(base, secure_aggregation=True)
    add("secure_aggregation", "off", base)
    add("secure_aggregation", "on", sa_point)
    common = [s for s in sweep_configs.point_seeds(scfg, sa_point)
              if s in sweep_configs.point_seeds(scfg, base)]
    checks = []
    for seed in common:   # the same seed with and without masks: same round, same attack
      plain, masked = runner.run(base, seed), runner.run(sa_point, seed)
      max_abs, rel = _tree_diff(masked["target"], plain["target"])
      m = next(iter(plain["results"]))
      checks.append({
          "seed": seed, "target_max_abs_diff": max_abs, "target_rel_diff": rel,
          "target_norm": float(updates.tree_l2_norm(plain["target"])),
          "psnr_off": float(plain["results"][m]["raw"]["summary"]["psnr"]),
          "psnr_on": float(masked["results"][m]["raw"]["summary"]["psnr"]),
          "same_participants": plain["participants"] == masked["participants"],
          "eta": float(plain["attack"]["eta"])})
    # Worst case over the seeds (a check, not an average).
    sa_check = {
        "seeds": common,
        "target_max_abs_diff": max(c["target_max_abs_diff"] for c in checks),
        "target_rel_diff": max(c["target_rel_diff"] for c in checks),
        "target_norm": min(c["target_norm"] for c in checks),
        "psnr_off": float(np.mean([c["psnr_off"] for c in checks])),
        "psnr_on": float(np.mean([c["psnr_on"] for c in checks])),
        "psnr_abs_diff": max(abs(c["psnr_on"] - c["psnr_off"]) for c in checks),
        "same_participants": all(c["same_participants"] for c in checks),
        "per_seed": checks,
    }
    # The engine's float masks (std MASK_STD per pair) cancel up to float32 rounding of numbers of
    # size ~MASK_STD * sqrt(K), i.e. ~eps32 * MASK_STD * K per delta coordinate, which the target
    # divides by eta (and the own-update removal scales by K / (K - 1)): this is the bound below.
    k = base.victims + 1
    sa_check["float_rounding_bound"] = float(
        8 * np.finfo(np.float32).eps * sa_lib.MASK_STD * k / checks[0]["eta"] * k / (k - 1))
  if "class_embedding" in sweeps:
    add("class_embedding", "fedface objective",
        dataclasses.replace(base, objective="fedface", tau=1))
  if "enhance" in sweeps:   # before / after on the same attacks of the base point
    p = dataclasses.replace(base, enhance=True)
    outs, seeds = runner.run_seeds(p), sweep_configs.point_seeds(scfg, p)
    label = f"+ {scfg.enhance_method} (public prior)"
    for m in outs[0]["results"]:
      rows.append(_row("enhance", "raw", p, outs, seeds, m))
      rows.append(_row("enhance", label, p, outs, seeds, m, stage="enhanced"))
      rows[-1]["paired_difference"] = paired_difference(outs, m, p.victims, p.images)
      rows[-1]["prior"] = prior_facts(scfg.prior_workdir)
      rows[-1]["prior"]["public_images"] = int(splits["pretrain"].images.shape[0])
  for out in runner.cache.values():
    out.pop("target", None)   # large; not part of the results
  return {"rows": rows, "secure_aggregation_check": sa_check, "dp_clip_norm": clip,
          "seeds": [int(x) for x in scfg.seeds], "base_seeds": [int(x) for x in scfg.base_seeds],
          "image_size": int(config0.attack.image_size), "sf": int(config0.attack.sf),
          "eta": float(config0.attack.eta),
          "sweep_config": scfg.to_dict(), "attacks": len(runner.cache),
          "attacks_reused": runner.reused,
          "points": len({p for p, _ in runner.cache}),
          "timing_s": time.time() - t_start, "date": datetime.date.today().isoformat()}


def run_or_reuse(scfg: mlc.ConfigDict, workdir: str, command: str) -> dict | None:
  """Runs `scfg.sweeps` under `workdir` and saves `<workdir>/attack_results.json`.

  With no sweeps, re-reads that file from the last run instead (None when there is none), so the
  tables can be rebuilt without a rerun. `command` is recorded in the saved result.
  """
  path = os.path.join(workdir, "attack_results.json")
  if not scfg.sweeps:
    return results_md.load_json(path)
  result = run_sweeps(scfg, workdir)
  result["command"] = command
  results_md.save_json(path, result)
  return result
