"""Resume safety: a workdir's checkpoint continues only under the config recorded with it.

`config.json` (written by every run) is the fingerprint; `config_utils.check_resume_config`
compares a new config with it. Covered here: the diff itself, the list of keys allowed to
change, the trainer and the engine refusing (or, with the override, allowing) a changed
resume, and the launchers' one-line error and flag.
"""

import json
import math
import pathlib
import subprocess

import ml_collections as mlc
import numpy as np
import pytest

from experiments import fedface_synthetic
from experiments import pretrain_synthetic
from fedface_jax import checkpoint as ckpt_lib
from fedface_jax import config_utils
from fedface_jax.federated import engine
from fedface_jax.training import pretrain

import federated_cli as cli

MISSING = config_utils.MISSING


# ---------------------------------------------------------------------------------------------
# The diff.


def test_config_diff_nested_added_removed_changed():
  old = {"a": 1, "b": {"c": 0.1, "d": "x", "e": {"f": [1, 2]}}, "g": True}
  new = mlc.ConfigDict({"a": 1, "b": {"c": 0.05, "e": {"f": (1, 3)}, "h": None}, "g": True,
                        "k": {}})
  assert config_utils.config_diff(old, new) == [
      ("b.c", 0.1, 0.05),
      ("b.d", "x", MISSING),
      ("b.e.f", [1, 2], [1, 3]),
      ("b.h", MISSING, None),
      ("k", MISSING, {}),
  ]
  assert config_utils.config_diff(new, new) == []


def test_config_diff_value_semantics():
  same = lambda a, b: config_utils.config_diff({"x": a}, {"x": b}) == []
  assert same((1, 2), [1, 2])          # JSON has no tuples
  assert same(1, 1.0)                   # a float field given as an int
  assert same(math.nan, math.nan)       # NaN == NaN in a config
  assert not same(1, True)              # but a bool is not a number
  assert not same(0.1, 0.1 + 1e-12)
  # A section replaced by a leaf shows both sides.
  assert config_utils.config_diff({"s": {"a": 1}}, {"s": 2}) == [
      ("s", MISSING, 2), ("s.a", 1, MISSING)]


def test_config_equals_its_json_record():
  """What a run records in config.json must compare equal to the config that wrote it."""
  config = fedface_synthetic.get_config("variant=tiny")
  record = json.loads(json.dumps(config_utils.config_to_dict(config), sort_keys=True))
  assert config_utils.config_diff(record, config) == []


def test_format_diff_one_line():
  diffs = [("federated.client.lr", 0.1, 0.05), ("federated.num_rounds", 20, 30),
           ("federated.method", "fedface", MISSING), ("eval.fars", MISSING, [0.001] * 20)]
  text = config_utils.format_diff(diffs)
  assert "\n" not in text
  assert text.startswith('federated.client.lr 0.1 -> 0.05, federated.num_rounds 20 -> 30, '
                         'federated.method "fedface" -> (absent), eval.fars (absent) -> [0.001')
  assert text.endswith("...")   # long values are cut


# ---------------------------------------------------------------------------------------------
# The keys allowed to change.


def _configs():
  return {"pretrain": pretrain_synthetic.get_config("variant=tiny"),
          "fedface": fedface_synthetic.get_config("variant=tiny")}


def test_resume_neutral_keys_name_real_config_keys():
  """An exclusion that names no real key (a typo, a rename) would silently exclude nothing."""
  keys = set()
  for config in _configs().values():
    keys |= set(config_utils.flatten_config(config))
  assert set(config_utils.RESUME_NEUTRAL_KEYS) <= keys


def _changed(config, changes: dict):
  config = mlc.ConfigDict(config.to_dict())
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    section = config
    for p in parents:
      section = section[p]
    section[leaf] = value
  return config


def test_resume_diff_ignores_neutral_keys_only():
  config = _configs()["fedface"]
  neutral = {"checkpoint_every_steps": 7, "keep_checkpoints": 9, "log_every_steps": 3,
             "eval.every_rounds": 5, "eval.at_round_0": False,
             "federated.checkpoint_every_rounds": 1, "federated.execution": "compiled",
             "federated.host_loop_streams": 2, "federated.host_loop_fused_steps": 3,
             "federated.unroll_loops": "on",
             "federated.clients_per_chunk": 1, "federated.spreadout.block_size": 8,
             "model.conv_impl": "im2col"}
  assert set(neutral) == set(config_utils.RESUME_NEUTRAL_KEYS)
  assert config_utils.config_diff(config, _changed(config, neutral))  # they do differ...
  assert config_utils.resume_diff(config, _changed(config, neutral)) == []  # ...harmlessly
  # Keys that look operational but change the run still count (see RESUME_NEUTRAL_KEYS).
  counted = {"federated.num_rounds": 3, "num_steps": 5, "mesh.classes": 2,
             "pretrained_backbone": "elsewhere/backbone", "eval.num_impostor_pairs": 7,
             "data.data_dir": "/other"}
  diffs = config_utils.resume_diff(config, _changed(config, {**neutral, **counted}))
  assert [d[0] for d in diffs] == sorted(counted)


