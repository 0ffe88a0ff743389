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
"""

import dataclasses
import enum
import os
from typing import Any

import ml_collections as mlc
import numpy as np

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
