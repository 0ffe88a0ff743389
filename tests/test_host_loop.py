"""The host-loop round (`federated.execution="host_loop"`) equals the compiled round.

Both are built from the same client and server pieces; these tests catch any drift between
the two loop structures (step order, keys, weights, NaN exclusion, DP, masks, variable steps).
"""

import jax
import numpy as np
import pytest

from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import host_loop
from fedface_jax.federated import loops
from tests import federated_fixtures as ff


def _run(cfg, execution, streams=2, rounds=2, poison=(), fused=1):
  c = alg_lib.apply_method(cfg)
  c.execution = execution
  c.host_loop_streams = streams
  c.host_loop_fused_steps = fused
  return ff.run_rounds(sh.make_mesh(1, 1, jax.devices()[:1]), c, rounds=rounds, poison=poison)


def _both(cfg, rounds=2, poison=()):
  """(compiled run, host-loop run with 2 concurrent client streams)."""
  return (_run(cfg, "compiled", rounds=rounds, poison=poison),
          _run(cfg, "host_loop", rounds=rounds, poison=poison))


def _assert_same_run(a, b, rtol=1e-4, atol=2e-5):
  (sa_, ma, _), (sb, mb, _) = a, b
  for x, y in zip(jax.tree.leaves(sa_), jax.tree.leaves(sb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
  for ra, rb in zip(ma, mb):
    assert ra.keys() == rb.keys()
    for k in ra:
      np.testing.assert_allclose(np.asarray(ra[k]), np.asarray(rb[k]), rtol=rtol, atol=atol,
                                 err_msg=k)


@pytest.mark.parametrize("method", ["fedface", "fedaws"])
def test_host_loop_equals_compiled_round(method):
  compiled, host = _both(ff.tiny_cfg(method))
  _assert_same_run(compiled, host)
  assert float(host[1][-1]["update_norm"]) > 0 and host[1][-1]["clients_valid"] == 8


def test_host_loop_dp_and_secure_aggregation_equal_compiled():
  cfg = ff.tiny_cfg("fedface_nosp")
  cfg.dp.enabled, cfg.dp.clip_norm, cfg.dp.noise_multiplier = True, 1e-3, 1.0
  cfg.secure_aggregation = True
  compiled, host = _both(cfg)
  # Masks of std 1 cancel to float rounding in either summation order.
  _assert_same_run(compiled, host, atol=5e-5)
  assert 0 < host[1][0]["dp_clip_fraction"] <= 1


def test_host_loop_runs_each_clients_own_steps_in_local_epochs_mode():
  cfg = ff.tiny_cfg("fedface_nosp")
  cfg.client.local_epochs = 1        # clients of 3 and 4 images: 1 and 2 steps of batch 3
  cfg.clients_per_round = 11         # every client, including the 3-image one
  compiled, host = _both(cfg, rounds=1)
  _assert_same_run(compiled, host)


def test_host_loop_streams_are_deterministic_and_agree():
  """Threads finish in any order; the merged round must not depend on it."""
  cfg = ff.tiny_cfg("fedaws")
  one = _run(cfg, "host_loop", streams=1)
  three_a = _run(cfg, "host_loop", streams=3)
  three_b = _run(cfg, "host_loop", streams=3)
  for x, y in zip(jax.tree.leaves(three_a[0]), jax.tree.leaves(three_b[0])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  _assert_same_run(one, three_a)
  with pytest.raises(ValueError, match="host_loop_streams"):
    _run(cfg, "host_loop", streams=-1)


@pytest.mark.parametrize("streams", [1, 2])
def test_fused_local_steps_equal_one_step_per_call(streams):
  """F=2 local steps per call: the same round as one step per call.

  Covers every call shape: 1 step (one whole call), 3 = 2 + 1 and 4 = 2 + 2 (open, close;
  local_epochs mode, batch 1, clients of 3 and 4 images) and 5 = 2 + 2 + 1 (open, mid, close).
  """
  cfg = ff.tiny_cfg("fedface_nosp")
  cfg.clients_per_round = 11
  cases = []
  for steps, epochs, batch in ((1, 0, 3), (5, 0, 3), (2, 1, 1)):
    cfg.client.local_steps, cfg.client.local_epochs, cfg.client.batch_size = steps, epochs, batch
    cases.append((_run(cfg, "host_loop", streams=streams, rounds=1, fused=1),
                  _run(cfg, "host_loop", streams=streams, rounds=1, fused=2)))
  for a, b in cases:
    _assert_same_run(a, b, rtol=0, atol=0)
  assert host_loop.step_blocks(5, 2) == [2, 2, 1] and host_loop.step_blocks(3, 5) == [3]
  with pytest.raises(ValueError, match="host_loop_fused_steps"):
    _run(cfg, "host_loop", fused=-1)


def test_execution_setting_is_resolved_per_mesh_and_validated():
  one = sh.make_mesh(1, 1, jax.devices()[:1])
  eight = sh.make_mesh(4, 2, jax.devices()[:8])
  assert loops.resolve_execution("auto", one) == "host_loop"     # CPU, one device
  assert loops.resolve_execution("auto", eight) == "compiled"
  assert loops.resolve_execution("compiled", one) == "compiled"
  with pytest.raises(ValueError, match="one device"):
    loops.resolve_execution("host_loop", eight)
  with pytest.raises(ValueError, match="federated.execution"):
    loops.resolve_execution("vmap", one)
