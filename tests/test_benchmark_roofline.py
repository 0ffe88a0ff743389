"""scripts/benchmark_roofline.py: the GPU roofline estimate runs and its arithmetic holds.

BENCHMARKS.md shows this estimate while no GPU run exists, so its numbers must be what the
roofline says: FLOPs and bytes per client step from XLA's cost analysis of the vmapped step
(the same per client at every chunk size, to within the shared parameters), and the bound
max(FLOPs / peak, bytes / bandwidth) per datasheet GPU.
"""

import importlib.util
import json
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "benchmark_roofline.py"


def _script():
  spec = importlib.util.spec_from_file_location("benchmark_roofline", _PATH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_estimates_arithmetic():
  roof = _script()
  est = {(e["gpu"], e["peak"]): e for e in roof.estimates(2e9, 1e9, local_steps=5)}
  h100 = est[("H100 SXM", "fp32")]
  # 2 GFLOP at 67 TFLOP/s = 29.9 us; 1 GB at 3.35 TB/s = 298.5 us: memory-bound.
  assert h100["bound"] == "memory"
  assert h100["step_s"] == pytest.approx(1e9 / 3.35e12)
  assert h100["client_updates_per_s"] == pytest.approx(3.35e12 / 1e9 / 5)
  assert h100["mfu_bound"] == pytest.approx((2e9 / 67e12) / (1e9 / 3.35e12))
  assert est[("H200 SXM", "fp32")]["client_updates_per_s"] > h100["client_updates_per_s"]
  assert roof.estimates(1e15, 1.0, 1)[0]["bound"] == "compute"


@pytest.mark.parametrize("models", [
    "resnet_small", pytest.param("resnet_small,sphere20", marks=pytest.mark.slow)])
def test_tiny_roofline_runs_and_writes_the_json(tmp_path, models):
  roof = _script()
  out = tmp_path / "roofline.json"
  assert roof.main(["--tiny", "--chunks", "1,2", "--models", models, "--out", str(out)]) == 0
  data = json.loads(out.read_text())
  assert data["kind"] == "roofline_estimate" and "ESTIMATE" in data["note"]
  assert set(data["gpus"]) == {"H100 SXM", "H200 SXM"}
  got = {e["workload"]["model"] for e in data["entries"]}
  assert got == set(models.split(","))
  for model in got:
    per = [e for e in data["entries"] if e["workload"]["model"] == model]
    assert [e["chunk"] for e in per] == [1, 2]
    f1, f2 = (e["flops_per_client_step"] for e in per)
    assert f1 > 0 and f2 == pytest.approx(f1, rel=0.05)    # per client: chunk-independent
    assert all(len(e["estimates"]) == 4 for e in per)   # 2 GPUs x (fp32, tf32)
