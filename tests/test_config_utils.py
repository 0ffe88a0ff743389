"""Config arg parsing, unknown-key detection, JSON export, and the distributed flags."""

import json
import pathlib

from absl import flags
import jax.numpy as jnp
import ml_collections as mlc
from ml_collections import config_flags
import numpy as np
import pytest

from fedface_jax import config_utils
from fedface_jax import distributed


def test_parse_config_arg_types():
  cfg = config_utils.parse_config_arg(
      "variant=tiny, rounds=3,lr=1e-3,plots=false,runlocal", variant="base", rounds=10, lr=0.1,
      plots=True, runlocal=False, data_dir=None)
  assert cfg.to_dict() == {"variant": "tiny", "rounds": 3, "lr": 1e-3, "plots": False,
                           "runlocal": True, "data_dir": None}
  assert isinstance(cfg.rounds, int) and isinstance(cfg.lr, float)
  assert config_utils.parse_config_arg(None, rounds=10).rounds == 10
  assert config_utils.parse_config_arg("", rounds=10).rounds == 10
  assert config_utils.parse_config_arg("plots=1", plots=False).plots is True
  assert config_utils.parse_config_arg("lr=2", lr=0.1).lr == 2.0


@pytest.mark.parametrize("arg, match", [
    ("roundz=3", r"Unknown config arg 'roundz'.*\['plots', 'rounds'\]"),
    ("rounds=three", "rounds='three'.*int"),
    ("plots=maybe", "plots='maybe'.*bool"),
    ("rounds", "needs a value"),
    ("rounds=1,rounds=2", "given twice"),
])
def test_parse_config_arg_errors(arg, match):
  with pytest.raises(ValueError, match=match):
    config_utils.parse_config_arg(arg, rounds=10, plots=True)


def test_locked_config_rejects_unknown_keys():
  config = mlc.ConfigDict({"opt": {"lr": 0.1}, "rounds": 3})
  config.lock()
  with pytest.raises(AttributeError, match="lrr"):
    config.opt.lrr = 0.1
  config.opt.lr = 0.2  # Known keys stay settable.
  # What launch scripts use: absl config_flags overrides of a config.
  for argv, error in ((["prog", "--config.opt.lrr=0.1"], AttributeError),
                      (["prog", "--config.rounds=x"], flags.IllegalFlagValueError)):
    flag_values = flags.FlagValues()
    with pytest.raises(error):
      config_flags.DEFINE_config_dict("config", mlc.ConfigDict(config.to_dict()),
                                      flag_values=flag_values, sys_argv=argv)
      flag_values(argv)
  argv = ["prog", "--config.opt.lr=0.5"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", mlc.ConfigDict(config.to_dict()),
                                  flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  assert flag_values.config.opt.lr == 0.5


def test_validate_config():
  reference = mlc.ConfigDict({"opt": {"lr": 0.1, "b1": 0.9}, "rounds": 3, "extra": {}})
  config_utils.validate_config({"opt": {"lr": 0.2}, "extra": {"anything": 1}}, reference)
  with pytest.raises(ValueError, match=r"config\.opt\.lrr.*\['b1', 'lr'\]"):
    config_utils.validate_config({"opt": {"lrr": 0.2}}, reference)


def test_config_to_dict_is_json_safe():
  config = mlc.ConfigDict({
      "a": (1, 2), "b": np.float32(0.5), "c": jnp.arange(2), "d": pathlib.Path("/x"),
      "e": {"f": None, "g": object}})
  config.h = config.get_ref("a")
  out = config_utils.config_to_dict(config)
  json.dumps(out)
  assert out["a"] == [1, 2] and out["h"] == [1, 2] and out["b"] == 0.5
  assert out["c"] == [0, 1] and out["d"] == "/x" and out["e"]["f"] is None


def test_distributed_single_process():
  assert not distributed.maybe_initialize_distributed(None, 1, 0)
  assert not distributed.maybe_initialize_distributed()
  assert distributed.is_primary()
  flag_values = flags.FlagValues()
  distributed.define_distributed_flags(flag_values)
  distributed.define_distributed_flags(flag_values)  # Idempotent.
  flag_values(["prog", "--num_processes=1"])
  assert flag_values.coordinator_address is None and flag_values.process_id == 0
  assert not distributed.initialize_from_flags(flag_values)
