"""breaching's Inverting-Gradients attack on the very update our curious client inverts.

Runs in its own venv (.peer_venvs/breaching: torch CPU + breaching 0.1.2, see README.md and
requirements-breaching.txt) and exchanges files, not imports, with our code:

  in:  a case .npz written by `reporting/attack_peer.py` (layout: `attack_peer.CASE_LAYOUT`):
       our LeNet's weights w_t and w_{t+1} (flax layout), the round's images and labels, K, n, tau,
       eta, the target pseudo-gradient our attacker inverts, and our JAX logits at w_t;
  out: an .npz with breaching's reconstructions [V * n, s, s, 3] in [0, 1] (victim-major, not
       paired), the iteration count, wall time, the equality checks and the versions.

What it checks before attacking (and refuses to attack when a check fails):
  1. forward: the torch LeNet with the ported weights gives our JAX logits at w_t on the round's
     images (max abs difference <= --forward_atol, default 1e-5);
  2. the same update: the honest round redone in torch (each of the K clients runs tau full-batch
     SGD steps, lr eta, cross entropy on its own n images and label; FedAvg with equal weights)
     gives our engine's w_{t+1} - w_t, and the victims' mean update gives -eta * target (relative
     L2 difference <= --update_rtol, default 1e-4: both sides are differences of float32 models
     ~2e3 times larger (L2) than the update, so float32 rounding of w_{t+1} alone leaves a few
     1e-5, as in our own target's recovery error), and the victims' mean update recomputed by
     our client code without going through w_{t+1} (`victims_mean`, <= --direct_rtol, default
     1e-5);
  3. the update handed to breaching is -eta * target, our attacker's target in breaching's units
     (`p_local - p_server` of a `local_update` user), not the torch recomputation.

The attack: breaching's `invertinggradients` config (cosine matching, TV 0.2 on normalised pixels,
Adam on the gradient's sign, step-lr decay, box constraint, one trial) with `max_iterations` set to
--iterations, against one `local_update` user that holds all V * n victim images (the victims'
super-client, as our attack treats them: exact for tau = 1 and equal n) and is known to have taken
tau steps of lr eta over all of them with the known labels. breaching's normalisation is set to our
model input, (x - 0.5) / (128 / 255) = (255 x - 127.5) / 128, so its box and TV act on the pixels
our victims trained on.

  .peer_venvs/breaching/bin/python scripts/peers/breaching_attack.py --case CASE.npz \
      --out OUT.npz --iterations 200 [--seed 0] [--threads 1]

Prints one JSON line on stdout (the checks, timings, versions); logs go to stderr.
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
import types

import numpy as np

# The torchvision wheel the package index serves for torch 2.13 is a CUDA build; with the CPU torch
# wheel its compiled ops do not load, and `import torchvision` then fails registering fake kernels
# for them ("operator torchvision::nms does not exist"). breaching imports torchvision for its
# datasets and model zoo, none of which this script uses; an empty stand-in for that one module
# lets the rest import. Nothing here calls a torchvision op.
sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))

import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

LAYERS = ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias", "fc1/kernel", "fc2/kernel")
FORMAT = "fedface-attack-case/1"


class LeNet5(torch.nn.Module):
  """Our `fedface_jax/attack/lenet.py` LeNet5 in torch (NCHW; fc1 rows permuted to match)."""

  def __init__(self, num_classes, image_size):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(3, 32, 5, padding=2)
    self.conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
    self.fc1 = torch.nn.Linear(64 * (image_size // 4) ** 2, 512, bias=False)
    self.fc2 = torch.nn.Linear(512, num_classes, bias=False)

  def forward(self, x):
    x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
    x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
    x = torch.relu(self.fc1(x.flatten(1)))
    return self.fc2(x)


def flax_to_torch(flat, image_size):
  """Flax leaves (HWIO conv kernels, [in, out] dense kernels, NHWC flatten) -> torch tensors in
  `LeNet5.parameters()` order (OIHW, [out, in], NCHW flatten)."""
  side = image_size // 4
  fc1 = flat["fc1/kernel"].reshape(side, side, 64, -1).transpose(2, 0, 1, 3).reshape(
      64 * side * side, -1)
  arrays = [flat["conv1/kernel"].transpose(3, 2, 0, 1), flat["conv1/bias"],
            flat["conv2/kernel"].transpose(3, 2, 0, 1), flat["conv2/bias"],
            fc1.T, flat["fc2/kernel"].T]
  return [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in arrays]


def read_case(path):
  with np.load(path, allow_pickle=False) as z:
    case = {k: z[k] for k in z.files}
  if str(case.get("format")) != FORMAT:
    raise ValueError(f"{path}: format {case.get('format')!r}, expected {FORMAT!r}")
  for prefix in ("w_t", "w_t1", "target", "victims_mean"):
    missing = [k for k in LAYERS if f"{prefix}/{k}" not in case]
    if missing:
      raise ValueError(f"{path}: missing {prefix}/ leaves {missing}")
  return case


def build_model(case, which="w_t"):
  k, s = int(case["num_clients"]), int(case["image_size"])
  model = LeNet5(int(case["num_classes"]), s)
  with torch.no_grad():
    for p, v in zip(model.parameters(), flax_to_torch(
        {k_: case[f"{which}/{k_}"] for k_ in LAYERS}, s)):
      if p.shape != v.shape:
        raise ValueError(f"shape {tuple(v.shape)} != {tuple(p.shape)}")
      p.copy_(v)
  del k
  return model


def model_input(case):
  """uint8 NHWC -> our model input (u8 - offset) / scale, NCHW."""
  x = (case["images"].astype(np.float32) - float(case["input_offset"])) / float(
      case["input_scale"])
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def client_delta(model0, x, y, eta, tau):
  """tau full-batch SGD steps (lr eta, mean cross entropy) from model0's weights: w^tau - w_t."""
  params0 = [p.detach().clone() for p in model0.parameters()]
  params = [p.clone().requires_grad_(True) for p in params0]
  names = [n for n, _ in model0.named_parameters()]
  for _ in range(tau):
    out = torch.func.functional_call(model0, dict(zip(names, params)), (x,))
    loss = torch.nn.functional.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, params)
    params = [(p - eta * g).detach().requires_grad_(True) for p, g in zip(params, grads)]
  return [(p - p0).detach() for p, p0 in zip(params, params0)]


