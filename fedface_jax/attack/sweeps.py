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

Sweep axes are "one at a time" around a base point (e.g. 4 victims x 2 photos, tau = 1, no
defence): a point shared by several sweeps (the base) runs once. The victim axis counts the
*victims* V, i.e. the K - 1 clients other than the attacker (K = V + 1 clients take part): K = 1
would leave nothing to attack.

`defence_cost` is the other side of the DP trade-off: FedFace itself, run with the same DP
settings for the rounds of `experiments/fedface_synthetic.py`, evaluated by TAR@FAR on held-out
identities (`federated.engine.run` + `results`), so that the noise that blunts the attack is
reported next to what it costs the face recogniser.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from fedface_jax import results as results_lib
from fedface_jax import sharding as sh
from fedface_jax.attack import pipeline
from fedface_jax.attack import updates
from fedface_jax.federated import privacy
from fedface_jax.federated import secure_aggregation as sa_lib

SUITES = ("synthetic", "celeba")
SWEEPS = ("victims", "images", "tau", "dp", "secure_aggregation", "class_embedding")
# The keys every sweep row carries (the acceptance table's columns).
ROW_KEYS = ("psnr", "ssim", "similarity", "rank1", "chance_rank1")
DEFAULT_PRETRAINED = {"synthetic": "runs/demo/pretrain", "celeba": "runs/celeba/pretrain"}


def sweep_config(suite: str = "synthetic", **overrides) -> mlc.ConfigDict:
  """The sweep's axes and sizes; `overrides` replace fields (tests pass tiny axes).

  Sizes are for a 2-core CPU: the synthetic suite runs 32 px LeNet attacks with `iterations` Adam
  steps (the demo attack's 200), and the fedface objective with `fedface_iterations`.
  """
  if suite not in SUITES:
    raise ValueError(f"unknown suite {suite!r}; valid: {SUITES}")
  c = mlc.ConfigDict(dict(
      suite=suite,
      variant="demo",   # synthetic attack-config variant: demo | tiny (tests)
      pretrained=DEFAULT_PRETRAINED[suite],   # a launch.pretrain workdir (its backbone/)
      sweeps=SWEEPS,
      victims=(1, 2, 4, 8, 16),   # V = K - 1 victims; K = V + 1 clients take part
      images=(1, 2, 4),           # photos per client n_k
      taus=(1, 3, 5),             # local full-batch GD steps
      noise=(0.0, 0.01, 0.1, 1.0),   # DP-FedAvg noise multipliers z
      clip_norm=0.0,              # DP clip S; 0 = median victim ||delta_k|| at the base point
      base_victims=4, base_images=2, base_tau=1,
      objective="paper_faithful",  # of the K / n / tau / DP / SA sweeps
      iterations=200,
      fedface_iterations=100,
      class_embedding_modes=("known", "mean_feature", "joint"),
      seed=0,
      # Defence cost (FedFace TAR@FAR under the same DP): off unless asked for, minutes per run.
      defence_noise=(0.01, 0.1, 1.0),
      defence_clip_norm=0.0,       # 0 = mean client ||delta|| of one probe round from theta_0
      defence_rounds=0,            # 0 = the fedface config's own num_rounds
  ))
  c.update(overrides)
  return c


# ------------------------------------------------------------------------------------ configs


def _check_backbone(pretrained: str, suite: str):
  path = os.path.join(pretrained, "backbone")
  if not os.path.isdir(path):
    cmd = {"synthetic": "python -m launch.pretrain --config experiments/pretrain_synthetic.py "
                        f"--workdir {pretrained}   (or: make demo)",
           "celeba": "python -m launch.pretrain --config experiments/pretrain_celeba.py "
                     f"--workdir {pretrained}"}[suite]
    raise FileNotFoundError(f"no pretrained face backbone at {path}; the attack is scored with it "
                            f"and the fedface objective attacks it. Pretrain first: {cmd}")


def base_attack_config(scfg: mlc.ConfigDict, objective: str) -> mlc.ConfigDict:
  """The experiment config every point starts from (enhancement off: raw reconstructions)."""
  # pylint: disable=g-import-not-at-top
  from experiments import attack_celeba
  from experiments import attack_synthetic
  # pylint: enable=g-import-not-at-top
  if scfg.suite == "synthetic":
    variant = scfg.variant if scfg.variant == "tiny" else (
        "fedface" if objective == "fedface" else "demo")
    config = attack_synthetic.get_config(
        f"variant={variant},enhance=false,pretrained={scfg.pretrained}")
  else:
    config = attack_celeba.get_config(f"objective={objective},pretrained={scfg.pretrained}")
  config.attack.objective = objective
  config.attack.progress = False
  config.enhance.enabled = False
  return config


