"""`reporting/benchmark_report.write_report`: BENCHMARKS.md from committed JSONs, and nothing else.

Every figure in BENCHMARKS.md must come from the results JSON it names, so the report is tested
on small hand-made JSONs whose figures are known: medians and interquartile ranges from the
timed repetitions, the ceiling at the engine's stream count, peers published only with a
passing reference check, the notes carried across a regeneration, and a GPU section that is
either a GPU run or a roofline labelled as an estimate, never a hand-typed figure.
"""

import json

import pytest

from reporting import benchmark_report
from reporting import benchmark_suite

_WORKLOAD = dict(num_clients=8, images_per_client=4, image_size=[32, 32], local_steps=2,
                 batch_size=4, model="bench_cnn_small")
_META = dict(started="2026-12-03 08:00", wall_s=120.0, command="python -m launch.benchmark",
             machine=dict(cpu="test cpu", cpu_count=2, platform="linux", python="3.11",
                          load_avg_end=[0.5]),
             versions=dict(jax="0.10.2"))


def _round(strategy, round_s, **kw):
  n = _WORKLOAD["num_clients"]
  med = sorted(round_s)[len(round_s) // 2]
  row = dict(kind="round", name="base", workload=_WORKLOAD, devices=1, strategy=strategy,
             client_updates_per_s=n / med, images_per_s=n * 8 / med, flops_per_update=2e9,
             mfu=0.1, round_s=round_s, load_avg=[1.0])
  row.update(kw)
  return row


def _cen(batch, round_s, streams, images=64):
  med = sorted(round_s)[len(round_s) // 2]
  return dict(kind="round", name="base", workload=_WORKLOAD, devices=1, strategy="centralised",
              batch=batch, streams=streams, images_per_call=images, round_s=round_s,
              images_per_s=images / med, client_updates_per_s=None, flops_per_update=2e9,
              mfu=0.05, batch_is_all=batch == images, load_avg=[1.0])


def _peer(block, round_s, check, peer="fedjax", jax="0.4.35"):
  res = {"version": "0.0.17", "round_s": round_s, "client_updates_per_s": 1.0,
         "images_per_s": 1.0, "jax": jax}
  if check is not None:
    res["check"] = check
  ok, why = benchmark_suite.reference_verdict(res, 1e-4)
  return dict(kind="peer", name="base", peer=peer, workload=_WORKLOAD, paired_block=block,
              round_s=round_s, result=res, client_updates_per_s=1.0, images_per_s=1.0,
              reference_ok=ok, reference_why=why, cmd="fedjax_bench.py", load_avg=[1.0])


_GOOD = dict(init_max_abs_diff=0.0, round1_max_abs_diff=1e-7, round1_max_rel_diff=2e-6, ok=True)


def _write(tmp_path, rows, notes="my analysis", roofline=None, gpu_rows=None):
  cpu = tmp_path / "cpu.json"
  cpu.write_text(json.dumps({"meta": _META, "rows": rows}))
  gpu = tmp_path / "gpu.json"
  gpu.unlink(missing_ok=True)
  if gpu_rows is not None:
    gpu.write_text(json.dumps({"meta": _META, "rows": gpu_rows}))
  roof = tmp_path / "roofline.json"
  roof.unlink(missing_ok=True)
  if roofline is not None:
    roof.write_text(json.dumps(roofline))
  report = tmp_path / "BENCHMARKS.md"
  report.write_text(f"old text\n<!-- notes -->\n{notes}\n<!-- /notes -->\nmore old text\n")
  return open(benchmark_report.write_report(str(report), str(cpu), str(gpu), str(roof))).read()


def _line(text, start):
  return next(ln for ln in text.splitlines() if ln.startswith(start))


def _cells(line):
  return [c.strip() for c in line.strip("|").split("|")]


def test_median_iqr_ceiling_and_notes_come_from_the_rows(tmp_path):
  rows = [
      dict(kind="peak", devices=1, peak_flops=5e10, backend="cpu", load_avg=[1.0]),
      # 8 clients; times 1, 2, 2, 4, 4 s -> rates 8, 4, 4, 2, 2: median 4, q1 2, q3 4.
      _round("host_loop", [1.0, 2.0, 2.0, 4.0, 4.0], streams=2),
      _cen(8, [0.1] * 5, 1), _cen(32, [0.2] * 5, 1),      # 640 vs 320 img/s at 1 stream
      _cen(8, [0.2] * 5, 2), _cen(32, [0.05] * 5, 2),     # 320 vs 1280 img/s at 2 streams
      dict(kind="error", name="worker_8dev", error="worker exited with 1"),
  ]
  text = _write(tmp_path, rows)
  assert "my analysis" in text and "old text" not in text   # notes kept, the rest regenerated
  cells = _cells(_line(text, "| base | 8 cl"))
  assert cells[3] == "host_loop" and cells[6] == "5"
  assert cells[7] == "4.0 [2.0–4.0]"                        # updates/s median [q1–q3]
  assert cells[8] == "32 [16–32]"                           # images/s (8 images per update)
  # The engine (host loop, 2 streams) is compared with the best 2-stream batch: 32 at 1280,
  # not with the best 1-stream one (8 at 640).
  eng = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | host_loop"))
  assert eng[3] == "batch 32, 2 streams" and eng[4].startswith("1280")
  assert eng[5] == f"{32 / 1280:.2f}×"
  assert "**640 [640–640]**" in text and "**1280 [1280–1280]**" in text
  assert "| 320 [320–320] |" in text
  assert "worker_8dev" in text and "worker exited with 1" in text


def test_peer_without_passing_reference_check_is_not_published(tmp_path):
  ours = [_round("host_loop", [1.0, 1.0], paired_block=b, streams=2) for b in (0, 1)]
  good = [_peer(0, [2.0, 2.0], _GOOD), _peer(1, [2.0, 2.0], _GOOD)]
  text = _write(tmp_path, ours + good)
  line = _line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | fedjax")
  c = _cells(line)
  assert c[2] == "2" and c[3] == "8.0 [8.0–8.0]" and c[4] == "4.0 [4.0–4.0]"
  assert c[5] == "2.00×" and c[6].startswith("passed")
  for bad in (None, dict(_GOOD, round1_max_rel_diff=3e-3, ok=False),
              dict(_GOOD, init_max_abs_diff=1e-3)):
    # One failing (or missing) block is enough to withhold the whole peer row.
    text = _write(tmp_path, ours + [good[0], _peer(1, [2.0, 2.0], bad)])
    c = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | fedjax"))
    assert c[4] == "**not published**" and c[5] == "–" and c[6].startswith("failed")
    assert "4.0 [" not in text and "2.00×" not in text


def test_fairness_decomposition_telescopes_to_ours_vs_fedjax(tmp_path):
  """ours ÷ FedJAX = engine ÷ bare (our JAX) × bare our JAX ÷ bare FedJAX's × bare ÷ FedJAX.

  Each peer is measured against the blocks of ours interleaved with it: the bare loop in our
  venv ran while the machine was twice as slow (ours 2 s as well), which must cancel.
  """
  # 8 clients per round. FedJAX blocks: ours 1 s, FedJAX 5 s (5.00x). Bare loop in our venv,
  # machine 2x slower: ours 2 s, bare 4 s (2.00x). Bare loop in FedJAX's venv: ours 1 s, bare
  # 4 s. So 5.00x = 2.00x (engine) * 2.00x (JAX version) * 1.25x (FedJAX's framework).
  rows = []
  for b in (0, 1):   # older rows: no paired_peer, attributed by their order
    rows += [_round("host_loop", [1.0, 1.0], paired_block=b, streams=2),
             _peer(b, [5.0, 5.0], _GOOD)]
  for b in (0, 1):
    rows += [_round("host_loop", [2.0, 2.0], paired_block=b, streams=2,
                    paired_peer="bare_loop@ours"),
             _peer(b, [4.0, 4.0], _GOOD, "bare_loop@ours", "0.10.2"),
             _round("host_loop", [1.0, 1.0], paired_block=b, streams=2,
                    paired_peer="bare_loop@fedjax"),
             _peer(b, [4.0, 4.0], _GOOD, "bare_loop@fedjax")]
  sweep = [_round("host_loop", [1.0] * 5, streams=2), _round("host_loop-1stream", [1.6] * 5,
                                                              streams=1)]
  text = _write(tmp_path, rows + sweep)
  c = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | 5.00×"))
  assert c[2:] == ["2.00×", "2.00× (jax 0.10.2 ÷ 0.4.35)", "1.25×", "1.60×"]
  # The peer table's "ours" is the blocks run next to each peer, not every paired block.
  fj = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | fedjax"))
  assert fj[3] == "8.0 [8.0–8.0]" and fj[5] == "5.00×"
  bo = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | bare_loop@ours"))
  assert bo[3] == "4.0 [4.0–4.0]" and bo[5] == "2.00×"
  # A failing bare-loop check removes the decomposition (its ratios would be unchecked).
  rows[-1] = _peer(1, [4.0, 4.0], dict(_GOOD, round1_max_rel_diff=1e-2), "bare_loop@fedjax")
  assert "Where ours ÷ FedJAX comes from" not in _write(tmp_path, rows + sweep)


def test_peer_paired_with_another_strategy_gets_its_own_row(tmp_path):
  """FedJAX blocks run next to the fused host loop are compared with those blocks only."""
  rows = []
  for b in (0, 1):
    rows += [_round("host_loop", [1.0, 1.0], paired_block=b, streams=2), _peer(b, [4.0], _GOOD)]
  for b in (0, 1):
    rows += [_round("host_loop-fused2", [0.5, 0.5], paired_block=b, streams=2,
                    paired_peer="fedjax"),
             dict(_peer(b, [5.0], _GOOD), paired_strategies=["engine_host_fused"])]
  text = _write(tmp_path, rows)
  plain = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | fedjax |"))
  assert plain[3] == "8.0 [8.0–8.0]" and plain[4] == "2.0 [2.0–2.0]" and plain[5] == "4.00×"
  fused = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | fedjax (ours: "
                             "host_loop-fused2)"))
  assert fused[3] == "16.0 [16.0–16.0]" and fused[4] == "1.6 [1.6–1.6]" and fused[5] == "10.00×"


def test_fused_host_loop_rows_are_labelled_and_compared_with_the_ceiling(tmp_path):
  rows = [_round("host_loop-fused2", [1.0] * 5, streams=2), _cen(8, [0.1] * 5, 2)]
  text = _write(tmp_path, rows)
  assert "2 local steps per jitted call" in text
  eng = _cells(_line(text, "| 8 cl × 4 img 32², 2 step, bench CNN small | host_loop-fused2"))
  assert eng[3] == "batch 8, 2 streams"


@pytest.mark.parametrize("check,ok", [
    (None, False), (_GOOD, True), (dict(_GOOD, round1_max_rel_diff=2e-4), False),
    (dict(_GOOD, init_max_abs_diff=1e-9), False), ({"ok": True}, False)])
def test_reference_verdict(check, ok):
  res = {} if check is None else {"check": check}
  assert benchmark_suite.reference_verdict(res, 1e-4)[0] is ok


def test_gpu_section_roofline_when_not_run_and_run_when_there(tmp_path):
  roof = {"command": "python scripts/benchmark_roofline.py", "date": "2026-12-03",
          "compiled_on": "cpu", "versions": {"jax": "0.10.2"},
          "gpus": {"H100 SXM": {"tflops": {"fp32": 67.0}, "bandwidth_tb_s": 3.35,
                                "source": "NVIDIA datasheet"}},
          "entries": [{"workload": _WORKLOAD, "chunk": 64, "flops_per_client_step": 2e9,
                       "bytes_per_client_step": 1e8,
                       "estimates": [{"gpu": "H100 SXM", "peak": "fp32", "bound": "compute",
                                      "client_updates_per_s": 16750.0, "mfu_bound": 1.0}]}]}
  text = _write(tmp_path, [_round("host_loop", [1.0])], roofline=roof)
  gpu = text[text.index("## GPU"):]
  assert "**Not run**" in gpu and "**Estimate, not a measurement.**" in gpu
  assert ("| bench_cnn_small 32×32, 4 img/step, 2 steps | 64 | 2.000 | 100.0 | 20.0 | H100 SXM "
          "| fp32 | compute | 1.68e+04 | 100% |") in gpu
  assert "Pending" not in text
  text = _write(tmp_path, [_round("host_loop", [1.0])], roofline=roof,
                gpu_rows=[_round("vmap", [0.5], chunk=8)])
  gpu = text[text.index("## GPU"):]
  assert "Not run" not in gpu and "Estimate" not in gpu and "| vmap |" in gpu
  text = _write(tmp_path, [_round("host_loop", [1.0])])
  assert "No roofline estimate either" in text


def test_bad_results_json_raises(tmp_path):
  (tmp_path / "x.json").write_text(json.dumps({"rows": []}))
  with pytest.raises(ValueError):
    benchmark_report.load_results(str(tmp_path / "x.json"))
  assert benchmark_report.load_results(str(tmp_path / "absent.json")) is None


def _parsed_config_flag(monkeypatch, argv):
  """The config flag of `launch.benchmark` after parsing `argv` (overrides are read at define)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr("sys.argv", ["prog"] + argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", "experiments/benchmark_cpu.py", "", flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string("workdir", "", "", flag_values=fv)
  flags.DEFINE_list("parts", [], "", flag_values=fv)
  fv(["prog"] + argv)
  return config_flags, fv["config"]


def test_workers_get_the_parents_config_and_its_overrides(monkeypatch):
  """A worker re-parses `config_args`: it must rebuild exactly the parent's config."""
  argv = ["--config", "experiments/benchmark_gpu.py:devices=1", "--config.worker_timeout_s=5",
          "--config.class_table.rows", "64", "--config.centralised_streams=(1, 2)",
          "--config.append=True", "--config.report_path=a b/c=d.md", "--workdir", "w",
          "--parts=sweep"]
  cf, parent = _parsed_config_flag(monkeypatch, argv)
  args = benchmark_suite.config_args(cf.get_config_filename(parent), cf.get_override_values(parent))
  assert args[:3] == ["--config=experiments/benchmark_gpu.py:devices=1",
                      "--config.worker_timeout_s=5", "--config.class_table.rows=64"]
  _, worker = _parsed_config_flag(monkeypatch, args)
  assert worker.value.to_dict() == parent.value.to_dict()
  assert worker.value.centralised_streams == (1, 2) and worker.value.append is True
  assert worker.value.report_path == "a b/c=d.md" and worker.value.class_table.rows == 64
  cf, default = _parsed_config_flag(monkeypatch, ["--workdir=w"])
  assert benchmark_suite.config_args(cf.get_config_filename(default),
                                     cf.get_override_values(default)) == [
                                         "--config=experiments/benchmark_cpu.py"]