"""A peer attack on the same update: breaching's Inverting Gradients next to ours (RESULTS.md
`attack-peer-breaching`, results/attack-peer-breaching.json).

Why: our attack's numbers mean more next to a published attack run on exactly the update our
curious client sees. The peer is the `breaching` package (PyTorch, its own venv, see
scripts/peers/README.md); it cannot import fedface_jax, so the two sides exchange files:

1. `pipeline.run_attack` runs our honest round and our attack for one seed (the attack sweeps'
   base point, `experiments/attack_sweeps.point_config`), and returns the case (`return_case`);
2. `write_case` writes it as an .npz (layout: `CASE_LAYOUT`);
3. `scripts/peers/breaching_attack.py` (breaching venv) ports the LeNet to torch, checks that
   it reproduces our logits and our round's update, runs breaching's `invertinggradients` attack
   on that update and writes its reconstructions;
4. the reconstructions are scored here by the case's own `score` (the same Hungarian pairing
   within victims, pixel metrics and identity judges as ours).

Rows: mean over (seed, victim) units with a 95% percentile-bootstrap CI over those units, and the
paired difference (breaching - ours) over the same units.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import attack_sweeps as sweep_configs
from fedface_jax import data as data_lib
from fedface_jax import sharding as sh
from fedface_jax.attack import inversion
from fedface_jax.attack import judges as judges_lib
from fedface_jax.attack import lenet as lenet_lib
from fedface_jax.attack import pipeline
from reporting import attack_sweeps
from reporting import attack_tables
from reporting import results_md

BLOCK = "attack-peer-breaching"   # the synthetic suite's; celeba's is BLOCK + "-celeba"
CASE_FORMAT = "fedface-attack-case/1"
LAYERS = ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias", "fc1/kernel", "fc2/kernel")
TREES = ("w_t", "w_t1", "target", "g_own", "victims_mean")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.join(_REPO, "scripts", "peers", "breaching_attack.py")
DEFAULT_PEER_PYTHON = os.path.join(_REPO, ".peer_venvs", "breaching", "bin", "python")

# The case .npz, one entry per key (np.savez, no pickles). <tree> is one of TREES; <leaf> one of
# LAYERS.
CASE_LAYOUT = {
    "format": "str, CASE_FORMAT",
    "<tree>/<leaf>": "float32, flax layout of `attack/lenet.py` LeNet5: conv kernels [kh, kw, in, "
                     "out] (HWIO), biases [out], dense kernels [in, out]; fc1's input index is "
                     "the NHWC flatten (h, w, c) of the [s/4, s/4, 64] feature map",
    "w_t": "the global model before the attacked round (what every client starts from)",
    "w_t1": "the global model after it (the engine's FedAvg of the K clients' updates)",
    "target": "the pseudo-gradient our attacker inverts: (w_t - w_t1) / eta with its own update "
              "removed, i.e. the victims' mean (w_t - w_v^tau) / eta",
    "g_own": "the attacker's own pseudo-gradient (client 0), recomputed by the engine's code",
    "victims_mean": "the victims' true mean pseudo-gradient, each victim's update recomputed by "
                    "the engine's client code (simulation only: not what the attacker sees; "
                    "the torch port is checked against it without w_t1's float32 rounding)",
    "images": "uint8 [K * n, s, s, 3] NHWC, client-major (client 0 = the attacker)",
    "labels": "int32 [K * n], each image's client index (the victims' class label)",
    "logits_w_t": "float32 [K * n, K], our JAX LeNet at w_t on the model input of `images`",
    "input_offset, input_scale": "model input = (images - offset) / scale (127.5, 128)",
    "num_clients, images_per_client, tau, eta, image_size, num_classes, seed": "scalars",
    "ours_recon": "float32 [V * n, s, s, 3] in [0, 1]: our reconstructions, paired with "
                  "images[n:] (victim-major)",
    "ours_json": "str, JSON: our attack's name, iterations, inversion seconds, summary scores",
}


def _flat(tree) -> dict[str, np.ndarray]:
  return {f"{layer}/{leaf}": np.asarray(v, np.float32) for layer, leaves in tree.items()
          for leaf, v in leaves.items()}


def case_tree(case: dict[str, np.ndarray], tree: str) -> dict[str, dict[str, np.ndarray]]:
  """`_flat`'s inverse: one of TREES (e.g. "w_t") from a `read_case` dict, in flax layout."""
  out: dict[str, dict[str, np.ndarray]] = {}
  for key, value in case.items():
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == tree:
      out.setdefault(parts[1], {})[parts[2]] = value
  return out