def _without(flat: dict, dropped) -> dict:
  return {k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".")
                                                   for d in dropped)}


@pytest.mark.parametrize("name", ["pretrain", "fedface"])
def test_a_run_recorded_before_the_added_keys_still_resumes(name):
  """Keys the sections gained when the library lost its `.get` defaults read as those defaults."""
  config = _configs()[name]
  flat = config_utils.flatten_config(config)
  added = [k for k in config_utils.ADDED_KEYS if k in flat or any(
      f.startswith(k + ".") for f in flat)]
  # An optimizer key the old sections lacked holds the old default (those that were always
  # there, e.g. pretraining's warmup_cosine settings, keep their own values).
  optimizer_keys = [f"{k[:-len('.name')]}.{o}" for k in flat if k.endswith("optimizer.name")
                    for o, v in config_utils.ADDED_OPTIMIZER_KEYS.items()
                    if not config_utils.config_diff({"x": flat[f"{k[:-len('.name')]}.{o}"]},
                                                    {"x": v})]
  assert "model.dtype" in added and "optimizer.b1" in optimizer_keys
  old = _without(flat, added + optimizer_keys)
  assert config_utils.config_diff(old, config)      # the record lacks them...
  assert config_utils.resume_diff(old, config) == []   # ...and still resumes
  # A record that holds another value of an added key still differs from today's config.
  changed = dict(old, **{"model.dtype": "bfloat16"})
  assert [d[0] for d in config_utils.resume_diff(changed, config)] == ["model.dtype"]
  # A key the record lacks that is not an added key is a difference, as before.
  assert [d[0] for d in config_utils.resume_diff(_without(old, ["num_steps"]), config)] == [
      "num_steps"]


# ---------------------------------------------------------------------------------------------
# The trainer: a real tiny pretraining run, stopped after one step and resumed.


_PRETRAIN_CONFIG = '''\
"""`variant=tiny` on one device with a one-stage backbone (written by {test})."""

from experiments import pretrain_synthetic


def get_config(arg=None):
  del arg
  config = pretrain_synthetic.get_config("variant=tiny")
  config.data.data_dir = "{data_dir}"
  config.mesh.data, config.mesh.classes = 1, 1
  config.model.kwargs = dict(widths=(8,), blocks=(1,), strides=(2,))   # seconds to compile
  config.num_steps = 2
  config.checkpoint_every_steps = 1
  config.log_every_steps = 1
  config.eval.num_impostor_pairs = 200
  return config
'''


def _pretrain_config(root: pathlib.Path):
  """(path, config) of the tiny pretraining config, as a file the launcher can read too."""
  path = root / "tiny_pretrain_config.py"
  path.write_text(_PRETRAIN_CONFIG.format(test=__name__, data_dir=root / "data"))
  return str(path), cli.load_config(str(path))


def _recorded(workdir):
  return config_utils.read_recorded_config(str(workdir))


def _steps(workdir):
  return cli.finished_steps(pathlib.Path(workdir) / "checkpoints")


def test_pretrain_resume_refused_allowed_and_neutral(tmp_path, caplog):
  _, config = _pretrain_config(tmp_path)
  workdir = tmp_path / "run"
  assert pretrain.train_and_evaluate(config, str(workdir), stop_after_steps=1) is None
  assert _steps(workdir) == [1]

  # A different learning rate and length: refused before anything runs, keys named, the
  # record left as it was.
  changed = _changed(config, {"optimizer.learning_rate": 0.05, "num_steps": 3})
  with pytest.raises(config_utils.ConfigMismatchError) as err:
    pretrain.train_and_evaluate(changed, str(workdir))
  assert str(err.value) == (
      f"{workdir} was started with a different config: num_steps 2 -> 3, "
      "optimizer.learning_rate 0.1 -> 0.05; use a new workdir or pass allow_config_change=True")
  assert [d[0] for d in err.value.diffs] == ["num_steps", "optimizer.learning_rate"]
  assert _steps(workdir) == [1] and config_utils.config_diff(_recorded(workdir), config) == []

  # Only keys that cannot change the result: resumes (from step 1) and finishes.
  neutral = _changed(config, {"log_every_steps": 2, "checkpoint_every_steps": 2,
                              "keep_checkpoints": 3})
  assert pretrain.train_and_evaluate(neutral, str(workdir)) is not None
  assert _steps(workdir) == [1, 2]
  assert config_utils.config_diff(_recorded(workdir), neutral) == []

  # Extending the run is a change, allowed only when asked; the warning names it, and the
  # new config becomes the record.
  longer = _changed(neutral, {"num_steps": 3})
  with pytest.raises(config_utils.ConfigMismatchError, match="num_steps 2 -> 3"):
    pretrain.train_and_evaluate(longer, str(workdir))
  with caplog.at_level("WARNING"):
    assert pretrain.train_and_evaluate(longer, str(workdir), allow_config_change=True)
  assert "with a changed config (allowed): num_steps 2 -> 3" in caplog.text
  assert _steps(workdir)[-1] == 3
  assert config_utils.config_diff(_recorded(workdir), longer) == []


