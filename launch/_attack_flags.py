"""absl flags the attack launchers share (attack_peer, attack_reference, attack_results).

One definition of the suite choices, the suite-dependent --workdir default and the RESULTS.md
flags (--update_results_md, --results_dir), so the launchers cannot drift apart. Each `define_*`
registers its flags under the calling launcher's module, so that its `--help` still lists them.
"""

import inspect
import os
import sys

from absl import flags

FLAGS = flags.FLAGS
SUITES = ("synthetic", "celeba")


def _launcher() -> str:
  """The module calling a `define_*`, named as absl names it (argv[0] for `__main__`)."""
  name = inspect.currentframe().f_back.f_back.f_globals["__name__"]
  return sys.argv[0] if name == "__main__" else name


def define_suite(name: str, workdir_help: str):
  """--suite, --workdir (default runs/<name>/<suite>: `suite_workdir`) and --pretrained."""
  module = _launcher()
  flags.DEFINE_enum("suite", "synthetic", list(SUITES), "Which faces.", module_name=module)
  flags.DEFINE_string("workdir", None, f"{workdir_help} (default runs/{name}/<suite>).",
                      module_name=module)
  flags.DEFINE_string("pretrained", None,
                      "launch.pretrain workdir with backbone/ (default per suite).",
                      module_name=module)


def suite_workdir(name: str) -> str:
  """--workdir, or runs/<name>/<suite> when it is not given."""
  return FLAGS.workdir or os.path.join("runs", name, FLAGS.suite)


def define_results(what: str):
  """--update_results_md (default on) and --results_dir (default results) for `what`."""
  module = _launcher()
  flags.DEFINE_bool("update_results_md", True, f"Write {what} and the RESULTS.md block.",
                    module_name=module)
  flags.DEFINE_string("results_dir", "results", f"Where {what} goes.", module_name=module)
