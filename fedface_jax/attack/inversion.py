"""Gradient-inversion attacks against an aggregated FedAvg update (jax.jit, optimised with optax).

Three attacks share one optimisation loop (``optimise.Runner``: jitted chunks of ``lax.scan`` steps,
a tqdm bar between chunks, the loss recorded at every iteration before the update, as the
reference's ``closure`` does):

(a) ``invert_paper_faithful``: the curious-client attack as in the official code (ATTACK.md 2.3
    and 3). A low-res latent z ~ U[0,1) of shape [M, H/sf, W/sf, 3] is upsampled x sf with
    torch-compatible bicubic inside the loss, the dummy batch with its known one-hot labels is
    pushed through tau unrolled full-batch GD steps (lr eta), and the squared-L2 distance to the
    target pseudo-gradient is minimised with Adam (lr 0.1, cosine decay to 0.01 over 100
    iterations). No TV, no box constraint, no restarts; clipping to [0, 1] happens only at the end.

    Resizing: this JAX version (0.10.2) has ``method="bicubic-pytorch"`` (Keys cubic with A = -0.75
    and clamped edge pixels, i.e.
    ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``). It only takes effect
    with ``antialias=False``: with the default ``antialias=True`` JAX silently falls back to plain
    ``"bicubic"`` (A = -0.5, the Pillow/TF kernel). ``upsample`` therefore always passes
    ``antialias=False`` (upsampling never needs anti-aliasing); ``tests/test_attack_inversion.py``
    checks it against an independent port of torch's algorithm.

(b) ``invert_inverting_gradients``: the Inverting-Gradients baseline (Geiping et al. 2020;
    breaching's ``invertinggradients.yaml``): cosine matching + TV, Adam on the *sign* of the
    gradient, projection onto [0, 1] after every step, step-lr decay x0.1 at 3/8, 5/8, 7/8 of the
    run, and restarts scored by the final matching loss. With tau > 1 it is IG's
    ``FedAvgReconstructor`` (same unrolled forward model as (a)).

(c) ``invert_fedface``: the attack adapted to FedFace. Each victim is a one-identity client that
    trained the embedding model with the positive-only loss against its own class embedding, which
    the server keeps and the attacker does NOT see. Victims are grouped in a super-client: one
    unroll over all victims' dummy images whose loss is the mean over victims of each victim's
    positive-only loss against its class embedding (exact for tau = 1 with equal image counts). The
    unknown class embeddings are handled by ``class_embedding_mode``: ``"known"`` (oracle),
    ``"mean_feature"`` (each victim's embedding := normalised mean embedding of its own dummy images
    under w_t, recomputed inside the loss, so it is differentiable in the images; this is FedFace's
    own initialisation), or ``"joint"`` (free variables optimised with the images, initialised by
    the mean feature).

All attacks take a generic ``apply_fn(params, model_input) -> outputs`` (logits for (a), (b);
embeddings for (c)) and an ``input_transform`` from [0, 1] pixels to the model's input scale, so any
linen model plugs in.
"""

from collections.abc import Callable
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from fedface_jax.attack import objectives
from fedface_jax.attack import optimise
from fedface_jax.attack import unroll

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
InputTransform = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass
class InversionResult:
  """What an attack returns.

  Attributes:
    images: [M, H, W, 3] float32 reconstructions in [0, 1] (clipped), at the victims' resolution.
    latent: the raw optimisation variable (low-res [M, H/sf, W/sf, 3] when sf > 1), not clipped.
    loss_history: [iterations] total objective at each iteration, before that iteration's update.
    matching_history: [iterations] the gradient-matching part alone (equals loss_history without
      priors).
    final_loss: total objective at the returned variables.
    final_matching: matching part at the returned variables (used to pick restarts).
    timing: seconds: ``total_s``, ``first_chunk_s`` (includes compilation), ``per_iteration_s``
      (after the first chunk; NaN when there is only one chunk).
    extras: attack-specific outputs (e.g. class embeddings, restart scores, the reference's
      evaluation images).
  """

  images: np.ndarray
  latent: np.ndarray
  loss_history: np.ndarray
  matching_history: np.ndarray
  final_loss: float
  final_matching: float
  timing: dict[str, float]
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Small shared pieces.
# --------------------------------------------------------------------------------------------------


