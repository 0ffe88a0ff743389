"""`benchmark_suite.run_peers`: ours and each peer interleaved, the reference check mandatory.

The suite's peer phase is tested with a fake peer venv (a shell script that runs a tiny Python
program printing a peer JSON line) and a fake worker, so no peer framework is needed: the
order must be ours, peer, ours, peer; every peer call must carry `--reference`; and a peer
whose check fails must be recorded as not publishable.
"""

import json
import os
import stat
import sys

import ml_collections as mlc
import pytest

from fedface_jax import host_memory
from reporting import benchmark_suite

_PEER = """
import json, os, sys
args = sys.argv[1:]
rel = float(open({rel_path!r}).read())
malloc = {{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
with open({log!r}, "a") as f:
  f.write(json.dumps(["peer", args, malloc]) + "\\n")
print(json.dumps({{"client_updates_per_s": 4.0, "images_per_s": 16.0, "round_s": [2.0, 2.0],
                  "version": "fake", "check": {{"init_max_abs_diff": 0.0,
                  "round1_max_abs_diff": rel, "round1_max_rel_diff": rel, "ok": rel < 1e-4}}}}))
"""


@pytest.mark.parametrize("rel,ok", [(1e-6, True), (5e-3, False)])
def test_interleaved_blocks_with_mandatory_reference(tmp_path, monkeypatch, rel, ok):
  root = tmp_path / "repo"
  (root / "scripts" / "peers").mkdir(parents=True)
  bindir = root / ".peer_venvs" / "fake" / "bin"
  bindir.mkdir(parents=True)
  log = tmp_path / "calls.jsonl"
  (tmp_path / "rel").write_text(str(rel))
  (root / "scripts" / "peers" / "fake_bench.py").write_text(
      _PEER.format(rel_path=str(tmp_path / "rel"), log=str(log)))
  py = bindir / "python"
  py.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
  py.chmod(py.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setattr(benchmark_suite, "REPO_ROOT", str(root))

  def fake_reference(workdir, name, w, log_path, timeout_s):
    del log_path, timeout_s
    w.save(os.path.join(workdir, f"workload_{name}.json"))
    path = os.path.join(workdir, f"workload_{name}_ref.npz")
    open(path, "w").close()
    return path

  def fake_worker(args, devices, log_path, timeout_s):
    del devices, log_path, timeout_s
    with open(log, "a") as f:
      f.write(json.dumps(["ours", args]) + "\n")
    return 0

  monkeypatch.setattr(benchmark_suite, "write_reference", fake_reference)
  monkeypatch.setattr(benchmark_suite, "_subprocess", fake_worker)
  cfg = mlc.ConfigDict(dict(
      image_size=(8, 8), embedding_dim=8, lr=0.1, seed=0, worker_timeout_s=60,
      peer_blocks=3, peer_rounds_per_block=2, peer_reference_rtol=1e-4, host_malloc="keep",
      runs=(dict(name="base", clients=4, steps=1, images=2, model="small", devices=1),),
      peers=(dict(run="base", venv="fake", paired_strategies=("engine_host_fused",)),)))
  out = tmp_path / "results.jsonl"
  benchmark_suite.run_peers(cfg, str(tmp_path), str(out), ["--config=x.py"])
  calls = [json.loads(ln) for ln in log.read_text().splitlines()]
  assert [c[0] for c in calls] == ["ours", "peer"] * 3
  for block, (ours, peer) in enumerate(zip(calls[::2], calls[1::2])):
    assert "--config.paired_run=base" in ours[1]
    assert f"--config.paired_block={block}" in ours[1]
    assert "--config.paired_peer=fake" in ours[1]   # our rows say which peer they pair with
    assert "--config.paired_strategies=('engine_host_fused',)" in ours[1]
    assert "--reference" in peer[1] and peer[1][peer[1].index("--rounds") + 1] == "2"
    # The peer runs with the same glibc malloc settings as ours (host_malloc="keep").
    assert peer[2] == host_memory.malloc_env()
  rows = [json.loads(ln) for ln in out.read_text().splitlines()]
  assert [r["paired_block"] for r in rows] == [0, 1, 2]
  assert all(r["paired_strategies"] == ["engine_host_fused"] for r in rows)
  assert all(r["host_malloc"] == "keep" for r in rows)
  assert all(r["kind"] == "peer" and r["reference_ok"] is ok for r in rows)
  assert all(("match" in r["reference_why"]) is ok for r in rows)


def test_peer_label_and_python():
  """Rows name the script and the venv it ran in; "ours" is this interpreter."""
  assert benchmark_suite.peer_label(dict(venv="fedjax")) == "fedjax"
  assert benchmark_suite.peer_label(dict(venv="ours", script="bare_loop")) == "bare_loop@ours"
  assert benchmark_suite.peer_label(
      dict(venv="fedjax", script="bare_loop")) == "bare_loop@fedjax"
  assert benchmark_suite.peer_label(dict(venv="fedjax", label="x")) == "x"
  assert benchmark_suite.peer_python("ours") == sys.executable
  assert benchmark_suite.peer_python("fedjax").endswith(
      os.path.join(".peer_venvs", "fedjax", "bin", "python"))
