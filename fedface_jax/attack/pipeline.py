"""The curious-client attack end to end: one honest round of the engine, inversion, scoring.

Why a pipeline: the attack is only meaningful against the exact update the protocol produces, so the
honest round here is run by the same engine as FedFace (`federated.run.build_run`: the
client updates of `client_update.py`, FedAvg weighting, the server optimiser, and whatever DP or
secure-aggregation options `config.federated` switches on), not by a separate toy loop. The attacker
is client 0 of the round: it saves w_t before the round and reads w_{t+1} after it, forms the
diluted update `(w_t - w_{t+1}) / eta` and, if it knows K (`attack.knows_num_clients`), removes its
own update, which it recomputes locally with the same client code (ATTACK.md 1, 2.1).

Victim models (`attack.objective`):
  * "paper_faithful" / "inverting_gradients": the reference's untrained LeNet classifier
    (ATTACK.md 5), trained by the victims with cross entropy on their known labels
    (`client.local_loss = "softmax_ce"`; every client is one identity, label = its client index);
  * "fedface": the pretrained face backbone trained with FedFace's positive-only loss against a
    class embedding the attacker cannot see (`attack.class_embedding_modes`).

Every reconstruction is scored with the reference's pixel metrics (PSNR, windowed SSIM, the
reference's global SSIM), after a Hungarian pairing *within each victim* (a client's images share
one label, so their order is not identifiable), and with recognisability under the face backbone:
cosine similarity to the victim's template built from photos NOT used in the attacked round, and
rank-1 identification among all enrolled (federated) identities, next to chance and next to two
baselines (uniform-noise images, and the originals themselves at the attack resolution).

Optionally a DDPM prior trained on the *pretrain* identities only (public faces, disjoint from the
victims) enhances the reconstructions with DDRM super-resolution (ATTACK.md 4.1); before/after
metrics are reported side by side.

`run_attack(config, workdir, backbone_params=None)` is the entry point; the configs are
`experiments/attack_*.py` (sections in `experiments/common.py`), and the tables and sweeps that
call it live in `reporting/` (`attack_tables.py`, `attack_sweeps.py`).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image

from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import data as data_lib
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.attack import grids
from fedface_jax.attack import identifiability
from fedface_jax.attack import inversion
from fedface_jax.attack import judges as judges_lib
from fedface_jax.attack import lenet as lenet_lib
from fedface_jax.attack import objectives
from fedface_jax.attack import metrics
from fedface_jax.attack import updates
from fedface_jax.data import faces as faces_lib
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import client_update as cu
from fedface_jax.federated import run as run_lib

CLASSIFIER_OBJECTIVES = ("paper_faithful", "inverting_gradients")
OBJECTIVES = CLASSIFIER_OBJECTIVES + ("fedface",)


# ------------------------------------------------------------------------------------------ data


def resize_u8(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, H, W, 3] -> [N, size, size, 3] with Pillow's antialiased bicubic (no-op at size)."""
  images = np.asarray(images)
  if images.shape[1:3] == (size, size):
    return np.ascontiguousarray(images)
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                   for im in images]) if len(images) else np.zeros((0, size, size, 3), np.uint8)


def resize_float(images01: np.ndarray, size: int) -> np.ndarray:
  """float [N, h, w, 3] in [0, 1] -> [N, size, size, 3], bilinear (antialiased when shrinking)."""
  x = jnp.asarray(images01, jnp.float32)
  if x.shape[1:3] == (size, size):
    return np.asarray(x)
  return np.asarray(jnp.clip(jax.image.resize(x, (x.shape[0], size, size, 3), "linear"), 0, 1))


