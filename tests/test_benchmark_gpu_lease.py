"""The GPU lease cut of the benchmark and the FLOP recount of GPU rows.

A GPU lease is short and cannot be rerun at will, so what it runs is decided here: the real
FedFace rows first, rows an earlier lease measured can be skipped by name (a typo must fail,
not silently rerun everything), and GPU rows whose FLOPs came from the GPU-compiled program
(cuDNN calls count zero) are recounted on the CPU, while a recount that disagrees with a row
the device counted on its host CPU stops the script.
"""

import copy
import importlib.util
import os

import pytest

from experiments import benchmark_cpu
from experiments import benchmark_gpu
from fedface_jax.benchmark import measure
from fedface_jax.benchmark import strategies
from fedface_jax.benchmark import workload as wl
from reporting import benchmark_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recount_module():
  spec = importlib.util.spec_from_file_location(
      "recount_benchmark_flops", os.path.join(REPO, "scripts", "recount_benchmark_flops.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_lease_config_orders_real_rows_first_and_skips_by_name():
  cfg = benchmark_gpu.get_config("variant=lease")
  names = [r["name"] for r in cfg.runs]
  # The im2col row first (the lever on the first lease's MFU miss), then the model's own convs.
  assert names[:4] == ["fedface_sphere20_c100", "fedface_sphere20_c100",
                       "fedface_resnet_small_c100", "fedface_sphere20_c10000"]
  assert cfg.runs[0]["strategies"] == ("engine_im2col", "engine_host_fused")
  assert cfg.runs[0]["chunks"] == (10, 100)
  sphere = cfg.runs[1]
  assert sphere["image_size"] == (112, 112) and sphere["images"] == 20 and sphere["steps"] == 5
  assert set(sphere["strategies"]) == {"engine", "engine_host", "centralised"}
  assert cfg.runs[3]["clients"] == 10000 and cfg.runs[3]["timed_clients"] == 500
  assert cfg.class_table.rows == 1_000_000 and cfg.class_table.devices == 1
  assert cfg.results_json == "benchmarks/gpu.json" and cfg.results_role == "gpu"
  skipped = benchmark_gpu.get_config("variant=lease,skip=fedface_sphere20_c100_im2col")
  assert [r["strategies"] for r in skipped.runs] == [r["strategies"] for r in cfg.runs[1:]]
  with pytest.raises(ValueError, match="unknown rows"):
    benchmark_gpu.get_config("variant=lease,skip=fedface_sphere20_c1000")
  tiny = benchmark_gpu.get_config("variant=lease,scale=0.05")
  assert tiny.results_json == "" and tiny.report_path == ""   # a dry run never publishes


def test_step_flops_on_cpu_is_the_compiled_count():
  w = wl.Workload(num_clients=2, images_per_client=4, image_size=(8, 8), local_steps=1,
                  batch_size=4, model="bench_cnn_small", embedding_dim=8, lr=0.1, seed=0)
  params, data = wl.init_params(w), wl.synthetic_client_data(w)
  step = strategies.client_step_fn(w)
  args = (params, data.images[0], data.class_embeddings[0])
  flops, source = measure.step_flops(step, *args)
  assert source == "compiled (cpu)"
  assert flops == measure.compiled_flops(step.lower(*args).compile())


def _gpu_row(wd, flops, source, ups=10.0, peak=1e12):
  return dict(kind="round", name="r", strategy="vmap", workload=wd, flops_per_update=flops,
              flops_source=source, client_updates_per_s=ups, images_per_s=ups * 8,
              peak_flops=peak, mfu=flops * ups / peak)


def test_recount_fixes_device_counts_and_checks_host_counts():
  mod = _recount_module()
  wd = wl.Workload(num_clients=1000, images_per_client=8, image_size=(16, 16), local_steps=2,
                   batch_size=8, model="bench_cnn_small", embedding_dim=16, lr=0.1,
                   seed=0).to_dict()
  true = mod.step_flops_on_cpu(wd, {}) * 2
  cen = dict(_gpu_row(wd, true / 100, None), strategy="centralised", images_per_s=1000.0,
             client_updates_per_s=None)
  cen.pop("flops_source")
  results = {"meta": {}, "rows": [
      _gpu_row(wd, true / 100, None),                       # first lease: custom-calls count 0
      _gpu_row(wd, true * 1.0001, "compiled for the host cpu"),   # fixed worker, other XLA
      cen, {"kind": "peak", "peak_flops": 1e12}]}
  recounted, checked, worst = mod.recount(results)
  assert (recounted, checked) == (2, 1) and worst < 1e-3
  fixed = results["rows"][0]
  assert fixed["flops_per_update"] == true and fixed["flops_per_update_device"] == true / 100
  assert fixed["mfu"] == pytest.approx(true * 10.0 / 1e12)
  assert results["rows"][2]["mfu"] == pytest.approx(true / (2 * 8) * 1000.0 / 1e12)
  # A second run checks the recounted rows and keeps the device's original counts.
  again = copy.deepcopy(results)
  assert mod.recount(again)[:2] == (0, 3) and again == results
  bad = copy.deepcopy(results)
  bad["rows"][1]["flops_per_update"] = true * 1.5
  with pytest.raises(ValueError, match="differs from this recount"):
    mod.recount(bad)


def test_peak_text_names_the_gpu_and_its_bf16_peak():
  text = benchmark_report._peak_text(  # pylint: disable=protected-access
      dict(devices=1, device_kind="NVIDIA H200", backend="gpu", peak_flops=3.6e14,
           peak_flops_bf16=6.9e14, load_avg=[0.4]))
  assert "NVIDIA H200" in text and "360000.0 GFLOP/s" in text and "bf16: 690000.0" in text
  cpu = benchmark_report._peak_text(  # pylint: disable=protected-access
      dict(devices=8, device_kind="cpu", backend="cpu", peak_flops=2e11, load_avg=[1.0]))
  assert cpu.startswith("8 dev: 200.0 GFLOP/s")


def test_a_gpu_run_does_not_pin_its_workers_to_the_cpu(tmp_path, monkeypatch):
  """The suite's workers default to the CPU backend; a GPU-role run must leave JAX its choice,
  an explicit JAX_PLATFORMS is kept, and the parent's own environment is not touched."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from reporting import benchmark_suite  # pylint: disable=g-import-not-at-top
  seen = []
  real_run = subprocess.run

  def fake_run(cmd, *args, env=None, **kw):
    if "launch.benchmark" not in cmd:   # other tools the suite asks (machine facts) still run
      return real_run(cmd, *args, env=env, **kw)
    seen.append(env["JAX_PLATFORMS"])
    return types.SimpleNamespace(returncode=0)
  monkeypatch.setattr(subprocess, "run", fake_run)
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  cpu_cfg = benchmark_cpu.get_config("variant=smoke")
  for cfg, explicit, expected in ((benchmark_gpu.get_config("variant=lease,scale=0.05"), None, ""),
                                  (benchmark_gpu.get_config("variant=lease,scale=0.05"), "cpu",
                                   "cpu"),
                                  (cpu_cfg, None, "cpu")):
    if explicit is None:
      monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    else:
      monkeypatch.setenv("JAX_PLATFORMS", explicit)
    work = tmp_path / f"w{len(seen)}"
    work.mkdir()
    (work / "results.jsonl").write_text("")
    cfg.report_path = str(tmp_path / "BENCHMARKS.md")
    cfg.results_json = str(work / "results.json")
    cfg.append = True   # keeps the empty results.jsonl: the faked worker writes no rows
    benchmark_suite.run_suite(cfg, str(work), [], "test", parts=("class_table",))
    assert seen[-1] == expected
    assert os.environ.get("JAX_PLATFORMS") == explicit