def case_arrays(out: dict, config, seed: int) -> dict[str, Any]:
  """The case .npz's arrays (`CASE_LAYOUT`) from `run_attack(..., return_case=True)`'s output."""
  a, case = config.attack, out["case"]
  if a.objective not in pipeline.CLASSIFIER_OBJECTIVES:
    raise ValueError(f"the peer attacks the LeNet objectives only, not {a.objective!r}")
  if not a.knows_num_clients or config.federated.dp.enabled:
    raise ValueError("the peer case needs knows_num_clients=True and DP off")
  k, n = int(a.num_clients), int(a.images_per_client)
  size = int(case["images"].shape[1])
  model = lenet_lib.LeNet5(num_classes=k, conv_impl=a.lenet_conv)
  x = inversion.fedface_input(jnp.asarray(case["images"], jnp.float32) / 255.0)
  logits = np.asarray(model.apply({"params": case["w_t"]}, x), np.float32)
  arrays = {"format": np.array(CASE_FORMAT), "images": np.asarray(case["images"], np.uint8),
            "labels": np.asarray(case["labels"], np.int32), "logits_w_t": logits,
            "input_offset": np.float32(127.5), "input_scale": np.float32(128.0),
            "num_clients": k, "images_per_client": n, "tau": int(a.tau), "eta": float(a.eta),
            "image_size": size, "num_classes": k, "seed": int(seed)}
  if case["victims_mean"] is None:
    raise ValueError("the case has no victims_mean (attack.knows_num_clients must be True)")
  for tree in TREES:
    arrays.update({f"{tree}/{key}": v for key, v in _flat(case[tree]).items()})
  name = a.objective
  res = out["results"][name]
  arrays["ours_recon"] = np.asarray(out["reconstructions"][name], np.float32)
  arrays["ours_json"] = np.array(json.dumps({
      "name": name, "iterations": int(a.iterations), "inversion_s": res["timing"]["total_s"],
      "summary": res["raw"]["summary"]}))
  return arrays


def write_case(path: str, arrays: dict[str, Any]) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **arrays)
  return path


def read_case(path: str) -> dict[str, np.ndarray]:
  """A case .npz, checked against `CASE_LAYOUT` (format, every tree's leaves, shapes)."""
  with np.load(path, allow_pickle=False) as z:
    case = {k: z[k] for k in z.files}
  if str(case.get("format")) != CASE_FORMAT:
    raise ValueError(f"{path}: format {case.get('format')!r}, expected {CASE_FORMAT!r}")
  missing = [f"{t}/{l}" for t in TREES for l in LAYERS
             if f"{t}/{l}" not in case]
  missing += [k for k in ("images", "labels", "logits_w_t", "ours_recon", "ours_json", "tau",
                          "eta", "num_clients", "images_per_client", "image_size") if k not in case]
  if missing:
    raise ValueError(f"{path}: missing {missing}")
  k, n, s = (int(case["num_clients"]), int(case["images_per_client"]), int(case["image_size"]))
  if case["images"].shape != (k * n, s, s, 3) or case["ours_recon"].shape != ((k - 1) * n, s, s, 3):
    raise ValueError(f"{path}: images {case['images'].shape} / ours_recon "
                     f"{case['ours_recon'].shape} do not fit K={k}, n={n}, s={s}")
  return case


