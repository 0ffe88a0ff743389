"""Threat-model algebra, unrolled local training and matching losses of the curious-client attack.

A tiny tanh MLP stands in for the global model: the identities tested here hold for any
differentiable model, and an MLP compiles in a fraction of a second on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.attack import objectives
from fedface_jax.attack import unroll
from fedface_jax.attack import updates

K, B, D_IN, HIDDEN, C = 4, 3, 6, 8, 5


def _mlp_params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "dense1": {
          "kernel": jnp.asarray(rng.normal(size=(D_IN, HIDDEN)) / np.sqrt(D_IN), jnp.float32),
          "bias": jnp.asarray(rng.normal(size=(HIDDEN,)) * 0.1, jnp.float32)},
      "dense2": {
          "kernel": jnp.asarray(rng.normal(size=(HIDDEN, C)) / np.sqrt(HIDDEN), jnp.float32)},
  }


def _ce(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  logits = h @ params["dense2"]["kernel"]
  return jnp.mean(-jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))


def _client_data(seed=1):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(K, B, D_IN)), jnp.float32)
  y = jax.nn.one_hot(rng.integers(0, C, size=(K, B)), C)
  return x, y


_grad = jax.jit(jax.grad(_ce))


def _local_sgd(params, batch, eta, tau):
  """Independent reference: a Python loop of full-batch SGD steps (what a FedAvg client runs)."""
  for _ in range(tau):
    g = _grad(params, batch)
    params = jax.tree.map(lambda p, d: p - eta * d, params, g)
  return params


def _allclose_tree(a, b, rtol=1e-4, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _rel_diff(a, b):
  return float(updates.tree_l2_norm(jax.tree.map(jnp.subtract, a, b)) / updates.tree_l2_norm(b))


def test_fedavg_round_recovery_equal_weights():
  """w_t, w_{t+1} of a simulated FedAvg round give g_bar, and the others' mean after subtraction."""
  w_t = _mlp_params()
  xs, ys = _client_data()
  eta, tau = 0.05, 2
  client_models = [_local_sgd(w_t, (xs[k], ys[k]), eta, tau) for k in range(K)]
  # The server averages client MODELS (FedAvg); the attacker sees only w_t and w_{t+1}.
  w_t1 = jax.tree.map(lambda *ws: sum(ws) / K, *client_models)
  pseudo = [jax.tree.map(lambda a, b: (a - b) / eta, w_t, wk) for wk in client_models]

  g_bar = updates.diluted_update(w_t, w_t1, eta)
  _allclose_tree(g_bar, jax.tree.map(lambda *gs: sum(gs) / K, *pseudo), rtol=2e-3, atol=2e-5)

  attacker = 0
  g_a = updates.client_pseudo_gradient(w_t, client_models[attacker], eta)
  others = updates.remove_own_update(g_bar, g_a, num_clients=K)
  expected = jax.tree.map(lambda *gs: sum(gs) / (K - 1), *pseudo[1:])
  _allclose_tree(others, expected, rtol=5e-3, atol=5e-5)
  # Not subtracting (the "K unknown" option) leaves the attacker's update in: a clearly different
  # target.
  assert _rel_diff(g_bar, expected) > 0.05

  # The recovered update regenerates w_{t+1} through the server step.
  _allclose_tree(updates.server_step(w_t, g_bar, eta), w_t1, rtol=1e-5, atol=1e-6)
  # A wrong eta guess only rescales the target.
  _allclose_tree(updates.diluted_update(w_t, w_t1, 2 * eta), jax.tree.map(lambda g: g / 2, g_bar),
                 rtol=1e-5)


