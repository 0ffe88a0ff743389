"""End-to-end gradient inversion on tiny models, the reference LeNet, the bicubic parametrisation.

The attacks are run at toy scale (16x16 images, 2-4 images, tau = 1, a few dozen iterations). They
must lower their matching loss, and the paper-faithful one must beat random images on PSNR by a wide
margin.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from fedface_jax.attack import inversion
from fedface_jax.attack import lenet
from fedface_jax.attack import metrics
from fedface_jax.attack import objectives
from fedface_jax.attack import optimise
from fedface_jax.attack import unroll

# --------------------------------------------------------------------------------------------------
# Bicubic upsampling = torch.nn.functional.interpolate(mode="bicubic", align_corners=False)
# --------------------------------------------------------------------------------------------------


def _torch_bicubic_1d_weights(in_size, out_size, a=-0.75):
  """Independent port of ATen's upsample_bicubic2d index/weights (align_corners=False)."""

  def cubic(x):
    x = abs(x)
    if x <= 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
      return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0

  scale = in_size / out_size
  m = np.zeros((out_size, in_size))
  for o in range(out_size):
    src = (o + 0.5) * scale - 0.5
    i0 = int(np.floor(src))
    t = src - i0
    for k, d in zip(range(i0 - 1, i0 + 3), (1 + t, t, 1 - t, 2 - t)):
      m[o, min(max(k, 0), in_size - 1)] += cubic(d)   # ATen clamps the source index at the border
  return m


def test_upsample_is_torch_bicubic():
  z = np.random.default_rng(0).uniform(size=(2, 4, 5, 3)).astype(np.float32)
  wh, ww = _torch_bicubic_1d_weights(4, 12), _torch_bicubic_1d_weights(5, 15)
  expected = np.einsum("ph,qw,nhwc->npqc", wh, ww, z)
  got = np.asarray(inversion.upsample(jnp.asarray(z), 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # The pitfall the implementation avoids: with antialias=True JAX silently uses the A=-0.5 kernel.
  keys = np.asarray(
      jax.image.resize(jnp.asarray(z), (2, 12, 15, 3), "bicubic-pytorch", antialias=True))
  assert np.abs(keys - expected).max() > 1e-3
  np.testing.assert_array_equal(inversion.nearest_upsample(z, 2)[:, ::2, ::2], z)


# --------------------------------------------------------------------------------------------------
# The reference LeNet
# --------------------------------------------------------------------------------------------------


def test_lenet_shapes_and_parameter_count():
  shapes = jax.eval_shape(lenet.LeNet5(1000).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 128, 128, 3)))["params"]
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert n == 3 * 25 * 32 + 32 + 32 * 25 * 64 + 64 + 65536 * 512 + 512 * 1000   # ~34.1M
  assert shapes["fc1"]["kernel"].shape == (65536, 512) and "bias" not in shapes["fc1"]
  assert "bias" not in shapes["fc2"]


def test_lenet_torch_default_init_bounds():
  _, params = lenet.init_lenet(jax.random.PRNGKey(0), 16, num_classes=10)
  fan_in = {"conv1": 75, "conv2": 800, "fc1": 64 * 4 * 4, "fc2": 512}
  for layer, leaves in params.items():
    bound = 1 / np.sqrt(fan_in[layer])
    for name, value in leaves.items():
      v = np.asarray(value)
      assert np.abs(v).max() <= bound, (layer, name)
      if v.size >= 512:   # uniform: std = bound / sqrt(3), and the bound is nearly reached
        assert v.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), (layer, name)
        assert np.abs(v).max() > 0.95 * bound
  k = np.asarray(lenet.torch_default_kernel_init()(jax.random.PRNGKey(1), (5, 5, 3, 64)))
  assert (np.abs(k).max() <= 1 / np.sqrt(75)
          and k.std() == pytest.approx(1 / np.sqrt(75 * 3), rel=0.1))