def run_peer(python: str, case_path: str, out_path: str, iterations: int, seed: int,
             threads: int = 1, timeout_s: float = 3600.0) -> tuple[np.ndarray, dict]:
  """Runs the breaching script in its venv; (its reconstructions [V*n, s, s, 3], its JSON)."""
  if not os.path.exists(python):
    raise FileNotFoundError(f"no breaching venv python at {python}; see scripts/peers/README.md")
  cmd = [python, PEER_SCRIPT, "--case", case_path, "--out", out_path,
         "--iterations", str(int(iterations)), "--seed", str(int(seed)),
         "--threads", str(int(threads))]
  t0 = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
  with open(out_path + ".log", "w") as f:
    f.write(proc.stderr)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with np.load(out_path, allow_pickle=False) as z:
    recon, result = z["recon"], json.loads(str(z["result_json"]))
  result["process_s"] = time.time() - t0
  return recon, result


def ours_inverting_gradients(out: dict, config, iterations: int, seed: int):
  """Our JAX Inverting Gradients on exactly the update breaching attacks (same algorithm).

  The case's w_t and target with `invert_like_breaching`. Returns the `InversionResult`.
  """
  a, case = config.attack, out["case"]
  return invert_like_breaching(
      case["w_t"], case["target"], num_clients=int(a.num_clients),
      images_per_client=int(a.images_per_client), tau=int(a.tau), eta=float(a.eta),
      image_size=int(case["images"].shape[1]), iterations=iterations, seed=seed,
      conv_impl=a.lenet_conv)


def invert_like_breaching(w_t, target, *, num_clients: int, images_per_client: int, tau: int,
                          eta: float, image_size: int, iterations: int, seed: int,
                          conv_impl: str = "xla", **knobs):
  """Our Inverting Gradients with breaching's `invertinggradients` settings, on the victims' labels.

  The settings as the peer script runs them (`inversion.inverting_gradients_config`: global
  cosine matching, TV 0.2, signed Adam at lr 0.1 with step decay at 3/8, 5/8, 7/8 of the
  iterations, boxed, one trial). Breaching optimises in its normalised space, which the peer
  script sets to our model input (~2x - 1 of [0, 1] pixels x); ours optimises [0, 1] pixels, so
  each setting is mapped: its N(0, 1) init is 0.5 + 0.5 N(0, 1) here (init_std 0.5), its TV on
  the input is ~2x ours (tv_weight 0.4), and a signed-Adam step of 0.1 in the input is 0.05 in
  pixels (lr 0.05). `knobs` set further config keys that change how, not what, it computes
  (`remat`, `loop`, `chunk`: `scripts/ig_speed_probe.py`).
  """
  k, n = int(num_clients), int(images_per_client)
  c = inversion.inverting_gradients_config()
  c.tau, c.eta, c.image_size = int(tau), float(eta), int(image_size)
  c.iterations, c.seed = int(iterations), int(seed)
  scale = float(inversion.fedface_input(jnp.ones(())) - inversion.fedface_input(jnp.zeros(())))
  c.init_std, c.tv_weight, c.lr, c.restarts = 1.0 / scale, 0.2 * scale, 0.1 / scale, 1
  c.update(knobs)
  model = lenet_lib.LeNet5(num_classes=k, conv_impl=conv_impl)
  labels = inversion.onehot(np.repeat(np.arange(1, k), n), k)
  return inversion.invert_inverting_gradients(
      lambda p, x: model.apply({"params": p}, x), w_t, target, labels, c,
      input_transform=inversion.fedface_input, progress=False)


def _units(per_image: dict, v: int, n: int) -> dict[str, np.ndarray]:
  return attack_sweeps.unit_values(per_image, v, n)


_ci = attack_sweeps.units_ci   # the sweeps' CI over (seed, victim) units, shared


