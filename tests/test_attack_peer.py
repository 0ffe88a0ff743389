"""The peer-attack case file (reporting/attack_peer.py) on toy data: its .npz layout, and that
its arrays are what our attacker sees (no torch needed); with the breaching venv present, the
torch port reproduces our logits and update and breaching's reconstructions are scored by ours."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import attack_sweeps as sweep_configs
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.attack import inversion
from fedface_jax.attack import lenet as lenet_lib
from fedface_jax.attack import pipeline
from fedface_jax.attack import updates
from fedface_jax.data.faces import FaceArrays
from reporting import attack_peer

PEER_PYTHON = pathlib.Path(attack_peer.DEFAULT_PEER_PYTHON)
TINY = dict(variant="tiny", base_victims=2, base_images=1)


def _faces(num_ids, per_id=5, size=32, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


@pytest.fixture(scope="module")
def toy():
  scfg = sweep_configs.sweep_config("synthetic", iterations=3, **TINY)
  splits = {"pretrain": _faces(4, seed=1), "federated": _faces(5), "evaluation": _faces(3, seed=2)}
  config = sweep_configs.base_attack_config(scfg, scfg.objective)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.kwargs)
  params = models.init_params(model, jax.random.key(0), splits["federated"].image_shape)
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  return scfg, splits, params, mesh


@pytest.fixture(scope="module")
def case_file(toy, tmp_path_factory):
  scfg, splits, params, mesh = toy
  config = sweep_configs.point_config(scfg, sweep_configs.base_point(scfg), seed=0)
  work = tmp_path_factory.mktemp("peer")
  out = pipeline.run_attack(config, str(work / "ours"), backbone_params=params, splits=splits,
                            mesh=mesh, return_images=True, return_case=True)
  path = attack_peer.write_case(str(work / "case.npz"),
                                attack_peer.case_arrays(out, config, seed=0))
  return path, out, config


def test_case_npz_layout(case_file):
  path, out, config = case_file
  case = attack_peer.read_case(path)
  a = config.attack
  k, n, s = a.num_clients, a.images_per_client, a.image_size
  assert str(case["format"]) == attack_peer.CASE_FORMAT
  assert (int(case["num_clients"]), int(case["images_per_client"]), int(case["tau"]),
          float(case["eta"]), int(case["image_size"])) == (k, n, a.tau, a.eta, s)
  assert case["images"].dtype == np.uint8 and case["images"].shape == (k * n, s, s, 3)
  np.testing.assert_array_equal(case["labels"], np.repeat(np.arange(k), n))
  assert case["ours_recon"].shape == ((k - 1) * n, s, s, 3)
  np.testing.assert_array_equal(case["ours_recon"], out["reconstructions"][a.objective])
  ours = json.loads(str(case["ours_json"]))
  assert ours["iterations"] == a.iterations and ours["summary"]["psnr"] > 0
  # Flax layout, leaf by leaf; fc1's input is the NHWC flatten of the [s/4, s/4, 64] map.
  shapes = {"conv1/kernel": (5, 5, 3, 32), "conv1/bias": (32,), "conv2/kernel": (5, 5, 32, 64),
            "conv2/bias": (64,), "fc1/kernel": ((s // 4) ** 2 * 64, 512), "fc2/kernel": (512, k)}
  for tree in attack_peer.TREES:
    for leaf, shape in shapes.items():
      assert case[f"{tree}/{leaf}"].shape == shape and case[f"{tree}/{leaf}"].dtype == np.float32
  # The arrays are what the attacker sees: the target is (w_t - w_t1) / eta less its own update,
  # and the logits are our LeNet's at w_t on the model input (u8 - 127.5) / 128.
  unflat = lambda t: {layer: {leaf: case[f"{t}/{layer}/{leaf}"] for leaf in ("kernel", "bias")
                              if f"{t}/{layer}/{leaf}" in case}
                      for layer in ("conv1", "conv2", "fc1", "fc2")}
  target = updates.remove_own_update(
      updates.diluted_update(unflat("w_t"), unflat("w_t1"), a.eta), unflat("g_own"), k)
  for x, y in zip(jax.tree.leaves(target), jax.tree.leaves(unflat("target"))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  x = (case["images"].astype(np.float32) - case["input_offset"]) / case["input_scale"]
  np.testing.assert_allclose(
      x, inversion.fedface_input(jnp.asarray(case["images"], jnp.float32) / 255.0), atol=1e-6)
  logits = lenet_lib.LeNet5(num_classes=k).apply({"params": unflat("w_t")}, x)
  np.testing.assert_allclose(case["logits_w_t"], logits, atol=1e-6)
  # The victims' true mean is close to the target (float32 rounding of w_t1 only).
  rel = np.linalg.norm(np.concatenate([
      (case[f"target/{l}"] - case[f"victims_mean/{l}"]).ravel() for l in attack_peer.LAYERS]))
  rel /= np.linalg.norm(np.concatenate([case[f"victims_mean/{l}"].ravel()
                                        for l in attack_peer.LAYERS]))
  assert rel < 1e-3, rel


def test_ours_inverting_gradients_maps_breachings_settings_to_pixels(case_file, monkeypatch):
  """The same-algorithm row: breaching's lr, init and TV map from its normalised space (our model
  input, ~2x - 1) to [0, 1] pixels, on the case's own w_t, target and victim labels."""
  _, out, config = case_file
  seen = {}

  def fake(apply_fn, params0, target, labels, c, **kw):
    seen.update(params0=params0, target=target, labels=np.asarray(labels), c=c, kw=kw)
    return "result"
  monkeypatch.setattr(inversion, "invert_inverting_gradients", fake)
  assert attack_peer.ours_inverting_gradients(out, config, 7, seed=3) == "result"
  c, a = seen["c"], config.attack
  scale = 255.0 / 128.0
  assert c.iterations == 7 and c.seed == 3 and c.tau == a.tau and c.eta == a.eta
  assert c.matching == "cosine" and c.signed and c.boxed and c.lr_decay and c.restarts == 1
  np.testing.assert_allclose([c.lr, c.init_std, c.tv_weight], [0.1 / scale, 1 / scale,
                                                               0.2 * scale], rtol=1e-6)
  k, n = int(a.num_clients), int(a.images_per_client)
  assert seen["labels"].shape == ((k - 1) * n, k)
  np.testing.assert_array_equal(seen["labels"].argmax(1), np.repeat(np.arange(1, k), n))
  assert seen["target"] is out["case"]["target"] and seen["params0"] is out["case"]["w_t"]
  assert seen["kw"]["input_transform"] is inversion.fedface_input