def choose_participants(fed_faces: faces_lib.FaceArrays, num_clients: int, n: int, holdout: int,
                        seed: int) -> np.ndarray:
  """K federated identities with at least n + holdout photos, in a seeded random order.

  Position 0 is the attacker, positions 1..K-1 the victims.
  """
  counts = fed_faces.counts()
  eligible = np.flatnonzero(counts >= n + holdout)
  if eligible.size < num_clients:
    raise ValueError(f"only {eligible.size} federated identities have >= {n + holdout} photos; "
                     f"need K={num_clients} (lower images_per_client or holdout_images)")
  rng = np.random.default_rng(seed)
  return rng.permutation(eligible)[:num_clients].astype(np.int64)


def split_round_and_holdout(fed_faces, identity: int, n: int):
  """(first n photos -> the round, the rest -> recognition templates), by ascending index."""
  idx = fed_faces.indices_of_identity(int(identity))
  return idx[:n], idx[n:]


# ------------------------------------------------------------------------------ the honest round


def engine_config(config: mlc.ConfigDict, num_classes: int) -> mlc.ConfigDict:
  """The `federated` section the engine runs for the attacked round (all K clients take part)."""
  a = config.attack
  f = mlc.ConfigDict(config.federated.to_dict())
  classifier = a.objective in CLASSIFIER_OBJECTIVES
  f.method = "fedavg" if classifier else f.method
  f.num_rounds = max(1, int(a.round_index) + 1)
  f.clients_per_round = int(a.num_clients)
  f.min_images_per_client = int(a.images_per_client)
  f.max_images_per_client = int(a.images_per_client)
  f.client.local_steps = int(a.tau)
  f.client.local_epochs = 0
  f.client.batch_size = int(a.images_per_client)        # full-batch GD, as the reference
  f.client.augment_flip = False                          # the attacker's model has no flips
  f.client.local_loss = "softmax_ce" if classifier else "positive_only"
  # update, not replace: the sections are complete (experiments/common.py `optimizer`).
  f.client.optimizer.update(dict(
      name="momentum" if a.client_momentum else "sgd", learning_rate=float(a.eta),
      momentum=float(a.client_momentum), schedule="constant"))
  f.server.optimizer.update(dict(name="sgd", learning_rate=1.0, schedule="constant"))
  f.clients_per_chunk = max(1, min(int(f.clients_per_chunk), int(a.num_clients)))
  if classifier:
    f.embedding_dim = int(num_classes)
  f = alg_lib.apply_method(f)
  if classifier:
    f.spreadout.enabled = False
    f.class_embedding = "frozen"
  return f


def run_honest_round(config: mlc.ConfigDict, model, params0, round_faces: faces_lib.FaceArrays,
                     mesh, label_table: np.ndarray | None = None) -> dict[str, Any]:
  """One round of the federated engine on the K participants; returns what the attacker sees.

  Returns w_t, w_{t+1} (host pytrees), the round's class rows (rows [K, D] of the table the clients
  trained against: what the server knows, the attacker only its own), the engine's round metrics,
  the participating client ids, the engine config, and the attacker's own pseudo-gradient (the
  attacker's client update recomputed locally with the engine's client code).
  """
  a = config.attack
  num_classes = round_faces.num_identities if label_table is None else label_table.shape[1]
  fcfg = engine_config(config, num_classes)
  algo = run_lib.build_run(fcfg, model, round_faces, mesh)
  if algo.clients.num_clients != a.num_clients:
    raise ValueError(f"engine built {algo.clients.num_clients} clients, expected {a.num_clients}")
  state = algo.init(params0, jax.random.key(int(fcfg.seed)))
  if label_table is not None:
    rows = algo.abstract_state["table"].shape[0]
    table = np.zeros((rows, label_table.shape[1]), np.float32)
    table[:label_table.shape[0]] = label_table
    state = dict(state, table=sh.put_table(table, mesh))
  w_t = jax.device_get(state["params"])
  class_rows = np.asarray(jax.device_get(state["table"]))[:a.num_clients]
  for r in range(int(a.round_index)):   # earlier honest rounds (same clients), if asked for
    state, _, _ = algo.apply(state, r)
    w_t = jax.device_get(state["params"])
    class_rows = np.asarray(jax.device_get(state["table"]))[:a.num_clients]
  state, round_metrics, ids = algo.apply(state, int(a.round_index))
  w_t1 = jax.device_get(state["params"])
  # The attacker's own update: its local training, with the engine's client code on its own data.
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  n = int(a.images_per_client)
  update = jax.jit(cu.make_client_update(apply_fn, fcfg.client, n))
  own_images = algo.clients.round_data(np.array([0], np.int32)).images[0]
  delta, _, _ = update(w_t, jnp.asarray(class_rows[0]), own_images, jnp.int32(n),
                       jax.random.key(0))
  g_own = jax.tree.map(lambda d: -np.asarray(d) / float(a.eta), jax.device_get(delta))
  return {"w_t": w_t, "w_t1": w_t1, "class_rows": class_rows, "g_own": g_own, "fcfg": fcfg,
          "client_update": update,
          "round_metrics": {k: float(v) for k, v in jax.device_get(round_metrics).items()},
          "client_ids": np.asarray(ids)}


