"""Helpers for `experiments/*.py:get_config(arg)` configs.

Every experiment is `get_config(arg)` -> `ml_collections.ConfigDict`, launched
as `--config=experiments/x.py:variant=tiny,rounds=3` (the big_vision pattern).
`parse_config_arg` turns that string into typed values, and refuses unknown
keys or unparsable values, since a typo there would otherwise silently run the
default experiment.

Overrides of the config itself (`--config.opt.lr=0.1`) are checked by absl's
`config_flags`, which raises on a field the config does not have; a locked
ConfigDict (`config.lock()`, what `get_config` returns) also raises on
`config.opt.lrr = ...` in code. `validate_config` is the same check for configs
built from plain dicts or JSON.

Resume safety: `check_resume_config` compares a new config with the one a
workdir recorded (`config.json`) and refuses a resume that differs in a key
other than `RESUME_NEUTRAL_KEYS`, the one list of keys that may change.
"""

import dataclasses
import enum
import json
import os
from typing import Any

from absl import logging
import ml_collections as mlc
import numpy as np

from fedface_jax import errors

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")


def _parse_value(key: str, text: str, default: Any) -> Any:
  """`text` as the type of `default`; a `None` default keeps the string."""
  kind = type(default)
  if isinstance(default, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ValueError(f"Config arg {key}={text!r}: expected a bool (true/false/1/0).")
  if default is None or isinstance(default, str):
    return text
  if isinstance(default, (int, float)):
    try:
      return kind(text)
    except ValueError:
      raise ValueError(f"Config arg {key}={text!r}: expected {kind.__name__}.") from None
  raise ValueError(f"Config arg {key}: default {default!r} of type {kind.__name__} is not "
                   "settable from the arg string (use bool, int, float, str or None).")


def parse_config_arg(arg: str | None, **defaults) -> mlc.ConfigDict:
  """Parses `"variant=tiny,rounds=3"` into a ConfigDict of `defaults` overridden.

  Values take the type of their default; bools accept true/false/1/0/yes/no,
  and a bare key (`"runlocal"`) sets a bool to True. Values cannot contain
  commas.

  Raises:
    ValueError: for an unknown or repeated key, or a value that does not parse.
  """
  values = dict(defaults)
  seen = set()
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, has_value, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config arg {key!r}; valid keys: {sorted(defaults)}.")
    if key in seen:
      raise ValueError(f"Config arg {key!r} given twice in {arg!r}.")
    seen.add(key)
    if not has_value:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"Config arg {key!r} needs a value ({key}=...).")
      values[key] = True
    else:
      values[key] = _parse_value(key, text, defaults[key])
  return mlc.ConfigDict(values)


def validate_config(config, reference, _path: str = "config") -> None:
  """Raises `ValueError` if `config` has a key (at any depth) that `reference` lacks.

  A nested dict in `config` is checked against the reference value at that key
  when that is a non-empty dict/ConfigDict; an empty one (e.g. `model_kwargs={}`)
  or a non-dict reference value accepts any contents.
  """
  for key in config.keys():
    if key not in reference:
      raise ValueError(f"Unknown key {_path}.{key}; valid keys: {sorted(reference.keys())}.")
    sub, ref = config[key], reference[key]
    if (isinstance(sub, (dict, mlc.ConfigDict)) and isinstance(ref, (dict, mlc.ConfigDict))
        and len(ref)):
      validate_config(sub, ref, f"{_path}.{key}")


def _json_safe(value: Any) -> Any:
  if isinstance(value, (mlc.ConfigDict, mlc.FrozenConfigDict)):
    value = value.to_dict()
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    return [_json_safe(v) for v in value]
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, enum.Enum):
    return _json_safe(value.value)
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _json_safe(dataclasses.asdict(value))
  if hasattr(value, "dtype") and hasattr(value, "shape"):  # numpy or jax array / scalar.
    return np.asarray(value).tolist()
  return repr(value)


def config_to_dict(config) -> dict:
  """A plain dict of `config` (ConfigDict or dict) that `json.dumps` accepts.

  Field references are resolved, tuples become lists, arrays become (nested)
  lists, and anything else unknown becomes its `repr`. NaN/Inf floats are kept
  (Python's json writes them as NaN/Infinity).
  """
  return _json_safe(config)