def summarise(seeds_out: list[dict], v: int, n: int) -> list[dict]:
  """Rows: ours; per peer iteration count, breaching and breaching - ours (paired units); the
  noise floor and the originals ceiling of the same rounds."""
  ours = [_units(s["ours"]["per_image"], v, n) for s in seeds_out]
  seeds = [s["seed"] for s in seeds_out]
  first = seeds_out[0]
  rows = [{"method": f"ours: {first['ours_name']}", "ci": _ci(ours),
           "iterations": first["ours_iterations"],
           "wall_s": [s["ours_inversion_s"] for s in seeds_out],
           "what": "Adam on a bicubic /sf latent, L2 matching of the unrolled update "
                   "(the reference code's attack, `inversion.invert_paper_faithful`), JAX"}]
  for it in first["peers"]:
    peer = [_units(s["peers"][it]["per_image"], v, n) for s in seeds_out]
    diff = [{k: p[k] - o[k] for k in o} for o, p in zip(ours, peer)]
    rows += [
        {"method": f"breaching: invertinggradients, {it} it.", "ci": _ci(peer), "iterations": it,
         "wall_s": [s["peers"][it]["wall_s"] for s in seeds_out],
         "what": "breaching 0.1.2 `invertinggradients` config (cosine, TV 0.2, signed Adam, "
                 "step-lr, boxed, 1 trial), local_update user, max_iterations cut to the count "
                 "shown, PyTorch CPU"},
        {"method": f"breaching ({it} it.) - ours, paired", "ci": _ci(diff), "iterations": None,
         "wall_s": None, "what": "per (seed, victim) unit difference"}]
  for it in first.get("ours_ig", {}):
    ig = [_units(s["ours_ig"][it]["per_image"], v, n) for s in seeds_out]
    rows.append({"method": f"ours: inverting_gradients, {it} it.", "ci": _ci(ig),
                 "iterations": it, "wall_s": [s["ours_ig"][it]["wall_s"] for s in seeds_out],
                 "what": "our JAX Inverting Gradients with breaching's settings "
                         "(`attack_peer.ours_inverting_gradients`): the same algorithm"})
    if it in first["peers"]:
      peer = [_units(s["peers"][it]["per_image"], v, n) for s in seeds_out]
      rows.append({"method": f"breaching ({it} it.) - ours inverting_gradients ({it} it.), "
                             "paired",
                   "ci": _ci([{k: p[k] - o[k] for k in o} for o, p in zip(ig, peer)]),
                   "iterations": None, "wall_s": None,
                   "what": "per (seed, victim) unit difference, same algorithm"})
  for r in rows:
    r.update(seeds=seeds, units=int(next(iter(r["ci"].values()))["units"]))
  for name in ("baseline: uniform noise", "ceiling: originals"):
    summ = [attack_sweeps._summary_row(s["out"], name)  # pylint: disable=protected-access
            for s in seeds_out]
    keys = [k for k in summ[0] if isinstance(summ[0][k], float)]
    rows.append({"method": name, "seeds": seeds, "units": None, "iterations": None,
                 "wall_s": None, "what": "reference row of the same rounds (means only)",
                 "ci": {k: {"mean": float(np.mean([s[k] for s in summ])), "ci_low": None,
                            "ci_high": None} for k in keys}})
  return rows


