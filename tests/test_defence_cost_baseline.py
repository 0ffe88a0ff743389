"""The defence-cost table reuses a no-DP FedFace run only if it ran under exactly the DP rows'
config: a baseline of other rounds, steps or evaluation split would compare two experiments. Its
reports are the run's own files: a rerun must not turn round 0 into a re-evaluation."""

import json
import os

from experiments import attack_sweeps as sweep_configs
from fedface_jax import config_utils
from reporting import defence_cost


def _finished_run(workdir, config):
  os.makedirs(os.path.join(workdir, "eval"))
  with open(os.path.join(workdir, config_utils.RECORDED_CONFIG), "w") as f:
    json.dump(config_utils.config_to_dict(config), f)
  rounds = int(config.federated.num_rounds)
  for name, tar in ((f"round_{rounds}", 0.2), ("round_0", 0.1)):
    with open(os.path.join(workdir, "eval", f"{name}.json"), "w") as f:
      json.dump({"tar@far=1e-3": tar}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:   # rounds from t=100 to t=250,
    f.write('{"step": 0, "time": 100.0}\n{"step": 1}\n')        # then a later re-evaluation
    f.write(f'{{"step": {rounds}, "time": 250.0}}\n{{"step": {rounds}, "time": 900.0}}\n')


def test_baseline_is_reused_only_under_the_same_config(tmp_path):
  config = sweep_configs.fedface_config(sweep_configs.sweep_config("synthetic"))
  same, other = str(tmp_path / "same"), str(tmp_path / "other")
  _finished_run(same, config)
  changed = config_utils.config_to_dict(config)
  changed["federated"]["client"]["optimizer"]["learning_rate"] = 0.03
  _finished_run(other, config.__class__(changed))
  read = defence_cost._read_eval   # pylint: disable=protected-access
  reused = read(same, config)
  assert reused["report"] == {"tar@far=1e-3": 0.2}
  assert reused["round_0_report"] == {"tar@far=1e-3": 0.1}
  assert reused["wall_s"] == 150.0   # the run's own rounds, not the time of reading it back
  assert read(other, config) is None
  assert read(str(tmp_path / "absent"), config) is None