# ---------------------------------------------------------------------------------------------
# The engine: the gate is its first step, so a stand-in checkpoint is enough to test it.


class _PastTheCheck(Exception):
  """Raised by the first thing engine.run does after the config check."""


def _federated_workdir(tmp_path, recorded, checkpoint=True):
  """A workdir with `recorded` as its config.json and a (stand-in) round-1 checkpoint."""
  workdir = tmp_path / "fed"
  workdir.mkdir()
  if checkpoint:
    with ckpt_lib.Checkpointer(workdir / "checkpoints") as ck:
      ck.save(1, {"round": np.int32(1)})
      ck.wait()
  (workdir / "config.json").write_text(
      json.dumps(config_utils.config_to_dict(recorded), sort_keys=True))
  return workdir


@pytest.fixture
def gated_engine(monkeypatch):
  def past_the_check(*args, **kwargs):
    raise _PastTheCheck()
  monkeypatch.setattr(engine.alg_lib, "apply_method", past_the_check)


def test_engine_refuses_a_changed_config(tmp_path, gated_engine):
  config = fedface_synthetic.get_config("variant=tiny")
  workdir = _federated_workdir(tmp_path, config)
  changed = _changed(config, {"federated.client.optimizer.learning_rate": 0.05,
                              "federated.num_rounds": 30, "federated.method": "fedavg"})
  with pytest.raises(config_utils.ConfigMismatchError) as err:
    engine.run(changed, str(workdir))
  assert str(err.value).startswith(
      f"{workdir} was started with a different config: "
      "federated.client.optimizer.learning_rate 0.01 -> 0.05, "
      'federated.method "fedface" -> "fedavg", federated.num_rounds 2 -> 30; ')
  with pytest.raises(_PastTheCheck):
    engine.run(changed, str(workdir), allow_config_change=True)


def test_engine_resumes_same_or_neutrally_changed_config(tmp_path, gated_engine):
  config = fedface_synthetic.get_config("variant=tiny")
  workdir = _federated_workdir(tmp_path, config)
  with pytest.raises(_PastTheCheck):
    engine.run(config, str(workdir))
  neutral = _changed(config, {"federated.execution": "compiled", "eval.every_rounds": 0,
                              "federated.checkpoint_every_rounds": 1})
  with pytest.raises(_PastTheCheck):
    engine.run(neutral, str(workdir))


def test_engine_without_checkpoint_starts_fresh(tmp_path, gated_engine):
  """A record without a checkpoint (a run that died before its first save) resumes nothing."""
  config = fedface_synthetic.get_config("variant=tiny")
  workdir = _federated_workdir(tmp_path, _changed(config, {"federated.num_rounds": 30}),
                               checkpoint=False)
  with pytest.raises(_PastTheCheck):
    engine.run(config, str(workdir))


# ---------------------------------------------------------------------------------------------
# The launchers: one line, exit 2, no traceback; --allow_config_change gets through.


def _launch(module, config_path, workdir, root, *flags):
  proc = subprocess.run(cli.command(module, config_path, workdir, *flags), cwd=cli.REPO_ROOT,
                        env=cli.env(root), capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("module, config_arg, override, expected", [
    ("launch.pretrain", "experiments/pretrain_synthetic.py:variant=tiny",
     "--config.num_steps=5", "num_steps 2 -> 5"),
    ("launch.fedface", "experiments/fedface_synthetic.py:variant=tiny",
     "--config.federated.client.optimizer.learning_rate=0.05",
     "federated.client.optimizer.learning_rate 0.01 -> 0.05"),
])
def test_launcher_refuses_with_one_line(tmp_path, module, config_arg, override, expected):
  recorded = (pretrain_synthetic if module == "launch.pretrain" else fedface_synthetic
              ).get_config("variant=tiny")
  recorded.data.data_dir = str(tmp_path / "data")
  workdir = _federated_workdir(tmp_path, recorded)
  rc, out, err = _launch(module, config_arg, workdir, tmp_path,
                         f"--config.data.data_dir={tmp_path / 'data'}", override)
  assert rc == 2, err[-3000:]  # launch.common.USER_ERROR_STATUS
  assert "Traceback" not in err and "Traceback" not in out
  assert err.strip().splitlines()[-1] == (
      f"error: ConfigMismatchError: {workdir} was started with a different config: {expected}; "
      "use a new --workdir or pass --allow_config_change (--verbosity=1 shows the traceback)")


def test_pretrain_launcher_allow_config_change(tmp_path):
  config_path, config = _pretrain_config(tmp_path)
  workdir = tmp_path / "run"
  assert pretrain.train_and_evaluate(config, str(workdir), stop_after_steps=1) is None
  rc, _, err = _launch("launch.pretrain", config_path, workdir, tmp_path,
                       "--config.num_steps=3", "--allow_config_change")
  assert rc == 0, err[-3000:]
  assert "with a changed config (allowed): num_steps 2 -> 3" in err
  assert _steps(workdir)[-1] == 3