def test_fedavg_round_recovery_weighted():
  """n_k-weighted FedAvg: knowing the weights, the attacker recovers the others' weighted mean."""
  w_t = _mlp_params()
  xs, ys = _client_data()
  eta, tau = 0.05, 1
  n = np.array([1.0, 2.0, 3.0, 4.0])
  p = n / n.sum()
  client_models = [_local_sgd(w_t, (xs[k], ys[k]), eta, tau) for k in range(K)]
  w_t1 = jax.tree.map(lambda *ws: sum(pk * w for pk, w in zip(p, ws)), *client_models)
  grads = [_grad(w_t, (xs[k], ys[k])) for k in range(K)]  # tau=1: pseudo-gradient == gradient

  g_bar = updates.diluted_update(w_t, w_t1, eta)
  _allclose_tree(g_bar, updates.aggregate(grads, weights=n), rtol=2e-3, atol=2e-5)
  attacker = 2
  others = updates.remove_own_update(g_bar, grads[attacker], K, weights=n, attacker_index=attacker)
  keep = [k for k in range(K) if k != attacker]
  expected = jax.tree.map(lambda *gs: sum(n[k] * g for k, g in zip(keep, gs)) / n[keep].sum(),
                          *[grads[k] for k in keep])
  _allclose_tree(others, expected, rtol=5e-3, atol=5e-5)
  # Equal-weight subtraction is wrong here.
  wrong = updates.remove_own_update(g_bar, grads[attacker], K)
  assert _rel_diff(wrong, expected) > 0.02


def test_remove_own_update_rejects_bad_input():
  g = _mlp_params()
  with pytest.raises(ValueError):
    updates.remove_own_update(g, g, num_clients=1)
  with pytest.raises(ValueError):
    updates.remove_own_update(g, g, num_clients=3, weights=[1.0, 2.0])
  with pytest.raises(ValueError):
    updates.remove_own_update(g, g, num_clients=2, weights=[1.0, 0.0], attacker_index=0)
  with pytest.raises(ValueError):
    updates.client_pseudo_gradient(g, g, eta=0.0)


def test_unrolled_pseudograd_matches_python_loop():
  w_t = _mlp_params()
  xs, ys = _client_data()
  batch = (xs[0], ys[0])
  eta = 0.1
  # tau = 1 is the plain gradient.
  _allclose_tree(jax.jit(lambda p, b: unroll.unrolled_pseudograd(_ce, p, b, eta, 1))(w_t, batch),
                 _grad(w_t, batch), rtol=1e-4, atol=1e-6)
  ref = updates.client_pseudo_gradient(w_t, _local_sgd(w_t, batch, eta, 3), eta)
  for remat in (True, False):
    got = jax.jit(lambda p, b, r=remat: unroll.unrolled_pseudograd(_ce, p, b, eta, 3, remat=r))(
        w_t, batch)
    _allclose_tree(got, ref, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError):
    unroll.unrolled_pseudograd(_ce, w_t, batch, eta, 0)


def test_unrolled_momentum_matches_heavy_ball():
  w_t = _mlp_params()
  xs, ys = _client_data()
  batch = (xs[1], ys[1])
  eta, mu = 0.1, 0.9
  params, buf = w_t, jax.tree.map(jnp.zeros_like, w_t)
  for _ in range(3):
    g = _grad(params, batch)
    buf = jax.tree.map(lambda b, d: mu * b + d, buf, g)
    params = jax.tree.map(lambda p, b: p - eta * b, params, buf)
  ref = updates.client_pseudo_gradient(w_t, params, eta)
  got = jax.jit(lambda p, b: unroll.unrolled_pseudograd(_ce, p, b, eta, 3, momentum=mu))(w_t, batch)
  _allclose_tree(got, ref, rtol=1e-4, atol=1e-6)


def test_second_order_gradient_flows_through_unroll_with_and_without_remat():
  """d/dx of the matching loss through tau unrolled steps; remat must not change it."""
  w_t = _mlp_params()
  xs, ys = _client_data()
  target = jax.tree.map(jnp.zeros_like, w_t)

  def attack_loss(x, remat):
    return objectives.l2_matching(
        unroll.unrolled_pseudograd(_ce, w_t, (x, ys[0]), 0.1, 3, remat=remat), target)

  g1 = jax.jit(jax.grad(lambda x: attack_loss(x, True)))(xs[0])
  g2 = jax.jit(jax.grad(lambda x: attack_loss(x, False)))(xs[0])
  assert float(jnp.linalg.norm(g1)) > 1e-4
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4, atol=1e-6)


def _super_client_vs_per_client(params, xs, ys, eta, tau):
  per_client, stacked = unroll.per_client_unrolled_pseudograd(_ce, params, (xs, ys), eta, tau,
                                                              return_per_client=True)
  union = unroll.unrolled_pseudograd(
      _ce, params, (xs.reshape(K * B, D_IN), ys.reshape(K * B, C)), eta, tau)
  return per_client, union, stacked


