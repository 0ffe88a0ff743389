"""Face-embedding backbones behind one registry, so configs name a model by a string.

Every model is a Flax linen module whose `apply({"params": p}, images)` maps preprocessed NHWC float
images to float32 L2-normalised embeddings `[B, D]`, with no mutable collections (except iResNet
with `norm="batch"`). Being a pure function of a params pytree is what lets the federated engine
vmap one model over a leading client axis.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax.models.common import l2_normalize
from fedface_jax.models.common import preprocess
from fedface_jax.models.common import PReLU
from fedface_jax.models.dlib_head import CONTAINER_SHAPE as DLIB_HEAD_INPUT_SHAPE
from fedface_jax.models.dlib_head import DlibHead
from fedface_jax.models.dlib_head import load_dlib_head
from fedface_jax.models.dlib_resnet import DLIB_INPUT_SHAPE
from fedface_jax.models.dlib_resnet import DlibResNet
from fedface_jax.models.dlib_resnet import load_dlib_resnet
from fedface_jax.models.iresnet import IResNet
from fedface_jax.models.iresnet import IResNet50
from fedface_jax.models.iresnet import IRESNET_INPUT_SHAPE
from fedface_jax.models.resnet_small import ResNetSmall
from fedface_jax.models.sphere import Sphere20
from fedface_jax.models.sphere import Sphere64
from fedface_jax.models.sphere import SPHERE_INPUT_SHAPE
from fedface_jax.models.sphere import SphereNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet_small": ResNetSmall,
    "sphere20": Sphere20,
    "sphere64": Sphere64,
    "iresnet50": IResNet50,
    "dlib_resnet": DlibResNet,
    # dlib's last layer on cached trunk features (frozen trunk; data.name="dlib_trunk_features").
    "dlib_head": DlibHead,
}

# The input (H, W, C) each model was designed for; resnet_small is meant for the 64x64 demo faces.
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "resnet_small": (64, 64, 3),
    "sphere20": SPHERE_INPUT_SHAPE,
    "sphere64": SPHERE_INPUT_SHAPE,
    "iresnet50": IRESNET_INPUT_SHAPE,
    "dlib_resnet": DLIB_INPUT_SHAPE,
    "dlib_head": DLIB_HEAD_INPUT_SHAPE,
}


# Published weights a config can start from (`config.model.pretrained`), by name. Each entry maps
# to the registry model it fits and a loader returning `(module, params)`.
PRETRAINED: dict[str, tuple[str, Callable[..., tuple[nn.Module, Any]]]] = {
    "dlib": ("dlib_resnet", load_dlib_resnet),
    "dlib_head": ("dlib_head", load_dlib_head),
}


def _same_attribute(a: Any, b: Any) -> bool:
  """Equal, with numbers compared as float32 (a file's float32 constants vs Python defaults)."""
  try:
    return np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  except (TypeError, ValueError):
    return a == b


def load_pretrained_params(pretrained: str, model: nn.Module) -> Any:
  """Params of the published model `pretrained` (a `PRETRAINED` key) for `model`.

  `model` is the config's module (`create_model(config.model...)`); it must be the registry model
  the weights belong to with the same hyper-parameters, so that the params fit the module the
  rest of the run uses (e.g. dlib: `dlib_resnet`, embedding_dim 128).

  Raises:
    ValueError: unknown name, or a model the weights do not fit.
  """
  if pretrained not in PRETRAINED:
    raise ValueError(f"unknown pretrained model {pretrained!r}; valid: {sorted(PRETRAINED)}")
  name, loader = PRETRAINED[pretrained]
  module, params = loader()
  wanted = _module_class(_REGISTRY[name])
  if not isinstance(model, wanted):
    raise ValueError(f"pretrained={pretrained!r} needs model {name!r}, got {type(model).__name__}")
  mismatched = {f.name: (getattr(model, f.name), getattr(module, f.name))
                for f in dataclasses.fields(module)
                if f.name not in ("parent", "name", "normalize", "dtype")
                and not _same_attribute(getattr(model, f.name), getattr(module, f.name))}
  if mismatched:
    raise ValueError(f"pretrained={pretrained!r}: model attributes (config, weights) differ: "
                     f"{mismatched}")
  return params


def model_names() -> tuple[str, ...]:
  """Names accepted by `create_model`, sorted."""
  return tuple(sorted(_REGISTRY))


def register_model(name: str, constructor: Callable[..., nn.Module]) -> None:
  """Adds a model constructor (e.g. the attack's LeNet) to the registry; re-registering replaces it.

  The constructor must accept `embedding_dim` as a keyword argument.
  """
  _REGISTRY[name] = constructor


def _module_class(constructor: Callable[..., nn.Module]) -> Any:
  while hasattr(constructor, "func"):  # unwrap functools.partial
    constructor = constructor.func
  return constructor


def create_model(name: str, embedding_dim: int = 512, **kwargs) -> nn.Module:
  """Builds a registered model.

  Args:
    name: one of `model_names()`: "resnet_small", "sphere20", "sphere64", "iresnet50",
      "dlib_resnet" (dlib's face ResNet architecture, randomly initialised here; its pretrained
      weights come from `load_dlib_resnet`).
    embedding_dim: output dimension D.
    **kwargs: module attributes, e.g. `width_multiplier=0.25`, `dtype=jnp.bfloat16`,
      `norm="group"` (iResNet), `widths=(16, 32, 64, 128)` (resnet_small).

  Returns:
    An unbound linen module.

  Raises:
    ValueError: for an unknown name or an attribute the model does not have.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
  constructor = _REGISTRY[name]
  cls = _module_class(constructor)
  if dataclasses.is_dataclass(cls):
    fields = {f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
      raise ValueError(f"model {name!r} has no attribute(s) {unknown}; valid: {sorted(fields)}")
  return constructor(embedding_dim=embedding_dim, **kwargs)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def from_config(model_cfg) -> nn.Module:
  """The backbone a `config.model` section names: name, embedding_dim, dtype, remat, conv_impl,
  kwargs.

  `dtype` is the compute dtype only ("bfloat16": mixed precision). Parameters, optimiser state,
  the normalised embeddings and everything downstream (cosine logits, margins, losses) stay float32:
  every backbone casts its input to `dtype` and its `EmbeddingHead` back to float32, and bfloat16's
  8-bit mantissa cannot hold a cosine margin of 0.35 to useful precision anyway.
  """
  dtype = model_cfg.dtype
  if dtype not in _DTYPES:
    raise ValueError(f"model.dtype={dtype!r}; valid: {', '.join(_DTYPES)}")
  kwargs = dict(model_cfg.kwargs)
  if dtype != "float32":
    kwargs["dtype"] = _DTYPES[dtype]
  if model_cfg.remat:
    kwargs["remat"] = True
  conv_impl = model_cfg.get("conv_impl", "xla")
  if conv_impl != "xla":
    kwargs["conv_impl"] = conv_impl   # a model without the attribute refuses it by name
  return create_model(model_cfg.name, model_cfg.embedding_dim, **kwargs)


def init_variables(model: nn.Module, rng: jax.Array, image_shape) -> dict[str, Any]:
  """Initialises all variable collections (e.g. `params` and `batch_stats`) from a batch of one."""
  image_shape = tuple(int(d) for d in image_shape)
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
  # One jitted computation: eager init would dispatch (and compile) every op of a deep net one by
  # one.
  return jax.jit(model.init)(rng, jnp.zeros((1,) + image_shape, jnp.float32))


def init_params(model: nn.Module, rng: jax.Array, image_shape) -> Any:
  """Initialises a model from a batch of one `(H, W, C)` image and returns only its `params`.

  Traceable, so `jax.eval_shape(lambda r: init_params(model, r, shape), rng)` gives the param shapes
  without allocating them, and `jax.vmap` over rngs gives per-client params.
  """
  return init_variables(model, rng, image_shape)["params"]


def count_params(params: Any) -> int:
  """Total number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
  return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)))


__all__ = [
    "DEFAULT_INPUT_SHAPES",
    "DlibHead",
    "DlibResNet",
    "IResNet",
    "IResNet50",
    "PReLU",
    "ResNetSmall",
    "Sphere20",
    "Sphere64",
    "SphereNet",
    "count_params",
    "create_model",
    "from_config",
    "init_params",
    "init_variables",
    "l2_normalize",
    "load_dlib_head",
    "load_dlib_resnet",
    "load_pretrained_params",
    "model_names",
    "preprocess",
    "register_model",
]