def run(suite: str, seeds: tuple[int, ...], workdir: str, command: str, *,
        iterations: int = 200, peer_iterations: tuple[int, ...] = (200,),
        ig_iterations: tuple[int, ...] = (),
        pretrained: str | None = None,
        judge: str = "", peer_python: str = DEFAULT_PEER_PYTHON, threads: int = 1,
        splits=None, backbone_params=None, mesh=None, sweep_overrides: dict | None = None
        ) -> dict:
  """Ours and breaching's attack on the base point of `suite` for each seed; the result dict.

  `sweep_overrides` go to `sweep_config` (tests: variant="tiny", a smaller base point); splits,
  backbone_params and mesh default to the suite's data, backbone and a one-device mesh.
  """
  t_start = time.time()
  scfg = sweep_configs.sweep_config(suite, iterations=int(iterations), judge=judge,
                                    **({"pretrained": pretrained} if pretrained else {}),
                                    **(sweep_overrides or {}))
  point = sweep_configs.base_point(scfg)
  config0 = sweep_configs.base_attack_config(scfg, scfg.objective)
  if splits is None:
    splits = data_lib.load_splits(config0)
  if backbone_params is None:
    attack_sweeps.check_backbone(scfg.pretrained, suite)
    _, backbone_params = pipeline.load_face_backbone(config0, splits["federated"].image_shape)
  if mesh is None:
    mesh = sh.make_mesh(None if config0.mesh.data < 0 else config0.mesh.data, config0.mesh.classes)
  judge_cache: dict[str, np.ndarray] = {}
  seeds_out = []
  for seed in seeds:
    config = sweep_configs.point_config(scfg, point, seed)
    sdir = os.path.join(workdir, f"seed{seed}")
    logging.info("peer comparison: our attack, seed %d", seed)
    out = pipeline.run_attack(config, os.path.join(sdir, "ours"), backbone_params=backbone_params,
                              splits=splits, mesh=mesh, return_images=True, return_case=True,
                              judge_cache=judge_cache)
    case_path = write_case(os.path.join(sdir, "case.npz"), case_arrays(out, config, seed))
    read_case(case_path)
    peers = {}
    for it in peer_iterations:
      logging.info("peer comparison: breaching, seed %d (%d iterations)", seed, it)
      recon, peer = run_peer(peer_python, case_path, os.path.join(sdir, f"breaching_it{it}.npz"),
                             it, seed, threads)
      scored = out["case"]["score"](recon)
      peer.update(per_image=scored["per_image"], summary=scored["summary"])
      peers[int(it)] = peer
      with open(os.path.join(sdir, f"breaching_it{it}_scores.json"), "w") as f:
        json.dump({k: v for k, v in peer.items() if k != "attack_config"}, f, indent=1)
    ours_ig = {}
    for it in ig_iterations:
      logging.info("peer comparison: our inverting_gradients, seed %d (%d iterations)", seed, it)
      ig = ours_inverting_gradients(out, config, it, seed)
      scored = out["case"]["score"](ig.images)
      ours_ig[int(it)] = {"per_image": scored["per_image"], "summary": scored["summary"],
                          "wall_s": float(ig.timing["total_s"]),
                          "final_matching": float(ig.final_matching)}
    name = config.attack.objective
    res = out["results"][name]
    seeds_out.append({"seed": int(seed), "out": out, "ours_name": name, "ours_ig": ours_ig,
                      "ours_iterations": int(config.attack.iterations),
                      "ours_inversion_s": float(res["timing"]["total_s"]),
                      "ours": res["raw"], "peers": peers,
                      "target_recovery_rel_err": out["target_recovery_rel_err"]})
  v, n = point.victims, point.images
  last = seeds_out[-1]
  last_peer = next(iter(last["peers"].values()))
  return {
      "suite": suite, "command": command, "date": datetime.date.today().isoformat(),
      "point": point.name, "victims": v, "images_per_client": n, "tau": point.tau,
      "num_clients": v + 1, "eta": float(config0.attack.eta),
      "image_size": int(config0.attack.image_size), "sf": int(config0.attack.sf),
      "judges": list(last["ours"]["summary"]["judges"]),
      "chance_rank1": float(last["ours"]["summary"]["chance_rank1"]),
      "rows": summarise(seeds_out, v, n),
      "checks": [{"seed": s["seed"], "peer_iterations": it, **p["check"]}
                 for s in seeds_out for it, p in s["peers"].items()],
      "target_recovery_rel_err": [s["target_recovery_rel_err"] for s in seeds_out],
      "peer_versions": last_peer["versions"], "peer_attack_config": last_peer.get(
          "attack_config"), "peer_torch_threads": last_peer["torch_threads"],
      "peer_objective_first_last": [
          {"seed": s["seed"], "iterations": it, "first": p.get("objective_first"),
           "last": p.get("objective_last")} for s in seeds_out for it, p in s["peers"].items()],
      "ours_ig_final_matching": [
          {"seed": s["seed"], "iterations": it, "last": g["final_matching"]}
          for s in seeds_out for it, g in s["ours_ig"].items()],
      "timing_s": time.time() - t_start, "workdir": os.path.abspath(workdir),
      "nice": os.nice(0),
      "jax": jax.__version__, "python": sys.version.split()[0],
  }


