"""Flags shared by every entry point: --config, --workdir and multi-host setup; `run(main)`.

Every launcher ends with `common.run(main)`: a mistake in what the user gave (a bad flag, an unknown
config key, a missing data root or backbone: `fedface_jax.errors.UserError`) is printed as one line
on stderr and the process exits with status 2; `--verbosity=1` shows its traceback too. Any other
exception is a bug and keeps its traceback.
"""

import contextlib
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fedface_jax import config_utils
from fedface_jax import distributed
from fedface_jax import errors

USER_ERROR_STATUS = 2
_CONFIG_UNAVAILABLE = "Configuration is not available"

FLAGS = flags.FLAGS


def user_error_exit(message: str):
  """Ends the program with `error: <message>` on stderr and exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(USER_ERROR_STATUS)


def _unescaped(error: Exception) -> str:
  # ml_collections nests a KeyError's repr in an AttributeError: quotes and newlines escaped.
  return str(error).replace("\\'", "'").replace("\\n", "\n")


def _unknown_override_key(error: Exception, argv: list[str]) -> str | None:
  """`config.a.b` for the `--config.a.b...` override whose key `error` says is missing."""
  named = re.findall(r"'([\w-]+)'", _unescaped(error))
  if not named:
    return None
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    parts = arg[len("--config."):].split("=", 1)[0].split(".")
    if named[0] in parts:
      return "config." + ".".join(parts[:parts.index(named[0]) + 1])
  return None


def define_flags(default_config: str):
  # ml_collections applies the `--config.<key>=value` overrides while defining the flag, at
  # import time, and reports an unknown key with a traceback of its internals: name it instead.
  try:
    config_flags.DEFINE_config_file(
        "config", default_config, "ml_collections config file (path[:arg]).",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    key = _unknown_override_key(e, sys.argv[1:])
    if key is None:
      raise
    hint = re.search(r"""Did you mean ['"]([\w-]+)['"]""", _unescaped(e))
    user_error_exit(
        f"unknown config key {key} (from the command line)"
        + (f", did you mean {hint.group(1)!r}?" if hint else "")
        + " The config file lists the valid keys (or run with --helpfull).")
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
  distributed.define_distributed_flags()


def invocation(module: str) -> str:
  """The command that launched this process, as RESULTS.md records it."""
  return f"python -m {module} " + " ".join(sys.argv[1:])


def define_results_md_flag():
  flags.DEFINE_string("results_md_key", None,
                      "Also write the table as the `<key>` block of RESULTS.md, with its command.")


def define_allow_config_change_flag():
  flags.DEFINE_bool(
      "allow_config_change", False,
      "Resume a --workdir whose checkpoint was written under a different config (the "
      "differences are logged as a warning). Without it such a resume is refused.")


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


def setup_runtime():
  """Joins the multi-controller runtime when asked, and logs the topology."""
  quiet_library_logs()
  distributed.maybe_initialize_distributed(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s)",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.default_backend())



class _LibraryInfoFilter:
  """Drops INFO records that libraries emit through absl (orbax logs every save step)."""

  _NOISY = ("/orbax/", "/tensorboardX/", "/jax/_src/distributed")

  def filter(self, record) -> bool:
    import logging as pylogging  # pylint: disable=g-import-not-at-top
    if record.levelno >= pylogging.WARNING:
      return True
    return not any(part in record.pathname for part in self._NOISY)


def quiet_library_logs():
  """Keeps the console to progress bars and results; `--verbosity=1` brings library logs back."""
  import logging as pylogging  # pylint: disable=g-import-not-at-top
  if FLAGS.is_parsed() and FLAGS.verbosity > 0:
    return
  pylogging.getLogger("absl").addFilter(_LibraryInfoFilter())
