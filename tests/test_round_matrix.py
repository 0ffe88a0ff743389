"""Every mesh shape x round size x method x defence computes the one-device round.

A round is padded with empty client slots so that it splits evenly over devices
and chunks (30 clients on 8 devices -> 32 slots), and a class table is padded
with rows so that it splits over the "classes" axis. Each padding must be
masked, never sliced away inside the sharded program: slicing gave an HLO
verifier crash on every multi-device mesh (issue 16). Here the federated split
has 37 clients, a prime, so no "classes" axis > 1 divides the table either.

The one-device reference runs with `execution="auto"`, i.e. the host loop of
jitted local steps on a CPU, and every multi-device mesh runs the compiled
round: so this also checks the two execution paths against each other across
padding, DP and every method.

The default suite covers every (mesh, round size) pair with the heaviest
variant (FedAwS: trained class rows + spreadout, with DP noise), and every
(method, spreadout, DP) variant on a padded 4 x 2 mesh; `-m slow` runs the full
product (5 meshes x 5 round sizes x 8 variants).
"""

import itertools

import jax
import numpy as np
import pytest

from experiments import common
from fedface_jax import models
from fedface_jax import sharding as sh
from fedface_jax.federated import algorithm as alg_lib
from fedface_jax.federated import run as run_lib

from tests import federated_fixtures as ff

NUM_IDS = 38                    # identity 0 has one photo and is dropped: 37 clients
MESHES = ((1, 1), (8, 1), (4, 2), (2, 4), (1, 8))
ROUND_SIZES = (1, 7, 8, 30, 45)   # 45 > 37 clients: full participation
# Methods x spreadout: fedface_nosp is FedFace without spreadout, and FedAvg is
# FedAwS without it, so four methods span method x spreadout.
METHODS = ("fedface", "fedface_nosp", "fedaws", "fedavg")
DP = (False, True)
# Float32 sums in another order (per-device partial sums + psum vs one device).
RTOL, ATOL = 1e-4, 2e-5


def _variant_cfg(method, clients_per_round, dp):
  cfg = common.federated_section(
      method=method, num_rounds=1, clients_per_round=clients_per_round, embedding_dim=16,
      local_steps=2, batch_size=2, clients_per_chunk=2, client_lr=0.05, spread_weight=1.0,
      spread_steps=2)
  if dp:
    cfg.dp.update(enabled=True, clip_norm=0.5, noise_multiplier=0.3)
  return alg_lib.apply_method(cfg)


@pytest.fixture(scope="module")
def setup():
  faces = ff.tiny_faces(num_ids=NUM_IDS, per_id=3, size=8)
  model = ff.tiny_model()
  params0 = models.init_params(model, jax.random.key(0), faces.image_shape)
  return faces, model, params0, {}


def _one_round(setup, mesh_shape, method, clients_per_round, dp):
  faces, model, params0, cache = setup
  key = (mesh_shape, method, clients_per_round, dp)
  if key not in cache:
    mesh = sh.make_mesh(*mesh_shape, devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
    algo = run_lib.build_run(_variant_cfg(method, clients_per_round, dp), model, faces, mesh)
    state, metrics, ids = algo.apply(algo.init(params0, jax.random.key(1)), 0)
    cache[key] = (jax.device_get(state), jax.device_get(metrics), ids,
                  algo.clients.num_clients)
  return cache[key]


def _check_against_one_device(setup, mesh_shape, method, clients_per_round, dp):
  state, metrics, ids, num_clients = _one_round(setup, mesh_shape, method, clients_per_round, dp)
  ref_state, ref_metrics, ref_ids, _ = _one_round(setup, (1, 1), method, clients_per_round, dp)
  assert num_clients == 37
  k = min(clients_per_round, num_clients)
  np.testing.assert_array_equal(ids, ref_ids)
  assert len(ids) == k
  assert int(metrics["clients"]) == int(metrics["clients_valid"]) == k
  assert int(metrics["clients_excluded"]) == 0
  for name in ("images", "client_loss_first", "client_loss_last", "update_norm",
               "spreadout_before"):
    np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=RTOL, atol=ATOL,
                               err_msg=name)
  assert float(metrics["update_norm"]) > 0        # the round did something
  # Rows past the clients are padding for the "classes" split and stay zero.
  assert not np.any(state["table"][num_clients:])
  state["table"], ref_state["table"] = (state["table"][:num_clients],
                                        ref_state["table"][:num_clients])
  flat, ref_flat = (jax.tree_util.tree_flatten_with_path(s)[0] for s in (state, ref_state))
  for (path, a), (_, b) in zip(flat, ref_flat):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("clients_per_round", ROUND_SIZES)
@pytest.mark.parametrize("mesh_shape", MESHES[1:], ids=lambda m: f"{m[0]}x{m[1]}")
def test_every_mesh_and_round_size(setup, mesh_shape, clients_per_round):
  _check_against_one_device(setup, mesh_shape, "fedaws", clients_per_round, dp=True)


@pytest.mark.parametrize("dp", DP, ids=("nodp", "dp"))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_defence_on_a_padded_round(setup, method, dp):
  _check_against_one_device(setup, (4, 2), method, 30, dp)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape,clients_per_round,method,dp",
                         list(itertools.product(MESHES[1:], ROUND_SIZES, METHODS, DP)))
def test_full_matrix(setup, mesh_shape, clients_per_round, method, dp):
  _check_against_one_device(setup, mesh_shape, method, clients_per_round, dp)


def test_spreadout_row_stats_mask_padding_queries():
  """Padding query slots (id 0 here, a real row) add no pair, hinge or maximum."""
  table = jax.random.normal(jax.random.key(4), (12, 4))
  mesh = sh.make_mesh(2, 4)
  ids = np.array([3, 7, 0, 0])
  real = np.array([True, True, False, False])
  masked = sh.sharded_spreadout_rows(table, ids, mesh, query_mask=real, num_valid=11)
  sliced = sh.sharded_spreadout_rows(table, ids[:2], mesh, num_valid=11)
  for a, b in zip(masked, sliced):
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  assert float(masked.pairs) == 2 * 10