# ---------------------------------------------------------------------------------------------
# Resume safety: a workdir's checkpoint continues only under the config that wrote it.
#
# `metrics_io.MetricWriter.write_config` records every run's config as `<workdir>/config.json`
# when the run starts; that file is the workdir's fingerprint. On a start that finds a
# checkpoint, the new config is compared with it (`check_resume_config`), so that a "rerun" with
# a changed config cannot silently continue (or re-evaluate) a run that is not the one asked for.

RECORDED_CONFIG = "config.json"

# The one list of keys that may change on resume. A key is here only if changing it cannot
# change any trained state or reported number of the run; everything else, including a key this
# code does not read, counts as a difference (a false alarm costs one flag, a silent resume a
# wrong table). Deliberately NOT here, though they look operational:
#   num_steps / federated.num_rounds: learning-rate schedules span the total (warmup_cosine over
#     num_steps, the server schedule over num_rounds); a smaller total would export a later
#     checkpoint as the final model. Extending a run is legitimate but must be asked for
#     (`allow_config_change`), and the warning records it.
#   mesh.*: the class table is padded to the "classes" axis, so the state's shapes change.
#   pretrained_backbone, init_backbone: theta_0 of the run, read only on a fresh start.
#   data.*, splits.*: which images the run sees (data_dir can hold another dataset version).
#   eval.* other than frequency: they change the reported numbers.
#   federated.dp.accounting: changes the reported epsilon.
RESUME_NEUTRAL_KEYS = {
    "checkpoint_every_steps": "when pretraining checkpoints; step t's batch and augmentation "
                              "depend only on (seed, t), so cutting a run elsewhere changes "
                              "nothing (tests/test_pretrain.py stop-and-resume)",
    "federated.checkpoint_every_rounds": "when rounds checkpoint; round t depends only on (seed, "
                                         "t) and the state (tests/test_federated_resume.py)",
    "keep_checkpoints": "how many old checkpoints stay on disk",
    "log_every_steps": "how often training metrics are written",
    "eval.every_rounds": "how often the model is evaluated; evaluation reads the state, never "
                         "changes it",
    "eval.at_round_0": "read only on a fresh start (round 0), never on a resume",
    "federated.execution": "compiled and host_loop run the same per-client math "
                           "(tests/test_host_loop.py), only scheduled differently",
    "federated.host_loop_streams": "how many clients the host loop runs concurrently",
    "federated.host_loop_fused_steps": "how many of the same local steps one host-loop call "
                                       "runs (tests/test_host_loop.py)",
    "federated.unroll_loops": "unrolls the same lax.scan loops",
    "federated.clients_per_chunk": "how many clients one vmap holds; clients are independent "
                                   "and padded slots have zero weight",
    "federated.spreadout.block_size": "rows per block of the blockwise spreadout loss; the same "
                                      "sum in blocks",
    "model.conv_impl": "the same convolutions on the same params, computed as XLA convolutions "
                       "or im2col matmuls (tests/test_im2col.py)",
}


class _Missing:
  """Marks a key that one side of a diff does not have."""

  def __repr__(self):
    return "(absent)"


MISSING = _Missing()


class ConfigMismatchError(errors.UserError, ValueError):
  """A workdir's checkpoint was written under a config that differs in `diffs`."""

  def __init__(self, workdir: str, diffs: list,
               hint: str = "use a new workdir or pass allow_config_change=True"):
    self.workdir, self.diffs = workdir, diffs
    self.summary = f"{workdir} was started with a different config: {format_diff(diffs)}"
    super().__init__(f"{self.summary}; {hint}")