def _cell(c: dict, d: int) -> str:
  if c is None:
    return "–"
  if c.get("ci_low") is None:
    return attack_tables._f(c["mean"], d)  # pylint: disable=protected-access
  f = attack_tables._f  # pylint: disable=protected-access
  return f"{f(c['mean'], d)} [{f(c['ci_low'], d)}, {f(c['ci_high'], d)}]"


def markdown_section(result: dict) -> str:
  metrics = [("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)]
  for j in result["judges"]:
    sim, r1 = judges_lib.judge_keys(j)
    label = attack_tables.judge_label(j)
    metrics += [(sim, f"cos sim to victim ({label})", 3), (r1, f"rank-1 ({label})", 2)]
  head = ["Attack", "seeds", "units"] + [m[1] for m in metrics] + ["iterations", "wall s / seed"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in result["rows"]:
    wall = "–" if not r["wall_s"] else f"{np.mean(r['wall_s']):.1f}"
    cells = [r["method"], str(len(r["seeds"])), "–" if r["units"] is None else str(r["units"])]
    cells += [_cell(r["ci"].get(k), d) for k, _, d in metrics]
    cells += ["–" if r["iterations"] is None else str(r["iterations"]), wall]
    lines.append("| " + " | ".join(cells) + " |")
  checks = result["checks"]
  fwd = max(c["forward_max_abs_diff"] for c in checks)
  upd = max(c["round_update_rel_l2_diff"] for c in checks)
  vic = max(c["victims_update_rel_l2_diff"] for c in checks)
  direct = max(c["victims_direct_rel_l2_diff"] for c in checks)
  ours_rel = max(result["target_recovery_rel_err"])
  ver = result["peer_versions"]
  facts = [
      f"Case: the `attack-{result['suite']}` sweeps' base point ({result['victims']} victims x "
      f"{result['images_per_client']} photos, K={result['num_clients']}, tau={result['tau']}, "
      f"eta={result['eta']}, untrained LeNet at {result['image_size']} px, objective "
      "`paper_faithful`), one honest round of our engine per seed; both attacks invert the same "
      "update: the victims' mean update after the attacker removed its own.",
      f"Same update, checked per seed by the peer script before it attacks: the torch LeNet "
      f"(ported weights) gives our JAX logits to max |diff| {fwd:.1e}; the honest round redone "
      f"in torch (K clients x tau SGD steps, FedAvg) gives our engine's w_(t+1) - w_t to "
      f"relative L2 {upd:.1e}, and its victims' mean update gives the update handed to "
      f"breaching (-eta x our target) to relative L2 {vic:.1e} (our own target is that far "
      f"from the victims' true mean too, {ours_rel:.1e}: float32 rounding of w_(t+1), ~2e3 "
      "times larger than the update) and the victims' mean update recomputed by our client "
      f"code to {direct:.1e} (maxima over seeds; the script refuses to attack beyond 1e-5 "
      "logits, 1e-4 update, 1e-5 direct).",
      f"Peer: breaching {ver.get('breaching')} (torch {ver.get('torch')}, CPU, "
      f"{result['peer_torch_threads']} thread(s)), its `invertinggradients` attack config with "
      "max_iterations cut to the count shown (the config's default is 24,000; the step-lr "
      "milestones scale with it); one `local_update` user holding the V x n victim images "
      "(the victims' super-client, as ours; exact for tau = 1) with known labels, lr and steps; "
      "breaching's normalisation set to our model input, so its box and TV act on [0, 1] "
      "pixels.",
      "Scores: both sets of reconstructions go through the same `score` of the same run "
      "(Hungarian pairing within each victim, PSNR/SSIM, cosine to the victim's held-out "
      f"template and rank-1 among the enrolled identities; judges: {', '.join(result['judges'])}"
      f"; chance rank-1 {result['chance_rank1']:.3f}). Cells: mean [95% bootstrap CI] over "
      "(seed, victim) units; the difference row is paired by unit.",
      "Wall time: ours = the inversion (incl. JIT compile), breaching = `reconstruct` alone; "
      f"whole comparison {result['timing_s'] / 60:.1f} min (run {result['date']}), "
      f"on a {os.cpu_count()}-core CPU" + (f" at nice {result['nice']}" if result.get("nice")
                                          else "") + ": the timings are indicative only.",
  ]
  if any(r["method"].startswith("ours: inverting_gradients") for r in result["rows"]):
    facts.insert(-1, "Same algorithm: `ours: inverting_gradients` is our JAX Inverting Gradients "
                 "with breaching's settings (`attack_peer.ours_inverting_gradients`: cosine, "
                 "TV, signed Adam with step decay, box, one trial, each mapped from breaching's "
                 "normalised space to pixels) on the same update, same seeds; its paired "
                 "difference row is breaching minus it, unit by unit.")
  body = "\n".join(lines)
  return results_md.section(f"Peer attack on the same update: breaching ({result['suite']})",
                            result["command"], body, tuple(facts))


def results_rows(result: dict) -> list[dict]:
  out = []
  for r in result["rows"]:
    out.append({"method": r["method"], "variant": result["point"], "seeds": r["seeds"],
                "units": r["units"], "iterations": r["iterations"], "wall_s": r["wall_s"],
                "what": r["what"],
                "metrics": {k: {"mean": c["mean"], "ci_low": c["ci_low"],
                                "ci_high": c["ci_high"]} for k, c in r["ci"].items()}})
  return out


def block_key(suite: str) -> str:
  return BLOCK if suite == "synthetic" else f"{BLOCK}-{suite}"


def save_result(result: dict, workdir: str) -> str:
  """`workdir/result.json` (the rows, checks and versions; no images)."""
  path = os.path.join(workdir, "result.json")
  results_md.save_json(path, result)
  return path


def load_result(workdir: str) -> dict:
  """`save_result`'s `workdir/result.json`, for `launch.attack_peer --reuse`."""
  result = results_md.load_json(os.path.join(workdir, "result.json"))
  if not result or "rows" not in result:
    raise FileNotFoundError(f"no finished comparison in {workdir}/result.json; run it first")
  return result


def write_block(result: dict, results_dir: str = "results",
                results_md_path: str = "RESULTS.md") -> str:
  """The suite's RESULTS.md block and its JSON twin; returns the JSON's path."""
  key = block_key(result["suite"])
  results_md.update_results_md(results_md_path, key, markdown_section(result))
  note = ("Ours vs breaching's Inverting Gradients on the same update (same LeNet weights, images, "
          "K, n, tau, eta), scored by our metrics and judges; means over (seed, victim) units "
          "with 95% percentile-bootstrap CIs; PSNR in dB.")
  extra = {k: result[k] for k in ("suite", "point", "victims", "images_per_client", "tau",
                                  "num_clients", "eta", "image_size", "sf", "judges",
                                  "chance_rank1", "checks", "target_recovery_rel_err",
                                  "peer_versions", "peer_attack_config", "peer_torch_threads",
                                  "peer_objective_first_last", "ours_ig_final_matching",
                                  "timing_s", "nice", "jax", "python") if k in result}
  extra["run_date"] = result["date"]
  return results_md.write_results_json(results_dir, key, result["command"],
                                       results_rows(result), note, extra)
