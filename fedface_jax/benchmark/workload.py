"""The shared benchmark workload: one definition that our engine and every peer framework run.

Why this module exists: a client-updates/s number is only comparable across FL frameworks when
every framework trains the same model on the same data shapes with the same local work. This
module pins that down once:

* `Workload`: the knobs (clients, images per client, image size, local steps, batch size, model,
  embedding size, learning rate, seed), serialised as JSON so that the peer scripts
  (`scripts/peers/*_bench.py`, which run in their own virtual environments and cannot import
  this package) read exactly the same definition.
* `BenchCNN`: a small CNN family that is trivially re-implemented in Haiku and PyTorch:
  conv3x3(c1)-ReLU-avgpool2 -> conv3x3(c2)-ReLU-avgpool2 -> conv3x3(c3)-ReLU-global-avg-pool
  -> Dense(embedding_dim, no bias) -> L2-normalise. Convs use SAME padding and a bias. Every
  framework starts from the same numbers: `init_flat_params` draws LeCun-normal kernels (the
  flax/Haiku default: truncated normal, fan-in) and zero biases with NumPy only.
* The FedFace client objective: positive-only loss mean(max(0, 0.9 - cos(e, w_c))^2) against the
  client's fixed class embedding w_c, plain SGD, `local_steps` steps. Step s uses the images
  `(s * batch_size + arange(batch_size)) % images_per_client` (cyclic, no shuffling: identical to
  FedJAX's `shuffle_repeat_batch(skip_shuffle=True, num_epochs=None, num_steps=local_steps)`).
* FedAvg: the server model is the mean of the client models weighted by their image counts.
* `synthetic_client_data`: deterministic data from the raw PCG64 bit stream (whose output NumPy
  guarantees across versions), so the peers regenerate byte-identical data from the seed.
* `sequential_round`: the reference round (a Python loop of jitted client updates, like FedJAX's
  default `jit` backend) used to cross-check peers numerically (see `write_reference`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax import losses
from fedface_jax.evaluation import pairs as pairs_lib
from fedface_jax.models import im2col

# Channel widths of the benchmark CNN family.
BENCH_MODELS: dict[str, tuple[int, int, int]] = {
    "bench_cnn_small": (16, 32, 64),
    "bench_cnn_large": (32, 64, 128),
}
# The engine's own backbones (fedface_jax.models registry) a workload may name instead, for the
# real FedFace workload rows. Their params come from the model's flax init (seeded); the peers
# run only the benchmark CNNs, whose init is framework-neutral (`init_flat_params`).
ENGINE_MODELS = ("resnet_small", "sphere20")
# FedFace's positive-only margin: loss = mean(max(0, POSITIVE_MARGIN - cos(e, w_c))^2).
POSITIVE_MARGIN = 0.9
# Floor of the norm when the class embeddings are normalised (as torch.nn.functional.normalize,
# which the peers also use in the model; ours uses losses.l2_normalize: equal to float rounding).
NORM_EPS = 1e-12
# Flat, framework-neutral parameter names used to exchange weights with the peers. Conv kernels
# are HWIO, the embedding kernel is [in, out] (flax/Haiku layouts; PyTorch transposes).
PARAM_NAMES = ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias", "conv3/kernel",
               "conv3/bias", "embed/kernel")

Params = Any


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark workload. Every framework runs exactly this.

  Attributes:
    num_clients: clients per round (each one identity).
    images_per_client: images each client holds; also its FedAvg weight.
    image_size: (H, W) of the uint8 RGB images.
    local_steps: SGD steps each client takes per round.
    batch_size: images per local step (batches cycle over the client's images).
    model: one of `BENCH_MODELS` (peers too) or `ENGINE_MODELS` (ours only).
    embedding_dim: size D of the embeddings and class embeddings.
    lr: client SGD learning rate.
    seed: seed of the synthetic data and of the model initialisation (`init_flat_params`).
  """
  num_clients: int = 64
  images_per_client: int = 8
  image_size: tuple[int, int] = (32, 32)
  local_steps: int = 1
  batch_size: int = 8
  model: str = "bench_cnn_small"
  embedding_dim: int = 128
  lr: float = 0.1
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "image_size", tuple(self.image_size))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError on an inconsistent workload."""
    for name in ("num_clients", "images_per_client", "local_steps", "batch_size",
                 "embedding_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Workload.{name} must be a positive int, got {value!r}")
    if (len(self.image_size) != 2 or
        any(isinstance(s, bool) or not isinstance(s, int) or s < 4 for s in self.image_size)):
      raise ValueError(f"Workload.image_size must be two ints >= 4, got {self.image_size!r}")
    if self.model not in BENCH_MODELS and self.model not in ENGINE_MODELS:
      raise ValueError(f"Workload.model must be one of {sorted(BENCH_MODELS)} or "
                       f"{list(ENGINE_MODELS)}, got {self.model!r}")
    if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
      raise ValueError(f"Workload.lr must be a positive finite number, got {self.lr!r}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f"Workload.seed must be a non-negative int, got {self.seed!r}")

  @property
  def channels(self) -> tuple[int, int, int]:
    if self.model not in BENCH_MODELS:
      raise ValueError(f"{self.model} is not a benchmark CNN: no fixed channel triple")
    return BENCH_MODELS[self.model]

  @property
  def images_per_round(self) -> int:
    """Images processed per round (forward + backward), counting repeats across steps."""
    return self.num_clients * self.local_steps * self.batch_size

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["image_size"] = list(self.image_size)
    return d

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Workload:
    if not isinstance(d, dict):
      raise ValueError(f"a workload must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown workload fields {unknown}; known: {sorted(known)}")
    kwargs = dict(d)
    if "image_size" in kwargs:
      if not isinstance(kwargs["image_size"], (list, tuple)):
        raise ValueError(f"image_size must be [H, W], got {kwargs['image_size']!r}")
      kwargs["image_size"] = tuple(kwargs["image_size"])
    if isinstance(kwargs.get("lr"), int) and not isinstance(kwargs.get("lr"), bool):
      kwargs["lr"] = float(kwargs["lr"])
    return cls(**kwargs)

  @classmethod
  def from_json(cls, text: str) -> Workload:
    return cls.from_dict(json.loads(text))

  def save(self, path: str | os.PathLike[str]) -> None:
    with open(path, "w") as f:
      f.write(self.to_json() + "\n")

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> Workload:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"workload file not found: {path}")
    with open(path) as f:
      return cls.from_json(f.read())


# ------------------------------------------------------------------------------------------------
# Data.


class ClientData(NamedTuple):
  """Per-client data of one round.

  Attributes:
    images: uint8 [num_clients, images_per_client, H, W, 3].
    class_embeddings: float32 [num_clients, D], unit rows (the clients' fixed w_c).
  """
  images: np.ndarray
  class_embeddings: np.ndarray


def synthetic_client_data(workload: Workload) -> ClientData:
  """Deterministic random data for throughput measurement.

  Built only from the raw 64-bit outputs of `np.random.PCG64(seed)` (a stream NumPy keeps stable
  across versions), so peers regenerate it exactly:
  images = first C*N*H*W*3 bytes of `random_raw` (little-endian), then the class embeddings are
  `2 * (raw >> 11) * 2**-53 - 1` from the next C*D raw outputs, L2-normalised per row.
  """
  w = workload
  h, wd = w.image_size
  shape = (w.num_clients, w.images_per_client, h, wd, 3)
  n_bytes = int(np.prod(shape))
  bits = np.random.PCG64(w.seed)
  raw = bits.random_raw((n_bytes + 7) // 8).astype("<u8")
  images = raw.view(np.uint8)[:n_bytes].reshape(shape).copy()
  raw_e = bits.random_raw(w.num_clients * w.embedding_dim)
  e = 2.0 * (raw_e >> np.uint64(11)).astype(np.float64) * 2.0**-53 - 1.0
  e = e.reshape(w.num_clients, w.embedding_dim)
  e = pairs_lib.l2_normalize(e, eps=NORM_EPS, dtype=np.float64)
  return ClientData(images=images, class_embeddings=e.astype(np.float32))


def batch_indices(workload: Workload) -> np.ndarray:
  """int32 [local_steps, batch_size]: the client-image indices each local step uses."""
  w = workload
  flat = np.arange(w.local_steps * w.batch_size, dtype=np.int64) % w.images_per_client
  return flat.reshape(w.local_steps, w.batch_size).astype(np.int32)


def preprocess(images_u8: jax.Array) -> jax.Array:
  """uint8 NHWC -> float32, FedFace's normalisation (x - 127.5) / 128."""
  return (jnp.asarray(images_u8, jnp.float32) - 127.5) / 128.0


# ------------------------------------------------------------------------------------------------
# Model.


CONV_IMPLS = ("lax", "patches", "im2col")


class PatchConv(nn.Module):
  """3x3 SAME conv with bias, computed as im2col patches @ kernel (same params as nn.Conv).

  Why: under `jax.vmap` over clients, every client has its own weight gradient (and, after the
  first local step, its own weights). XLA lowers a vmapped `lax.conv` weight gradient to a
  grouped convolution, which the CPU backend runs much slower than the equivalent batched
  matmul. Written as patches @ kernel, the vmapped program is batched GEMMs instead. The
  numbers are those of `nn.Conv` (same HWIO kernel, same bias) to float rounding.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    patches = jax.lax.conv_general_dilated_patches(
        x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Patch features are ordered (Cin, kh, kw), channel-major.
    flat = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * 9, self.features)
    return patches @ flat + bias


class BenchCNN(nn.Module):
  """The benchmark CNN; see the module docstring for the exact architecture.

  `conv_impl` only changes how the convolutions are computed ("lax": `nn.Conv`; "im2col": the
  models' `models/im2col.Conv`; "patches": `PatchConv`, for vmapped clients), never the
  parameters or the function.
  """
  channels: tuple[int, int, int] = BENCH_MODELS["bench_cnn_small"]
  embedding_dim: int = 128
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Float NHWC images (already preprocessed) -> unit embeddings [B, embedding_dim]."""
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
    if self.conv_impl == "lax":
      conv = lambda c, name: nn.Conv(c, (3, 3), padding="SAME", name=name)
    elif self.conv_impl == "im2col":
      conv = lambda c, name: im2col.Conv(c, (3, 3), padding="SAME", name=name)
    else:
      conv = lambda c, name: PatchConv(c, name=name)
    c1, c2, c3 = self.channels
    x = nn.relu(conv(c1, "conv1")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    x = nn.relu(conv(c2, "conv2")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    x = nn.relu(conv(c3, "conv3")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.embedding_dim, use_bias=False, name="embed")(x)
    return losses.l2_normalize(x)


def create_bench_model(name: str, embedding_dim: int = 128, conv_impl: str = "lax") -> BenchCNN:
  if name not in BENCH_MODELS:
    raise ValueError(f"unknown benchmark model {name!r}; known: {sorted(BENCH_MODELS)}")
  return BenchCNN(channels=BENCH_MODELS[name], embedding_dim=embedding_dim, conv_impl=conv_impl)


def workload_model(workload: Workload, conv_impl: str = "lax") -> nn.Module:
  """The workload's model: a benchmark CNN, or the engine's registry backbone (own convs)."""
  if workload.model in ENGINE_MODELS:
    if conv_impl not in ("lax", "im2col"):
      raise ValueError(f"{workload.model} has its own convolutions or their im2col option; "
                       f"conv_impl {conv_impl!r} is for the benchmark CNNs")
    from fedface_jax import models  # pylint: disable=g-import-not-at-top
    extra = {"conv_impl": "im2col"} if conv_impl == "im2col" else {}
    return models.create_model(workload.model, embedding_dim=workload.embedding_dim, **extra)
  return create_bench_model(workload.model, workload.embedding_dim, conv_impl)


def _uniform_open(bits: np.random.PCG64, n: int) -> np.ndarray:
  """n float64 uniforms in (0, 1) from the raw stream: ((raw >> 11) + 0.5) * 2**-53."""
  raw = bits.random_raw(n)
  return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def truncated_normal_np(bits: np.random.PCG64, n: int) -> np.ndarray:
  """n standard normals truncated to [-2, 2], from the raw stream only.

  Box-Muller on successive pairs (u1, u2) gives (r cos(2 pi u2), r sin(2 pi u2)), r =
  sqrt(-2 ln u1); values are taken in that order and those with |z| > 2 are dropped.
  """
  out = np.empty((0,), np.float64)
  while out.size < n:
    pairs = (n - out.size) // 2 + 64
    u = _uniform_open(bits, 2 * pairs).reshape(pairs, 2)
    r = np.sqrt(-2.0 * np.log(u[:, 0]))
    z = np.stack([r * np.cos(2.0 * np.pi * u[:, 1]), r * np.sin(2.0 * np.pi * u[:, 1])], 1)
    z = z.reshape(-1)
    out = np.concatenate([out, z[np.abs(z) <= 2.0]])
  return out[:n]


def param_shapes(workload: Workload) -> dict[str, tuple[int, ...]]:
  """{PARAM_NAMES[i]: shape} of the workload's model."""
  c1, c2, c3 = workload.channels
  return {"conv1/kernel": (3, 3, 3, c1), "conv1/bias": (c1,),
          "conv2/kernel": (3, 3, c1, c2), "conv2/bias": (c2,),
          "conv3/kernel": (3, 3, c2, c3), "conv3/bias": (c3,),
          "embed/kernel": (c3, workload.embedding_dim)}


def init_flat_params(workload: Workload) -> dict[str, np.ndarray]:
  """Framework-neutral initial params (what every framework starts from).

  Kernels: LeCun normal as flax/Haiku define it, i.e. N(0, 1) truncated to [-2, 2] times
  sqrt(1 / fan_in) / 0.87962566103423978 (fan_in = prod of all but the last kernel dim), drawn
  by `truncated_normal_np` from `PCG64(SeedSequence([seed, i]))` for the i-th name of
  `PARAM_NAMES`; biases are zero. NumPy only (a stable stream), so the peers reproduce it
  exactly, and no PRNG kernel has to be compiled.
  """
  flat = {}
  for i, (name, shape) in enumerate(param_shapes(workload).items()):
    if name.endswith("/bias"):
      flat[name] = np.zeros(shape, np.float32)
      continue
    fan_in = int(np.prod(shape[:-1]))
    stddev = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    bits = np.random.PCG64(np.random.SeedSequence([workload.seed, i]))
    z = truncated_normal_np(bits, int(np.prod(shape)))
    flat[name] = (z * stddev).astype(np.float32).reshape(shape)
  return flat


def init_params(workload: Workload) -> Params:
  """Initial server params as a flax params tree (see `init_flat_params`).

  An engine backbone (`ENGINE_MODELS`) is initialised by its own flax init from `seed`.
  """
  if workload.model in ENGINE_MODELS:
    h, w = workload.image_size
    x = jnp.zeros((1, h, w, 3), jnp.float32)
    return jax.jit(workload_model(workload).init)(jax.random.key(workload.seed), x)["params"]
  return flat_to_params(init_flat_params(workload))


def count_params(params: Params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def params_to_flat(params: Params) -> dict[str, np.ndarray]:
  """flax params -> {PARAM_NAMES[i]: float32 array} (HWIO kernels, [in, out] dense)."""
  flat = {}
  for name in PARAM_NAMES:
    module, leaf = name.split("/")
    flat[name] = np.asarray(params[module][leaf], np.float32)
  return flat


def flat_to_params(flat: dict[str, np.ndarray]) -> Params:
  """Inverse of `params_to_flat`."""
  missing = [n for n in PARAM_NAMES if n not in flat]
  if missing:
    raise ValueError(f"flat params miss {missing}")
  params: dict[str, dict[str, jax.Array]] = {}
  for name in PARAM_NAMES:
    module, leaf = name.split("/")
    params.setdefault(module, {})[leaf] = jnp.asarray(flat[name], jnp.float32)
  return params


# ------------------------------------------------------------------------------------------------
# Objective, client update, FedAvg.


def positive_loss(embeddings: jax.Array, class_embedding: jax.Array,
                  margin: float = POSITIVE_MARGIN) -> jax.Array:
  """FedFace's positive-only loss: mean(max(0, margin - cos(e, w_c))^2).

  Args:
    embeddings: [B, D] L2-normalised embeddings.
    class_embedding: [D] raw class weight (normalised here).
    margin: the positive margin.
  """
  cos = embeddings @ losses.l2_normalize(class_embedding)
  return jnp.mean(jnp.square(jax.nn.relu(margin - cos)))


def client_loss(params: Params, images_u8: jax.Array, class_embedding: jax.Array,
                model: nn.Module) -> jax.Array:
  return positive_loss(model.apply({"params": params}, preprocess(images_u8)), class_embedding)


def client_update(params: Params, images_u8: jax.Array, class_embedding: jax.Array,
                  workload: Workload) -> Params:
  """One client's local training: `local_steps` plain SGD steps (traceable; jit/vmap it).

  Args:
    params: the server params.
    images_u8: uint8 [images_per_client, H, W, 3].
    class_embedding: [D] the client's fixed class embedding.
    workload: the workload (static).

  Returns:
    The client's params after local training.
  """
  model = workload_model(workload)
  grad_fn = jax.grad(client_loss)
  idx = jnp.asarray(batch_indices(workload))

  def step(p, step_idx):
    g = grad_fn(p, images_u8[step_idx], class_embedding, model)
    return jax.tree_util.tree_map(lambda a, b: a - workload.lr * b, p, g), None

  params, _ = jax.lax.scan(step, params, idx)
  return params


@functools.lru_cache(maxsize=16)
def _jitted_client_update(workload: Workload):
  return jax.jit(functools.partial(client_update, workload=workload))


def fedavg(client_params: list[Params], weights: list[float]) -> Params:
  """Weighted mean of client models (running sum, as FedJAX does)."""
  if not client_params or len(client_params) != len(weights):
    raise ValueError(f"need >= 1 client and one weight each, got {len(client_params)} clients "
                     f"and {len(weights)} weights")
  total = float(sum(weights))
  if not total > 0:
    raise ValueError(f"client weights must sum to > 0, got {total}")
  acc = jax.tree_util.tree_map(jnp.zeros_like, client_params[0])
  for p, wt in zip(client_params, weights):
    acc = jax.tree_util.tree_map(lambda a, b, wt=wt: a + wt * b, acc, p)
  return jax.tree_util.tree_map(lambda a: a / total, acc)


def sequential_round(params: Params, data: ClientData, workload: Workload) -> Params:
  """Reference FedAvg round: a Python loop of jitted client updates (FedJAX-jit-like).

  Args:
    params: server params.
    data: the round's `ClientData` (all `workload.num_clients` clients take part).
    workload: the workload.

  Returns:
    The new server params: the image-count-weighted mean of the updated client models.
  """
  n = data.images.shape[0]
  if data.class_embeddings.shape[0] != n:
    raise ValueError(f"{n} clients of images but {data.class_embeddings.shape[0]} class "
                     "embeddings")
  update = _jitted_client_update(workload)
  acc = jax.tree_util.tree_map(jnp.zeros_like, params)
  total = 0.0
  for c in range(n):
    client_params = update(params, data.images[c], data.class_embeddings[c])
    weight = float(data.images.shape[1])
    acc = jax.tree_util.tree_map(lambda a, b, wt=weight: a + wt * b, acc, client_params)
    total += weight
  return jax.tree_util.tree_map(lambda a: a / total, acc)


def write_reference(path: str | os.PathLike[str], workload: Workload, num_rounds: int = 1) -> None:
  """Writes an .npz that the peer scripts check themselves against (`--reference`).

  Contents: `workload` (the JSON), `init/<name>` (the initial params) and `round<r>/<name>` for
  r in 1..num_rounds (the server params after `sequential_round`), names from `PARAM_NAMES`.
  """
  if workload.model not in BENCH_MODELS:
    raise ValueError(f"a peer reference needs a benchmark CNN, not {workload.model!r}")
  data = synthetic_client_data(workload)
  params = init_params(workload)
  arrays = {"workload": np.array(workload.to_json())}
  arrays.update({f"init/{k}": v for k, v in params_to_flat(params).items()})
  for r in range(1, num_rounds + 1):
    params = sequential_round(params, data, workload)
    arrays.update({f"round{r}/{k}": v for k, v in params_to_flat(params).items()})
  np.savez(path, **arrays)