def identity_input(x01: jax.Array) -> jax.Array:
  """The reference feeds [0, 1] images to LeNet unnormalised."""
  return x01


def fedface_input(x01: jax.Array) -> jax.Array:
  """[0, 1] pixels -> FedFace's model input, (255 x - 127.5) / 128.

  The same as ``models.preprocess`` of uint8 images.
  """
  return (x01 * 255.0 - 127.5) / 128.0


def onehot(labels: np.ndarray | jax.Array, num_classes: int) -> jax.Array:
  return jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32)


def cross_entropy_onehot(logits: jax.Array, labels_onehot: jax.Array) -> jax.Array:
  """mean_i(-sum_c Y_ic log_softmax(logits_i)_c), the reference's ``cross_entropy_for_onehot``."""
  return jnp.mean(jnp.sum(-labels_onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def positive_only_hinge(embeddings: jax.Array, class_embedding: jax.Array,
                        margin: float = 0.9) -> jax.Array:
  """FedFace client loss mean_i max(0, m - cos(e_i, w))^2 (FEDFACE.md 2.1a), both sides normalised.

  Same call convention as
  ``fedface_jax.losses.positive_only_loss(embeddings, class_embedding, margin)``, which can be
  passed as ``client_loss_fn`` to ``invert_fedface`` so that attacker and victims share one
  definition.
  """
  e = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
  w = class_embedding / jnp.linalg.norm(class_embedding)
  return jnp.mean(jnp.square(jax.nn.relu(margin - e @ w)))


def upsample(z: jax.Array, sf: int, method: str = "bicubic-pytorch") -> jax.Array:
  """x sf spatial upsampling of NHWC images; torch-compatible bicubic by default.

  See the module docstring.
  """
  if sf == 1:
    return z
  m, h, w, c = z.shape
  # antialias=False is required for "bicubic-pytorch" to mean A=-0.75 (JAX maps it to A=-0.5
  # otherwise).
  return jax.image.resize(z, (m, h * sf, w * sf, c), method=method, antialias=False)


def nearest_upsample(x: np.ndarray, sf: int) -> np.ndarray:
  """The reference's ``none`` evaluation: the low-res reconstruction repeated x sf.

  Like torch's ``repeat_interleave``.
  """
  return np.repeat(np.repeat(np.asarray(x), sf, axis=1), sf, axis=2)


def _image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
  if isinstance(image_size, (int, np.integer)):
    return int(image_size), int(image_size)
  h, w = image_size
  return int(h), int(w)


def _latent_shape(num_images: int, image_size, sf: int) -> tuple[int, int, int, int]:
  h, w = _image_hw(image_size)
  if sf < 1 or h % sf or w % sf:
    raise ValueError(f"image size {(h, w)} must be divisible by the low-res factor sf={sf}")
  return num_images, h // sf, w // sf, 3


def _sign_gradients() -> optax.GradientTransformation:
  """IG's ``x.grad.sign_()`` before the optimiser step."""
  return optax.stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))


def _check_target(target: PyTree, params0: PyTree) -> None:
  if jax.tree.structure(target) != jax.tree.structure(params0):
    raise ValueError("target pseudo-gradient and params0 have different pytree structures")
  for t, p in zip(jax.tree.leaves(target), jax.tree.leaves(params0)):
    if t.shape != p.shape:
      raise ValueError(f"target leaf shape {t.shape} != params leaf shape {p.shape}")
  if not all(bool(jnp.all(jnp.isfinite(t))) for t in jax.tree.leaves(target)):
    raise ValueError("target pseudo-gradient contains non-finite values")


