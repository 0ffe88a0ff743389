"""Progress bars with rate and ETA for long loops (pretraining steps, rounds, evaluation).

A thin tqdm call with the defaults we want everywhere: elapsed<remaining and
rate in the bar, refreshed at most once a second on a terminal and once every
10 s when stderr goes to a file (a log then holds a line per 10 s, not one per
step), and silent on non-primary processes so a multi-host run shows one bar
rather than one per host.
"""

import numbers
import sys
from typing import Iterable, TypeVar

import tqdm

from fedface_jax import distributed

T = TypeVar("T")

TERMINAL_INTERVAL_S = 1.0
LOG_INTERVAL_S = 10.0


class _Bar(tqdm.tqdm):
  """tqdm whose `set_postfix` waits for the next timed refresh.

  tqdm's own `set_postfix` redraws at once by default, which bypasses `mininterval`: a loop that
  sets its loss every step then writes a log line per step, whatever the interval.
  """

  def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
    super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def min_interval(stream=None) -> float:
  """Seconds between bar refreshes: short on a terminal, long in a log file or pipe."""
  stream = sys.stderr if stream is None else stream
  try:
    tty = stream.isatty()
  except (AttributeError, ValueError):  # No isatty, or a closed stream.
    tty = False
  return TERMINAL_INTERVAL_S if tty else LOG_INTERVAL_S


def progress(iterable_or_total: Iterable[T] | int, desc: str | None = None, *,
             total: int | None = None, disable: bool | None = None,
             unit: str = "step") -> tqdm.tqdm:
  """A tqdm bar over an iterable, or a manual bar of `total` steps given an int.

  Usage: `for batch in progress(loader, "eval", total=n): ...`, or
  `with progress(num_steps, "pretrain") as bar: ...; bar.update(); bar.set_postfix(loss=l)`.

  `disable=None` disables the bar on every process but the primary one.
  """
  if disable is None:
    disable = not distributed.is_primary()
  kwargs = dict(desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                mininterval=min_interval())
  if isinstance(iterable_or_total, numbers.Integral):
    if total is not None and total != iterable_or_total:
      raise ValueError(f"Got a total of {iterable_or_total} and total={total}.")
    return _Bar(total=int(iterable_or_total), **kwargs)
  return _Bar(iterable_or_total, total=total, **kwargs)