def rel_l2(a, b):
  num = sum(float(torch.sum((x - y) ** 2)) for x, y in zip(a, b)) ** 0.5
  den = sum(float(torch.sum(y ** 2)) for y in b) ** 0.5
  return num / max(den, 1e-30)


def checks(case, model, forward_atol, update_rtol, direct_rtol):
  """The forward and same-update checks (module docstring); raises when one fails."""
  k, n, s = int(case["num_clients"]), int(case["images_per_client"]), int(case["image_size"])
  eta, tau = float(case["eta"]), int(case["tau"])
  x = model_input(case)
  y = torch.from_numpy(case["labels"].astype(np.int64))
  with torch.no_grad():
    logits = model(x).numpy()
  fwd = float(np.max(np.abs(logits - case["logits_w_t"])))
  deltas = [client_delta(model, x[c * n:(c + 1) * n], y[c * n:(c + 1) * n], eta, tau)
            for c in range(k)]
  mean_all = [sum(d[i] for d in deltas) / k for i in range(len(LAYERS))]
  mean_victims = [sum(d[i] for d in deltas[1:]) / (k - 1) for i in range(len(LAYERS))]
  w_t = flax_to_torch({l: case[f"w_t/{l}"] for l in LAYERS}, s)
  w_t1 = flax_to_torch({l: case[f"w_t1/{l}"] for l in LAYERS}, s)
  engine_update = [b - a for a, b in zip(w_t, w_t1)]
  shared = [-eta * t for t in flax_to_torch({l: case[f"target/{l}"] for l in LAYERS}, s)]
  direct = [-eta * t for t in flax_to_torch({l: case[f"victims_mean/{l}"] for l in LAYERS}, s)]
  out = {"forward_max_abs_diff": fwd,
         "logits_max_abs": float(np.max(np.abs(case["logits_w_t"]))),
         "round_update_rel_l2_diff": rel_l2(mean_all, engine_update),
         "round_update_max_abs_diff": max(float(torch.max(torch.abs(a - b)))
                                          for a, b in zip(mean_all, engine_update)),
         "victims_update_rel_l2_diff": rel_l2(mean_victims, shared),
         "victims_direct_rel_l2_diff": rel_l2(mean_victims, direct),
         "forward_atol": forward_atol, "update_rtol": update_rtol, "direct_rtol": direct_rtol}
  out["ok"] = bool(fwd <= forward_atol and out["round_update_rel_l2_diff"] <= update_rtol
                   and out["victims_update_rel_l2_diff"] <= update_rtol
                   and out["victims_direct_rel_l2_diff"] <= direct_rtol)
  if not out["ok"]:
    raise RuntimeError(f"the torch port does not reproduce our update: {out}")
  return out, shared


