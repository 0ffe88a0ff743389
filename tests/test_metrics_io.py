"""MetricWriter (JSONL + TensorBoard round trip) and the progress bar."""

import json
import math
import struct

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from fedface_jax import metrics_io
from fedface_jax import progress


def _read_tb_scalars(tb_dir):
  """{tag: [(step, value)]} and text tags of the event files, read as TFRecords.

  Uses tensorboard's EventAccumulator when installed, else parses the records
  with tensorboardX's protos (length, crc, payload, crc per record).
  """
  try:
    # pylint: disable-next=g-import-not-at-top
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError:
    event_accumulator = None
  if event_accumulator is not None:
    acc = event_accumulator.EventAccumulator(str(tb_dir))
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return scalars, set(acc.Tags()["tensors"])
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars, texts = {}, set()
  for path in sorted(tb_dir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      payload = data[offset + 12:offset + 12 + length]
      offset += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        else:
          texts.add(value.tag)
  return scalars, texts


def test_write_and_read_back(tmp_path):
  config = mlc.ConfigDict({"opt": {"lr": 0.1}, "sizes": (1, 2), "name": "tiny"})
  with metrics_io.MetricWriter(tmp_path, is_primary=True) as writer:
    writer.write_config(config)
    writer.write(1, {"loss": jnp.float32(2.5), "acc": np.float64(0.25), "n": np.int32(3)})
    writer.write(2, {"loss": 1.5, "acc": jnp.asarray([0.5]), "n": 4})
    writer.write(3, {"loss": float("nan")})
  records = metrics_io.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[0]["loss"] == 2.5 and records[0]["acc"] == 0.25
  assert records[0]["n"] == 3 and isinstance(records[0]["n"], int)
  assert records[1]["acc"] == 0.5
  assert records[2]["loss"] is None  # NaN is written as null.
  assert all(isinstance(r["time"], float) for r in records)
  assert json.loads((tmp_path / "config.json").read_text()) == {
      "name": "tiny", "opt": {"lr": 0.1}, "sizes": [1, 2]}

  scalars, texts = _read_tb_scalars(tmp_path / "tb")
  assert scalars["loss"][:2] == [(1, 2.5), (2, 1.5)]
  assert scalars["loss"][2][0] == 3 and math.isnan(scalars["loss"][2][1])
  assert scalars["n"] == [(1, 3.0), (2, 4.0)]
  assert any(t.startswith("config") for t in texts)


def test_appends_and_skips_truncated_last_line(tmp_path):
  with metrics_io.MetricWriter(tmp_path, tensorboard=False, is_primary=True) as writer:
    writer.write(1, {"a": 1.0})
  with metrics_io.MetricWriter(tmp_path, tensorboard=False, is_primary=True) as writer:
    writer.write(2, {"a": 2.0})
  path = tmp_path / "metrics.jsonl"
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"step": 3, "a"')  # A writer killed mid-line.
  assert [r["a"] for r in metrics_io.read_jsonl(path)] == [1.0, 2.0]
  assert not (tmp_path / "tb").exists()


def test_bad_metrics_and_non_primary(tmp_path):
  with metrics_io.MetricWriter(tmp_path / "a", tensorboard=False, is_primary=True) as writer:
    with pytest.raises(ValueError, match="'emb'"):
      writer.write(1, {"emb": np.ones(3)})
    with pytest.raises(ValueError, match="reserved"):
      writer.write(1, {"step": 1})
  with metrics_io.MetricWriter(tmp_path / "b", is_primary=False) as writer:
    writer.write(1, {"a": 1.0})
    writer.write_config({"x": 1})
  assert not (tmp_path / "b").exists()
  # The default asks JAX, and a single process is the primary one.
  with metrics_io.MetricWriter(tmp_path / "c", tensorboard=False) as writer:
    assert writer.is_primary


def test_progress_bar():
  bar = progress.progress(range(5), "eval", disable=False)
  assert bar.total == 5 and list(bar) == list(range(5))
  with progress.progress(4, "pretrain", unit="round") as bar:
    assert not bar.disable  # Single process: the primary one.
    bar.update(2)
    bar.set_postfix(loss=0.5)
    assert bar.n == 2 and bar.total == 4
  assert progress.progress(3, disable=True).disable
  with pytest.raises(ValueError):
    progress.progress(3, total=4)


def test_tensorboard_tags_are_sanitised_jsonl_keeps_names():
  assert metrics_io.tensorboard_tag("eval/tar@far=1e-3") == "eval/tar_far_1e-3"
  assert metrics_io.tensorboard_tag("loss/client_first") == "loss/client_first"
