"""User-level (epsilon, delta) of DP-FedAvg runs, from `dp_accounting`.

The engine's DP-FedAvg (`federated.dp`, see `rounds.py`) is the Gaussian
mechanism on the sum of client deltas clipped to L2 norm S, with noise std
z * S, once per round, on a sample of the clients. Its privacy is user-level
(one client = one identity = all of that person's photos): a neighbouring
dataset adds or removes one whole client.

Accounting (McMahan et al. 2018, "Learning differentially private recurrent
language models"): each round is a Poisson-subsampled Gaussian mechanism with
sampling rate q = clients_per_round / num_clients and noise multiplier z,
composed over the rounds, tracked with Renyi DP (`RdpAccountant`, default) or
privacy-loss distributions (`pld`). The engine samples a *fixed* number of
clients without replacement; accounting it as Poisson sampling with the same
q is the usual approximation (it is what McMahan et al. and TensorFlow Federated
report). `accounting="wor"` gives the sampling-without-replacement RDP bound
instead, which holds for the replace-one neighbouring relation.

Caveats that no accountant fixes, listed where a reader of the epsilon looks:
  * only the backbone delta is protected. FedFace's round-0 class-embedding init
    uploads each client's mean feature, and FedAwS-style clients
    (`client.train_class_embedding`) upload their class row every round; both
    are outside this guarantee;
  * rounds that excluded a NaN client still count (the exclusion only lowers
    sensitivity).
"""

from __future__ import annotations

import math

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting import rdp

ACCOUNTING = ("rdp", "pld", "wor")
# RDP orders: fractional ones below ~1.7 make the subsampled-Gaussian series fail to
# converge at small z (dp_accounting then drops them with a warning); these don't.
RDP_ORDERS = (1.75, 2.0, 2.25, 2.5, 2.75, *range(3, 65), 80, 96, 128, 256, 512, 1024)


def default_delta(num_clients: int) -> float:
  """delta = 1 / N^1.1: below 1/N, as (epsilon, delta)-DP with delta ~ 1/N is vacuous."""
  if num_clients < 1:
    raise ValueError(f"num_clients must be >= 1, got {num_clients}")
  return 1.0 / num_clients ** 1.1


def _event(noise_multiplier: float, sampling_rate: float, rounds: int,
           accounting: str, num_clients: int | None):
  gauss = dp_event.GaussianDpEvent(noise_multiplier)
  if accounting == "wor":
    if not num_clients:
      raise ValueError("accounting='wor' needs num_clients")
    sample = max(1, round(sampling_rate * num_clients))
    # Replace-one moves the clipped sum by up to 2 S: the noise is z / 2 of that sensitivity.
    step = dp_event.SampledWithoutReplacementDpEvent(
        num_clients, sample, dp_event.GaussianDpEvent(noise_multiplier / 2))
  else:
    step = dp_event.PoissonSampledDpEvent(sampling_rate, gauss)
  return dp_event.SelfComposedDpEvent(step, rounds)


def _accountant(accounting: str):
  if accounting == "rdp":
    return rdp.RdpAccountant(orders=RDP_ORDERS)
  if accounting == "wor":
    return rdp.RdpAccountant(
        orders=RDP_ORDERS, neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  if accounting == "pld":
    return pld.PLDAccountant()
  raise ValueError(f"unknown accounting {accounting!r}; valid: {ACCOUNTING}")


def _check(noise_multiplier, sampling_rate, rounds):
  if not 0.0 < sampling_rate <= 1.0:
    raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
  if rounds < 0:
    raise ValueError(f"rounds must be >= 0, got {rounds}")
  if noise_multiplier < 0:
    raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")


def compute_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int,
                    delta: float, accounting: str = "rdp",
                    num_clients: int | None = None) -> float:
  """epsilon at `delta` after `rounds` rounds of DP-FedAvg; inf without noise."""
  _check(noise_multiplier, sampling_rate, rounds)
  if not 0.0 < delta < 1.0:
    raise ValueError(f"delta must be in (0, 1), got {delta}")
  if rounds == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  acct = _accountant(accounting)
  acct.compose(_event(noise_multiplier, sampling_rate, rounds, accounting, num_clients))
  return float(acct.get_epsilon(delta))


def noise_for_epsilon(target_epsilon: float, sampling_rate: float, rounds: int,
                      delta: float, accounting: str = "rdp",
                      num_clients: int | None = None, tol: float = 1e-3) -> float:
  """Smallest noise multiplier z with epsilon(z) <= target (Brent search)."""
  _check(1.0, sampling_rate, rounds)
  if target_epsilon <= 0:
    raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: _accountant(accounting),
      lambda z: _event(z, sampling_rate, rounds, accounting, num_clients),
      target_epsilon, delta,
      bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-2, 1.0), tol=tol))


def run_epsilon(fcfg, num_clients: int, rounds_done: int) -> dict[str, float]:
  """{"privacy/epsilon", "privacy/delta"} of a run's `federated` config, {} if DP is off.

  `fcfg.dp.delta` <= 0 (default) means `default_delta(num_clients)`.
  """
  dp = fcfg.dp
  if not dp.enabled:
    return {}
  delta = dp.delta or default_delta(num_clients)
  q = min(1.0, fcfg.clients_per_round / num_clients)
  eps = compute_epsilon(float(dp.noise_multiplier), q, int(rounds_done), delta,
                        accounting=dp.accounting, num_clients=num_clients)
  return {"privacy/epsilon": eps, "privacy/delta": delta}
