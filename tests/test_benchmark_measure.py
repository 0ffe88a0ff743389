"""Tests of the benchmark's measurement helpers and execution strategies.

A throughput table is only worth reading if every strategy computes the same round and the
FLOP counts are real: the engine round (1 and 8 devices) must give `sequential_round`'s update,
and the cost analysis must return positive FLOPs that scale with the batch.
"""

import time

import jax
import numpy as np
import pytest

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
  got["vmap_1dev_patchconv"] = strategies.engine_round_params(
      w, data, sh.make_mesh(data=1, devices=devices[:1]), chunk=4, conv_impl="patches")
  got["vmap_1dev_im2col"] = strategies.engine_round_params(
      w, data, sh.make_mesh(data=1, devices=devices[:1]), chunk=4, conv_impl="im2col")
  if len(devices) >= 4:
    got["shard_4dev"] = strategies.engine_round_params(
        w, data, sh.make_mesh(data=4, devices=devices[:4]), chunk=2)
  for name, p in got.items():
    jax.tree.map(lambda g, e, name=name: np.testing.assert_allclose(
        g, e, rtol=2e-4, atol=2e-6, err_msg=name), p, want)


def test_spread_is_median_and_interquartile_range():
  sp = measure.spread([4.0, 1.0, 3.0, 2.0, 100.0])
  assert sp == {"n": 5, "median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0}
  # Rates of 10 clients at 1, 2, 2, 4, 4 s: 10, 5, 5, 2.5, 2.5 -> median 5 [2.5, 5].
  r = measure.rate_spread(10, [1.0, 2.0, 2.0, 4.0, 4.0])
  assert (r["median"], r["q1"], r["q3"]) == (5.0, 2.5, 5.0)
  for bad in ([], [float("nan")]):
    with pytest.raises(ValueError):
      measure.spread(bad)
  with pytest.raises(ValueError):
    measure.rate_spread(1, [0.0])


def test_timed_reps_min_reps_then_more_for_fast_rows():
  calls = []
  assert len(measure.timed_reps(lambda: calls.append(1), min_reps=5)) == 5
  # A fast row gets repetitions until min_total_s, capped at max_reps.
  times = measure.timed_reps(lambda: time.sleep(0.01), min_reps=2, min_total_s=0.06,
                             max_reps=20)
  assert 5 <= len(times) <= 8 and sum(times) >= 0.06
  assert len(measure.timed_reps(lambda: 1, min_reps=3, min_total_s=100.0, max_reps=4)) == 4
  with pytest.raises(ValueError):
    measure.timed_reps(lambda: 1, min_reps=0)
