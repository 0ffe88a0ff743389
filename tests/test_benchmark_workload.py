"""Tests of the shared benchmark workload (fedface_jax/benchmark/workload.py).

The peers' numbers are only comparable if the workload is well defined: JSON must round-trip
exactly, the CNN must give unit embeddings, and the reference round must be plain FedAvg over
plain-SGD client updates.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.benchmark import workload as wl


def _tiny(**kw):
  base = dict(num_clients=2, images_per_client=3, image_size=(16, 12), local_steps=1,
              batch_size=2, model="bench_cnn_small", embedding_dim=8, lr=0.5, seed=3)
  base.update(kw)
  return wl.Workload(**base)


def test_json_round_trip(tmp_path):
  w = _tiny(model="bench_cnn_large", lr=0.25)
  assert wl.Workload.from_json(w.to_json()) == w
  path = tmp_path / "w.json"
  w.save(path)
  assert wl.Workload.load(path) == w
  d = json.loads(path.read_text())
  assert d["image_size"] == [16, 12] and d["model"] == "bench_cnn_large"
  # Integer lr from a hand-written JSON is accepted as a float.
  d["lr"] = 1
  assert wl.Workload.from_dict(d).lr == 1.0


@pytest.mark.parametrize("bad", [
    {"num_clients": 0}, {"model": "resnet"}, {"lr": -1.0}, {"image_size": [32]},
    {"batch_size": 2.5}, {"extra_field": 1}])
def test_bad_workloads_raise(bad):
  d = _tiny().to_dict()
  d.update(bad)
  with pytest.raises(ValueError):
    wl.Workload.from_dict(d)


def test_load_missing_file_raises(tmp_path):
  with pytest.raises(FileNotFoundError):
    wl.Workload.load(tmp_path / "nope.json")


@pytest.mark.parametrize("name,channels", sorted(wl.BENCH_MODELS.items()))
def test_cnn_shapes_and_unit_norm(name, channels):
  w = _tiny(model=name, image_size=(32, 32), embedding_dim=16)
  params = wl.init_params(w)
  c1, c2, c3 = channels
  assert params["conv1"]["kernel"].shape == (3, 3, 3, c1)
  assert params["conv2"]["kernel"].shape == (3, 3, c1, c2)
  assert params["conv3"]["kernel"].shape == (3, 3, c2, c3)
  assert params["conv3"]["bias"].shape == (c3,)
  assert params["embed"]["kernel"].shape == (c3, 16)
  assert "bias" not in params["embed"]
  data = wl.synthetic_client_data(w)
  emb = jax.jit(wl.workload_model(w).apply)({"params": params}, wl.preprocess(data.images[0]))
  assert emb.shape == (3, 16) and emb.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, rtol=1e-5)
  # init_params matches the shapes of flax's own init of the module.
  shapes = jax.eval_shape(wl.workload_model(w).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))["params"]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), params, shapes)
  flat = wl.params_to_flat(params)
  assert tuple(flat) == wl.PARAM_NAMES
  back = wl.flat_to_params(flat)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_init_is_deterministic_lecun_normal():
  w = _tiny(model="bench_cnn_large", embedding_dim=128)
  a, b = wl.init_flat_params(w), wl.init_flat_params(w)
  for name in wl.PARAM_NAMES:
    np.testing.assert_array_equal(a[name], b[name])
  assert not np.array_equal(a["conv2/kernel"], wl.init_flat_params(_tiny(
      model="bench_cnn_large", embedding_dim=128, seed=4))["conv2/kernel"])
  k = a["conv3/kernel"]  # fan_in = 3 * 3 * 64; LeCun variance 1 / fan_in.
  assert abs(k.std() * np.sqrt(9 * 64) - 1.0) < 0.05
  assert np.abs(k).max() <= 2.0 / 0.87962566103423978 / np.sqrt(9 * 64) + 1e-6
  assert not np.any(a["conv3/bias"])
  z = wl.truncated_normal_np(np.random.PCG64(0), 50_000)
  assert abs(z.mean()) < 0.02 and abs(z.std() - 0.87962566) < 0.01


def test_synthetic_data_deterministic_and_shaped():
  w = _tiny()
  a, b = wl.synthetic_client_data(w), wl.synthetic_client_data(w)
  assert a.images.dtype == np.uint8 and a.images.shape == (2, 3, 16, 12, 3)
  assert a.class_embeddings.shape == (2, 8) and a.class_embeddings.dtype == np.float32
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.class_embeddings, b.class_embeddings)
  np.testing.assert_allclose(np.linalg.norm(a.class_embeddings, axis=1), 1.0, rtol=1e-6)
  c = wl.synthetic_client_data(_tiny(seed=4))
  assert not np.array_equal(a.images, c.images)
  # The documented recipe (what the peer scripts reimplement).
  raw = np.random.PCG64(3).random_raw((a.images.size + 7) // 8)
  np.testing.assert_array_equal(raw.astype("<u8").view(np.uint8)[:a.images.size],
                                a.images.reshape(-1))


def test_batch_indices_cycle():
  w = _tiny(images_per_client=3, batch_size=2, local_steps=3)
  np.testing.assert_array_equal(wl.batch_indices(w), [[0, 1], [2, 0], [1, 2]])


def test_sequential_round_is_weighted_mean_of_client_sgd():
  w = _tiny(local_steps=1, batch_size=2)
  data = wl.synthetic_client_data(w)
  params = wl.init_params(w)
  model = wl.workload_model(w)

  @jax.jit
  def by_hand(images, class_embedding):
    # One SGD step on the first batch_size images of a client.
    g = jax.grad(lambda p: wl.positive_loss(
        model.apply({"params": p}, wl.preprocess(images[:2])), class_embedding))(params)
    return jax.tree_util.tree_map(lambda p, gg: p - w.lr * gg, params, g)

  p0 = by_hand(data.images[0], data.class_embeddings[0])
  p1 = by_hand(data.images[1], data.class_embeddings[1])
  # Both clients hold 3 images, so the weights are equal; still written as the weighted mean.
  expected = jax.tree_util.tree_map(lambda a, b: (3 * a + 3 * b) / 6, p0, p1)
  got = wl.sequential_round(params, data, w)
  jax.tree_util.tree_map(
      lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got, expected)
  # The update is not a no-op (the loss has a gradient at init).
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)))
  assert moved > 1e-6


def test_fedavg_weights():
  a = {"x": jnp.array([0.0, 2.0])}
  b = {"x": jnp.array([4.0, 2.0])}
  np.testing.assert_allclose(wl.fedavg([a, b], [1, 3])["x"], [3.0, 2.0])
  with pytest.raises(ValueError):
    wl.fedavg([a], [0.0])


def test_write_reference(tmp_path):
  w = _tiny()
  path = tmp_path / "ref.npz"
  wl.write_reference(path, w)
  ref = np.load(path)
  assert wl.Workload.from_json(str(ref["workload"])) == w
  for name in wl.PARAM_NAMES:
    assert ref[f"init/{name}"].shape == ref[f"round1/{name}"].shape


def test_peer_generators_give_the_library_bytes(tmp_path, monkeypatch):
  """scripts/peers/_common.py re-implements the data and init in NumPy for the peers' venvs."""
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts" / "peers"))
  import _common  # pylint: disable=g-import-not-at-top
  w = _tiny(model="bench_cnn_large")
  path = tmp_path / "w.json"
  w.save(path)
  peer_w = _common.load_workload(str(path))
  images, class_emb = _common.synthetic_client_data(peer_w)
  ours = wl.synthetic_client_data(w)
  np.testing.assert_array_equal(images, np.asarray(ours.images))
  np.testing.assert_allclose(class_emb, np.asarray(ours.class_embeddings), rtol=0, atol=1e-7)
  peer_init, ours_init = _common.init_flat_params(peer_w), wl.init_flat_params(w)
  assert sorted(peer_init) == sorted(ours_init)
  for name, value in ours_init.items():
    np.testing.assert_array_equal(peer_init[name], value)
  assert _common.max_diff(peer_init, ours_init) == (0.0, 0.0)


