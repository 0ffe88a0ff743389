"""Flags shared by every entry point: --config, --workdir, --host_malloc, multi-host; `run(main)`.

Every launcher ends with `common.run(main)` (`launch/user_errors.py`): a user's mistake is one line
on stderr and exit status 2, a bug keeps its traceback.
"""

import re
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from fedface_jax import distributed
from fedface_jax import host_memory
from launch.user_errors import exit_on_config_mismatch  # pylint: disable=unused-import
from launch import user_errors
from launch.user_errors import unescaped
from launch.user_errors import unknown_override_key
from launch.user_errors import USER_ERROR_STATUS  # pylint: disable=unused-import
from launch.user_errors import user_error_exit

FLAGS = flags.FLAGS

# Every launcher (all end with `run(main)`, which imports this module first) has it.
flags.DEFINE_enum(
    "host_malloc", "keep", host_memory.HOST_MALLOC,
    "keep: freed host memory stays in the process (glibc mallopt), so XLA:CPU does not "
    "page-fault each call's buffers in anew (1.37x on the CPU host loop with "
    "resnet_small; fedface_jax/host_memory.py); RSS does not shrink back after a peak. system: glibc's "
    "defaults.")


def run(main):
  """`user_errors.run(main)` with `--host_malloc` applied before `main` allocates anything."""

  def with_host_malloc(argv):
    applied = host_memory.apply(FLAGS.host_malloc)
    logging.info("--host_malloc=%s%s", FLAGS.host_malloc,
                 f" (mallopt accepted: {applied})" if FLAGS.host_malloc == "keep" else "")
    return main(argv)
  user_errors.run(with_host_malloc)


def define_flags(default_config: str):
  # ml_collections applies the `--config.<key>=value` overrides while defining the flag, at
  # import time, and reports an unknown key with a traceback of its internals: name it instead.
  try:
    config_flags.DEFINE_config_file(
        "config", default_config, "ml_collections config file (path[:arg]).",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    key = unknown_override_key(e, sys.argv[1:])
    if key is None:
      raise
    hint = re.search(r"""Did you mean ['"]([\w-]+)['"]""", unescaped(e))
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


def setup_runtime():
  """Joins the multi-controller runtime when asked, and logs the topology."""
  quiet_library_logs()
  distributed.maybe_initialize_distributed(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX %s on %s (%s): process %d/%d, %d local / %d global devices",
               jax.__version__, jax.default_backend(), jax.devices()[0].device_kind,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())

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
