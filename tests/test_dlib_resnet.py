"""dlib's face ResNet in Flax: the serialisation decoders, the reader, equality with dlib itself.

The equality test is the one that matters: descriptors of real face chips from dlib's own
`face_recognition_model_v1` and from the Flax module must agree (cosine >= 0.9999, every coordinate
within 1e-3). It skips when dlib, the model package or the shared faces are absent.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax import models
from fedface_jax.models import dlib_resnet
from fedface_jax.models.common import preprocess
from fedface_jax.models.dlib_serial import DlibFormatError
from fedface_jax.models.dlib_serial import Reader

NUM_CHIPS = 24


# ---------------------------------------------------------------------------------------------
# Primitive decoders, on hand-made bytes (dlib/serialize.h, float_details.h, cuda/tensor.h).


@pytest.mark.parametrize("data,value", [
    (b"\x01\x05", 5),
    (b"\x01\x00", 0),
    (b"\x02\x34\x12", 0x1234),          # little-endian magnitude
    (b"\x81\x05", -5),                  # bit 7: negative
    (b"\x82\x00\x01", -256),
    (b"\x08" + b"\xff" * 7 + b"\x7f", 2**63 - 1),
])
def test_read_int(data, value):
  r = Reader(data)
  assert r.read_int() == value
  assert r.remaining == 0


@pytest.mark.parametrize("data", [
    b"\x00",              # zero length
    b"\x09" + b"\0" * 9,  # longer than 8 bytes
    b"\x11\x05",          # reserved bits set (old ASCII encodings start like this)
    b"\x02\x05",          # truncated
    b"",
])
def test_read_int_rejects_bad_bytes(data):
  with pytest.raises(DlibFormatError):
    Reader(data).read_int()


def test_read_unsigned_rejects_sign_bit():
  assert Reader(b"\x01\x05").read_int(signed=False) == 5
  with pytest.raises(DlibFormatError):
    Reader(b"\x81\x05").read_int(signed=False)


@pytest.mark.parametrize("data,value", [
    (b"\x01\x03" + b"\x81\x01", 1.5),                     # 3 * 2**-1
    (b"\x81\x03" + b"\x81\x01", -1.5),                    # the mantissa carries the sign
    (b"\x01\x05" + b"\x01\x02", 20.0),                    # 5 * 2**2
    (b"\x01\x00" + b"\x01\x00", 0.0),
    (b"\x03\x0a\xd7\xa3" + b"\x81\x1c", float(np.float32(0.04))),  # the model file's margin
    (b"\x01\x00" + b"\x02\x00\x7d", math.inf),             # exponent 32000
    (b"\x01\x00" + b"\x02\x01\x7d", -math.inf),            # exponent 32001
])
def test_read_float(data, value):
  r = Reader(data)
  assert r.read_float() == value
  assert r.remaining == 0


def test_read_float_nan_and_old_ascii_format():
  assert math.isnan(Reader(b"\x01\x00\x02\x02\x7d").read_float())
  with pytest.raises(DlibFormatError, match="ASCII"):
    Reader(b"1.5 ").read_float()


def test_read_string_bool_tensor():
  shape = (1, 2, 1, 3)
  values = np.arange(6, dtype="<f4") - 2.5
  data = (b"\x01\x05con_6" + b"1" + b"0"
          + b"\x01\x02" + b"".join(b"\x01" + bytes([d]) for d in shape) + values.tobytes()
          + b"\x01\x01" + b"\x01\x01\x01\x02\x01\x01\x01\x03")
  r = Reader(data)
  assert r.read_string() == "con_6"
  assert r.read_bool() is True and r.read_bool() is False
  t = r.read_tensor()
  assert t.dtype == np.float32 and t.shape == shape
  np.testing.assert_array_equal(t.reshape(-1), values)
  assert r.read_alias_tensor() == (1, 2, 1, 3)
  assert r.remaining == 0
  with pytest.raises(DlibFormatError, match="bool"):
    Reader(b"x").read_bool()
  with pytest.raises(DlibFormatError, match="expected one of"):
    Reader(b"\x01\x03abc").expect_string("con_6")


def test_read_tensor_rejects_unknown_version_and_short_data():
  with pytest.raises(DlibFormatError, match="version"):
    Reader(b"\x01\x01" + b"\x01\x01" * 4).read_tensor()
  with pytest.raises(DlibFormatError, match="end of data"):
    Reader(b"\x01\x02" + b"\x01\x01" * 4 + b"\0\0").read_tensor()


# ---------------------------------------------------------------------------------------------
# The module (no weights needed).


def test_add_at_larger_shape_zero_pads_like_dlib_add_prev():
  a = jnp.ones((1, 3, 3, 4))       # block output: smaller map, more channels
  b = 2 * jnp.ones((1, 4, 4, 2))   # pooled shortcut
  out = np.asarray(dlib_resnet.add_at_larger_shape(a, b))
  assert out.shape == (1, 4, 4, 4)
  np.testing.assert_array_equal(out[0, :3, :3, :2], 3)
  np.testing.assert_array_equal(out[0, :3, :3, 2:], 1)
  np.testing.assert_array_equal(out[0, 3, :, :2], 2)
  np.testing.assert_array_equal(out[0, 3, :, 2:], 0)


def test_registry_builds_the_architecture():
  model = models.create_model("dlib_resnet", 128)
  assert isinstance(model, dlib_resnet.DlibResNet)
  assert models.DEFAULT_INPUT_SHAPES["dlib_resnet"] == (150, 150, 3)
  shapes = jax.eval_shape(lambda k: models.init_params(model, k, (150, 150, 3)),
                          jax.random.key(0))
  assert models.count_params(shapes) == 5_614_592  # what the pretrained file holds
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes,
                       jax.ShapeDtypeStruct((2, 150, 150, 3), jnp.float32))
  assert out.shape == (2, 128) and out.dtype == jnp.float32


def test_module_rejects_non_rgb_input():
  model = models.create_model("dlib_resnet", 128)
  with pytest.raises(ValueError, match="B, H, W, 3"):
    jax.eval_shape(lambda k: models.init_params(model, k, (150, 150, 1)), jax.random.key(0))


# ---------------------------------------------------------------------------------------------
# The pretrained file.


@pytest.fixture(scope="module")
def model_path():
  try:
    return dlib_resnet.packaged_model_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))


@pytest.fixture(scope="module")
def loaded(model_path):
  return dlib_resnet.load_dlib_resnet(model_path, normalize=False)


def test_reader_reads_the_whole_file(model_path):
  net = dlib_resnet.read_network(model_path)
  assert net.input_size == (150, 150)
  np.testing.assert_allclose(net.input_mean, dlib_resnet.DLIB_DEFAULT_MEAN, atol=1e-4)
  kinds = [layer.kind for layer in net.layers]
  assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds[-1] == "fc"
  # The inference net stores its batch norms as affine layers.
  assert {layer.attrs["source"] for layer in net.layers if layer.kind == "affine"} <= {
      "affine_", "affine_2", "bn_con2"}


def test_reader_rejects_truncated_and_corrupted_files(model_path):
  data = model_path.read_bytes()
  with pytest.raises(DlibFormatError):
    dlib_resnet.read_network(data[:len(data) // 2])
  with pytest.raises(DlibFormatError, match="unread bytes"):
    dlib_resnet.read_network(data + b"\x00")
  corrupted = bytearray(data)
  corrupted[4:17] = b"loss_multicl_"  # the loss layer's name
  with pytest.raises(DlibFormatError, match="loss_metric"):
    dlib_resnet.read_network(bytes(corrupted))


def test_loaded_params_match_the_module_structure(loaded):
  module, params = loaded
  expected = jax.eval_shape(lambda k: models.init_params(module, k, (150, 150, 3)),
                            jax.random.key(0))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert got.shape == want.shape and got.dtype == jnp.float32



def test_descriptors_equal_dlib(loaded, model_path, celeba_chips):
  dlib = pytest.importorskip("dlib")
  chips = celeba_chips(NUM_CHIPS)
  reference = dlib.face_recognition_model_v1(str(model_path))
  want = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
  module, params = loaded
  got = np.asarray(jax.jit(module.apply)({"params": params}, preprocess(chips)), np.float64)
  cosine = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
  max_abs = float(np.max(np.abs(got - want)))
  print(f"dlib vs Flax on {len(chips)} chips: min cosine {cosine.min():.8f}, "
        f"max |diff| {max_abs:.2e}")
  assert cosine.min() >= 0.9999
  assert max_abs <= 1e-3
  # Sanity: the descriptors discriminate (not all the same vector), and normalize=True is the
  # same direction at unit norm.
  assert np.mean(np.abs(want[1:] - want[:-1])) > 1e-2
  unit = dlib_resnet.DlibResNet(input_mean=module.input_mean, normalize=True)
  got_unit = np.asarray(jax.jit(unit.apply)({"params": params}, preprocess(chips[:4])))
  np.testing.assert_allclose(got_unit, want[:4] / np.linalg.norm(want[:4], axis=1,
                                                                 keepdims=True), atol=1e-5)


def test_load_pretrained_params_checks_the_model(model_path):
  del model_path  # only needs the package installed
  params = models.load_pretrained_params("dlib", models.create_model("dlib_resnet", 128))
  assert models.count_params(params) == 5_614_592
  with pytest.raises(ValueError, match="embedding_dim"):
    models.load_pretrained_params("dlib", models.create_model("dlib_resnet", 512))
  with pytest.raises(ValueError, match="needs model 'dlib_resnet'"):
    models.load_pretrained_params("dlib", models.create_model("resnet_small", 128))
  with pytest.raises(ValueError, match="unknown pretrained"):
    models.load_pretrained_params("vggface", models.create_model("dlib_resnet", 128))


_EVAL_CONFIG = '''
import ml_collections as mlc
from experiments import common

def get_config():
  c = mlc.ConfigDict()
  c.seed = 0
  c.data = common.synthetic_data(num_identities=6, images_per_identity=3, image_size=(150, 150))
  c.data.data_dir = {data_dir!r}
  c.splits = common.splits(pretrain=0, federated=0, evaluation=-1)
  c.model = common.model("dlib_resnet", 128, pretrained="dlib")
  c.eval = common.evaluation(num_impostor_pairs=1000)
  c.mesh = common.mesh()
  return c
'''


@pytest.mark.slow
def test_launch_evaluate_from_the_dlib_start_prints_cis(model_path, tmp_path):
  """launch.evaluate with config.model.pretrained="dlib": no backbone in the workdir needed."""
  import os  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  del model_path
  repo = pathlib.Path(__file__).resolve().parents[1]
  config = tmp_path / "eval_dlib_tiny.py"
  config.write_text(_EVAL_CONFIG.format(data_dir=str(tmp_path / "data")))
  env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--config={config}",
       f"--workdir={tmp_path / 'w'}", "--num_resamples=50"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| evaluation identities |" in out.stdout
  for metric in ("tar@1e-3", "tar@1e-2", "auc"):
    assert f"{metric}: " in out.stdout and "[" in out.stdout.split(f"{metric}: ")[1]
  assert "bootstrap over 6 identities, 50 resamples" in out.stdout
  assert not (tmp_path / "w" / "backbone").exists()


def test_federated_start_is_the_published_model_when_configured(loaded, tmp_path):
  """`checkpoint.load_start`: config.model.pretrained wins over config.pretrained_backbone."""
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  from fedface_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from fedface_jax import errors  # pylint: disable=g-import-not-at-top
  from fedface_jax import models  # pylint: disable=g-import-not-at-top
  _, params = loaded
  model_cfg = mlc.ConfigDict(dict(name="dlib_resnet", embedding_dim=128, kwargs={},
                                  dtype="float32", remat=False, pretrained="dlib"))
  config = mlc.ConfigDict(dict(model=model_cfg, pretrained_backbone=str(tmp_path / "none")))
  model = models.from_config(model_cfg)
  start = checkpoint.load_start(config, model, (150, 150, 3))
  for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  config.model.pretrained = ""   # now the (missing) exported backbone is what it must load
  with pytest.raises(errors.MissingInputError, match="no pretrained backbone"):
    checkpoint.load_start(config, model, (150, 150, 3))