# --------------------------------------------------------------------------------------------------
# (a) The reference attack.
# --------------------------------------------------------------------------------------------------


def paper_faithful_config() -> mlc.ConfigDict:
  """Defaults of the official code ([C:utils/config.yaml], ATTACK.md 3)."""
  c = mlc.ConfigDict()
  c.num_clients = 4          # K; the dummy batch has M = K * B images (the attacker's own
                             # included in [C])
  c.batch_size = 16          # B, images per client
  c.tau = 3                  # local full-batch GD steps
  c.eta = 0.003              # victims' local lr; [C] also unrolls with the TRUE eta (quirk), see
                             # updates.py
  c.image_size = 128
  c.sf = 4                   # low-res factor: the latent is 32x32 for 128x128 victims
  c.resize_method = "bicubic-pytorch"
  c.num_classes = 1000
  c.iterations = 100         # T_max
  c.lr = 0.1                 # rog_lr
  c.lr_min = 0.01            # CosineAnnealingLR eta_min = 0.1 * rog_lr
  c.scheduler_offset = True  # [C] steps the scheduler only when iters > 0: iterations 0 and 1
                             # both use lr 0.1
  c.matching = "l2"
  c.remat = True
  c.chunk = 10
  c.seed = 0
  return c


def _cosine_schedule(lr: float, lr_min: float, iterations: int, offset: bool) -> optax.Schedule:
  cos = optax.cosine_decay_schedule(lr, iterations, alpha=lr_min / lr)
  if not offset:
    return cos
  return lambda count: cos(jnp.maximum(count - 1, 0))


def invert_paper_faithful(apply_fn: ApplyFn, params0: PyTree, target: PyTree,
                          labels_onehot: jax.Array, config: mlc.ConfigDict | None = None, *,
                          key: jax.Array | None = None,
                          input_transform: InputTransform = identity_input,
                          known_images: jax.Array | None = None,
                          known_labels_onehot: jax.Array | None = None,
                          progress: bool = True) -> InversionResult:
  """Reconstructs M = len(labels_onehot) images from a target pseudo-gradient, as [C] does.

  Args:
    apply_fn: (params, model_input) -> logits.
    params0: the global model w_t.
    target: the pseudo-gradient to match (``updates.diluted_update`` / ``remove_own_update``).
    labels_onehot: [M, C] known labels of the images to reconstruct, in the order of the dummy
      batch.
    config: ``paper_faithful_config()`` or a modified copy.
    key: PRNG key for the U[0, 1) latent (default: ``jax.random.key(config.seed)``).
    input_transform: [0, 1] pixels -> model input (identity for the reference LeNet).
    known_images: optional [M0, H, W, 3] images in [0, 1] that are part of the target but known to
      the attacker (its own data when it cannot subtract its update because K is unknown); they join
      the unrolled batch as constants, before the dummy images.
    known_labels_onehot: [M0, C] labels of ``known_images``.
    progress: show a tqdm bar.

  Returns:
    ``InversionResult``; ``images`` are the clipped bicubic upsamplings the model saw,
    ``extras["reference_eval"]`` the nearest x sf upsampling of the clipped latent that [C] scores
    in its ``none`` mode.
  """
  c = paper_faithful_config() if config is None else config
  _check_target(target, params0)
  labels_onehot = jnp.asarray(labels_onehot, jnp.float32)
  num_images = labels_onehot.shape[0]
  shape = _latent_shape(num_images, c.image_size, c.sf)
  if (known_images is None) != (known_labels_onehot is None):
    raise ValueError("known_images and known_labels_onehot go together")
  matching_fn = objectives.get_matching_fn(c.matching)
  sf, method, eta, tau, remat = (int(c.sf), str(c.resize_method), float(c.eta), int(c.tau),
                                 bool(c.remat))

  def client_loss(params, batch):
    x, y = batch
    return cross_entropy_onehot(apply_fn(params, x), y)

  def objective(z, aux):
    dummy = upsample(z, sf, method)
    x01, y = dummy, aux["labels"]
    if "known_images" in aux:
      x01 = jnp.concatenate([aux["known_images"], dummy], axis=0)
      y = jnp.concatenate([aux["known_labels"], y], axis=0)
    g = unroll.unrolled_pseudograd(client_loss, aux["params0"], (input_transform(x01), y), eta, tau,
                                   remat=remat)
    m = matching_fn(g, aux["target"])
    return m, {"matching": m, "images": dummy}

  aux = {"params0": params0, "target": target, "labels": labels_onehot}
  if known_images is not None:
    aux["known_images"] = jnp.asarray(known_images, jnp.float32)
    aux["known_labels"] = jnp.asarray(known_labels_onehot, jnp.float32)

  key = jax.random.key(c.seed) if key is None else key
  z0 = jax.random.uniform(key, shape, jnp.float32)  # np.random.rand in [C]
  tx = optax.adam(_cosine_schedule(c.lr, c.lr_min, c.iterations, c.scheduler_offset))
  runner = optimise.Runner(objective, tx)
  out = runner.run(z0, aux, c.iterations, c.chunk, progress, desc="paper-faithful")
  z = np.asarray(out.variables)
  latent_clipped = np.clip(z, 0.0, 1.0)
  return InversionResult(
      images=np.clip(out.final_outputs["images"], 0.0, 1.0),
      latent=z, loss_history=out.loss_history, matching_history=out.matching_history,
      final_loss=out.final_total, final_matching=out.final_matching, timing=out.timing,
      extras={"reference_eval": nearest_upsample(latent_clipped, sf),
              "latent_clipped": latent_clipped, "resize_method": method})