# --------------------------------------------------------------------------------------------------
# Paper-faithful and Inverting-Gradients attacks on a tiny LeNet
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_case():
  """2 victim images of 16x16 (bicubic x2 of 8x8 noise) with labels, and their pseudo-gradient."""
  model, params = lenet.init_lenet(jax.random.PRNGKey(0), 16, num_classes=10)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  low = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
  images = np.clip(np.asarray(inversion.upsample(jnp.asarray(low), 2)), 0.0, 1.0)
  labels = inversion.onehot(np.array([3, 7]), 10)
  loss = lambda p, b: inversion.cross_entropy_onehot(apply_fn(p, b[0]), b[1])
  target = jax.jit(lambda p, x: unroll.unrolled_pseudograd(loss, p, (x, labels), 0.003, 1))(
      params, images)
  return apply_fn, params, images, labels, target


def test_paper_faithful_attack_lowers_loss_and_beats_random(lenet_case):
  apply_fn, params, images, labels, target = lenet_case
  c = inversion.paper_faithful_config()
  c.image_size, c.sf, c.tau, c.iterations, c.num_classes = 16, 2, 1, 40, 10
  r = inversion.invert_paper_faithful(apply_fn, params, target, labels, c, progress=False)
  assert r.images.shape == (2, 16, 16, 3) and r.latent.shape == (2, 8, 8, 3)
  assert r.extras["reference_eval"].shape == (2, 16, 16, 3)
  assert r.loss_history.shape == (40,)
  assert r.final_loss < 0.25 * r.loss_history[0], r.loss_history
  # The same U[0,1) init the attack starts from, upsampled, is the random baseline.
  rand = np.clip(np.asarray(inversion.upsample(
      jax.random.uniform(jax.random.PRNGKey(c.seed), (2, 8, 8, 3)), 2)), 0, 1)
  psnr_rec, psnr_rand = metrics.psnr(images, r.images), metrics.psnr(images, rand)
  assert psnr_rec.mean() > psnr_rand.mean() + 8.0, (psnr_rec, psnr_rand)
  assert set(r.timing) >= {"total_s", "first_chunk_s", "per_iteration_s"}


def test_host_and_scan_loops_and_unrolled_steps_agree(lenet_case):
  """The CPU fast paths (host loop, unrolled local steps) run the same iterations as the scans."""
  apply_fn, params, images, labels, target = lenet_case
  loss = lambda p, b: inversion.cross_entropy_onehot(apply_fn(p, b[0]), b[1])
  rolled, unrolled = (
      jax.jit(lambda p, x, u=u: unroll.unrolled_pseudograd(loss, p, (x, labels), 0.003, 3,
                                                             unroll=u))(params, images)
      for u in (False, True))
  for a, b in zip(jax.tree.leaves(rolled), jax.tree.leaves(unrolled)):
    # (w0 - w_tau) / eta: float32 rounding of w is amplified by 1 / eta, so compare in norm.
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b)

  def objective(z, aux):
    g = unroll.unrolled_pseudograd(loss, params, (inversion.upsample(z, 2), labels), 0.003, 2)
    m = objectives.l2_matching(g, aux["target"])
    return m, {"matching": m}

  z0 = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
  outs = [optimise.Runner(objective, optax.adam(0.05), loop=loop).run(
      z0, {"target": target}, iterations=7, chunk=3, progress=False) for loop in ("scan", "host")]
  np.testing.assert_allclose(outs[0].loss_history, outs[1].loss_history, rtol=1e-4)
  np.testing.assert_allclose(outs[0].variables, outs[1].variables, rtol=1e-4, atol=1e-6)
  assert outs[0].final_matching == pytest.approx(outs[1].final_matching, rel=1e-4)
  assert outs[1].loss_history[-1] < outs[1].loss_history[0]
  with pytest.raises(ValueError, match="loop must be one of"):
    optimise.Runner(objective, optax.adam(0.05), loop="python")


def test_inverting_gradients_attack_restarts_and_box(lenet_case):
  apply_fn, params, _, labels, target = lenet_case
  c = inversion.inverting_gradients_config()
  c.image_size, c.iterations, c.restarts, c.tv_weight, c.chunk = 16, 20, 2, 1e-2, 10
  c.remat = False   # compiles faster; remat itself is tested in test_attack_updates.py
  r = inversion.invert_inverting_gradients(apply_fn, params, target, labels, c, progress=False)
  assert r.images.shape == (2, 16, 16, 3)
  assert r.latent.min() >= 0.0 and r.latent.max() <= 1.0   # projected every step
  scores = r.extras["restart_scores"]
  assert scores.shape == (2,) and r.extras["best_restart"] == int(np.argmin(scores))
  assert r.final_matching == pytest.approx(scores.min())
  for hist in r.extras["restart_loss_histories"]:
    assert hist[-1] < hist[0]
  assert r.final_matching < r.matching_history[0]


