"""Flags shared by every entry point: --config, --workdir and multi-host setup."""

import contextlib

from absl import flags
from absl import logging
from ml_collections import config_flags

from fedface_jax import config_utils
from fedface_jax import distributed

FLAGS = flags.FLAGS


def define_flags(default_config: str):
  config_flags.DEFINE_config_file(
      "config", default_config, "ml_collections config file (path[:arg]).",
      lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
  distributed.define_distributed_flags()


def invocation(module: str) -> str:
  """The command that launched this process, as RESULTS.md records it."""
  import sys  # pylint: disable=g-import-not-at-top
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
  """Ends the program with one line on stderr (exit status 1) when a resume is refused.

  The message names every differing key, which is all the user needs; a traceback
  would only bury it. `hint` says what this entry point offers instead.
  """
  try:
    yield
  except config_utils.ConfigMismatchError as e:
    raise SystemExit(f"ConfigMismatchError: {e.summary}; {hint}") from None


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
