"""dlib's face ResNet with a frozen trunk: only its last layer (fc, 256 -> 128) is trained.

Why: fine-tuning all of dlib's ResNet federatedly (forward and backward through 29 convs at
150x150 for every local step of every client) is out of reach on a 2-core CPU, while the
standard partial fine-tuning of a pretrained encoder -- freeze the trunk, train the last layer --
costs one 256x128 matmul per image once the trunk's pooled features are cached. This module is
that last layer, registered like any backbone (`dlib_head`), so the federated engine, the
pretraining/oracle code, evaluation and the study run it unchanged: FedAvg, FedAwS, FedFace,
spreadout and DP are the library's, only theta is smaller.

The engine's data path carries uint8 images `[N, H, W, 3]`, flips them along W for
augmentation and feeds `models.preprocess(images)` to the model. A cached example is therefore
a *byte container* of that shape (`CONTAINER_SHAPE` = (342, 2, 3)): W index 0 holds the
float32 bytes of the chip's 256-d trunk features, W index 1 those of the mirrored chip, so the
engine's horizontal flip swaps the two views and yields exactly the features of the flipped
chip (flip augmentation and flip-test evaluation stay what they are for images). The module
undoes `preprocess` (exact: (u - 127.5) / 128 is exact in float32 for u in 0..255) and
reinterprets the bytes, so the features reach the fc layer bit-for-bit. The containers are not
images: gradient-based attacks on the input are meaningless on them.

`trunk_features` computes the features with `DlibResNet` itself (the input of its `fc` layer,
captured with `nn.intercept_methods`), so the trunk is dlib's by construction; the test checks
`DlibHead(cached) == DlibResNet(chip)`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedface_jax.models import common
from fedface_jax.models import dlib_resnet

Dtype = Any

FEATURE_DIM = 256                       # channels of dlib's last stage, average-pooled
FEATURE_BYTES = 4 * FEATURE_DIM         # float32
CONTAINER_ROWS = -(-FEATURE_BYTES // 3)  # 342 rows of 3 bytes: 1026 >= 1024
CONTAINER_SHAPE = (CONTAINER_ROWS, 2, 3)  # (H, W = [chip, mirrored chip], 3)


def pack_features(features: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
  """`[N, 256]` float32 features of chips and of their mirror images -> `[N, 342, 2, 3]` uint8."""
  features = np.asarray(features, np.float32)
  mirrored = np.asarray(mirrored, np.float32)
  if features.ndim != 2 or features.shape[1] != FEATURE_DIM or mirrored.shape != features.shape:
    raise ValueError(f"need two [N, {FEATURE_DIM}] arrays, got {features.shape}, "
                     f"{mirrored.shape}")
  n = features.shape[0]
  out = np.zeros((n, 2, CONTAINER_ROWS * 3), np.uint8)
  out[:, 0, :FEATURE_BYTES] = features.astype("<f4").view(np.uint8).reshape(n, FEATURE_BYTES)
  out[:, 1, :FEATURE_BYTES] = mirrored.astype("<f4").view(np.uint8).reshape(n, FEATURE_BYTES)
  return np.ascontiguousarray(out.reshape(n, 2, CONTAINER_ROWS, 3).transpose(0, 2, 1, 3))


def unpack_features(containers_u8: np.ndarray) -> np.ndarray:
  """Inverse of `pack_features` on host uint8 containers: the W-index-0 view, `[N, 256]`."""
  c = np.ascontiguousarray(np.asarray(containers_u8, np.uint8)[:, :, 0, :])
  return c.reshape(c.shape[0], -1)[:, :FEATURE_BYTES].copy().view("<f4")


def _features_from_preprocessed(x: jax.Array) -> jax.Array:
  """`preprocess(container)` -> `[B, 256]` float32: undo the pixel map, reinterpret the bytes."""
  u8 = jnp.round(x.astype(jnp.float32) * 128.0 + 127.5).astype(jnp.uint8)
  flat = u8[:, :, 0, :].reshape(x.shape[0], CONTAINER_ROWS * 3)[:, :FEATURE_BYTES]
  # bitcast_convert_type reads the minor axis in memory order: little-endian, as numpy's "<f4".
  return jax.lax.bitcast_convert_type(flat.reshape(x.shape[0], FEATURE_DIM, 4), jnp.float32)


class DlibHead(nn.Module):
  """dlib's `fc_no_bias` (256 -> embedding_dim) on cached trunk features.

  Input: `models.preprocess` of `[B, 342, 2, 3]` byte containers (`pack_features`). Params:
  `{"fc": {"kernel": [256, D]}}`, the same leaf as `DlibResNet`'s `fc`.

  Attributes:
    embedding_dim: output dimension (128 for dlib's weights).
    normalize: L2-normalise the output (every backbone of this package does).
    dtype: accepted for the registry's uniform signature; the layer computes in float32.
  """
  embedding_dim: int = dlib_resnet.DLIB_EMBEDDING_DIM
  normalize: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    if x.ndim != 4 or tuple(x.shape[1:]) != CONTAINER_SHAPE:
      raise ValueError(f"dlib_head takes [B, {', '.join(map(str, CONTAINER_SHAPE))}] feature "
                       f"containers (data.name='dlib_trunk_features'), got shape {x.shape}")
    features = _features_from_preprocessed(x)
    y = nn.Dense(self.embedding_dim, use_bias=False, dtype=jnp.float32, name="fc")(features)
    return common.l2_normalize(y) if self.normalize else y


def trunk_fn(module: dlib_resnet.DlibResNet):
  """`f(params, preprocessed_chips) -> [B, 256]`: the input of `module`'s fc layer."""

  def features(params, x):
    captured = []

    def interceptor(next_fun, args, kwargs, context):
      if context.module.name == "fc" and context.method_name == "__call__":
        captured.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      module.apply({"params": params}, x)
    if len(captured) != 1:
      raise RuntimeError(f"expected one call of the fc layer, saw {len(captured)}")
    return captured[0].astype(jnp.float32)

  return features


def trunk_features(module: dlib_resnet.DlibResNet, params, chips_u8, batch_size: int = 64,
                   progress=None) -> tuple[np.ndarray, np.ndarray]:
  """Trunk features `[N, 256]` of uint8 150x150 chips and of their mirror images.

  `progress(n)` is called after each batch of n chips (e.g. a tqdm bar's update).
  """
  fn = jax.jit(trunk_fn(module))
  n = len(chips_u8)
  out = np.zeros((n, FEATURE_DIM), np.float32)
  out_mirror = np.zeros((n, FEATURE_DIM), np.float32)
  for start in range(0, n, batch_size):
    batch = np.asarray(chips_u8[start:start + batch_size])
    count = len(batch)
    if count < batch_size:  # one compiled shape
      batch = np.concatenate([batch, np.zeros((batch_size - count,) + batch.shape[1:],
                                              np.uint8)])
    out[start:start + count] = np.asarray(fn(params, common.preprocess(batch)))[:count]
    out_mirror[start:start + count] = np.asarray(
        fn(params, common.preprocess(batch[:, :, ::-1])))[:count]
    if progress is not None:
      progress(count)
  return out, out_mirror


def load_dlib_head(path: Optional[str | os.PathLike] = None,
                   normalize: bool = True) -> tuple[DlibHead, dict[str, Any]]:
  """`(DlibHead, {"fc": dlib's fc params})`: theta_0 of a frozen-trunk run."""
  _, params = dlib_resnet.load_dlib_resnet(path)
  return DlibHead(normalize=normalize), {"fc": params["fc"]}
