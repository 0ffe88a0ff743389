"""The FedFace study driver end to end, on the tiny variant: every stage, JSON, table and plot.

The study's numbers are only as good as its plumbing: which runs feed which row, that the
variant is chosen on validation identities, that each row carries a CI and a paired delta,
and that an interrupted study reuses finished runs. This runs the whole driver as a process
(two FedFace variants, one seed, few resamples) and checks what it wrote.
"""

import json
import os
import subprocess
import sys

import pytest

import federated_cli as cli

_CONFIG = '''\
from experiments import fedface_study_synthetic


def get_config(arg=None):
  config = fedface_study_synthetic.get_config(arg)
  config.data.data_dir = "{data_dir}"
  return config
'''


# ~2.5 min on 2 cores (about ten tiny trainings, twice): in `make test-slow`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  root = tmp_path_factory.mktemp("study")
  config = root / "study_config.py"
  config.write_text(_CONFIG.format(data_dir=root / "data"))
  cmd = [sys.executable, "-m", "launch.fedface_study", f"--config={config}",
         f"--workroot={root / 'runs'}", f"--results_dir={root / 'results'}", "--seeds=0",
         "--variants=frozen+row_sum,frozen+nosp", "--num_resamples=50", "--block=study-test",
         "--variant=tiny"]
  env = cli.env(root, num_devices=1)
  first = subprocess.run(cmd, env=env, cwd=cli.REPO_ROOT, capture_output=True, text=True,
                         timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  # A rerun reuses every finished run: no training, same numbers.
  second = subprocess.run(cmd, env=env, cwd=cli.REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "pretrain:" not in second.stderr and "Resumed" not in second.stderr
  return root, first.stdout, second.stdout


def _load(root, block):
  with open(root / "results" / f"{block}.json") as f:
    return json.load(f)


def test_every_block_has_rows_with_cis_and_paired_deltas(study):
  root, _, _ = study
  gate, selection, final = (_load(root, b) for b in
                            ("study-test-gate", "study-test-selection", "study-test"))
  assert [r["method"] for r in gate["rows"]] == ["pretrained", "oracle_central"]
  assert {r["variant"] for r in selection["rows"][1:]} == {"frozen+row_sum", "frozen+nosp"}
  # Each selection run's training-log summary, which the reading guide's diagnosis cites.
  logs = selection["training_logs"]
  assert set(logs) == {"frozen+row_sum", "frozen+nosp"}
  for stats in logs.values():
    assert stats["mean_client_delta_norm"] >= 0 and 0 <= stats["max_inside_margin"] <= 1
    assert stats["last_client_loss"] >= 0 and 0 <= stats["violations"] <= 1
  methods = [r["method"] for r in final["rows"]]
  assert methods == ["pretrained", "fedavg", "fedaws", "fedface", "fedface_nosp",
                     "oracle_central", "oracle_finetune"]
  for block in (gate, selection, final):
    assert block["command"].startswith("python -m launch.fedface_study") and block["date"]
    for row in block["rows"]:
      for name, s in row["metrics"].items():
        assert s["ci_low"] <= s["mean"] <= s["ci_high"], (row["method"], name, s)
        assert (0 <= s["mean"] <= 1) if name == "auc" else (0 <= s["mean"] <= 100)
      assert ("delta_vs_pretrained" in row) == (row["method"] != "pretrained")
  # The chosen variant is the better of the two on validation, by TAR@1e-3 then AUC.
  chosen = final["rows"][3]["variant"]
  assert chosen == "frozen+row_sum"   # the only candidate with spreadout
  assert set(final["fedface_minus_fedavg"]) == {"tar@1e-3", "tar@1e-2", "auc"}
  assert set(final["fedface_minus_nosp"]) == {"tar@1e-3", "tar@1e-2", "auc"}
  # The class table: spreadout can only leave fewer pairs above its margin than no spreadout.
  table = final["class_table_last_round"]
  assert 0 <= table["fedface"]["violations"] <= table["fedface_nosp"]["violations"] <= 1
  assert -1 <= table["fedface"]["max_cos"] <= 1
  assert os.path.getsize(final["tar_vs_round_png"]) > 1000


def test_reruns_print_the_same_table(study):
  _, first, second = study
  table = lambda out: [l for l in out.splitlines() if l.startswith("|")]
  assert table(first) and table(first) == table(second)


def test_budget_pilot_gives_fedface_and_the_oracle_the_same_larger_budget(study):
  root, _, _ = study
  cmd = [sys.executable, "-m", "launch.fedface_study", f"--config={root / 'study_config.py'}",
         f"--workroot={root / 'runs'}", f"--results_dir={root / 'results'}", "--seeds=0",
         "--variants=frozen+row_sum,frozen+nosp", "--num_resamples=50", "--block=study-test",
         "--variant=tiny", "--stage=budget"]
  out = subprocess.run(cmd, env=cli.env(root, num_devices=1), cwd=cli.REPO_ROOT,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  pilot = _load(root, "study-test-budget")
  assert [r["variant"] for r in pilot["rows"][1:]] == [
      "frozen+row_sum, 2 rounds", "frozen+row_sum, 4 rounds", "budget of 2 rounds",
      "budget of 4 rounds"]
  assert set(pilot["share_of_oracle_gain_pct"]) == {"config_budget", "x2_budget"}
  # The gate and selection blocks stay as the full study wrote them.
  assert "--stage=budget" not in _load(root, "study-test-selection")["command"]
  steps = lambda name: json.loads(
      (root / "runs" / name / "seed0" / "config.json").read_text())["num_steps"]
  assert steps("oracle_finetune+num_rounds=4") == 2 * steps("oracle_finetune")