# --------------------------------------------------------------------------------------------------
# FedFace: positive-only victims, class embeddings hidden from the attacker
# --------------------------------------------------------------------------------------------------


class _TinyEmbedder(nn.Module):
  """A minimal conv face-embedding net: conv, ReLU, 2x2 average pool, dense 16, L2 normalisation."""

  @nn.compact
  def __call__(self, x):
    x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), (2, 2))
    x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _fast_init(module, key, x):
  """Normal(0, 1/fan_in) kernels and small biases from ONE draw (threefry compiles are slow)."""
  shapes = jax.eval_shape(module.init, key, x)["params"]
  leaves, treedef = jax.tree.flatten(shapes)
  sizes = [int(np.prod(s.shape)) for s in leaves]
  flat = jax.random.normal(key, (sum(sizes),))
  out, o = [], 0
  for s, n in zip(leaves, sizes):
    scale = 1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    out.append((flat[o:o + n] * scale).reshape(s.shape))
    o += n
  return jax.tree.unflatten(treedef, out)


def test_fedface_mean_feature_attack_lowers_loss():
  num_victims, per_victim = 2, 2
  model = _TinyEmbedder()
  params = _fast_init(model, jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  rng = np.random.default_rng(0)
  low = rng.uniform(size=(num_victims * per_victim, 8, 8, 3)).astype(np.float32)
  images = np.clip(np.asarray(inversion.upsample(jnp.asarray(low), 2)), 0.0, 1.0)
  # The server's class embeddings.
  hidden = jnp.asarray(rng.normal(size=(num_victims, 16)), jnp.float32)

  def victim_loss(p, batch):
    x, w = batch
    return inversion.positive_only_hinge(apply_fn(p, x), w, 0.9)

  # Honest victims: each trains on its own images against its own class embedding; the server
  # averages.
  xin = inversion.fedface_input(jnp.asarray(images)).reshape(num_victims, per_victim, 16, 16, 3)
  target = jax.jit(lambda p: unroll.per_client_unrolled_pseudograd(
      victim_loss, p, (xin, hidden), 0.01, 1))(params)

  c = inversion.fedface_attack_config()
  c.image_size, c.sf, c.iterations, c.tau, c.eta = 16, 2, 30, 1, 0.01
  c.remat = False   # compiles faster; remat itself is tested in test_attack_updates.py
  with pytest.raises(ValueError):
    inversion.invert_fedface(apply_fn, params, target, num_victims=2, images_per_victim=2, config=c,
                             class_embedding_mode="known", progress=False)
  r = inversion.invert_fedface(apply_fn, params, target, num_victims=num_victims,
                               images_per_victim=per_victim, config=c,
                               class_embedding_mode="mean_feature", progress=False)
  assert r.images.shape == (4, 16, 16, 3)
  assert r.final_loss < 0.6 * r.loss_history[0], r.loss_history
  np.testing.assert_array_equal(r.extras["victim_index"], [0, 0, 1, 1])
  ce = r.extras["class_embeddings"]
  assert ce.shape == (2, 16)
  np.testing.assert_allclose(np.linalg.norm(ce, axis=1), 1.0, rtol=1e-5)
  # A given start (the public-face init) replaces the random draw: handed the very draw the
  # default makes, the attack is the same; a wrong shape is refused.
  c.iterations = 3
  run = lambda **kw: inversion.invert_fedface(
      apply_fn, params, target, num_victims=2, images_per_victim=2, config=c,
      class_embedding_mode="mean_feature", progress=False, **kw)
  draw = jax.random.uniform(jax.random.key(c.seed), (4, 8, 8, 3), jnp.float32)
  default, given = run(), run(init_latent=np.asarray(draw))
  np.testing.assert_allclose(given.latent, default.latent, rtol=1e-5, atol=1e-6)
  assert np.abs(given.latent - np.asarray(draw)).max() > 1e-3   # and it moved from the start
  start = draw
  with pytest.raises(ValueError, match="latent's shape"):
    inversion.invert_fedface(apply_fn, params, target, num_victims=2, images_per_victim=2,
                             config=c, class_embedding_mode="mean_feature", progress=False,
                             init_latent=start[:2])


def test_public_init_latent_uses_one_public_identity_per_slot():
  from experiments import common  # pylint: disable=g-import-not-at-top
  from fedface_jax.attack import pipeline  # pylint: disable=g-import-not-at-top
  from fedface_jax.data.faces import FaceArrays  # pylint: disable=g-import-not-at-top
  labels = np.repeat(np.arange(5), [3, 1, 4, 2, 3]).astype(np.int32)
  # Every photo is filled with its identity's value: the slots' identities can be read back.
  images = np.repeat(labels * 40, 32 * 32 * 3).reshape(-1, 32, 32, 3).astype(np.uint8)
  public = FaceArrays(images, labels, tuple(f"p{i}" for i in range(5)))
  config = mlc.ConfigDict({"attack": common.attack_section(images_per_client=2, sf=2,
                                                           attack_seed=3)})
  z = pipeline.public_init_latent(config, public, num_slots=3, image_size=32)
  assert z.shape == (6, 16, 16, 3) and z.dtype == np.float32
  slot_ids = np.round(z[:, 0, 0, 0] * 255 / 40).astype(int).reshape(3, 2)
  assert (slot_ids[:, 0] == slot_ids[:, 1]).all() and len(set(slot_ids[:, 0])) == 3
  np.testing.assert_array_equal(z, pipeline.public_init_latent(config, public, 3, 32))
  with pytest.raises(ValueError, match="public"):
    pipeline.public_init_latent(config, public, num_slots=6, image_size=32)


@pytest.mark.parametrize("hidden_is_mean_feature", [True, False])
def test_class_embedding_identifiability_on_the_truth(hidden_is_mean_feature):
  """The update is modelled exactly at the truth; the mean-feature guess is exact only when the
  server's rows are the images' mean features, and fitting w to the update improves on it."""
  from fedface_jax.attack import identifiability  # pylint: disable=g-import-not-at-top
  num_victims, per_victim = 2, 3
  model = _TinyEmbedder()
  params = _fast_init(model, jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(num_victims * per_victim, 16, 16, 3)).astype(np.float32)
  xin = inversion.fedface_input(jnp.asarray(images))
  if hidden_is_mean_feature:
    e = apply_fn(params, xin)
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    hidden = e.reshape(num_victims, per_victim, -1).mean(axis=1)
  else:
    hidden = jnp.asarray(rng.normal(size=(num_victims, 16)), jnp.float32)
  loss = lambda p, batch: inversion.positive_only_hinge(apply_fn(p, batch[0]), batch[1], 0.5)
  target = unroll.per_client_unrolled_pseudograd(
      loss, params, (xin.reshape(num_victims, per_victim, 16, 16, 3), hidden), 0.01, 1)
  out = identifiability.class_embedding_identifiability(
      apply_fn, params, target, xin, np.asarray(hidden), eta=0.01, tau=1, margin=0.5,
      client_loss_fn=inversion.positive_only_hinge, init_images_in=xin, iterations=60,
      matching_fn=objectives.l2_matching)
  assert out["residual_true"] < 1e-4
  # The attack objective's floor: ~0 at the truth, and the residual's square in target units.
  assert out["matching_true"] < 1e-8 * max(1.0, out["target_norm"] ** 2)
  np.testing.assert_allclose(out["matching_mean_feature"],
                             (out["residual_mean_feature"] * out["target_norm"]) ** 2,
                             rtol=1e-3, atol=1e-12)
  assert len(out["cos_mean_feature"]) == num_victims
  if hidden_is_mean_feature:
    assert min(out["cos_mean_feature"]) > 0.9999 and out["residual_mean_feature"] < 1e-4
  else:
    assert max(out["cos_mean_feature"]) < 0.9 and out["residual_mean_feature"] > 0.1
    assert out["residual_recovered"] < 0.5 * out["residual_mean_feature"]
    assert np.mean(out["cos_recovered"]) > np.mean(out["cos_mean_feature"])
  for key in ("inside_margin_true", "inside_margin_mean_feature", "inside_margin_init"):
    assert 0.0 <= out[key] <= 1.0
