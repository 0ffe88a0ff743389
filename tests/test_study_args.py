"""The study's per-run arguments: which step sizes every method and the oracle share.

A fair final table gives FedAvg, FedAwS, the no-spreadout row and oracle_finetune the chosen
FedFace variant's step sizes; if `step_args` dropped one, a baseline would silently run at
another learning rate than FedFace.
"""

from experiments import fedface_study_synthetic
from reporting import fedface_study


def test_client_lr_sets_the_client_optimizer_and_zero_keeps_the_config():
  default = fedface_study_synthetic.get_config("")
  tuned = fedface_study_synthetic.get_config("client_lr=0.1")
  assert default.federated.client.optimizer.learning_rate == 0.03
  assert tuned.federated.client.optimizer.learning_rate == 0.1
  assert tuned.federated.server.optimizer == default.federated.server.optimizer


def test_every_method_shares_the_variants_server_and_client_steps():
  arg = fedface_study.VARIANTS["frozen+row_sum+m0.9+lr2+clr0.1"]
  assert fedface_study.step_args(arg) == "server_momentum=0.9,server_lr=2.0,client_lr=0.1"
  assert fedface_study.client_args(arg) == "client_lr=0.1"
  assert fedface_study.step_args(fedface_study.VARIANTS["frozen+row_sum"]) == ""
  cfg = fedface_study_synthetic.get_config(
      "method=fedavg," + fedface_study.step_args(arg))
  assert cfg.federated.client.optimizer.learning_rate == 0.1
  assert cfg.federated.server.optimizer.learning_rate == 2.0


def test_every_variant_parses_into_a_config():
  for name, arg in fedface_study.VARIANTS.items():
    assert fedface_study_synthetic.get_config(arg).federated.method, name


def test_the_attacks_defence_cost_runs_the_variant_the_study_chose():
  """experiments/ cannot import reporting/, so the chosen variant is copied: keep them equal."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from experiments import attack_sweeps  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "..", "results",
                      "fedface-study-synthetic-selection.json")
  with open(path) as f:
    chosen = next(r["variant"] for r in json.load(f)["rows"]
                  if r["method"] == "fedface" and "nosp" not in r["variant"])
  assert attack_sweeps.STUDY_FEDFACE == fedface_study.VARIANTS[chosen]


def test_the_schedule_args_set_rounds_and_clients_and_baselines_share_them():
  arg = fedface_study.VARIANTS["frozen+row_sum+m0.9+lr2+clr0.1+r80"]
  cfg = fedface_study_synthetic.get_config(arg)
  default = fedface_study_synthetic.get_config("")
  assert (cfg.federated.num_rounds, cfg.federated.clients_per_round) == (80, 25)
  # Same client participations as the config's schedule, so the oracle's budget is unchanged.
  assert (cfg.federated.num_rounds * cfg.federated.clients_per_round ==
          default.federated.num_rounds * default.federated.clients_per_round)
  assert "num_rounds=80,clients_per_round=25" in fedface_study.step_args(arg)


def test_a_finished_run_is_reused_only_under_its_own_config(tmp_path):
  """Two variants that map to one workdir name must not share a row (this happened once)."""
  import json  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from fedface_jax import config_utils  # pylint: disable=g-import-not-at-top
  ran = fedface_study_synthetic.get_config("num_rounds=80,clients_per_round=25")
  (tmp_path / "backbone").mkdir()
  (tmp_path / config_utils.RECORDED_CONFIG).write_text(
      json.dumps(config_utils.config_to_dict(ran)))
  finished = fedface_study._finished   # pylint: disable=protected-access
  assert finished(str(tmp_path), ran)
  other = fedface_study_synthetic.get_config("num_rounds=80")
  with pytest.raises(config_utils.ConfigMismatchError, match="clients_per_round"):
    finished(str(tmp_path), other)
  assert not finished(str(tmp_path / "absent"), other)
