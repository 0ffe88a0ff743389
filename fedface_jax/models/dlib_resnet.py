"""dlib's pretrained face-recognition ResNet as a Flax module, read from its serialised weights.

Why: every real-face experiment needs a starting point that already recognises faces. dlib's
`dlib_face_recognition_resnet_model_v1` (a 29-conv ResNet trained by metric learning on ~3M faces,
99.38% on LFW; 150x150 aligned RGB chips -> 128-d descriptors) is installable as the
`face-recognition-models` package with its weights inside. This module reads that file with NumPy
only (`dlib_serial`), so the model is an ordinary params pytree that the engine can train, shard
and vmap; dlib itself is only needed to verify equality (tests) and to align faces (data).

The topology is dlib's `anet_type` (examples/dnn_face_recognition_ex.cpp). The file stores the
network outermost layer first (loss, fc, pooling, ... down to the input), with every layer's
details written after its sub-network's, so the reader walks a fixed list of the layers that
topology must contain and fails at the first byte that disagrees. Batch-norm layers appear either
as `bn_con2` (training form: running means/variances) or as `affine_` (inference form); both become
a per-channel `scale` and `bias`, which is exactly what dlib's inference net computes.

Two dlib behaviours the Flax module reproduces on purpose:
- a stride-2 3x3 conv has no padding (dlib's default padding is 0 for stride != 1), and
- the residual sum of a down-sampling block is taken at the *larger* of the two shapes, zero-padding
  the smaller at the bottom/right and in the extra channels (dlib's `add_prev` / `tt::add`). At
  150x150 the 8x8 map becomes 3x3 (block) vs 4x4 (pooled shortcut) and 4x4 becomes 1x1 vs 2x2, so
  this is not a corner case: it decides the last two stages.

Input convention: the module takes images preprocessed the project's way, `(u8 - 127.5) / 128`
(`models.common.preprocess`), and maps them inside to dlib's `(u8 - channel_mean) / 256` with the
file's channel means, so that the data pipeline needs no special case. Channels are RGB.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax.models import common
from fedface_jax.models.dlib_serial import DlibFormatError
from fedface_jax.models.dlib_serial import Reader

Dtype = Any

DLIB_INPUT_SIZE = 150
DLIB_INPUT_SHAPE = (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE, 3)
DLIB_EMBEDDING_DIM = 128
# dlib's input_rgb_image defaults; the file's own values are read and passed to the module.
DLIB_DEFAULT_MEAN = (122.782, 117.001, 104.298)
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_MODELS_PACKAGE = "face_recognition_models"

# (width, number of residual blocks, whether the first block down-samples), input to output.
# dlib's alevel4 .. alevel0.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def packaged_model_path(filename: str = MODEL_FILE) -> pathlib.Path:
  """Path of a model file inside the installed `face_recognition_models` package.

  The package is located without importing it (its `__init__` needs `pkg_resources`, which recent
  setuptools no longer ships).

  Raises:
    FileNotFoundError: the package is not installed or lacks the file.
  """
  spec = importlib.util.find_spec(_MODELS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"package {_MODELS_PACKAGE!r} is not installed; install face-recognition-models "
        "(see requirements.txt) or pass the path of the .dat file explicitly")
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / "models" / filename
    if path.is_file():
      return path
  raise FileNotFoundError(f"{filename} not found in {list(spec.submodule_search_locations)}")


# ---------------------------------------------------------------------------------------------
# Reading the serialised network.


@dataclasses.dataclass
class Layer:
  """One computational layer as read from the file (tags and skips are not layers).

  `attrs` holds hyper-parameters (ints/floats/strings), `arrays` holds float32 weights.
  """
  kind: str
  attrs: dict[str, Any]
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DlibNetwork:
  """Everything the file holds that inference needs, in forward (input to output) order."""
  input_mean: tuple[float, float, float]
  input_size: tuple[int, int]
  loss: dict[str, Any]
  layers: list[Layer]


def _expected_layers() -> list[tuple]:
  """The anet_type topology in forward order: ("layer", kind, expected attrs) | ("tag"/"skip",)."""
  conv = lambda n, k, s: ("layer", "con", {"num_filters": n, "nr": k, "nc": k, "stride": s})
  affine = ("layer", "affine", {})
  relu = ("layer", "relu", {})
  seq = [conv(32, 7, 2), affine, relu, ("layer", "max_pool", {"nr": 3, "nc": 3, "stride": 2})]
  for width, blocks, down in STAGES:
    for b in range(blocks):
      stride = 2 if down and b == 0 else 1
      seq += [("tag",), conv(width, 3, stride), affine, relu, conv(width, 3, 1), affine]
      if stride == 2:
        seq += [("tag",), ("skip",), ("layer", "avg_pool", {"nr": 2, "nc": 2, "stride": 2})]
      seq += [("layer", "add_prev", {}), relu]
  seq += [("layer", "avg_pool", {"nr": 0, "nc": 0, "stride": 1}),
          ("layer", "fc", {"num_outputs": DLIB_EMBEDDING_DIM})]
  return seq


def _read_multipliers(r: Reader, n: int = 4) -> None:
  for _ in range(n):  # learning-rate / weight-decay multipliers: training-only
    r.read_float()


def _split_params(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
  flat = params.reshape(-1)
  sizes = [int(np.prod(s)) for s in shapes]
  if flat.size != sum(sizes):
    raise DlibFormatError(f"params hold {flat.size} values, expected {sum(sizes)} for {shapes}")
  out, offset = [], 0
  for shape, size in zip(shapes, sizes):
    out.append(flat[offset:offset + size].reshape(shape))
    offset += size
  return out


def _read_con(r: Reader) -> Layer:
  version = r.expect_string("con_4", "con_5", "con_6")
  params = r.read_tensor()
  attrs = {"num_filters": r.read_int(), "nr": r.read_int(), "nc": r.read_int()}
  stride_y, stride_x = r.read_int(), r.read_int()
  pad_y, pad_x = r.read_int(), r.read_int()
  filters_shape = r.read_alias_tensor()
  biases_shape = r.read_alias_tensor()
  _read_multipliers(r)
  use_bias = r.read_bool() if version in ("con_5", "con_6") else True
  use_relu = r.read_bool() if version == "con_6" else False
  if stride_y != stride_x or pad_y != pad_x:
    raise DlibFormatError(f"anisotropic conv (stride {stride_y}x{stride_x}, pad {pad_y}x{pad_x})")
  if use_relu:
    raise DlibFormatError("conv with a fused relu is not part of this topology")
  attrs.update(stride=stride_y, padding=pad_y, use_bias=use_bias)
  if use_bias:
    filters, biases = _split_params(params, filters_shape, (attrs["num_filters"],))
    if int(np.prod(biases_shape)) != attrs["num_filters"]:
      raise DlibFormatError(f"conv bias shape {biases_shape} for {attrs['num_filters']} filters")
  else:
    (filters,) = _split_params(params, filters_shape)
    biases = np.zeros((attrs["num_filters"],), np.float32)
  return Layer("con", attrs, {"filters": filters, "biases": biases})


def _read_affine(r: Reader) -> Layer:
  """An affine_ layer, or a bn_con2/bn_fc2 layer folded into one as dlib's affine_(bn_) does."""
  version = r.expect_string("affine_", "affine_2", "bn_con2", "bn_fc2")
  params = r.read_tensor()
  gamma_shape = r.read_alias_tensor()
  beta_shape = r.read_alias_tensor()
  if version.startswith("bn_"):
    r.read_tensor()  # means of the last training batch
    r.read_tensor()  # their inverse std devs
    running_means = r.read_tensor().reshape(-1)
    running_vars = r.read_tensor().reshape(-1)
    r.read_int(signed=False)  # num_updates
    r.read_int(signed=False)  # running_stats_window_size
    _read_multipliers(r)
    eps = r.read_float()
    gamma, beta = _split_params(params, gamma_shape, beta_shape)
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    scale = (gamma / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
    bias = (beta - scale * running_means).astype(np.float32)
    mode = 0 if version == "bn_con2" else 1
    disabled = False
  else:
    mode = r.read_int()
    disabled = r.read_bool() if version == "affine_2" else False
    if disabled:
      scale = bias = None
    else:
      scale, bias = (a.reshape(-1) for a in _split_params(params, gamma_shape, beta_shape))
  if mode != 0:
    raise DlibFormatError(f"affine layer in mode {mode}; this topology has only conv-mode ones")
  if disabled:
    raise DlibFormatError("disabled affine layer is not part of this topology")
  return Layer("affine", {"source": version}, {"scale": scale, "bias": bias})


def _read_pool(r: Reader, kind: str) -> Layer:
  r.expect_string(f"{kind}_2")
  attrs = {"nr": r.read_int(), "nc": r.read_int()}
  stride_y, stride_x = r.read_int(), r.read_int()
  pad_y, pad_x = r.read_int(), r.read_int()
  if stride_y != stride_x or pad_y != pad_x or pad_y != 0:
    raise DlibFormatError(f"{kind}: stride {stride_y}x{stride_x}, padding {pad_y}x{pad_x}")
  attrs["stride"] = stride_y
  return Layer(kind, attrs)


def _read_fc(r: Reader) -> Layer:
  version = r.expect_string("fc_2", "fc_3")
  attrs = {"num_outputs": r.read_int(signed=False), "num_inputs": r.read_int(signed=False)}
  params = r.read_tensor()
  weights_shape = r.read_alias_tensor()
  r.read_alias_tensor()  # biases view (empty for fc_no_bias)
  bias_mode = r.read_int()
  _read_multipliers(r)
  use_bias = r.read_bool() if version == "fc_3" else True
  if bias_mode != 1:  # FC_NO_BIAS
    raise DlibFormatError(f"fc layer with bias mode {bias_mode}; anet_type uses fc_no_bias")
  del use_bias  # meaningless without a bias
  (weights,) = _split_params(params, weights_shape)
  weights = weights.reshape(attrs["num_inputs"], attrs["num_outputs"])
  return Layer("fc", attrs, {"weights": weights})


def _read_relu(r: Reader) -> Layer:
  version = r.expect_string("relu_", "relu_2")
  if version == "relu_2" and r.read_bool():
    raise DlibFormatError("disabled relu is not part of this topology")
  return Layer("relu", {})


def _read_add_prev(r: Reader) -> Layer:
  r.expect_string("add_prev_")
  return Layer("add_prev", {})


_DETAIL_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": lambda r: _read_pool(r, "max_pool"),
    "avg_pool": lambda r: _read_pool(r, "avg_pool"),
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def _skip_layer_state(r: Reader, add_layer_version: int, input_layer: bool) -> None:
  """Reads the training-time state every add_layer stores after its details, and drops it."""
  for _ in range(3):  # setup called, gradient stale, output/gradient disabled
    r.read_bool()
  r.read_tensor()  # x_grad
  r.read_tensor()  # cached_output
  if input_layer:
    r.read_tensor()  # grad_final
    if add_layer_version >= 3:
      r.read_int(signed=False)  # sample expansion factor
  elif add_layer_version >= 2:
    r.read_tensor()  # params_grad


def _check_attrs(layer: Layer, expected: dict[str, Any], index: int) -> None:
  for key, value in expected.items():
    if layer.attrs.get(key) != value:
      raise DlibFormatError(f"layer {index} ({layer.kind}): {key}={layer.attrs.get(key)!r}, the "
                            f"dlib face ResNet has {value!r}")


def read_network(data: bytes | str | os.PathLike) -> DlibNetwork:
  """Parses `dlib_face_recognition_resnet_model_v1.dat` (bytes or a path) into a `DlibNetwork`.

  Raises:
    DlibFormatError: the bytes are not this network as dlib serialises it (names the byte offset).
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    data = pathlib.Path(data).read_bytes()
  r = Reader(bytes(data))
  r.expect_int(1)  # add_loss_layer
  loss_version = r.expect_string("loss_metric_", "loss_metric_2")
  if loss_version == "loss_metric_2":
    loss = {"margin": r.read_float(), "distance_threshold": r.read_float()}
  else:
    loss = {"margin": 0.1, "distance_threshold": 0.75}
  forward = _expected_layers()
  # Headers, outermost first. The innermost layer (the stem conv) shares its add_layer with the
  # input layer, whose header and details come next.
  versions = {}
  for index in range(len(forward) - 1, 0, -1):
    if forward[index][0] == "layer":
      versions[index] = r.expect_int(1, 2)
    else:
      r.expect_int(1)  # add_tag_layer / add_skip_layer: version, then their sub-network
  input_version = r.expect_int(2, 3)
  r.expect_string("input_rgb_image_sized")
  input_mean = (r.read_float(), r.read_float(), r.read_float())
  input_size = (r.read_int(signed=False), r.read_int(signed=False))
  layers = []
  for index, entry in enumerate(forward):
    if entry[0] != "layer":
      continue
    start = r.pos
    _, kind, expected = entry
    try:
      layer = _DETAIL_READERS[kind](r)
    except DlibFormatError as e:
      raise DlibFormatError(f"layer {index} ({kind}, from byte {start}): {e}") from e
    _check_attrs(layer, expected, index)
    _skip_layer_state(r, input_version if index == 0 else versions[index], input_layer=index == 0)
    layers.append(layer)
  if r.remaining:
    raise DlibFormatError(f"{r.remaining} unread bytes after the network (at byte {r.pos})")
  return DlibNetwork(input_mean=input_mean, input_size=input_size, loss=loss, layers=layers)


def network_to_params(net: DlibNetwork) -> dict[str, Any]:
  """Maps the layers of a `DlibNetwork` onto the params pytree of `DlibResNet` (NumPy arrays).

  dlib stores conv filters as (out, in, kh, kw) for cross-correlation, Flax as (kh, kw, in, out);
  dlib's fc weights are already (in, out).
  """
  weighted = iter([layer for layer in net.layers if layer.kind in ("con", "affine", "fc")])

  def conv():
    layer = next(weighted)
    if layer.kind != "con":
      raise DlibFormatError(f"expected a conv layer, found {layer.kind}")
    return {"kernel": np.ascontiguousarray(layer.arrays["filters"].transpose(2, 3, 1, 0)),
            "bias": layer.arrays["biases"].reshape(-1)}

  def affine():
    layer = next(weighted)
    if layer.kind != "affine":
      raise DlibFormatError(f"expected an affine layer, found {layer.kind}")
    return {"scale": layer.arrays["scale"], "bias": layer.arrays["bias"]}

  params = {"stem_conv": conv(), "stem_affine": affine()}
  for stage, (_, blocks, _) in enumerate(STAGES):
    for b in range(blocks):
      params[f"stage{stage + 1}_block{b + 1}"] = {
          "conv1": conv(), "affine1": affine(), "conv2": conv(), "affine2": affine()}
  fc = next(weighted)
  params["fc"] = {"kernel": fc.arrays["weights"]}
  if next(weighted, None) is not None:
    raise DlibFormatError("layers left over after the fc layer")
  return params


# ---------------------------------------------------------------------------------------------
# The Flax module.


class Affine(nn.Module):
  """Per-channel `x * scale + bias`: the inference form of a batch-norm layer, with no state.

  Trainable like any other params (dlib fine-tunes the same way), and per-example, so the model
  stays a pure function of its params under the federated engine's vmap.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return x * scale.astype(self.dtype) + bias.astype(self.dtype)


def add_at_larger_shape(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a + b` at the element-wise larger NHWC shape, zero-filling each at the end of every axis.

  This is dlib's `add_prev` (`tt::add` with mismatched sizes), which the residual sums of the
  down-sampling blocks rely on.
  """
  shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))

  def pad(x):
    return jnp.pad(x, [(0, t - s) for s, t in zip(x.shape, shape)])

  return pad(a) + pad(b)


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str) -> nn.Conv:
  padding = 0 if stride != 1 else kernel // 2  # dlib's con_ default
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=[(padding, padding)] * 2,
                 use_bias=True, kernel_init=_CONV_INIT, dtype=dtype, name=name)


class DlibBlock(nn.Module):
  """dlib's `ares` / `ares_down`: conv-affine-relu-conv-affine, + (avg-pooled) input, relu."""
  features: int
  downsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    stride = 2 if self.downsample else 1
    y = _conv(self.features, 3, stride, self.dtype, "conv1")(x)
    y = nn.relu(Affine(self.dtype, name="affine1")(y))
    y = _conv(self.features, 3, 1, self.dtype, "conv2")(y)
    y = Affine(self.dtype, name="affine2")(y)
    shortcut = nn.avg_pool(x, (2, 2), strides=(2, 2)) if self.downsample else x
    return nn.relu(add_at_larger_shape(y, shortcut))


class DlibResNet(nn.Module):
  """dlib's face-recognition ResNet (`anet_type`): 150x150 RGB chips -> 128-d descriptors.

  Attributes:
    embedding_dim: output dimension (128 for the pretrained weights).
    input_mean: per-channel RGB pixel means that dlib subtracts (read from the file by the loader).
    normalize: L2-normalise the output, as every backbone of this package does. False gives dlib's
      raw descriptors (what `compute_face_descriptor` returns; their norm is not 1).
    dtype: compute dtype; params are float32 and the output is float32.
  """
  embedding_dim: int = DLIB_EMBEDDING_DIM
  input_mean: Sequence[float] = DLIB_DEFAULT_MEAN
  normalize: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Embeds `common.preprocess`ed NHWC RGB images; `train` is accepted for a uniform signature."""
    del train
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"expected [B, H, W, 3] images, got shape {x.shape}")
    # (u8 - 127.5) / 128  ->  (u8 - mean) / 256, dlib's input_rgb_image::to_tensor.
    mean = jnp.asarray(self.input_mean, jnp.float32)
    x = ((x.astype(jnp.float32) * 128.0 + 127.5 - mean) / 256.0).astype(self.dtype)
    x = _conv(32, 7, 2, self.dtype, "stem_conv")(x)
    x = nn.relu(Affine(self.dtype, name="stem_affine")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    for stage, (width, blocks, down) in enumerate(STAGES):
      for b in range(blocks):
        x = DlibBlock(width, downsample=down and b == 0, dtype=self.dtype,
                      name=f"stage{stage + 1}_block{b + 1}")(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.Dense(self.embedding_dim, use_bias=False, dtype=jnp.float32, name="fc")(x)
    x = x.astype(jnp.float32)
    return common.l2_normalize(x) if self.normalize else x


def load_dlib_resnet(path: Optional[str | os.PathLike] = None, normalize: bool = True,
                     dtype: Dtype = jnp.float32) -> tuple[DlibResNet, dict[str, Any]]:
  """Builds `DlibResNet` with dlib's pretrained weights.

  Args:
    path: the `.dat` file; default: the one in the installed `face_recognition_models` package.
    normalize: see `DlibResNet.normalize`.
    dtype: compute dtype.

  Returns:
    `(module, params)`: `module.apply({"params": params}, images)` embeds preprocessed images.
  """
  net = read_network(packaged_model_path() if path is None else path)
  if net.input_size != (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE):
    raise DlibFormatError(f"input size {net.input_size}, expected {DLIB_INPUT_SHAPE[:2]}")
  module = DlibResNet(embedding_dim=DLIB_EMBEDDING_DIM, input_mean=tuple(net.input_mean),
                      normalize=normalize, dtype=dtype)
  params = jax.tree.map(jnp.asarray, network_to_params(net))
  return module, params