def attack_target(seen: dict, config: mlc.ConfigDict):
  """The pseudo-gradient the attacker inverts: g_bar, minus its own update if it knows K.

  Under DP-FedAvg the aggregate holds the attacker's *clipped* delta, and the clip norm S is part of
  the protocol, so the attacker clips its own update the same way before removing it (otherwise
  an unclipped g_own would leave a spurious residual in the target whenever its norm exceeds S).
  """
  a = config.attack
  g_bar = updates.diluted_update(seen["w_t"], seen["w_t1"], float(a.eta))
  if a.knows_num_clients:
    g_own = seen["g_own"]
    dp = config.federated.dp
    if dp.enabled:
      delta_norm = float(a.eta) * float(updates.tree_l2_norm(g_own))
      scale = min(1.0, float(dp.clip_norm) / max(delta_norm, 1e-30))
      g_own = jax.tree.map(lambda g: np.asarray(g) * scale, g_own)
    return updates.remove_own_update(g_bar, g_own, int(a.num_clients))
  return g_bar


# ---------------------------------------------------------------------------------- inversion


def _inversion_config(config: mlc.ConfigDict, image_size: int) -> mlc.ConfigDict:
  a = config.attack
  if a.objective == "paper_faithful":
    c = inversion.paper_faithful_config()
    c.num_clients, c.batch_size = int(a.num_clients), int(a.images_per_client)
    c.num_classes = 0
  elif a.objective == "inverting_gradients":
    c = inversion.inverting_gradients_config()
    c.restarts = int(a.restarts)
    c.tv_weight = float(a.tv_weight)
  else:
    c = inversion.fedface_attack_config()
    c.momentum = float(a.client_momentum)
    c.margin = float(config.federated.client.margin)
    c.tv_weight = float(a.tv_weight)
  c.tau, c.eta, c.image_size = int(a.tau), float(a.eta), int(image_size)
  c.iterations, c.lr, c.matching, c.seed = (int(a.iterations), float(a.lr), str(a.matching),
                                            int(a.attack_seed))
  if "lr_min" in c:
    c.lr_min = float(a.lr_min)
  if "sf" in c:
    c.sf = int(a.sf)
  return c


def _known_images(config, round_faces, image_size):
  n = int(config.attack.images_per_client)
  own = round_faces.images[round_faces.indices_of_identity(0)][:n]
  return jnp.asarray(resize_u8(own, image_size), jnp.float32) / 255.0


FEDFACE_INITS = ("uniform", "public")
# The row scoring a public-face start as it is (fedface_init = "public"), next to the attacks.
PUBLIC_INIT_BASELINE = "public-face start (no attack)"


