"""Metric logging: one JSON line per write (for scripts and plots) plus TensorBoard.

JSONL is the source of truth that `experiments/` and the results tables read
back (`read_jsonl`); TensorBoard is for watching a run. Both live in the
workdir: `workdir/metrics.jsonl`, `workdir/config.json`, `workdir/tb/`.

Only the primary process writes, so a multi-host run does not produce N copies
(or interleaved lines) of every metric; other processes get a no-op writer.

Non-finite values (NaN/Inf) are written as JSON `null`, because `NaN` is not
valid JSON and breaks strict readers; TensorBoard still receives the real value.

The JSONL file is appended to, so a resumed run continues it; steps logged
between the last checkpoint and a crash then appear twice (the later lines are
the resumed run's). Readers that need one value per step should keep the last.
"""

import json
import math
import os
import pathlib
import re
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

from fedface_jax import config_utils
from fedface_jax import distributed

_RESERVED = ("step", "time")


def _to_number(name: str, value: Any) -> int | float:
  """A Python int/float from a Python, numpy or jax scalar (or size-1 array)."""
  arr = np.asarray(value)  # Pulls a jax array to host.
  real = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
  if arr.size != 1 or not (real or arr.dtype == bool):
    raise ValueError(f"Metric {name!r} must be a numeric scalar, got {arr.dtype}{arr.shape}.")
  if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
    return int(arr.reshape(()))
  return float(arr.reshape(()))


def tensorboard_tag(name: str) -> str:
  """A TensorBoard-legal tag: `eval/tar@far=1e-3` -> `eval/tar_far_1e-3`.

  TensorBoard accepts only [A-Za-z0-9_./-]; tensorboardX would rename the tag
  itself, but logs a line per call. The JSONL keeps the original name.
  """
  return re.sub(r"[^A-Za-z0-9_./-]+", "_", name)


class MetricWriter:
  """Writes scalar metrics of a run to `workdir` (JSONL and TensorBoard).

  `is_primary=None` means "this is process 0"; pass a bool to override.
  """

  def __init__(self, workdir, *, tensorboard: bool = True, jsonl_name: str = "metrics.jsonl",
               is_primary: bool | None = None):
    self.workdir = pathlib.Path(workdir)
    self.is_primary = distributed.is_primary() if is_primary is None else bool(is_primary)
    self._jsonl = None
    self._tb = None
    if not self.is_primary:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    # Kept open across writes; closed by close(). Append mode: a resumed run continues the file.
    self._jsonl = open(self.workdir / jsonl_name, "a", encoding="utf-8")  # pylint: disable=R1732
    if tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top  # Slow import; only when used.
      self._tb = tensorboardX.SummaryWriter(os.fspath(self.workdir / "tb"))

  def write(self, step: int, scalars: Mapping[str, Any]):
    """Appends `{"step", "time", **scalars}` as one JSON line and logs TB scalars."""
    if not self.is_primary:
      return
    clash = [k for k in _RESERVED if k in scalars]
    if clash:
      raise ValueError(f"Metric names {clash} are reserved by MetricWriter.")
    step = int(step)
    values = {str(k): _to_number(str(k), v) for k, v in scalars.items()}
    record = {"step": step, "time": time.time()}
    record.update({k: v if math.isfinite(v) else None for k, v in values.items()})
    self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
    # Flushed per write: a crash loses no line, and the cost is one syscall.
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(tensorboard_tag(k), v, global_step=step)

  def write_config(self, config):
    """Writes `workdir/config.json` and a TensorBoard text summary of `config`."""
    if not self.is_primary:
      return
    text = json.dumps(config_utils.config_to_dict(config), indent=2, sort_keys=True)
    (self.workdir / "config.json").write_text(text + "\n", encoding="utf-8")
    if self._tb is not None:
      # Indented by 4 spaces: a Markdown code block in TensorBoard's text tab.
      self._tb.add_text("config", "\n".join("    " + line for line in text.splitlines()))

  def flush(self):
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_jsonl(path) -> list[dict]:
  """All records of a JSONL file; a truncated last line (killed writer) is skipped."""
  records = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        logging.warning("%s: skipping a truncated last line: %r", path, line[:80])
        continue
      raise ValueError(f"{path}:{i + 1}: not valid JSON: {line[:80]!r}") from None
  return records