def flatten_config(config, prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`, of `config_to_dict(config)`; an empty dict is a leaf."""
  flat = {}
  for key, value in config_to_dict(config).items():
    path = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      flat.update(flatten_config(value, path + "."))
    else:
      flat[path] = value
  return flat


def _same(a: Any, b: Any) -> bool:
  """Equal as JSON (so 1 != True, NaN == NaN, tuple == list), or numerically (1 == 1.0)."""
  if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
    return True
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  return number(a) and number(b) and a == b


def config_diff(a, b) -> list[tuple[str, Any, Any]]:
  """`[(dotted key, value in a, value in b)]` for every leaf that differs, sorted by key.

  A key present on one side only has `MISSING` on the other. Dicts and ConfigDicts are
  compared after `config_to_dict`, so a config and its JSON record compare equal.
  """
  flat_a, flat_b = flatten_config(a), flatten_config(b)
  diffs = []
  for key in sorted(set(flat_a) | set(flat_b)):
    old, new = flat_a.get(key, MISSING), flat_b.get(key, MISSING)
    if old is MISSING or new is MISSING or not _same(old, new):
      diffs.append((key, old, new))
  return diffs


# Keys the config sections gained when the library stopped reading them with defaults
# (`cfg.get(key, default)`), each with that default: the value every run recorded without the
# key ran with. A recorded config is read as holding these where it lacks them (and has the
# section), so a workdir recorded before still resumes; the library itself has no defaults.
ADDED_KEYS = {
    "eval.split": "evaluation",
    "init_head": "random",
    "model.dtype": "float32",
    "model.remat": False,
    "model.pretrained": "",
    "model.conv_impl": "xla",
    "federated.client.local_loss": "positive_only",
    "data.progress": True,
    "data.align": "none",
    "data.align_padding": 0.25,
    "data.align_on_failure": "keep",
    "data.align_upsample": 0,
    "data.fit": "crop",
}
# Every optimizer section (`<...>.optimizer`, recognised by its `name`) gained these.
ADDED_OPTIMIZER_KEYS = {
    "momentum": 0.9, "nesterov": False, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0,
    "grad_clip_norm": 0.0, "schedule": "constant", "warmup_steps": 0, "final_lr_fraction": 0.0,
    "decay_at": [0.5, 0.75],
}


def with_added_keys(recorded) -> dict[str, Any]:
  """`flatten_config(recorded)`, plus the `ADDED_KEYS` values where its sections lack them."""
  flat = flatten_config(recorded)
  sections = {k.rsplit(".", 1)[0] for k in flat if "." in k}
  for key, value in ADDED_KEYS.items():
    section = key.rsplit(".", 1)[0] if "." in key else None
    present = key in flat or any(k.startswith(key + ".") for k in flat)
    if not present and (section is None or section in sections):
      flat[key] = value
  for name_key in [k for k in flat if k == "optimizer.name" or k.endswith(".optimizer.name")]:
    section = name_key[:-len(".name")]
    for key, value in ADDED_OPTIMIZER_KEYS.items():
      flat.setdefault(f"{section}.{key}", value)
  return flat


def is_resume_neutral(key: str) -> bool:
  """Whether `key` (or a section above it) is in `RESUME_NEUTRAL_KEYS`."""
  return any(key == k or key.startswith(k + ".") for k in RESUME_NEUTRAL_KEYS)


def resume_diff(recorded, config) -> list[tuple[str, Any, Any]]:
  """`config_diff(recorded, config)` without the keys that may change on resume.

  `recorded` is read with `with_added_keys`, so that a run recorded before a key existed compares
  equal to the same run under today's complete config.
  """
  diffs = config_diff(with_added_keys(recorded), config)
  return [d for d in diffs if not is_resume_neutral(d[0])]


def _show(value: Any, limit: int = 60) -> str:
  text = repr(value) if value is MISSING else json.dumps(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def format_diff(diffs) -> str:
  """`"federated.client.lr 0.1 -> 0.05, ..."`: one line for an error message or a warning."""
  return ", ".join(f"{key} {_show(old)} -> {_show(new)}" for key, old, new in diffs)


def read_recorded_config(workdir: str) -> dict | None:
  """The config recorded in `<workdir>/config.json`, or None if there is none."""
  path = os.path.join(workdir, RECORDED_CONFIG)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def check_resume_config(workdir: str, config, *, allow_change: bool = False) -> list:
  """Refuses to resume `workdir` under a `config` that differs from its recorded one.

  Call it only when the workdir holds a checkpoint (without one there is nothing to
  resume). Returns the differences (empty when the configs agree, or when the workdir has
  no record, e.g. one written before configs were recorded: that case is logged). With
  `allow_change` the differences are logged as a warning instead of raised.

  Raises:
    ConfigMismatchError: naming every differing key with its old and new value.
  """
  recorded = read_recorded_config(workdir)
  if recorded is None:
    logging.warning("%s has a checkpoint but no %s: cannot check that it resumes the same "
                    "config", workdir, RECORDED_CONFIG)
    return []
  diffs = resume_diff(recorded, config)
  if diffs and not allow_change:
    raise ConfigMismatchError(workdir, diffs)
  if diffs:
    logging.warning("Resuming %s with a changed config (allowed): %s", workdir,
                    format_diff(diffs))
  return diffs
