"""User mistakes as one line: `run(main)` and the helpers behind it (see `launch/common.py`).

A mistake in what the user gave (a bad flag, an unknown config key, a missing data root or
backbone: `fedface_jax.errors.UserError`) is printed as `error: ...` on stderr with exit status 2;
`--verbosity=1` shows its traceback too. Any other exception is a bug and keeps its traceback.
"""

import contextlib
import re
import sys

from absl import app
from absl import flags

from fedface_jax import config_utils
from fedface_jax import errors

USER_ERROR_STATUS = 2
_CONFIG_UNAVAILABLE = "Configuration is not available"

FLAGS = flags.FLAGS


def user_error_exit(message: str):
  """Ends the program with `error: <message>` on stderr and exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(USER_ERROR_STATUS)


def unescaped(error: Exception) -> str:
  # ml_collections nests a KeyError's repr in an AttributeError: quotes and newlines escaped.
  return str(error).replace("\\'", "'").replace("\\n", "\n")


def unknown_override_key(error: Exception, argv: list[str]) -> str | None:
  """`config.a.b` for the `--config.a.b...` override whose key `error` says is missing."""
  named = re.findall(r"'([\w-]+)'", unescaped(error))
  if not named:
    return None
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    parts = arg[len("--config."):].split("=", 1)[0].split(".")
    if named[0] in parts:
      return "config." + ".".join(parts[:parts.index(named[0]) + 1])
  return None


@contextlib.contextmanager
def exit_on_config_mismatch(hint: str = "use a new --workdir or pass --allow_config_change"):
  """Turns a refused resume into a one-line user error (see `run`) with this entry point's fix.

  The message names every differing key, which is all the user needs; a traceback
  would only bury it. `hint` says what this entry point offers instead.
  """
  try:
    yield
  except config_utils.ConfigMismatchError as e:
    raise errors.UserError(f"ConfigMismatchError: {e.summary}; {hint}") from e


def _one_line(error: Exception) -> str:
  """A flag error's message without the traceback ml_collections embeds in it: its first line
  (which flag) and its last (what was wrong)."""
  lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else type(error).__name__
  return f"{lines[0].rstrip(':')}: {lines[-1]}"


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    user_error_exit(f"{_one_line(e)} (see --helpfull)")


def run(main):
  """`app.run(main)`, with user errors (`fedface_jax.errors.UserError`, bad flags) as one line."""

  def guarded(argv):
    try:
      return main(argv)
    except (errors.UserError, flags.Error, OSError) as e:
      # flags.Error / OSError here: ml_collections loads --config=<file> on first use, inside
      # main, and reports a missing or broken file as "Configuration is not available".
      config_load = isinstance(e, OSError) and str(e).startswith(_CONFIG_UNAVAILABLE)
      if not isinstance(e, (errors.UserError, flags.Error)) and not config_load:
        raise  # Any other OSError is not the user's config.
      if FLAGS.is_parsed() and FLAGS.verbosity >= 1:
        raise
      cause = e.__cause__ if config_load and e.__cause__ is not None else e
      user_error_exit(f"{_one_line(cause)} (--verbosity=1 shows the traceback)")

  app.run(guarded, flags_parser=_parse_flags)