_super_client_vs_per_client = jax.jit(_super_client_vs_per_client, static_argnames=("tau",))


def test_super_client_identity_tau1_exact_tau3_differs():
  """Equal client sizes: the mean per-client pseudo-gradient == the union's iff tau = 1."""
  w_t = _mlp_params()
  xs, ys = _client_data()
  eta = 0.05
  err1 = _rel_diff(*_super_client_vs_per_client(w_t, xs, ys, eta, 1)[:2])
  per_client3, union3, stacked3 = _super_client_vs_per_client(w_t, xs, ys, eta, 3)
  err3 = _rel_diff(per_client3, union3)
  err3_half_eta = _rel_diff(*_super_client_vs_per_client(w_t, xs, ys, eta / 2, 3)[:2])
  assert err1 < 2e-5, err1                             # float32 round-off only
  assert err3 > max(1e-3, 100 * err1), (err1, err3)   # a real difference ...
  assert err3 < 0.1, err3                              # ... that stays small here (~6%),
  # and shrinks linearly with eta (O(eta^2 tau^2) in parameter space, divided by eta).
  assert 1.6 < err3 / err3_half_eta < 2.4, (err3, err3_half_eta)
  # The per-client path really trains each client on its own batch.
  for k in (0, K - 1):
    _allclose_tree(
        jax.tree.map(lambda s, k=k: s[k], stacked3),
        updates.client_pseudo_gradient(w_t, _local_sgd(w_t, (xs[k], ys[k]), eta, 3), eta),
        rtol=1e-3, atol=1e-5)


def test_per_client_weights():
  w_t = _mlp_params()
  xs, ys = _client_data()
  n = jnp.array([1.0, 1.0, 2.0, 4.0])
  got, stacked = jax.jit(lambda p: unroll.per_client_unrolled_pseudograd(
      _ce, p, (xs, ys), 0.1, 1, weights=n, return_per_client=True))(w_t)
  expected = jax.tree.map(lambda s: jnp.tensordot(n / n.sum(), s, axes=1), stacked)
  _allclose_tree(got, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# Matching losses and TV.
# --------------------------------------------------------------------------------------------------


def test_l2_matching_is_sum_of_squares_over_all_leaves():
  a = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([1.0, -1.0])}
  b = {"w": jnp.array([[0.0, 2.0], [3.0, 2.0]]), "b": jnp.array([0.0, 1.0])}
  assert float(objectives.l2_matching(a, b)) == pytest.approx(1 + 4 + 1 + 4)
  with pytest.raises(ValueError):
    objectives.l2_matching(a, {"w": a["w"]})


def test_cosine_matching_global_and_per_layer():
  a = {"u": jnp.array([1.0, 0.0]), "v": jnp.array([0.0, 2.0, 0.0])}
  b = {"u": jnp.array([1.0, 0.0]), "v": jnp.array([0.0, 0.0, 3.0])}
  # Global: dot 1, |a| = sqrt(5), |b| = sqrt(10).
  assert float(objectives.cosine_matching(a, b)) == pytest.approx(1 - 1 / np.sqrt(50), rel=1e-6)
  # Per layer: u identical (0) + v orthogonal (1).
  assert float(objectives.cosine_matching(a, b, per_layer=True)) == pytest.approx(1.0, rel=1e-6)
  scaled = jax.tree.map(lambda x: 7.0 * x, b)
  assert float(objectives.cosine_matching(a, scaled)) == pytest.approx(
      float(objectives.cosine_matching(a, b)), rel=1e-6)
  assert float(objectives.cosine_matching(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_total_variation_hand_value():
  x = np.zeros((1, 2, 3, 1), np.float32)
  x[0, :, 2, 0] = 1.0          # a vertical edge between columns 1 and 2
  x[0, 1, 0, 0] = 2.0          # one bright pixel
  # |dx| terms (2 rows x 2): row0 [0, 1], row1 [2, 1] -> mean 1.0;
  # |dy| terms (1 x 3): [2, 0, 0] -> mean 2/3.
  assert float(objectives.total_variation(jnp.asarray(x))) == pytest.approx(1.0 + 2.0 / 3.0,
                                                                            rel=1e-6)