def test_peer_inputs_and_reference_check(tmp_path, monkeypatch):
  """`_common.load_inputs` / `check_round1`: what both peer scripts run around their rounds."""
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts" / "peers"))
  import argparse  # pylint: disable=g-import-not-at-top
  import _common  # pylint: disable=g-import-not-at-top
  w = _tiny()
  w.save(tmp_path / "w.json")
  wl.write_reference(tmp_path / "ref.npz", w)
  parser = argparse.ArgumentParser()
  _common.add_common_args(parser)
  args = parser.parse_args([f"--workload={tmp_path / 'w.json'}", "--rounds=2",
                            f"--reference={tmp_path / 'ref.npz'}"])
  peer_w, images, _, flat0, ref, check = _common.load_inputs(args)
  assert peer_w["num_clients"] == 2 and images.shape == (2, 3, 16, 12, 3)
  assert check == {"init_max_abs_diff": 0.0}
  round1 = {k: np.array(ref[f"round1/{k}"]) for k in _common.PARAM_NAMES}
  _common.check_round1(check, ref, round1)
  assert check["ok"] and check["round1_max_rel_diff"] == 0.0
  round1["embed/kernel"] = round1["embed/kernel"] + 1.0
  _common.check_round1(check, ref, round1)
  assert not check["ok"]
  for k in flat0:
    np.testing.assert_array_equal(flat0[k], ref[f"init/{k}"])
  rates = _common.throughput(peer_w, [0.5, 1.5])   # mean 1 s per round
  assert rates == {"client_updates_per_s": 2.0, "images_per_s": 2 * 1 * 2}
  with pytest.raises(ValueError, match="rounds"):
    _common.load_inputs(parser.parse_args([f"--workload={tmp_path / 'w.json'}", "--rounds=0"]))