# --------------------------------------------------------------------------------------------------
# (b) Inverting Gradients.
# --------------------------------------------------------------------------------------------------


def inverting_gradients_config() -> mlc.ConfigDict:
  """breaching's ``invertinggradients.yaml`` (ATTACK.md 8), on [0, 1] pixels.

  The TV weight is breaching's 0.2, but breaching applies it to *normalised* pixels (x - mean) /
  std, whose differences are ~1/std (about 4x) larger; the same prior strength here is ~0.2 / std.
  IG's ``randn`` init is also in normalised space; here it is 0.5 + init_std * N(0, 1) on [0, 1]
  pixels, projected onto the box.
  """
  c = mlc.ConfigDict()
  c.tau = 1                   # > 1: IG's FedAvgReconstructor (unrolled local steps)
  c.eta = 1e-4                # unroll lr (IG FedAvgReconstructor default local_lr); only matters
                              # for tau > 1
  c.image_size = 32
  c.iterations = 24_000
  c.lr = 0.1
  c.lr_decay = True           # step-lr x0.1 at 3/8, 5/8, 7/8
  c.signed = True
  c.boxed = True
  c.matching = "cosine"       # global cosine (IG 'sim'); "cosine_per_layer" = IG 'simlocal'; "l2"
  c.tv_weight = 0.2
  c.restarts = 1
  c.init = "randn"            # "randn" | "uniform"
  c.init_std = 0.25
  c.remat = True
  c.chunk = 10
  c.loop = "auto"             # optimise.Runner's loop: "auto" | "scan" | "host"
  c.seed = 0
  return c


