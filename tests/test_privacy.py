"""DP-FedAvg in the compiled round (clipping, server noise, device invariance) and
the epsilon accountant."""

import math

from dp_accounting import dp_event
from dp_accounting import rdp
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.data.faces import FaceArrays
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import run as run_lib
from fedface_jax.federated import client_update as cu
from fedface_jax.federated import privacy
from fedface_jax.federated import rounds
from tests import federated_fixtures as ff


def _equal_faces(num_ids=10, per_id=4, size=16, seed=0):
  """Every client has the same number of photos, so image weights = equal weights."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  images = rng.integers(0, 256, (labels.size, size, size, 3), dtype=np.uint8)
  return FaceArrays(images, labels, tuple(f"id{i}" for i in range(num_ids)))


def _dp_cfg(method="fedface_nosp", enabled=True, clip=1.0, z=0.0, secure=False):
  cfg = ff.tiny_cfg(method)
  cfg.dp.enabled = enabled
  cfg.dp.clip_norm = clip
  cfg.dp.noise_multiplier = z
  cfg.secure_aggregation = secure
  return alg_lib.apply_method(cfg)


def _run(mesh, cfg, rounds_=1, faces=None):
  faces = _equal_faces() if faces is None else faces
  model = ff.tiny_model()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  algo = run_lib.build_run(cfg, model, faces, mesh)
  state = algo.init(params0, jax.random.key(1))
  metrics = []
  for r in range(rounds_):
    state, m, _ = algo.apply(state, r)
    metrics.append(jax.device_get(m))
  return params0, jax.device_get(state), metrics, algo


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_clipping_bounds_every_client(monkeypatch):
  """Client k's delta is c_k * ones; one client's is huge. Each is clipped to S."""
  dim, scales = 50, np.array([0.01, 0.5, 1e6, 0.2, 3.0, 0.0, 0.05, 2.0], np.float32)

  def fake_make_local_update(apply_fn, cfg, max_images, unroll_loops="off",
                             class_embedding="frozen", hooks=None):
    del apply_fn, cfg, max_images, unroll_loops, class_embedding, hooks
    def update(params, class_emb, images, num_images, rng, public=None, stored=None,
               broadcast=None):
      del images, rng, public, broadcast
      c = jnp.asarray(scales)[num_images - 1]          # client k has k + 1 images
      delta = jax.tree.map(lambda p: jnp.full_like(p, c), params)
      return cu.LocalResult(delta, class_emb, {"loss_first": 0.0 * c, "loss_last": 0.0 * c,
                                               "inside_margin": 0.0 * c}, {}, stored)
    return update

  monkeypatch.setattr(cu, "make_local_update", fake_make_local_update)
  clip = 1.0
  cfg = _dp_cfg(clip=clip, z=0.0)
  cfg.clients_per_chunk = 1
  mesh = sh.make_mesh(4, 2, jax.devices()[:8])
  phase = rounds.make_clients_phase(None, cfg, mesh, max_images=1)
  m = len(scales)
  params = {"w": jnp.zeros((dim,))}
  cl = rounds.client_sharding(mesh)
  put = lambda x: jax.device_put(x, cl)
  sums, outputs = jax.jit(phase)(rounds.RoundInputs(
      params=params, rows=put(jnp.zeros((m, 4))),
      images=put(jnp.zeros((m, 1, 2, 2, 3), jnp.uint8)),
      num_images=put(jnp.arange(1, m + 1, dtype=jnp.int32)),
      keys=put(jax.random.key_data(jax.random.split(jax.random.key(0), m))),
      poison=put(jnp.zeros(m, bool)), participants=jnp.arange(m, dtype=jnp.int32),
      sa_key=jax.random.key_data(jax.random.key(1)), public=jnp.zeros((0, 4)),
      client_state={}, broadcast={}))
  delta_sum, weight_sum = sums.delta_sum, sums.weight_sum
  valid, norms = outputs.valid, outputs.delta_norm
  true_norms = scales * np.sqrt(dim)
  np.testing.assert_allclose(norms, true_norms, rtol=1e-5)
  expected = np.sum(scales * np.minimum(1.0, clip / np.maximum(true_norms, 1e-30)))
  np.testing.assert_allclose(delta_sum["w"], np.full(dim, expected), rtol=1e-5)
  # The 1e6 client contributes exactly norm S, no more.
  assert float(weight_sum) == m and bool(np.all(valid))
  assert float(np.linalg.norm(delta_sum["w"])) <= m * clip + 1e-4


def test_zero_noise_infinite_clip_equals_plain_round():
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  _, s_plain, m_plain, _ = _run(mesh, _dp_cfg(enabled=False))
  _, s_dp, m_dp, _ = _run(mesh, _dp_cfg(clip=math.inf, z=0.0))
  assert _max_diff(s_plain["params"], s_dp["params"]) < 1e-6
  assert m_dp[0]["dp_clip_fraction"] == 0 and m_dp[0]["dp_noise_std"] == 0
  assert "dp_clip_fraction" not in m_plain[0]


def test_dp_round_same_on_one_and_eight_devices_with_secure_aggregation():
  """Noise is drawn at the server after the psum: the device count does not matter,
  nor does masking the uploads (8-device side) change the noisy average."""
  clip, z = 1e-3, 1.0
  s1 = _run(sh.make_mesh(1, 1, jax.devices()[:1]), _dp_cfg(clip=clip, z=z), rounds_=2)
  s8 = _run(sh.make_mesh(4, 2, jax.devices()[:8]), _dp_cfg(clip=clip, z=z, secure=True),
            rounds_=2)
  (p0, st1, m1, _), (_, st8, m8, _) = s1, s8
  assert _max_diff(st1["params"], st8["params"]) < 2e-5
  for k in ("dp_clip_fraction", "dp_noise_std", "dp_delta_norm_mean", "clients_valid"):
    np.testing.assert_allclose(m1[-1][k], m8[-1][k], rtol=1e-4)
  np.testing.assert_allclose(m1[-1]["dp_noise_std"], z * clip / 8, rtol=1e-6)
  assert m1[-1]["dp_clip_fraction"] > 0        # S below the typical delta norm
  assert _max_diff(p0, st1["params"]) > 0


def test_noise_std_matches_z_s_over_k():
  """With S tiny and z huge the update is almost pure noise of std z S / K."""
  clip, z, k = 1e-5, 2000.0, 8
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  p0, s1, m, _ = _run(mesh, _dp_cfg(clip=clip, z=z))
  diff = np.concatenate([np.ravel(np.asarray(b) - np.asarray(a)) for a, b in
                         zip(jax.tree.leaves(p0), jax.tree.leaves(s1["params"]))])
  expected = z * clip / k
  assert diff.size > 500
  np.testing.assert_allclose(diff.std(), expected, rtol=0.1)
  assert abs(diff.mean()) < 4 * expected / np.sqrt(diff.size)
  np.testing.assert_allclose(m[0]["dp_noise_std"], expected, rtol=1e-6)
  assert 0 <= m[0]["dp_clip_fraction"] <= 1   # clients with a zero loss have delta 0


def test_epsilon_matches_dp_accounting_and_is_monotone():
  q, steps, delta = 0.05, 200, 1e-5
  acct = rdp.RdpAccountant(orders=privacy.RDP_ORDERS)
  acct.compose(dp_event.SelfComposedDpEvent(
      dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(1.1)), steps))
  assert privacy.compute_epsilon(1.1, q, steps, delta) == pytest.approx(
      acct.get_epsilon(delta), rel=1e-9)
  eps_z = [privacy.compute_epsilon(z, q, steps, delta) for z in (0.7, 1.0, 2.0, 4.0)]
  assert all(a > b for a, b in zip(eps_z, eps_z[1:]))
  eps_t = [privacy.compute_epsilon(1.0, q, t, delta) for t in (10, 100, 1000)]
  assert all(a < b for a, b in zip(eps_t, eps_t[1:]))
  assert privacy.compute_epsilon(0.0, q, steps, delta) == math.inf
  assert privacy.compute_epsilon(1.0, q, 0, delta) == 0.0
  # PLD is tighter than (or equal to) RDP.
  assert privacy.compute_epsilon(1.0, q, 100, delta, "pld") <= (
      privacy.compute_epsilon(1.0, q, 100, delta) * 1.01)
  z = privacy.noise_for_epsilon(2.0, q, steps, delta)
  assert privacy.compute_epsilon(z, q, steps, delta) == pytest.approx(2.0, rel=1e-2)
  with pytest.raises(ValueError):
    privacy.compute_epsilon(1.0, 1.5, steps, delta)


def test_run_epsilon_from_config():
  fcfg = mlc.ConfigDict(dict(clients_per_round=10, dp=dict(
      enabled=True, clip_norm=1.0, noise_multiplier=1.0, delta=0.0, accounting="rdp")))
  out = privacy.run_epsilon(fcfg, num_clients=100, rounds_done=20)
  assert out["privacy/delta"] == pytest.approx(100 ** -1.1)
  assert out["privacy/epsilon"] == pytest.approx(
      privacy.compute_epsilon(1.0, 0.1, 20, 100 ** -1.1))
  fcfg.dp.enabled = False
  assert not privacy.run_epsilon(fcfg, 100, 20)
  with pytest.raises(ValueError, match="unknown federated.dp"):
    cfg = ff.tiny_cfg()
    cfg.dp.clip = 1.0
    alg_lib.apply_method(cfg)
