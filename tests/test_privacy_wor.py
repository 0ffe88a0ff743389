"""`accounting="wor"`: fixed-size client sampling without replacement, replace-one neighbours.

Under replace-one, two neighbouring populations differ in one client's data, so the clipped sum
can move by up to 2 S (one contribution of norm <= S out, another in), twice the add/remove
sensitivity. With noise std z S, the Gaussian's noise multiplier relative to that sensitivity is
z / 2, which is what dp_accounting's `GaussianDpEvent` expects ("std / l2-sensitivity").
"""

import math

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import rdp
import pytest

from fedface_jax.federated import privacy

DELTA = 1e-5


def test_wor_matches_dp_accounting_built_directly():
  z, num_clients, per_round, rounds = 1.3, 200, 20, 50
  acct = rdp.RdpAccountant(orders=privacy.RDP_ORDERS,
                           neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  acct.compose(dp_event.SelfComposedDpEvent(dp_event.SampledWithoutReplacementDpEvent(
      num_clients, per_round, dp_event.GaussianDpEvent(z / 2)), rounds))
  got = privacy.compute_epsilon(z, per_round / num_clients, rounds, DELTA, accounting="wor",
                                num_clients=num_clients)
  assert got == pytest.approx(acct.get_epsilon(DELTA), rel=1e-12)


@pytest.mark.parametrize("z", [0.8, 2.0, 5.0])
def test_wor_with_every_client_equals_gaussian_of_sensitivity_two(z):
  """Known value: sampling all N of N is no sampling, so each round is the plain Gaussian
  mechanism of sensitivity 2 S; its RDP alpha (2S)^2 / (2 z^2 S^2) is the add/remove Gaussian's
  at noise multiplier z / 2, which the Poisson accountant gives exactly at q = 1."""
  wor = privacy.compute_epsilon(z, 1.0, 30, DELTA, accounting="wor", num_clients=40)
  plain = privacy.compute_epsilon(z / 2, 1.0, 30, DELTA, accounting="rdp")
  assert wor == pytest.approx(plain, rel=1e-12)
  # And it is not the (too optimistic) sensitivity-S value.
  assert wor > 1.5 * privacy.compute_epsilon(z, 1.0, 30, DELTA, accounting="rdp")


def test_wor_calibration_round_trips_and_needs_num_clients():
  q, rounds = 0.1, 100
  z = privacy.noise_for_epsilon(3.0, q, rounds, DELTA, accounting="wor", num_clients=500)
  eps = privacy.compute_epsilon(z, q, rounds, DELTA, accounting="wor", num_clients=500)
  assert eps == pytest.approx(3.0, rel=1e-2)
  # Replace-one costs more noise than add/remove Poisson accounting at the same q.
  assert z > privacy.noise_for_epsilon(3.0, q, rounds, DELTA)
  assert privacy.compute_epsilon(0.0, q, rounds, DELTA, "wor", 500) == math.inf
  with pytest.raises(ValueError, match="needs num_clients"):
    privacy.compute_epsilon(1.0, q, rounds, DELTA, accounting="wor")
