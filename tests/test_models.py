"""The backbone registry: shapes, parameter counts, normalisation, statelessness, determinism.

Every consumer (margin losses, class-embedding init, verification, the vmapped federated engine)
relies on the same contract: `apply({"params": p}, x)` gives float32 unit rows `[B, D]`, the result
is a pure function of `p`, and the paper nets have the architecture the paper describes. Paper-scale
nets (tens of millions of params at 112x96 / 112x112) are only traced with `jax.eval_shape` here;
real forward passes run on `resnet_small` and on full-depth nets shrunk with `width_multiplier`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import models
from fedface_jax.models import iresnet
from fedface_jax.models import resnet_small
from fedface_jax.models import sphere

PAPER_NETS = ("sphere20", "sphere64", "iresnet50")
ALL_NETS = ("resnet_small",) + PAPER_NETS


def _abstract_variables(model, image_shape, train=False):
  """All variable collections of `model` as ShapeDtypeStructs; allocates nothing."""
  return _cached_abstract_variables(model, tuple(image_shape), train)


@functools.lru_cache(maxsize=None)
def _cached_abstract_variables(model, image_shape, train):
  # Linen modules are frozen dataclasses, hence hashable: each net is traced once per module.
  x = jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32)
  return jax.eval_shape(lambda r, x: model.init(r, x, train=train), jax.random.key(0), x)


def _sphere_param_count(blocks, widths=(64, 128, 256, 512), input_hw=(112, 96), dim=512):
  """SphereNet size from FEDFACE.md's description, written out independently of the module.

  Per stage: 3x3 stride-2 conv with bias + per-channel PReLU, then units of two bias-free 3x3 convs,
  each with a per-channel PReLU. Head: flatten the (H/16) x (W/16) x 512 map -> Dense(dim, no bias).
  """
  total, cin = 0, 3
  h, w = input_hw
  for units, c in zip(blocks, widths):
    total += 9 * cin * c + c + c                      # transition conv (+bias) and its PReLU
    total += units * 2 * (9 * c * c + c)              # residual convs and their PReLUs
    cin, h, w = c, -(-h // 2), -(-w // 2)
  return total + h * w * cin * dim


def _iresnet_param_count(blocks, widths=(64, 128, 256, 512), input_hw=(112, 112), dim=512):
  """insightface iResNet size (norms counted as scale + bias, as BN/GN weight + bias in PyTorch).

  Stem 3x3 conv (no bias) + norm + PReLU; IBasicBlock = norm, conv3x3, norm, PReLU, conv3x3, norm,
  with a 1x1 conv + norm projection on each stage's first (stride-2) block; final norm; flatten
  7x7x512 -> Dense(dim) with bias. The 512-d feature BatchNorm is not part of this count.
  """
  total = 9 * 3 * widths[0] + 2 * widths[0] + widths[0]
  cin = widths[0]
  h, w = input_hw
  for num_blocks, c in zip(blocks, widths):
    for b in range(num_blocks):
      total += 2 * cin + 9 * cin * c + 2 * c + c + 9 * c * c + 2 * c
      if b == 0:
        total += cin * c + 2 * c
      cin = c
    h, w = -(-h // 2), -(-w // 2)
  return total + 2 * cin + h * w * cin * dim + dim


def test_registry_names_and_selection():
  assert set(ALL_NETS) <= set(models.model_names())
  assert list(models.model_names()) == sorted(models.model_names())
  m = models.create_model("sphere20", 128)
  assert isinstance(m, sphere.SphereNet)
  assert tuple(m.blocks) == (1, 2, 4, 1) and m.embedding_dim == 128
  m = models.create_model("sphere64")
  assert isinstance(m, sphere.SphereNet)
  assert tuple(m.blocks) == (3, 8, 16, 3) and m.embedding_dim == 512
  m = models.create_model("iresnet50", 256, norm="none")
  assert isinstance(m, iresnet.IResNet)
  assert tuple(m.blocks) == (3, 4, 14, 3) and m.norm == "none" and m.embedding_dim == 256
  m = models.create_model("resnet_small", 64, widths=(4, 8, 8, 16))
  assert isinstance(m, resnet_small.ResNetSmall)
  assert tuple(m.widths) == (4, 8, 8, 16) and m.embedding_dim == 64


def test_unknown_name_and_attribute_are_clear_errors():
  with pytest.raises(ValueError, match=r"unknown model 'spherenet20'.*valid names:.*sphere20"):
    models.create_model("spherenet20")
  # A typo in a kwarg must not be silently ignored (or surface as a dataclass TypeError).
  with pytest.raises(ValueError, match=r"'sphere64' has no attribute.*width_multipler"):
    models.create_model("sphere64", width_multipler=0.5)


def test_register_model_adds_a_name():
  name = "_test_only_tiny_resnet"
  models.register_model(name, resnet_small.ResNetSmall)
  try:
    assert name in models.model_names()
    assert isinstance(models.create_model(name, 8), resnet_small.ResNetSmall)
  finally:
    models._REGISTRY.pop(name)  # pylint: disable=protected-access
  assert name not in models.model_names()


@pytest.mark.parametrize("name, embedding_dim",
                         [(n, 512) for n in ALL_NETS] + [("sphere20", 96), ("iresnet50", 96)])
def test_paper_input_output_shape_and_dtype(name, embedding_dim):
  model = models.create_model(name, embedding_dim)
  shape = models.DEFAULT_INPUT_SHAPES[name]
  params = _abstract_variables(model, shape)["params"]
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params,
                       jax.ShapeDtypeStruct((3,) + shape, jnp.float32))
  assert out.shape == (3, embedding_dim)
  assert out.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_default_input_shapes_are_the_papers():
  assert models.DEFAULT_INPUT_SHAPES["sphere20"] == (112, 96, 3)   # FedFace / SphereFace crops
  assert models.DEFAULT_INPUT_SHAPES["sphere64"] == (112, 96, 3)
  assert models.DEFAULT_INPUT_SHAPES["iresnet50"] == (112, 112, 3)  # insightface crops


# Exact counts, equal to the closed forms above, which are written from the architecture text
# (FEDFACE.md, insightface), not from the modules -- so a changed layer shows up as a diff:
# * sphere20: 22,666,432 = 11.66M conv/PReLU trunk + 11.01M for the 7x6x512 -> 512 bottleneck.
# * sphere64: 48,186,304 = 37.18M trunk + the same bottleneck (`sphere_net_rec.py`, [3, 8, 16, 3]).
#   Rough figures of "28M" / "36M" for these nets do not fit FedFace's flatten -> Dense(512) head:
#   the bottleneck alone is 11M, and the trunks are 11.7M / 37.2M.
# * iresnet50: 43,589,824, i.e. insightface's r50 (~43.6M) less its 512-d feature BatchNorm, which
#   the stateless "group" default omits on purpose (see iresnet.py and the norm="batch" test below).
PAPER_PARAM_COUNTS = {
    "sphere20": (22_666_432, _sphere_param_count((1, 2, 4, 1))),
    "sphere64": (48_186_304, _sphere_param_count((3, 8, 16, 3))),
    "iresnet50": (43_589_824, _iresnet_param_count((3, 4, 14, 3))),
}


@pytest.mark.parametrize("name", PAPER_NETS)
def test_paper_parameter_counts(name):
  expected, closed_form = PAPER_PARAM_COUNTS[name]
  assert expected == closed_form  # the literal above is the architecture's, not just the code's
  model = models.create_model(name, 512)
  params = _abstract_variables(model, models.DEFAULT_INPUT_SHAPES[name])["params"]
  assert models.count_params(params) == expected


def test_paper_bottleneck_shapes():
  """The head flattens the 1/16-resolution map: 7x6x512 for SphereNet, 7x7x512 for iResNet."""
  p = _abstract_variables(models.create_model("sphere64"), (112, 96, 3))["params"]
  assert p["head"]["bottleneck"]["kernel"].shape == (7 * 6 * 512, 512)
  assert "bias" not in p["head"]["bottleneck"]  # FedFace: Dense(512) without bias
  p = _abstract_variables(models.create_model("iresnet50"), (112, 112, 3))["params"]
  assert p["fc"]["kernel"].shape == (7 * 7 * 512, 512) and p["fc"]["bias"].shape == (512,)


def test_iresnet_batch_norm_variant_counts():
  """norm="batch" is insightface's: the same params plus the feature BN's 512 biases, and stats."""
  v = _abstract_variables(models.create_model("iresnet50", norm="batch"), (112, 112, 3))
  assert models.count_params(v["params"]) == PAPER_PARAM_COUNTS["iresnet50"][0] + 512
  # mean + var for every norm: the params' norm scale/bias counts, plus 2 x 512 for the feature BN.
  norm_params = PAPER_PARAM_COUNTS["iresnet50"][0] - models.count_params(
      _abstract_variables(models.create_model("iresnet50", norm="none"), (112, 112, 3))["params"])
  assert models.count_params(v["batch_stats"]) == norm_params + 2 * 512


def _leaf_paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("name", ["sphere20", "sphere64"])
@pytest.mark.parametrize("train", [False, True])
def test_spherenets_have_no_normalisation_layers(name, train):
  """FEDFACE.md: `sphere_net_rec.py` has normalizer_fn=None, i.e. no BN (nor any other norm)."""
  model = models.create_model(name)
  variables = _abstract_variables(model, (112, 96, 3), train=train)
  assert set(variables) == {"params"}  # no batch_stats collection, in training mode either
  paths = _leaf_paths(variables["params"])
  assert not [p for p in paths if "norm" in p.lower() or "bn" in p.lower()]
  # Leaves are exactly conv kernels/biases, PReLU slopes and the bottleneck kernel.
  assert {p.rsplit("'", 2)[-2] for p in paths} == {"kernel", "bias", "alpha"}
  biases = [p for p in paths if p.endswith("['bias']")]
  assert biases and all("transition" in p for p in biases)  # only the stride-2 convs have biases


@pytest.mark.parametrize("name, kwargs", [
    ("resnet_small", {}), ("iresnet50", {}), ("iresnet50", {"norm": "none"})])
def test_default_models_are_stateless(name, kwargs):
  v = _abstract_variables(models.create_model(name, **kwargs), models.DEFAULT_INPUT_SHAPES[name],
                          train=True)
  assert set(v) == {"params"}


def test_stateless_check_sees_batch_stats():
  """Counter-check for the tests above: a model that does have BN is detected."""
  v = _abstract_variables(models.create_model("iresnet50", norm="batch"), (112, 112, 3))
  assert set(v) == {"params", "batch_stats"}


# Full-depth nets at their paper resolution but 1/16 of the width (4..32 channels): the same code
# path as the paper nets, cheap to run. Compiling the 50/64-layer nets still costs ~30 s each on two
# busy cores, so those two are in the slow suite.
REAL_CASES = [
    ("resnet_small", {}, (64, 64, 3)),
    ("sphere20", {"width_multiplier": 1 / 16}, (112, 96, 3)),
    pytest.param("sphere64", {"width_multiplier": 1 / 16}, (112, 96, 3), marks=pytest.mark.slow),
    pytest.param("iresnet50", {"width_multiplier": 1 / 16}, (112, 112, 3), marks=pytest.mark.slow),
]


def _images(shape, batch, seed):
  rng = np.random.default_rng(seed)
  return models.preprocess(rng.integers(0, 256, (batch,) + shape, dtype=np.uint8))


@pytest.mark.parametrize("name, kwargs, shape", REAL_CASES)
def test_real_forward_unit_rows_and_deterministic_init(name, kwargs, shape):
  dim = 24
  model = models.create_model(name, dim, **kwargs)
  # One compiled init for all keys (models.init_params would compile per call).
  init = jax.jit(lambda k: models.init_variables(model, k, shape)["params"])
  params, again, other = init(jax.random.key(3)), init(jax.random.key(3)), init(jax.random.key(4))
  jax.tree.map(np.testing.assert_array_equal, params, again)  # same key -> bit-identical params
  # A different key changes the random leaves (PReLU slopes and norm scales start constant).
  differs = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), params, other))
  assert sum(differs) >= 3

  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  x = _images(shape, 3, seed=0)
  out = apply(params, x)
  assert out.shape == (3, dim) and out.dtype == jnp.float32
  out = np.asarray(out)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  # Not collapsed: different images give different directions.
  cos = out @ out.T
  assert np.max(cos[~np.eye(3, dtype=bool)]) < 1 - 1e-4
  # Pure function of (params, x), row by row: reordering the batch reorders the output.
  np.testing.assert_allclose(np.asarray(apply(params, x[::-1])), out[::-1], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_output():
  model = models.create_model("resnet_small", 32, dtype=jnp.bfloat16)
  params = _abstract_variables(model, (64, 64, 3))["params"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params,
                       jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
  assert out.dtype == jnp.float32 and out.shape == (2, 32)


def test_init_variables_rejects_a_batched_shape():
  with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\)"):
    models.init_variables(models.create_model("resnet_small"), jax.random.key(0), (1, 64, 64, 3))


def test_preprocess_is_fedface_normalisation():
  x = np.array([0, 127, 128, 255], np.uint8).reshape(1, 1, 4, 1).repeat(3, -1)
  y = models.preprocess(x)
  assert isinstance(y, np.ndarray) and y.dtype == np.float32
  np.testing.assert_allclose(y[0, 0, :, 0], (np.array([0, 127, 128, 255]) - 127.5) / 128)
  assert isinstance(models.preprocess(jnp.asarray(x)), jax.Array)