def _ig_schedule(lr: float, iterations: int, decay: bool) -> optax.Schedule:
  if not decay:
    return optax.constant_schedule(lr)
  # IG's milestones, max_iterations // 2.667, // 1.6, // 1.142 (floor of float division), gamma 0.1.
  milestones = sorted({int(iterations // 2.667), int(iterations // 1.6), int(iterations // 1.142)})
  return optax.piecewise_constant_schedule(lr, {m: 0.1 for m in milestones})


def _init_images(key: jax.Array, shape, init: str, init_std: float = 0.25) -> jax.Array:
  if init == "uniform":
    return jax.random.uniform(key, shape, jnp.float32)
  if init == "randn":
    return 0.5 + init_std * jax.random.normal(key, shape, jnp.float32)
  raise ValueError(f"unknown init {init!r}; use 'uniform' or 'randn'")


def invert_inverting_gradients(apply_fn: ApplyFn, params0: PyTree, target: PyTree,
                               labels_onehot: jax.Array, config: mlc.ConfigDict | None = None, *,
                               key: jax.Array | None = None,
                               input_transform: InputTransform = identity_input,
                               progress: bool = True) -> InversionResult:
  """Inverting Gradients against a (multi-step) pseudo-gradient; restarts scored by matching loss.

  Returns the best restart; ``extras`` holds ``restart_scores``, ``best_restart`` and every
  restart's history.
  """
  c = inverting_gradients_config() if config is None else config
  _check_target(target, params0)
  labels_onehot = jnp.asarray(labels_onehot, jnp.float32)
  shape = _latent_shape(labels_onehot.shape[0], c.image_size, 1)
  matching_fn = objectives.get_matching_fn(c.matching)
  eta, tau, remat, tv_weight = float(c.eta), int(c.tau), bool(c.remat), float(c.tv_weight)
  if c.restarts < 1:
    raise ValueError(f"restarts must be >= 1, got {c.restarts}")

  def client_loss(params, batch):
    x, y = batch
    return cross_entropy_onehot(apply_fn(params, x), y)

  def objective(x01, aux):
    g = unroll.unrolled_pseudograd(client_loss, aux["params0"],
                                   (input_transform(x01), aux["labels"]), eta, tau, remat=remat)
    m = matching_fn(g, aux["target"])
    total = m + tv_weight * objectives.total_variation(x01) if tv_weight else m
    return total, {"matching": m}

  parts = [_sign_gradients()] if c.signed else []
  tx = optax.chain(*parts, optax.adam(_ig_schedule(c.lr, c.iterations, c.lr_decay)))
  project = (lambda v: jnp.clip(v, 0.0, 1.0)) if c.boxed else None
  runner = optimise.Runner(objective, tx, project, loop=c.get("loop", "auto"))
  aux = {"params0": params0, "target": target, "labels": labels_onehot}
  key = jax.random.key(c.seed) if key is None else key

  runs = []
  for r, k in enumerate(jax.random.split(key, c.restarts)):
    x0 = _init_images(k, shape, c.init, c.init_std)
    if c.boxed:
      x0 = jnp.clip(x0, 0.0, 1.0)
    runs.append(runner.run(x0, aux, c.iterations, c.chunk, progress, desc=f"IG restart {r}"))
  # IG scores a restart by its matching loss alone (no TV), at the final images.
  scores = np.array([r.final_matching for r in runs])
  best = int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))
  out = runs[best]
  x = np.asarray(out.variables)
  return InversionResult(
      images=np.clip(x, 0.0, 1.0), latent=x, loss_history=out.loss_history,
      matching_history=out.matching_history, final_loss=out.final_total,
      final_matching=out.final_matching,
      timing=dict(out.timing, total_s=sum(r.timing["total_s"] for r in runs)),
      extras={"restart_scores": scores, "best_restart": best,
              "restart_loss_histories": [r.loss_history for r in runs]})


# --------------------------------------------------------------------------------------------------
# (c) FedFace: positive-only victims with hidden class embeddings.
# --------------------------------------------------------------------------------------------------

CLASS_EMBEDDING_MODES = ("known", "mean_feature", "joint")


def fedface_attack_config() -> mlc.ConfigDict:
  """Defaults for attacking FedFace clients.

  The local-training knobs must match the federated engine's.
  """
  c = mlc.ConfigDict()
  c.tau = 1                  # victims' local steps (FedFace code: 1 step per round)
  c.eta = 0.01               # victims' local lr (FedFace code: 0.01)
  c.momentum = 0.0           # FedFace code uses SGD momentum 0.9; irrelevant for tau = 1 (buffer
                             # starts at 0)
  c.margin = 0.9             # positive-only hinge margin
  c.class_embedding_mode = "mean_feature"
  c.image_size = 112
  c.sf = 1                   # > 1: ROG-style low-res latent with bicubic upsampling
  c.resize_method = "bicubic-pytorch"
  c.iterations = 200
  c.lr = 0.1
  c.lr_min = 0.01
  c.matching = "l2"
  c.tv_weight = 0.0
  c.boxed = False            # project onto [0, 1] every step; otherwise clip only at the end
  c.signed = False
  c.init = "uniform"
  c.init_std = 0.25
  c.remat = True
  c.chunk = 10
  c.seed = 0
  return c


def _normalise(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def invert_fedface(apply_fn: ApplyFn, params0: PyTree, target: PyTree, *, num_victims: int,
                   images_per_victim: int, config: mlc.ConfigDict | None = None,
                   class_embedding_mode: str | None = None,
                   class_embeddings: jax.Array | None = None, key: jax.Array | None = None,
                   input_transform: InputTransform = fedface_input,
                   client_loss_fn: Callable[..., jax.Array] = positive_only_hinge,
                   init_latent: jax.Array | None = None,
                   progress: bool = True) -> InversionResult:
  """Reconstructs ``images_per_victim`` images of each of ``num_victims`` FedFace victims.

  Every victim is a one-identity client.

  Args:
    apply_fn: (params, model_input) -> embeddings [B, D] (normalised or not; the loss normalises).
    params0: the global backbone w_t.
    target: the victims' mean pseudo-gradient (after ``updates.remove_own_update``).
    num_victims: V, the number of victim clients in the aggregate.
    images_per_victim: n, images each victim trained on (assumed equal, as the super-client needs).
    config: ``fedface_attack_config()`` or a modified copy.
    class_embedding_mode: overrides ``config.class_embedding_mode``; one of
      ``CLASS_EMBEDDING_MODES``.
    class_embeddings: [V, D] the victims' true class embeddings, required for ``"known"``.
    key: PRNG key (default ``jax.random.key(config.seed)``).
    input_transform: [0, 1] pixels -> model input (FedFace normalisation by default).
    client_loss_fn: (embeddings [n, D], class_embedding [D], margin) -> scalar, the victims' loss.
    init_latent: [V * n, h, w, 3] starting latent in [0, 1] (e.g. public faces at the latent's
      size), instead of ``config.init``'s random draw.
    progress: show a tqdm bar.

  Returns:
    ``InversionResult`` with images ordered victim-major ([V * n], victim v owns rows
    v*n .. v*n+n-1); ``extras["class_embeddings"]`` holds the (normalised) class embeddings used at
    the end and ``extras["victim_index"]`` the victim of each row.
  """
  c = fedface_attack_config() if config is None else config
  mode = c.class_embedding_mode if class_embedding_mode is None else class_embedding_mode
  if mode not in CLASS_EMBEDDING_MODES:
    raise ValueError(f"class_embedding_mode must be one of {CLASS_EMBEDDING_MODES}, got {mode!r}")
  if mode == "known" and class_embeddings is None:
    raise ValueError("class_embedding_mode='known' needs class_embeddings [V, D]")
  if num_victims < 1 or images_per_victim < 1:
    raise ValueError(
        f"need >= 1 victim and >= 1 image each, got {num_victims}, {images_per_victim}")
  _check_target(target, params0)
  v_count, n = int(num_victims), int(images_per_victim)
  shape = _latent_shape(v_count * n, c.image_size, c.sf)
  matching_fn = objectives.get_matching_fn(c.matching)
  sf, method = int(c.sf), str(c.resize_method)
  eta, tau, remat, momentum = float(c.eta), int(c.tau), bool(c.remat), float(c.momentum)
  margin, tv_weight = float(c.margin), float(c.tv_weight)

  def victims_loss(params, batch):
    x, w = batch
    emb = apply_fn(params, x).reshape(v_count, n, -1)
    return jnp.mean(jax.vmap(lambda e, cw: client_loss_fn(e, cw, margin))(emb, w))

  def mean_feature(params, xin):
    emb = _normalise(apply_fn(params, xin)).reshape(v_count, n, -1)
    return _normalise(jnp.mean(emb, axis=1))

  def current_class_embeddings(variables, aux, xin):
    if mode == "known":
      return aux["class_embeddings"]
    if mode == "mean_feature":
      # Depends on the dummy images, constant for the inner GD steps.
      return mean_feature(aux["params0"], xin)
    return variables["class_embeddings"]

  def objective(variables, aux):
    x01 = upsample(variables["z"], sf, method)
    xin = input_transform(x01)
    w = current_class_embeddings(variables, aux, xin)
    g = unroll.unrolled_pseudograd(victims_loss, aux["params0"], (xin, w), eta, tau, remat=remat,
                                   momentum=momentum)
    m = matching_fn(g, aux["target"])
    total = m + tv_weight * objectives.total_variation(x01) if tv_weight else m
    return total, {"matching": m, "images": x01, "class_embeddings": _normalise(w)}

  key = jax.random.key(c.seed) if key is None else key
  if init_latent is None:
    z0 = _init_images(key, shape, c.init, c.init_std)
  else:
    z0 = jnp.asarray(init_latent, jnp.float32)
    if z0.shape != shape:
      raise ValueError(f"init_latent must have the latent's shape {shape}, got {z0.shape}")
  if c.boxed:
    z0 = jnp.clip(z0, 0.0, 1.0)
  variables = {"z": z0}
  aux = {"params0": params0, "target": target}
  if mode == "known":
    ce = jnp.asarray(class_embeddings, jnp.float32)
    if ce.ndim != 2 or ce.shape[0] != v_count:
      raise ValueError(f"class_embeddings must be [{v_count}, D], got {ce.shape}")
    aux["class_embeddings"] = ce
  elif mode == "joint":
    # FedFace's own initialisation, applied to the initial dummy images; then free.
    variables["class_embeddings"] = mean_feature(params0, input_transform(upsample(z0, sf, method)))

  parts = [_sign_gradients()] if c.signed else []
  tx = optax.chain(*parts, optax.adam(_cosine_schedule(c.lr, c.lr_min, c.iterations, False)))
  project = None
  if c.boxed:
    project = lambda v: dict(v, z=jnp.clip(v["z"], 0.0, 1.0))
  runner = optimise.Runner(objective, tx, project)
  out = runner.run(variables, aux, c.iterations, c.chunk, progress, desc=f"FedFace ({mode})")
  return InversionResult(
      images=np.clip(out.final_outputs["images"], 0.0, 1.0), latent=np.asarray(out.variables["z"]),
      loss_history=out.loss_history, matching_history=out.matching_history,
      final_loss=out.final_total, final_matching=out.final_matching, timing=out.timing,
      extras={"class_embeddings": out.final_outputs["class_embeddings"],
              "victim_index": np.repeat(np.arange(v_count), n),
              "class_embedding_mode": mode})


def attack_fns() -> dict[str, Callable[..., InversionResult]]:
  """Name -> attack, for launchers."""
  return {"paper_faithful": invert_paper_faithful,
          "inverting_gradients": invert_inverting_gradients, "fedface": invert_fedface}


__all__ = [
    "CLASS_EMBEDDING_MODES", "InversionResult", "attack_fns", "cross_entropy_onehot",
    "fedface_attack_config", "fedface_input", "identity_input", "invert_fedface",
    "invert_inverting_gradients", "invert_paper_faithful", "inverting_gradients_config",
    "nearest_upsample", "onehot", "paper_faithful_config", "positive_only_hinge", "upsample",
]