def run_breaching(case, model, shared, iterations, seed):
  """breaching's invertinggradients attack on `shared` (breaching's units); images in [0, 1]."""
  import breaching  # pylint: disable=g-import-not-at-top
  k, n, s = int(case["num_clients"]), int(case["images_per_client"]), int(case["image_size"])
  eta, tau = float(case["eta"]), int(case["tau"])
  cfg = breaching.get_config(overrides=["attack=invertinggradients"])
  cfg.attack.optim.max_iterations = int(iterations)
  cfg.attack.optim.callback = max(1, int(iterations) // 10)
  setup = dict(device=torch.device("cpu"), dtype=torch.float)
  attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg.attack,
                                              setup)
  mean, std = float(case["input_offset"]) / 255.0, float(case["input_scale"]) / 255.0
  meta = types.SimpleNamespace(shape=(3, s, s), mean=[mean] * 3, std=[std] * 3,
                               modality="vision", classes=int(case["num_classes"]))
  payload = [{"parameters": [p.detach().clone() for p in model.parameters()], "buffers": None,
              "metadata": meta}]
  victims = torch.from_numpy(case["labels"][n:].astype(np.int64))   # victim-major, sorted
  m = (k - 1) * n
  shared_data = [{"gradients": [g.clone() for g in shared], "buffers": None,
                  "metadata": {"num_data_points": m, "labels": victims,
                               "local_hyperparams": {"lr": eta, "steps": tau, "data_per_step": m,
                                                     "labels": [victims] * tau},
                               "data_key": "inputs"}}]
  torch.manual_seed(seed)
  t0 = time.time()
  rec, stats = attacker.reconstruct(payload, shared_data, {}, dryrun=False)
  wall = time.time() - t0
  x = rec["data"].detach() * std + mean   # normalised -> [0, 1]
  x01 = x.clamp(0, 1).permute(0, 2, 3, 1).numpy().astype(np.float32)
  trial = stats.get("Trial_0_Val", [])
  from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top
  attack_cfg = json.loads(json.dumps(OmegaConf.to_container(cfg.attack, resolve=True), default=str))
  return x01, {"wall_s": wall, "objective_first": float(trial[0]) if trial else None,
               "objective_last": float(trial[-1]) if trial else None,
               "opt_value": float(stats.get("opt_value", float("nan"))),
               "attack_config": attack_cfg}


def versions():
  from importlib.metadata import version  # pylint: disable=g-import-not-at-top
  out = {"python": platform.python_version()}
  for p in ("breaching", "torch", "torchvision", "numpy", "hydra-core", "omegaconf"):
    try:
      out[p] = version(p)
    except Exception:  # pylint: disable=broad-except
      out[p] = None
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--case", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--iterations", type=int, default=200)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--threads", type=int, default=1)
  ap.add_argument("--forward_atol", type=float, default=1e-5)
  ap.add_argument("--update_rtol", type=float, default=1e-4)
  ap.add_argument("--direct_rtol", type=float, default=1e-5)
  ap.add_argument("--check_only", action="store_true", help="port + checks, no attack")
  args = ap.parse_args()
  logging.basicConfig(level=logging.INFO, stream=sys.stderr)
  torch.set_num_threads(args.threads)
  case = read_case(args.case)
  model = build_model(case)
  t0 = time.time()
  check, shared = checks(case, model, args.forward_atol, args.update_rtol, args.direct_rtol)
  result = {"peer": "breaching", "case": os.path.abspath(args.case), "check": check,
            "check_s": time.time() - t0, "versions": versions(), "torch_threads": args.threads,
            "iterations": 0 if args.check_only else args.iterations, "seed": args.seed}
  recon = np.zeros((0,), np.float32)
  if not args.check_only:
    recon, info = run_breaching(case, model, shared, args.iterations, args.seed)
    result.update(info)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez(args.out, recon=recon, result_json=json.dumps(result))
  print(json.dumps({k: v for k, v in result.items() if k != "attack_config"}))


if __name__ == "__main__":
  main()
