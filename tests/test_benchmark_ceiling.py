"""The centralised ceiling: every batch size of {8, 32, 128, 512, all}, the best one wins.

Issue 14: a single 800-image batch is the slowest batch size per image on XLA:CPU, so a ceiling
taken there is no ceiling. These tests pin the batch-size set, that a `Centralised` pass is
plain SGD over the pool's batches (per stream), and that the report's ceiling is the best row
at the compared row's stream count, naming the batch size that won.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedface_jax.benchmark import strategies
from fedface_jax.benchmark import workload as wl
from reporting import benchmark_report


def test_batch_sizes_dedupe_and_cap_at_the_pool():
  assert strategies.centralised_batch_sizes((8, 32, 128, 512, 0), 100) == [8, 32, 100]
  assert strategies.centralised_batch_sizes((8, 32, 128, 512, 0), 2000) == [8, 32, 128, 512, 2000]
  # The client's own batch size joins the list (once), capped like the others.
  assert strategies.centralised_batch_sizes((8, 32, 0), 400, client_batch=20) == [8, 20, 32, 400]
  assert strategies.centralised_batch_sizes((8, 32, 0), 400, client_batch=32) == [8, 32, 400]
  assert strategies.centralised_batch_sizes((8, 0), 10, client_batch=20) == [8, 10]
  with pytest.raises(ValueError):
    strategies.centralised_batch_sizes((-1,), 10)
  with pytest.raises(ValueError):
    strategies.centralised_batch_sizes((8,), 0)


def _pool():
  """A tiny workload's images as one pool of 8, their class embeddings, and the initial params."""
  w = wl.Workload(num_clients=4, images_per_client=2, image_size=(8, 8), local_steps=1,
                  batch_size=2, embedding_dim=8, lr=0.5, seed=2)
  data = wl.synthetic_client_data(w)
  images = data.images.reshape((-1, 8, 8, 3))
  embs = np.repeat(data.class_embeddings, 2, axis=0)
  return w, images, embs, wl.init_params(w)


@pytest.mark.parametrize("streams", [1, 2])
def test_centralised_pass_is_sgd_over_the_batches(streams):
  w, images, embs, params = _pool()
  cen = strategies.Centralised(w, params, images, embs, batch=2, streams=streams)
  assert cen.images_per_call == 8 and cen.steps == 4
  got = jax.block_until_ready(cen())
  cen.close()
  assert len(got) == streams
  step = strategies.centralised_step_fn(w)
  for s in range(streams):
    p = jax.tree.map(jnp.copy, params)
    for i in range(s, 4, streams):     # batches are dealt round-robin over the streams
      p = step(p, images[2 * i:2 * i + 2], embs[2 * i:2 * i + 2])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got[s], p)
  # The caller's params are not donated away.
  assert np.isfinite(np.asarray(params["conv1"]["kernel"])).all()


def _cen(batch, ips, streams, pool=1000):
  w = dict(num_clients=100, images_per_client=8, image_size=[32, 32], local_steps=1,
           model="bench_cnn_small")
  return dict(kind="round", strategy="centralised", workload=w, batch=batch, streams=streams,
              images_per_s=ips, batch_is_all=batch == pool)


def test_ceiling_is_the_best_batch_at_the_same_stream_count():
  rows = [_cen(8, 2400.0, 1), _cen(32, 2600.0, 1), _cen(128, 1900.0, 1), _cen(800, 700.0, 1),
          _cen(8, 4000.0, 2), _cen(32, 4300.0, 2), _cen(800, 1300.0, 2)]
  best1 = benchmark_report.pick_ceiling(rows, streams=1)
  best2 = benchmark_report.pick_ceiling(rows, streams=2)
  assert (best1["batch"], best1["images_per_s"]) == (32, 2600.0)
  assert (best2["batch"], best2["images_per_s"]) == (32, 4300.0)
  assert benchmark_report.pick_ceiling(rows)["images_per_s"] == 4300.0
  assert benchmark_report.pick_ceiling(rows, streams=4) is None
  assert "batch 32, 2 streams" in benchmark_report._ceiling_label(best2)


def test_ceiling_takes_the_best_convolution_and_says_which():
  """The baseline at its best setting: im2col rows compete with XLA's, and the label says so."""
  im2col = dict(_cen(8, 2500.0, 1), conv_impl="im2col")
  rows = [_cen(8, 2400.0, 1), _cen(32, 2450.0, 1), im2col, dict(_cen(32, 4000.0, 2),
                                                                conv_impl="im2col")]
  best = benchmark_report.pick_ceiling(rows, streams=1)
  assert best is im2col
  assert benchmark_report._ceiling_label(best) == " (batch 8, 1 stream, im2col)"
  assert benchmark_report._ceiling_label(rows[1]) == " (batch 32, 1 stream)"


def test_centralised_with_im2col_convolutions_is_the_same_sgd():
  w, images, embs, params = _pool()
  got = {}
  for conv in ("lax", "im2col"):
    cen = strategies.Centralised(w, params, images, embs, batch=2, conv_impl=conv)
    got[conv] = jax.block_until_ready(cen())[0]
    cen.close()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               got["im2col"], got["lax"])


@pytest.mark.parametrize("streams", [1, 2])
def test_fused_centralised_pass_equals_one_step_per_call(streams):
  """F batches per call (the ceiling's fused setting) is the same SGD as one batch per call."""
  w, images, embs, params = _pool()
  one = strategies.Centralised(w, params, images, embs, batch=2, streams=streams)
  two = strategies.Centralised(w, params, images, embs, batch=2, streams=streams, fused=2)
  assert (two.calls, two.steps, two.images_per_call) == (2, 4, 8)
  a, b = jax.block_until_ready(one()), jax.block_until_ready(two())
  one.close()
  two.close()
  if streams == 1:   # same batches in the same order: the same params
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a[0], b[0])
  else:              # stream s runs calls s, s+2, ...: batches (2s, 2s+1) in order
    step = strategies.centralised_step_fn(w)
    p = jax.tree.map(jnp.copy, params)
    for i in (0, 1):
      p = step(p, images[2 * i:2 * i + 2], embs[2 * i:2 * i + 2])
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), b[0], p)
  with pytest.raises(ValueError, match="fused steps need"):
    strategies.Centralised(w, params, images, embs, batch=8, fused=2)


def test_ceiling_label_says_fused_steps():
  best = dict(_cen(8, 2500.0, 2), fused_steps=5)
  assert "batch 8, 2 streams, 5 steps per call" in benchmark_report._ceiling_label(best)