def test_engine_model_workload(tmp_path):
  """The real FedFace rows run the engine's own backbone; peers (bench CNNs only) cannot."""
  w = _tiny(model="resnet_small", image_size=(16, 16), embedding_dim=8)
  params = wl.init_params(w)
  emb = wl.workload_model(w).apply({"params": params},
                                   wl.preprocess(wl.synthetic_client_data(w).images[0]))
  assert emb.shape == (3, 8)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  # Seeded: the same workload gives the same init.
  jax.tree.map(np.testing.assert_array_equal, params, wl.init_params(w))
  with pytest.raises(ValueError, match="benchmark CNN"):
    wl.write_reference(tmp_path / "r.npz", w)
  with pytest.raises(ValueError, match="own convolutions"):
    wl.workload_model(w, "patches")
  # The models' im2col option: the same function on the same params.
  x = wl.preprocess(wl.synthetic_client_data(w).images[0])
  np.testing.assert_allclose(wl.workload_model(w, "im2col").apply({"params": params}, x), emb,
                             rtol=1e-4, atol=1e-5)


def test_bare_loop_peer_matches_the_reference(tmp_path, monkeypatch, capsys):
  """scripts/peers/bare_loop_bench.py (plain jax.lax, runs in any venv) reproduces our round.

  It is the same-JAX counterpart of the FedJAX peer; if its CNN, loss, steps or FedAvg weights
  differed from the workload's, round 1 would not match and its row would not be published.
  """
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts" / "peers"))
  import bare_loop_bench  # pylint: disable=g-import-not-at-top
  w = _tiny(local_steps=3, num_clients=3)   # 3 steps of 2 over 3 images: the cyclic batches
  w.save(tmp_path / "w.json")
  wl.write_reference(tmp_path / "ref.npz", w)
  assert bare_loop_bench.main([f"--workload={tmp_path / 'w.json'}", "--rounds=1",
                               f"--reference={tmp_path / 'ref.npz'}"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["check"]["init_max_abs_diff"] == 0.0
  assert out["check"]["round1_max_rel_diff"] < 1e-5 and out["check"]["ok"]
  import _common  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(_common.batch_indices(w.to_dict()), wl.batch_indices(w))
