"""`reporting/benchmark_report.write_report`: BENCHMARKS.md from a run's rows, and nothing else.

Every figure in BENCHMARKS.md must come from the rows of the run it names, so the report is
tested on hand-made rows whose ratios are known: the ratio columns, the error list, the
hand-written notes carried across a regeneration, and the GPU section telling the truth.
"""

import json

import ml_collections as mlc

from reporting import benchmark_report

_WORKLOAD = dict(num_clients=8, images_per_client=4, image_size=[32, 32], local_steps=2,
                 model="bench_cnn_small")


def _round(strategy, updates_per_s, images_per_s, **kw):
  return dict(kind="round", name="base", workload=_WORKLOAD, devices=1, strategy=strategy,
              client_updates_per_s=updates_per_s, images_per_s=images_per_s,
              flops_per_update=2e9, mfu=0.1, round_s=[1.0, 1.2], load_avg=[1.0], **kw)


def _write(tmp_path, rows, notes="my analysis"):
  (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  report = tmp_path / "BENCHMARKS.md"
  report.write_text(f"old text\n<!-- notes -->\n{notes}\n<!-- /notes -->\nmore old text\n")
  meta = dict(started="2026-12-03 08:00", wall_s=120.0, command="python -m launch.benchmark",
              machine=dict(cpu="test cpu", cpu_count=2, platform="linux", python="3.11"),
              versions=dict(jax="0.10.2"))
  cfg = mlc.ConfigDict(dict(report_path=str(report)))
  return open(benchmark_report.write_report(cfg, str(tmp_path), meta)).read()


def test_ratios_errors_and_notes_come_from_the_rows(tmp_path):
  rows = [
      dict(kind="peak", devices=1, peak_flops=5e10, backend="cpu", load_avg=[1.0]),
      _round("host_loop", 20.0, 160.0),
      _round("sequential", 5.0, 40.0),
      _round("centralised", None, 320.0),
      dict(kind="peer", peer="fedjax", workload=_WORKLOAD, client_updates_per_s=10.0,
           images_per_s=80.0, result={"version": "0.0.17"}, cmd="fedjax_bench.py",
           load_avg=[1.0]),
      dict(kind="error", name="worker_8dev", error="worker exited with 1"),
  ]
  text = _write(tmp_path, rows)
  assert "my analysis" in text and "old text" not in text   # notes kept, the rest regenerated
  ratios = next(line for line in text.splitlines() if line.startswith("| 8 cl"))
  cells = [c.strip() for c in ratios.strip("|").split("|")]
  # ours (best) 20 = engine 20; FedJAX 10 -> 2.00x; no Flower row; centralised 320 img/s.
  assert cells[1].startswith("20.0 (host_loop") and cells[2].startswith("20.0")
  assert cells[3] == "10.0" and cells[4] == "–"
  assert cells[5] == "2.00×" and cells[6] == "2.00×" and cells[7] == "–"
  assert cells[9].startswith("320") and cells[10] == "0.50×"
  assert "worker_8dev" in text and "worker exited with 1" in text
  assert "None in this run: every row above ran on the CPU backend." in text


def test_gpu_section_counts_gpu_rows(tmp_path):
  rows = [dict(kind="peak", devices=1, peak_flops=1e14, backend="gpu", load_avg=[0.1]),
          _round("host_loop", 200.0, 1600.0)]
  text = _write(tmp_path, rows)
  assert "1 rows above ran on a GPU backend." in text
  assert "None in this run" not in text


def test_workers_get_the_parents_config_and_its_overrides():
  from reporting import benchmark_suite  # pylint: disable=g-import-not-at-top
  argv = ["--config", "experiments/benchmark_gpu.py:devices=1", "--config.worker_timeout_s=5",
          "--config.class_table.rows", "64", "--workdir", "w", "--parts=sweep"]
  assert benchmark_suite.config_args(argv) == [
      "--config=experiments/benchmark_gpu.py:devices=1", "--config.worker_timeout_s=5",
      "--config.class_table.rows=64"]
  assert benchmark_suite.config_args(["--workdir=w"]) == ["--config=experiments/benchmark_cpu.py"]
