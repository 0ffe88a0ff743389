"""Tests of the benchmark's measurement helpers and execution strategies.

A throughput table is only worth reading if every strategy computes the same round and the
FLOP counts are real: the engine round (1 and 8 devices) must give `sequential_round`'s update,
and the cost analysis must return positive FLOPs that scale with the batch.
"""

import jax
import numpy as np

from fedface_jax import sharding as sh
from fedface_jax.benchmark import measure
from fedface_jax.benchmark import strategies
from fedface_jax.benchmark import workload as wl


def _tiny(**kw):
  base = dict(num_clients=8, images_per_client=3, image_size=(8, 8), local_steps=2,
              batch_size=3, model="bench_cnn_small", embedding_dim=8, lr=0.5, seed=1)
  base.update(kw)
  return wl.Workload(**base)


def test_cost_analysis_flops_positive_and_scale_with_batch():
  w = _tiny()
  params = wl.init_params(w)
  data = wl.synthetic_client_data(w)
  step = strategies.client_step_fn(w)
  c1, _, compile_s = measure.lower_and_compile(step, params, data.images[0],
                                               data.class_embeddings[0])
  f1 = measure.compiled_flops(c1)
  imgs = np.concatenate([data.images[0], data.images[1]])
  f2 = measure.compiled_flops(step.lower(params, imgs, data.class_embeddings[0]).compile())
  assert f1 > 0 and compile_s >= 0
  assert 1.6 < f2 / f1 < 2.4     # twice the images, about twice the work


def test_memory_and_peak_helpers():
  measure.reset_peak_rss()
  assert measure.peak_rss_bytes() > 10 * 2**20
  assert measure.device_memory() is None or measure.device_memory()["bytes_in_use"] >= 0
  assert measure.peak_matmul_flops(size=64, reps=2) > 0
  assert len(measure.time_calls(lambda: 1, reps=3)) == 3
  assert len(measure.load_average()) == 3


def test_patch_conv_matches_lax_conv():
  w = _tiny()
  params = wl.init_params(w)
  x = wl.preprocess(wl.synthetic_client_data(w).images[0])
  a = wl.workload_model(w, "lax").apply({"params": params}, x)
  b = wl.workload_model(w, "patches").apply({"params": params}, x)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_strategies_give_the_same_aggregated_update():
  w = _tiny(num_clients=6)
  data = wl.synthetic_client_data(w)
  params = wl.init_params(w)
  want = wl.sequential_round(params, data, w)
  # Sequential thunk (the benchmark's loop) = weighted sum; divide by the total weight.
  total = w.num_clients * w.images_per_client
  # (`sequential_updates` jits the same client function as `sequential_round` itself.)
  acc = strategies.sequential_steps(w, params, data, w.num_clients)()
  got = {"sequential_steps": jax.tree.map(lambda a: a / total, acc)}
  devices = jax.devices()
  # 6 clients: 1 device = scan over 2 chunks of 4 (2 padding slots); 4 devices = 2 slots
  # each (2 padding slots), so padding, chunking and the cross-device psum are all covered.
  got["vmap_1dev_padded"] = strategies.engine_round_params(
      w, data, sh.make_mesh(data=1, devices=devices[:1]), chunk=4)
  got["host_loop_1dev"] = strategies.engine_round_params(
      w, data, sh.make_mesh(data=1, devices=devices[:1]), chunk=1, conv_impl="lax",
      execution="host_loop")
  if len(devices) >= 4:
    got["shard_4dev"] = strategies.engine_round_params(
        w, data, sh.make_mesh(data=4, devices=devices[:4]), chunk=2)
  for name, p in got.items():
    jax.tree.map(lambda g, e, name=name: np.testing.assert_allclose(
        g, e, rtol=2e-4, atol=2e-6, err_msg=name), p, want)