def public_init_latent(config: mlc.ConfigDict, public: faces_lib.FaceArrays, num_slots: int,
                       image_size: int) -> np.ndarray:
  """[num_slots * n, s, s, 3] in [0, 1]: photos of `num_slots` random public identities, n each.

  Why: with unknown class embeddings the fedface objective stalls on random images that explain the
  small update with their own mean feature; starting from real faces of *other* (public,
  pretraining) people tests whether a face-like start leaves that plateau. One identity per slot
  keeps each slot's mean feature a person's. s = image_size // sf (the latent's size); an identity
  with fewer than n photos repeats them. Seeded by `attack.attack_seed`.
  """
  a = config.attack
  n, size = int(a.images_per_client), int(image_size) // max(1, int(a.sf))
  if public is None or public.num_identities < num_slots:
    raise ValueError(f"fedface_init='public' needs >= {num_slots} public (pretraining) identities")
  rng = np.random.default_rng([int(a.attack_seed), 7])
  rows = []
  for ident in rng.choice(public.num_identities, size=num_slots, replace=False):
    idx = public.indices_of_identity(int(ident))
    rows.append(rng.choice(idx, size=n, replace=len(idx) < n))
  photos = resize_u8(public.images[np.concatenate(rows)], size)
  return photos.astype(np.float32) / 255.0


def invert(config: mlc.ConfigDict, model, seen: dict, target, round_faces, image_size: int,
           mode: str | None = None, init_latent: np.ndarray | None = None
           ) -> inversion.InversionResult:
  """Runs the configured objective; rows are victim-major (victim v = rows v*n .. v*n+n-1).

  `init_latent`: the fedface objective's start (`public_init_latent`), else its random draw.
  """
  a = config.attack
  k, n = int(a.num_clients), int(a.images_per_client)
  icfg = _inversion_config(config, image_size)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  progress = bool(a.progress)
  # Victims are clients 1..K-1. Without K the attacker inverts the aggregate of all K clients:
  # its own images join as known constants (classifier) or as extra dummies it discards (fedface).
  victims = np.arange(1, k) if a.knows_num_clients else np.arange(k)
  if a.objective in CLASSIFIER_OBJECTIVES:
    labels = inversion.onehot(np.repeat(np.arange(1, k), n), seen["class_rows"].shape[1])
    if a.objective == "paper_faithful":
      kw = {}
      if not a.knows_num_clients:
        kw = dict(known_images=_known_images(config, round_faces, image_size),
                  known_labels_onehot=inversion.onehot(np.zeros(n, np.int32), labels.shape[1]))
      return inversion.invert_paper_faithful(apply_fn, seen["w_t"], target, labels, icfg,
                                             input_transform=inversion.fedface_input,
                                             progress=progress, **kw)
    if not a.knows_num_clients:
      raise ValueError("inverting_gradients needs knows_num_clients=True (no known-image support)")
    return inversion.invert_inverting_gradients(apply_fn, seen["w_t"], target, labels, icfg,
                                                input_transform=inversion.fedface_input,
                                                progress=progress)
  from fedface_jax import losses  # pylint: disable=g-import-not-at-top
  res = inversion.invert_fedface(
      apply_fn, seen["w_t"], target, num_victims=len(victims), images_per_victim=n, config=icfg,
      class_embedding_mode=mode, class_embeddings=seen["class_rows"][victims],
      input_transform=inversion.fedface_input,
      client_loss_fn=lambda e, w, m: losses.positive_only_loss(e, w, margin=m),
      init_latent=init_latent, progress=progress)
  if not a.knows_num_clients:   # drop the attacker's own slot (client 0)
    res.images = res.images[n:]
    res.latent = res.latent[n:]
  return res


# ------------------------------------------------------------------------------------ enhance


