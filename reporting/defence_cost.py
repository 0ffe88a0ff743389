"""The other side of the DP trade-off: what DP-FedAvg costs FedFace's TAR@FAR.

`defence_cost` runs FedFace itself with the DP settings that blunt the attack
(`reporting/attack_sweeps.py`), for the rounds of the suite's FedFace config
(`experiments/attack_sweeps.fedface_config`), evaluated by
TAR@FAR on held-out identities (`federated.engine.run`), so that the noise is reported next to
what it costs the face recogniser (RESULTS.md `attack-<suite>` block, `--defence_cost`).
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from experiments import attack_sweeps as sweep_configs
from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import config_utils
from fedface_jax import data as data_lib
from fedface_jax import metrics_io
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import engine
from fedface_jax.federated import privacy
from fedface_jax.federated import run as run_lib
from reporting import attack_sweeps
from reporting import results_md


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


def _read_eval(workdir: str, config: mlc.ConfigDict) -> dict | None:
  """The final (and round-0) evaluation reports of a finished run of exactly `config`, else None.

  A baseline run under any other config (rounds, steps, evaluation split, DP) would make the
  no-noise row a different experiment from the DP rows, so its config.json must match in full.
  """
  rounds = int(config.federated.num_rounds)
  recorded = config_utils.read_recorded_config(workdir)
  if recorded is None or not os.path.exists(os.path.join(workdir, "eval",
                                                         f"round_{rounds}.json")):
    return None
  diffs = config_utils.resume_diff(recorded, config)
  if diffs:
    logging.info("not reusing %s as the no-DP baseline: its config differs (%s)", workdir,
                 config_utils.format_diff(diffs))
    return None
  return _eval_reports(workdir, rounds)


def _eval_reports(workdir: str, rounds: int) -> dict:
  """A run's final and round-0 reports as it wrote them, and how long its rounds took.

  Read from its files rather than from `engine.run`'s return, which for an already finished run
  holds only a re-evaluation of the final model (no round 0, and the re-evaluation's time).
  """
  out = {}
  for key, name in (("report", f"round_{rounds}"), ("round_0_report", "round_0")):
    path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        out[key] = json.load(f)
  log = os.path.join(workdir, "metrics.jsonl")
  records = metrics_io.read_jsonl(log) if os.path.exists(log) else []
  times = [float(r["time"]) for r in records if "time" in r]
  # The end of training is the first record of the last round (a rerun appends re-evaluations).
  ends = [float(r["time"]) for r in records if "time" in r and int(r["step"]) == rounds]
  out["wall_s"] = round(min(ends) - min(times), 1) if ends and times else None
  return out


def probe_delta_norm(config: mlc.ConfigDict, splits: dict) -> float:
  """Mean client ||delta|| of one FedFace round from theta_0 (the DP code path, S = inf, z = 0).

  Why: S should sit near the typical client delta norm (ATTACK.md 9); one round of the engine
  measures it at the cost of one compile, instead of a whole extra no-noise run.
  """
  fcfg = mlc.ConfigDict(config.federated.to_dict())
  fcfg.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=1e12, noise_multiplier=0.0, delta=0.0,
                                accounting="rdp"))
  fcfg = alg_lib.apply_method(fcfg)
  mesh = sh.make_mesh(None if config.mesh.data < 0 else config.mesh.data, config.mesh.classes)
  model = models.from_config(config.model)
  fed = splits["federated"]
  algo = run_lib.build_run(fcfg, model, fed, mesh)
  params0 = ckpt_lib.load_backbone(model, fed.image_shape, config.pretrained_backbone, mesh)
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
  t_start = time.time()
  attack_sweeps.check_backbone(scfg.pretrained, scfg.suite)
  config = sweep_configs.fedface_config(scfg)
  rounds = int(config.federated.num_rounds)
  splits = data_lib.load_splits(config) if splits is None else splits
  num_ids = splits["federated"].num_identities
  rows = []
  common = {"rounds": rounds, "clients_per_round": int(config.federated.clients_per_round),
            "num_clients": num_ids}

  reused = _read_eval(baseline_workdir, config) if baseline_workdir else None
  if reused is not None:
    rows.append(dict(common, name="fedface_no_dp", noise_multiplier=0.0, clip_norm=math.inf,
                     epsilon=math.inf, delta=None, clip_fraction=None,
                     workdir=os.path.abspath(baseline_workdir), reused=True, **reused))
  else:
    workdir = os.path.join(workroot, "fedface_no_dp")
    engine.run(config, workdir, splits=splits)   # a finished run is only re-evaluated
    rows.append(dict(common, name="fedface_no_dp", noise_multiplier=0.0, clip_norm=math.inf,
                     epsilon=math.inf, delta=None, clip_fraction=None, workdir=workdir,
                     reused=False, **_eval_reports(workdir, rounds)))
  clip = float(scfg.defence_clip_norm) or probe_delta_norm(config, splits)
  for z in scfg.defence_noise:
    z = float(z)
    cfg = mlc.ConfigDict(config.to_dict())
    cfg.federated.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=clip, noise_multiplier=z,
                                           delta=0.0, accounting="rdp"))
    cfg.eval.at_round_0 = False
    workdir = os.path.join(workroot, f"fedface_dp_z{z:g}_S{clip:.3g}")
    engine.run(cfg, workdir, splits=splits)
    eps = privacy.run_epsilon(cfg.federated, num_ids, rounds)
    rows.append(dict(common, name=f"fedface_dp_z{z:g}", noise_multiplier=z, clip_norm=clip,
                     epsilon=eps["privacy/epsilon"], delta=eps["privacy/delta"],
                     clip_fraction=_median_metric(workdir, "train/dp_clip_fraction"),
                     workdir=workdir, reused=False,
                     **dict(_eval_reports(workdir, rounds), round_0_report=None)))
  return {"rows": rows, "clip_norm": clip, "timing_s": time.time() - t_start,
          "fars": (1e-3, 1e-2)}


def run_or_reuse(scfg: mlc.ConfigDict, workdir: str, command: str, run: bool,
                 baseline_workdir: str = "") -> dict | None:
  """With `run`, `defence_cost` under `<workdir>/defence`, saved to `<workdir>/defence_cost.json`.

  Without it, re-reads that file from the last run (None when there is none). `command` is
  recorded in the saved result.
  """
  path = os.path.join(workdir, "defence_cost.json")
  if not run:
    return results_md.load_json(path)
  cost = defence_cost(scfg, os.path.join(workdir, "defence"), baseline_workdir=baseline_workdir)
  cost["command"] = command
  results_md.save_json(path, cost)
  return cost