def test_reuse_without_a_finished_comparison_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished comparison"):
    attack_peer.load_result(str(tmp_path))


def test_read_case_refuses_a_bad_layout(case_file, tmp_path):
  path, _, _ = case_file
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  del arrays["w_t1/fc1/kernel"]
  bad = attack_peer.write_case(str(tmp_path / "bad.npz"), arrays)
  with pytest.raises(ValueError, match="w_t1/fc1/kernel"):
    attack_peer.read_case(bad)
  arrays = dict(np.load(path))
  arrays["format"] = np.array("something/0")
  with pytest.raises(ValueError, match="format"):
    attack_peer.read_case(attack_peer.write_case(str(tmp_path / "bad2.npz"), arrays))


needs_breaching = pytest.mark.skipif(
    not PEER_PYTHON.exists(),
    reason="no breaching venv (torch + breaching): bash scripts/setup_peer_venvs.sh breaching")


@needs_breaching
def test_breaching_on_the_same_update_scored_by_ours(toy, tmp_path):
  _, splits, params, mesh = toy
  result = attack_peer.run("synthetic", (0,), str(tmp_path), "test", iterations=3,
                           peer_iterations=(2,), ig_iterations=(2,), splits=splits,
                           backbone_params=params, mesh=mesh,
                           sweep_overrides=TINY, peer_python=str(PEER_PYTHON))
  (check,) = result["checks"]
  assert check["ok"] and check["forward_max_abs_diff"] <= 1e-5, check
  assert check["victims_direct_rel_l2_diff"] <= 1e-5, check
  assert check["round_update_rel_l2_diff"] <= 1e-4, check
  methods = [r["method"] for r in result["rows"]]
  assert methods[:5] == ["ours: paper_faithful", "breaching: invertinggradients, 2 it.",
                         "breaching (2 it.) - ours, paired", "ours: inverting_gradients, 2 it.",
                         "breaching (2 it.) - ours inverting_gradients (2 it.), paired"]
  ig = result["rows"][3]
  assert ig["iterations"] == 2 and ig["units"] == 2 and np.isfinite(ig["ci"]["psnr"]["mean"])
  assert result["ours_ig_final_matching"][0]["iterations"] == 2
  peer = result["rows"][1]
  assert peer["iterations"] == 2 and peer["units"] == 2
  for k in ("psnr", "ssim", "similarity", "rank1"):
    assert np.isfinite(peer["ci"][k]["mean"]), k
  assert os.path.exists(tmp_path / "seed0" / "breaching_it2.npz")
  md = attack_peer.markdown_section(result)
  assert "breaching: invertinggradients, 2 it." in md and "| ours: paper_faithful |" in md
  attack_peer.save_result(result, str(tmp_path))
  again = attack_peer.load_result(str(tmp_path))   # what --reuse renders from
  assert attack_peer.markdown_section(again) == md
  path = attack_peer.write_block(result, str(tmp_path), str(tmp_path / "RESULTS.md"))
  payload = json.load(open(path))
  assert payload["block"] == "attack-peer-breaching" and len(payload["rows"]) == 7
  assert payload["peer_versions"]["breaching"] == "0.1.2"
