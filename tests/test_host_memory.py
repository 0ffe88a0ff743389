"""`host_memory`: the glibc malloc settings that stop XLA:CPU's per-call page faults.

The speed-up itself is a benchmark figure (BENCHMARKS.md), never asserted in a test; here: the
settings are the ones documented, mallopt accepts them on glibc, the environment form matches,
and a launcher takes `--host_malloc` and refuses an unknown value.
"""

import os
import platform
import subprocess
import sys

import pytest

from fedface_jax import host_memory
from tests import federated_cli


def test_env_form_matches_the_mallopt_settings():
  env = host_memory.malloc_env()
  assert env == {"MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "MALLOC_TOP_PAD_": str(256 << 20),
                 "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_is_accepted_by_glibc_and_recorded():
  assert host_memory.apply("keep") == {"M_TRIM_THRESHOLD": True, "M_TOP_PAD": True,
                                       "M_MMAP_THRESHOLD": True}
  assert host_memory.current_mode() == "keep"


def test_system_changes_nothing_and_unknown_mode_is_refused():
  assert host_memory.apply("system") is None
  with pytest.raises(ValueError, match="host_malloc must be one of"):
    host_memory.apply("jemalloc")


def test_launcher_flag_refuses_an_unknown_value(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(federated_cli.REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "launch.privacy_utility", "--host_malloc=tc"],
                        cwd=federated_cli.REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "host_malloc" in proc.stderr and "Traceback" not in proc.stderr