@dataclasses.dataclass(frozen=True)
class Point:
  """One attack: the protocol knobs that the sweeps vary."""
  victims: int
  images: int
  tau: int
  objective: str = "paper_faithful"
  noise: float | None = None      # DP-FedAvg z; None = DP off
  clip: float | None = None
  secure_aggregation: bool = False

  @property
  def name(self) -> str:
    s = f"{self.objective}_v{self.victims}_n{self.images}_tau{self.tau}"
    if self.noise is not None:
      s += f"_dp_z{self.noise:g}_S{self.clip:.3g}"
    return s + ("_sa" if self.secure_aggregation else "")


def point_config(scfg: mlc.ConfigDict, p: Point) -> mlc.ConfigDict:
  config = base_attack_config(scfg, p.objective)
  a = config.attack
  a.num_clients = p.victims + 1
  a.images_per_client = p.images
  a.tau = p.tau
  a.participants_seed = int(scfg.seed)
  if p.objective == "fedface":
    a.iterations = int(scfg.fedface_iterations)
    a.class_embedding_modes = tuple(scfg.class_embedding_modes)
  else:
    a.iterations = int(scfg.iterations)
  f = config.federated
  f.clients_per_round = p.victims + 1
  f.secure_aggregation = bool(p.secure_aggregation)
  if p.noise is not None:
    f.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=float(p.clip),
                               noise_multiplier=float(p.noise), delta=0.0, accounting="rdp"))
  return config


# ------------------------------------------------------------------------------------- running


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
    self.cache: dict[Point, dict] = {}

  def run(self, p: Point) -> dict:
    if p not in self.cache:
      config = point_config(self.scfg, p)
      logging.info("attack sweep point %s", p.name)
      t0 = time.time()
      out = pipeline.run_attack(config, os.path.join(self.workroot, p.name),
                                backbone_params=self.backbone, splits=self.splits, mesh=self.mesh,
                                return_target=True)
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