def load_prior(config: mlc.ConfigDict, splits) -> tuple[Any, Any, str]:
  """(params, prior config, status) of the public-face prior; params None when skipped."""
  from fedface_jax.attack.diffusion import train_prior as tp  # pylint: disable=g-import-not-at-top
  from fedface_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  e = config.enhance
  pcfg = tp.default_prior_config(e.prior_variant)
  if e.prior_num_steps:
    pcfg.train.num_steps = int(e.prior_num_steps)
  ckpt_dir = os.path.join(e.prior_workdir, "checkpoints")
  latest = ckpt_lib.Checkpointer(ckpt_dir).latest_step() if os.path.isdir(ckpt_dir) else None
  finished = latest is not None and latest >= pcfg.train.num_steps
  if not finished and not e.train_if_missing:
    msg = f"no finished prior in {e.prior_workdir}; run launch.train_prior (enhancement skipped)"
    logging.warning(msg)
    return None, pcfg, msg
  public = splits["pretrain"].images   # public faces only: disjoint from every federated victim
  params = tp.load_or_train_prior(pcfg, public, e.prior_workdir)
  return params, pcfg, "ok"


def enhance(config, prior_params, pcfg, recon01: np.ndarray, latent01: np.ndarray | None,
            image_size: int) -> np.ndarray:
  """DDRM super-resolution (or SDEdit) of reconstructions with the public prior, at image_size."""
  from fedface_jax.attack.diffusion import enhance as enh  # pylint: disable=g-import-not-at-top
  from fedface_jax.attack.diffusion import train_prior as tp  # pylint: disable=g-import-not-at-top
  e = config.enhance
  unet, schedule = tp.build_prior(pcfg)
  size = int(pcfg.image_size)
  key = jax.random.key(int(e.seed))
  if e.method == "ddrm":
    scale = max(1, int(config.attack.sf))
    low = size // scale
    if latent01 is not None and latent01.shape[1] == low:
      y = np.clip(latent01, 0, 1)
    else:
      y = resize_float(recon01, low)
    out = enh.ddrm_super_resolution(prior_params, unet.apply, jnp.asarray(y, jnp.float32), scale,
                                    float(e.sigma_0), key, int(e.num_steps), float(e.eta),
                                    schedule=schedule)
  elif e.method == "sdedit":
    out = enh.sdedit(prior_params, unet.apply, jnp.asarray(resize_float(recon01, size)),
                     float(e.sdedit_t0), key, int(e.num_steps), schedule=schedule)
  else:
    raise ValueError(f"unknown enhance.method {e.method!r}; valid: ddrm, sdedit")
  return resize_float(np.asarray(out), image_size)


# --------------------------------------------------------------------------------------- main


def load_face_backbone(config, image_shape, backbone_params=None):
  """(face model, host params): `backbone_params`, else `config.pretrained_backbone` loaded."""
  face_model = models.from_config(config.model)
  if backbone_params is None:
    backbone_params = ckpt_lib.load_backbone(face_model, image_shape,
                                             config.pretrained_backbone)
  return face_model, jax.device_get(backbone_params)