def _row(sweep: str, setting: str, p: Point, out: dict, method: str) -> dict:
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
    scfg: `sweep_config(...)`.
    workroot: folder of the per-point attack workdirs (keep it under runs/).
    splits: precomputed `pretrain.load_splits` of the suite's data (tests pass toy splits).
    backbone_params: the face backbone; None loads `<scfg.pretrained>/backbone`.
    mesh: default: one device mesh from the config.
  """
  t_start = time.time()
  unknown = set(scfg.sweeps) - set(SWEEPS)
  if unknown:
    raise ValueError(f"unknown sweeps {sorted(unknown)}; valid: {SWEEPS}")
  config0 = base_attack_config(scfg, scfg.objective)
  if splits is None:
    from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    splits = pretrain.load_splits(config0)
  if backbone_params is None:
    _check_backbone(scfg.pretrained, scfg.suite)
    _, backbone_params = pipeline._load_face_backbone(  # pylint: disable=protected-access
        config0, splits["federated"].image_shape, None)
  if mesh is None:
    mesh = sh.make_mesh(None if config0.mesh.data < 0 else config0.mesh.data,
                        config0.mesh.classes)
  runner = _Runner(scfg, workroot, splits, backbone_params, mesh)
  obj = str(scfg.objective)
  base = Point(int(scfg.base_victims), int(scfg.base_images), int(scfg.base_tau), obj)
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


# ------------------------------------------------------------------------------ defence cost


def _fedface_config(scfg: mlc.ConfigDict):
  # pylint: disable=g-import-not-at-top
  from experiments import fedface_celeba
  from experiments import fedface_synthetic
  # pylint: enable=g-import-not-at-top
  if scfg.suite == "synthetic":
    config = fedface_synthetic.get_config(f"variant=demo,method=fedface,pretrained={scfg.pretrained}")
  else:
    config = fedface_celeba.get_config("method=fedface")
    config.pretrained_backbone = os.path.join(scfg.pretrained, "backbone")
  if scfg.defence_rounds:
    config.federated.num_rounds = int(scfg.defence_rounds)
  # One evaluation at the end of each run (theta_0's once, in the no-noise run).
  config.eval.every_rounds = int(config.federated.num_rounds)
  return config


def _median_metric(workdir: str, key: str) -> float | None:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  vals = []
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      if key in rec:
        vals.append(float(rec[key]))
  return float(np.median(vals)) if vals else None


def _read_eval(workdir: str, rounds: int) -> dict | None:
  """The final (and round-0) evaluation reports of a finished no-DP FedFace run, else None.

  Only a run of the same rounds with DP off qualifies (its config.json is checked).
  """
  cfg_path = os.path.join(workdir, "config.json")
  final = os.path.join(workdir, "eval", f"round_{rounds}.json")
  if not (os.path.exists(cfg_path) and os.path.exists(final)):
    return None
  with open(cfg_path) as f:
    fcfg = json.load(f).get("federated", {})
  if int(fcfg.get("num_rounds", -1)) != rounds or fcfg.get("dp", {}).get("enabled", False):
    return None
  out = {}
  for key, name in (("report", f"round_{rounds}"), ("round_0_report", "round_0")):
    path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        out[key] = json.load(f)
  return out


def probe_delta_norm(config: mlc.ConfigDict, splits: dict) -> float:
  """Mean client ||delta|| of one FedFace round from theta_0 (the DP code path, S = inf, z = 0).

  Why: S should sit near the typical client delta norm (ATTACK.md 9); one round of the engine
  measures it at the cost of one compile, instead of a whole extra no-noise run.
  """
  # pylint: disable=g-import-not-at-top
  from fedface_jax import models
  from fedface_jax.federated import algorithm as alg_lib
  from fedface_jax.federated import run as run_lib
  from fedface_jax.federated import engine
  # pylint: enable=g-import-not-at-top
  fcfg = mlc.ConfigDict(config.federated.to_dict())
  fcfg.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=1e12, noise_multiplier=0.0, delta=0.0,
                                accounting="rdp"))
  fcfg = alg_lib.apply_method(fcfg)
  mesh = sh.make_mesh(None if config.mesh.data < 0 else config.mesh.data, config.mesh.classes)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.get("kwargs", {}))
  fed = splits["federated"]
  algo = run_lib.build_run(fcfg, model, fed, mesh)
  params0 = engine.load_backbone(model, fed.image_shape, config.pretrained_backbone, mesh)
  state = algo.init(params0, jax.random.key(int(fcfg.seed)))
  _, metrics, _ = algo.apply(state, 0)
  return float(jax.device_get(metrics)["dp_delta_norm_mean"])


def defence_cost(scfg: mlc.ConfigDict, workroot: str, splits: dict | None = None,
                 baseline_workdir: str = "") -> dict:
  """FedFace under DP-FedAvg (z in `scfg.defence_noise`, clip S) vs without: TAR@FAR, epsilon.

  The no-noise row is reused from `baseline_workdir` when that holds a finished no-DP run of the
  same config and rounds (e.g. the demo's runs/demo/fedface), else it is run under `workroot`.
  S = `defence_clip_norm`, or (0) the mean client delta norm of round 1 (`probe_delta_norm`).
  Every DP run resumes from its checkpoints.
  """
  from fedface_jax.federated import engine  # pylint: disable=g-import-not-at-top
  from fedface_jax.training import pretrain  # pylint: disable=g-import-not-at-top
  t_start = time.time()
  _check_backbone(scfg.pretrained, scfg.suite)
  config = _fedface_config(scfg)
  rounds = int(config.federated.num_rounds)
  splits = pretrain.load_splits(config) if splits is None else splits
  num_ids = splits["federated"].num_identities
  rows = []
  common = {"rounds": rounds, "clients_per_round": int(config.federated.clients_per_round),
            "num_clients": num_ids}

  reused = _read_eval(baseline_workdir, rounds) if baseline_workdir else None
  if reused is not None:
    rows.append(dict(common, name="fedface_no_dp", noise_multiplier=0.0, clip_norm=math.inf,
                     epsilon=math.inf, delta=None, clip_fraction=None, wall_s=None,
                     workdir=os.path.abspath(baseline_workdir), reused=True, **reused))
  else:
    t0 = time.time()
    workdir = os.path.join(workroot, "fedface_no_dp")
    out = engine.run(config, workdir, splits=splits)
    rows.append(dict(common, name="fedface_no_dp", noise_multiplier=0.0, clip_norm=math.inf,
                     epsilon=math.inf, delta=None, clip_fraction=None,
                     wall_s=round(time.time() - t0, 1), workdir=workdir, reused=False,
                     report=out["final"],
                     round_0_report=out["history"][0][1] if out["history"] else None))
  clip = float(scfg.defence_clip_norm) or probe_delta_norm(config, splits)
  for z in scfg.defence_noise:
    z = float(z)
    cfg = mlc.ConfigDict(config.to_dict())
    cfg.federated.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=clip, noise_multiplier=z,
                                           delta=0.0, accounting="rdp"))
    cfg.eval.at_round_0 = False
    workdir = os.path.join(workroot, f"fedface_dp_z{z:g}_S{clip:.3g}")
    t0 = time.time()
    out = engine.run(cfg, workdir, splits=splits)
    eps = privacy.run_epsilon(cfg.federated, num_ids, rounds)
    rows.append(dict(common, name=f"fedface_dp_z{z:g}", noise_multiplier=z, clip_norm=clip,
                     epsilon=eps["privacy/epsilon"], delta=eps["privacy/delta"],
                     clip_fraction=_median_metric(workdir, "train/dp_clip_fraction"),
                     wall_s=round(time.time() - t0, 1), workdir=workdir, reused=False,
                     report=out["final"], round_0_report=None))
  return {"rows": rows, "clip_norm": clip, "timing_s": time.time() - t_start,
          "fars": (1e-3, 1e-2)}


# ----------------------------------------------------------------------------------- markdown


def _f(x, d=3):
  if x is None or (isinstance(x, float) and (math.isnan(x))):
    return "n/a"
  if isinstance(x, float) and math.isinf(x):
    return "∞"
  return f"{x:.{d}f}"


def _eps(x):
  if x is None:
    return "–"
  return "∞" if math.isinf(x) else (f"{x:.3g}" if x < 1e4 else f"{x:.2e}")


SWEEP_TITLES = {
    "victims": "Victims in the aggregate (V = K - 1)",
    "images": "Photos per client",
    "tau": "Local steps tau",
    "dp": "DP-FedAvg noise (clip S, noise multiplier z)",
    "secure_aggregation": "Secure aggregation (pairwise masks)",
    "class_embedding": "fedface objective: attacker's knowledge of the victims' class embeddings",
}


def markdown_tables(result: dict) -> str:
  """One table per sweep: PSNR, SSIM, identity cosine, rank-1 vs chance, and the target error."""
  rows = result["rows"]
  parts = []
  for sweep in SWEEPS:
    rs = [r for r in rows if r["sweep"] == sweep]
    if not rs:
      continue
    dp = sweep == "dp"
    head = ["Setting", "method", "victim photos", "PSNR (dB)", "SSIM", "cos sim to victim",
            "rank-1", "chance", "target rel. err"]
    if dp:
      head += ["ε (this round)", "noise std / coord"]
    lines = [f"#### {SWEEP_TITLES[sweep]}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rs:
      cells = [r["setting"], r["method"], str(r["victim_images"]), _f(r["psnr"], 2),
               _f(r["ssim"]), _f(r["similarity"]), _f(r["rank1"], 2), _f(r["chance_rank1"]),
               "n/a" if r["target_recovery_rel_err"] is None
               else f"{r['target_recovery_rel_err']:.2g}"]
      if dp:
        cells += [_eps(r.get("epsilon")), "–" if r.get("dp_noise_std_pseudograd") is None
                  else f"{r['dp_noise_std_pseudograd']:.2g}"]
      lines.append("| " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
  sa = result.get("secure_aggregation_check")
  if sa:
    parts.append(
        f"Secure aggregation check: the attacker's target with masking vs without differs by "
        f"max |Δ| = {sa['target_max_abs_diff']:.2g} (float32 rounding bound of the float "
        f"masks: {sa['float_rounding_bound']:.2g}; relative {sa['target_rel_diff']:.2g}, "
        f"target norm {sa['target_norm']:.3g}); PSNR {sa['psnr_off']:.3f} dB off vs "
        f"{sa['psnr_on']:.3f} dB on (|Δ| = {sa['psnr_abs_diff']:.3f} dB); same participants: "
        f"{sa['same_participants']}.")
  return "\n\n".join(parts)


def defence_table(cost: dict) -> str:
  from fedface_jax.evaluation import verification  # pylint: disable=g-import-not-at-top
  fars = cost.get("fars", (1e-3, 1e-2))
  head = (["FedFace run", "z", "S"] + [f"TAR@FAR={verification.far_label(f)} (%)" for f in fars]
          + ["ε (all rounds)", "δ", "clip fraction", "wall (s)"])
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]

  def tar(rep, far):
    if rep is None:
      return "–"
    for k, v in rep.get("tar_at_far", {}).items():
      if float(k) == far:
        return f"{100 * float(v):.2f}"
    return "–"

  for r in cost["rows"]:
    if r.get("round_0_report") is not None:
      lines.append("| " + " | ".join(["pretrained θ0 (round 0)", "–", "–"] +
                                     [tar(r["round_0_report"], f) for f in fars] +
                                     ["–", "–", "–", "–"]) + " |")
    if r["noise_multiplier"] == 0 and math.isinf(r["clip_norm"]):
      name = "FedFace, no DP" + (" (reused demo run)" if r.get("reused") else "")
      dp_cells = ["–", "–"]
    else:
      name = "FedFace + DP-FedAvg"
      dp_cells = [f"{r['noise_multiplier']:g}", f"{r['clip_norm']:.3g}"]
    lines.append("| " + " | ".join(
        [name] + dp_cells + [tar(r.get("report"), f) for f in fars] +
        [_eps(r["epsilon"]), "–" if r["delta"] is None else f"{r['delta']:.2g}",
         _f(r["clip_fraction"], 2), "–" if r["wall_s"] is None else f"{r['wall_s']:.0f}"]) + " |")
  return "\n".join(lines)


def markdown_section(suite: str, command: str, result: dict | None, cost: dict | None) -> str:
  """The RESULTS.md block: command, machine, date, sizes, then the tables."""
  commands = [c for c in ((result or {}).get("command"), (cost or {}).get("command")) if c]
  commands = list(dict.fromkeys(commands)) or [command]
  lines = [f"### Curious-client attack sweeps ({suite})", ""]
  lines += results_lib.provenance_lines(*commands)
  if result is not None:
    sc = result["sweep_config"]
    lines += [
        f"- Sweeps: {result['points']} attacks in {result['timing_s'] / 60:.1f} min (date of run "
        f"{result['date']}). Base point: {sc['base_victims']} victims x {sc['base_images']} "
        f"photos, tau={sc['base_tau']}, eta={result.get('eta')}, objective `{sc['objective']}` "
        f"(untrained LeNet at {result.get('image_size')} px, latent /{result.get('sf')}, "
        f"{sc['iterations']} Adam iterations); fedface objective (pretrained backbone at the "
        f"data's resolution): "
        f"{sc['fedface_iterations']} iterations (CPU-sized: the reference uses 100 at 128 px, "
        "breaching-style IG up to 24k).",
        "- Every row is one honest round of the FedFace engine (attacker = client 0, knows K, "
        "removes its own update) + inversion. PSNR/SSIM after Hungarian pairing within each "
        "victim; 'cos sim to victim' = cosine of the reconstruction's embedding (pretrained "
        "backbone) to the victim's template from held-out photos; rank-1 among all enrolled "
        "federated identities; chance = 1/#identities. 'target rel. err' = ||target - true mean "
        "victim pseudo-gradient|| / ||true||: ~0 without DP, it is the DP noise otherwise.",
        f"- Uniform-noise baseline at the base point: PSNR "
        f"{_f(_base_noise(result, 'noise_psnr'), 2)} dB, cos sim "
        f"{_f(_base_noise(result, 'noise_similarity'))}, rank-1 "
        f"{_f(_base_noise(result, 'noise_rank1'), 2)}.",
        "- DP ε of the attack rows: the attacked round alone (1 round, every participant "
        "sampled), user-level, δ = 1/N^1.1 of the N federated identities (RDP accountant, "
        "`federated/privacy.py`). The attacker clips its own update to S before removing it.",
        "", markdown_tables(result)]
  if cost is not None:
    r0 = cost["rows"][0]
    lines += ["", "#### Defence cost: FedFace TAR@FAR under the same DP-FedAvg", "",
              f"FedFace (`experiments/fedface_synthetic.py` demo: {r0['rounds']} rounds, "
              f"{r0['clients_per_round']} of {r0['num_clients']} clients per round), evaluated on "
              "held-out identities. S = the mean client delta norm of round 1 (probe); "
              f"ε over all rounds with q = {r0['clients_per_round']}/{r0['num_clients']}.", "",
              defence_table(cost)]
  return "\n".join(lines) + "\n"


def _base_noise(result, key):
  for r in result["rows"]:
    sc = result["sweep_config"]
    if (r["victims"], r["images_per_client"], r["tau"]) == (
        sc["base_victims"], sc["base_images"], sc["base_tau"]) and r["objective"] == sc["objective"]:
      return r[key]
  return None


def save_json(path: str, obj: dict):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, default=str)