def run_attack(config: mlc.ConfigDict, workdir: str, backbone_params: Any = None,
               splits: dict | None = None, mesh=None,
               return_target: bool = False, return_images: bool = False,
               judge_cache: dict | None = None, return_case: bool = False) -> dict[str, Any]:
  """Runs one attack and writes `workdir/{metrics.json, grid_*.png}`.

  The markdown table of `rows` (and `table.md`) is written by `reporting/attack_tables.py`.

  Args:
    config: an `experiments/attack_*.py` config (data, splits, model, pretrained_backbone,
      federated, mesh, attack, enhance).
    workdir: output folder (keep it under runs/: grids of real faces must never be committed).
    backbone_params: the pretrained face backbone's params; None loads
      `config.pretrained_backbone`.
    splits: precomputed `data.load_splits(config)` (sweeps pass it to load the data once).
    mesh: a ("data", "classes") mesh; default one from `config.mesh`.
    return_target: also return the inverted pseudo-gradient as `out["target"]` (sweeps use it to
      check that secure aggregation leaves it unchanged).
    judge_cache: judge name -> embeddings of every `splits["federated"]` image, filled on first
      use and reused (valid for one splits and one backbone: sweeps pass one dict).
    return_images: also return the paired reconstructions, float [V * n, s, s, 3] in [0, 1] per
      method, as `out["reconstructions"]` (tests compare seeds; never written to metrics.json).
    return_case: also return `out["case"]`, what a peer attack needs to attack the same update
      and be scored by the same judges: w_t, w_{t+1}, the target, the attacker's own
      pseudo-gradient, the round's images [K * n] (client-major, at the attack resolution) and
      labels, the victims' true mean pseudo-gradient (None unless the attacker knows K) and
      `score(recon01)` (pairing within victims, then the scores of `rows`).

  Returns:
    {"rows": [{"name", "summary"}], "results", "loss_first", "loss_last",
     "target_recovery_rel_err", "client_delta_norms", "round_metrics", "timing_s", "workdir",
     "enhance_status", ...}.
  """
  t_start = time.time()
  stages = {}

  def lap(name):
    stages[name] = round(time.time() - t_start - sum(stages.values()), 2)
    logging.info("attack stage %s: %.1f s", name, stages[name])

  a = config.attack
  if a.objective not in OBJECTIVES:
    raise ValueError(f"unknown attack.objective {a.objective!r}; valid: {OBJECTIVES}")
  os.makedirs(workdir, exist_ok=True)
  if splits is None:
    splits = data_lib.load_splits(config)
  if mesh is None:
    mesh = sh.make_mesh(None if config.mesh.data < 0 else config.mesh.data, config.mesh.classes)
  fed = splits["federated"]
  k, n = int(a.num_clients), int(a.images_per_client)
  data_size = fed.image_shape[0]
  classifier = a.objective in CLASSIFIER_OBJECTIVES
  # The face backbone is the fedface objective's victim model and the "model" judge; a LeNet attack
  # judged by dlib alone never touches it, so it is not required (nor loaded) then.
  face_model, face_params = None, None
  # The backbone's input size: the data's for the fedface objective (it is the attacked model);
  # for a LeNet attack it is only the model judge, which may have trained at another size.
  judge_size = int(a.get("model_judge_size", 0)) or data_size
  if not classifier and judge_size != data_size:
    raise ValueError(f"attack.model_judge_size={judge_size} with the fedface objective: the "
                     f"backbone is the attacked model and runs at the data's {data_size} px")
  if not classifier or "model" in judges_lib.judge_names(str(a.judge)):
    face_model, face_params = load_face_backbone(
        config, (judge_size, judge_size, fed.image_shape[2]), backbone_params)
  image_size = int(a.image_size) if classifier else data_size

  # Participants: attacker (0) and victims; their round photos and their held-out photos.
  part = choose_participants(fed, k, n, int(a.holdout_images), int(a.participants_seed))
  round_idx, hold_idx = zip(*(split_round_and_holdout(fed, i, n) for i in part))
  round_idx = np.concatenate(round_idx)
  round_faces = faces_lib.FaceArrays(
      images=resize_u8(fed.images[round_idx], image_size),
      labels=np.repeat(np.arange(k), n).astype(np.int32),
      identity_names=tuple(fed.identity_names[i] for i in part))

  # The victims' model and theta at round t.
  if classifier:
    model, params0 = lenet_lib.init_lenet(jax.random.key(int(a.model_seed)), image_size,
                                          num_classes=k, conv_impl=a.lenet_conv)
    label_table = np.eye(k, dtype=np.float32)
  else:
    model, params0, label_table = face_model, face_params, None

  lap("setup")
  seen = run_honest_round(config, model, params0, round_faces, mesh, label_table)
  target = attack_target(seen, config)
  lap("honest_round")

  # Sanity: how close is the attacker's target to the victims' true mean pseudo-gradient?
  # (exact without DP; only the simulation can compute this.)
  true_rel = true_mean = None
  client_delta_norms = []   # the victims' ||delta_k|| (what DP's clip norm S is compared with)
  if a.knows_num_clients:
    upd = seen["client_update"]
    gs = []
    for v in range(1, k):
      d, _, _ = upd(seen["w_t"], jnp.asarray(seen["class_rows"][v]),
                    round_faces.images[v * n:(v + 1) * n], jnp.int32(n), jax.random.key(0))
      gs.append(jax.tree.map(lambda x: -np.asarray(x) / float(a.eta), jax.device_get(d)))
      client_delta_norms.append(float(a.eta) * float(updates.tree_l2_norm(gs[-1])))
    true_mean = updates.aggregate(gs)
    diff = jax.tree.map(lambda x, y: np.asarray(x) - np.asarray(y), target, true_mean)
    true_rel = float(
        updates.tree_l2_norm(diff) / max(float(updates.tree_l2_norm(true_mean)), 1e-30))

  # Is w_c determined by this update at all? Measured with the victims' true images (simulation
  # only), for the objective whose unknown-embedding modes depend on it.
  ident = None
  if a.objective == "fedface" and a.knows_num_clients:
    from fedface_jax import losses  # pylint: disable=g-import-not-at-top
    ident = identifiability.class_embedding_identifiability(
        lambda p, x: model.apply({"params": p}, x), seen["w_t"], target,
        inversion.fedface_input(jnp.asarray(round_faces.images[n:], jnp.float32) / 255.0),
        seen["class_rows"][1:k], eta=float(a.eta), tau=int(a.tau),
        margin=float(config.federated.client.margin), momentum=float(a.client_momentum),
        client_loss_fn=lambda e, w, m: losses.positive_only_loss(e, w, margin=m),
        init_images_in=inversion.fedface_input(jax.random.uniform(
            jax.random.key(int(a.attack_seed)), round_faces.images[n:].shape)),
        matching_fn=objectives.get_matching_fn(str(a.matching)))
    lap("identifiability")

  # Scoring set-up: all enrolled (federated) identities form the gallery; the participants'
  # templates come from their held-out photos only.
  gal_mask = np.ones(fed.num_images, bool)
  gal_mask[round_idx] = False
  gallery_labels = fed.labels[gal_mask]
  judges = {}
  for name in judges_lib.judge_names(str(a.judge)):
    # Every federated image's embedding, once per (splits, backbone) when the caller keeps a
    # cache (sweeps): the dlib judge costs ~a minute on 2 CPU cores for a thousand images.
    embed = judges_lib.make_judge_embedder(name, face_model, face_params, judge_size)
    all_emb = None if judge_cache is None else judge_cache.get(name)
    if all_emb is None:
      all_emb = embed(fed.images)
      if judge_cache is not None:
        judge_cache[name] = all_emb
    judges[name] = judges_lib.Judge(name, embed, all_emb[gal_mask], gallery_labels)
  lap("gallery")
  victims = part[1:]
  victim_identity = np.repeat(victims, n)
  originals01 = round_faces.images[n:].astype(np.float32) / 255.0
  ev = lambda imgs: judges_lib.score(imgs, originals01, victim_identity, judges)

  rows, results, images_out = [], {}, {}
  modes = tuple(a.class_embedding_modes) if a.objective == "fedface" else (None,)
  public_start = None
  if a.objective == "fedface":
    if a.fedface_init not in FEDFACE_INITS:
      raise ValueError(
          f"attack.fedface_init must be one of {FEDFACE_INITS}, got {a.fedface_init!r}")
    if a.fedface_init == "public":   # one start for every mode (and its baseline row below)
      slots = k - 1 if a.knows_num_clients else k
      public_start = public_init_latent(config, splits.get("pretrain"), slots, image_size)
  for mode in modes:
    name = a.objective if mode is None else f"fedface[{mode}]"
    res = invert(config, model, seen, target, round_faces, image_size, mode,
                 init_latent=public_start)
    order = judges_lib.pair_within_victims(originals01, np.asarray(res.images, np.float32),
                                           k - 1, n)
    recon = np.asarray(res.images, np.float32)[order]
    s = ev(recon)
    rows.append({"name": f"{name}: raw", "summary": s["summary"]})
    results[name] = {"raw": s, "loss_first": float(res.matching_history[0]),
                     "loss_last": float(res.final_matching), "timing": res.timing}
    images_out[name] = {"recon": recon, "latent": np.asarray(res.latent)[order]}
    lap(f"invert_{name}")

  if public_start is not None:
    # The start itself, scored like a reconstruction: what public faces alone already score
    # against the victims (any face is nearer a face template than noise is). Without K the
    # attacker's own slot comes first and is dropped, as `invert` drops it.
    start = inversion.upsample(jnp.asarray(public_start), max(1, int(a.sf)))
    start = np.clip(np.asarray(start, np.float32), 0.0, 1.0)[-(k - 1) * n:]
    name = PUBLIC_INIT_BASELINE
    s = ev(start)
    rows.append({"name": f"{name}: raw", "summary": s["summary"]})
    results[name] = {"raw": s, "loss_first": None, "loss_last": None, "timing": {}}

  # Baselines: noise images (floor) and the originals at the attack resolution (ceiling).
  noise = np.asarray(jax.random.uniform(jax.random.key(99), originals01.shape))
  rows.append({"name": "baseline: uniform noise", "summary": ev(noise)["summary"]})
  rows.append({"name": "ceiling: originals", "summary": ev(originals01)["summary"]})

  lap("baselines")
  enhance_status = "disabled"
  if config.enhance.enabled:
    prior_params, pcfg, enhance_status = load_prior(config, splits)
    if prior_params is not None:
      for name, im in images_out.items():
        # Already paired with the originals; the enhancer keeps the order.
        enh = enhance(config, prior_params, pcfg, im["recon"], im["latent"], image_size)
        s = ev(enh)
        rows.append({"name": f"{name}: + {config.enhance.method} (public prior)",
                     "summary": s["summary"]})
        results[name]["enhanced"] = s
        im["enhanced"] = enh

  lap("enhance")
  # Outputs: grids (under workdir only), per-image JSON, table.
  for name, im in images_out.items():
    fname = name.replace("[", "_").replace("]", "")
    grids.save_attack_grid(os.path.join(workdir, f"grid_{fname}.png"), originals01, im["recon"],
                           im.get("enhanced"), results[name]["raw"]["per_image"]["psnr"],
                           max_columns=int(a.max_grid_columns))
  first = next(iter(results.values()))
  out = {
      "rows": rows, "results": results,
      "loss_first": first["loss_first"], "loss_last": first["loss_last"],
      "target_recovery_rel_err": true_rel, "round_metrics": seen["round_metrics"],
      "client_delta_norms": client_delta_norms, "identifiability": ident,
      "participants": [fed.identity_names[i] for i in part], "num_victims": k - 1,
      "gallery_identities": int(len(np.unique(gallery_labels))),
      "judges": list(judges),
      "enhance_status": enhance_status, "timing_s": time.time() - t_start,
      "stage_s": stages,
      "workdir": os.path.abspath(workdir), "date": datetime.date.today().isoformat(),
      "attack": a.to_dict(),
  }
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(out, f, indent=1, default=str)
  if return_target:   # host pytree, kept out of metrics.json (sweeps compare targets)
    out["target"] = jax.device_get(target)
  if return_images:
    out["reconstructions"] = {name: im["recon"] for name, im in images_out.items()}
  if return_case:   # kept out of metrics.json: arrays and a closure over this run's judges

    def score_any(recon01):
      recon01 = np.asarray(recon01, np.float32)
      return ev(recon01[judges_lib.pair_within_victims(originals01, recon01, k - 1, n)])

    out["case"] = {"w_t": seen["w_t"], "w_t1": seen["w_t1"], "target": jax.device_get(target),
                   "g_own": seen["g_own"], "images": np.asarray(round_faces.images),
                   "labels": np.asarray(round_faces.labels), "victims_mean": true_mean,
                   "score": score_any}
  return out
