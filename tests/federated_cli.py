"""Helpers for tests that run `launch.fedface` as real OS processes.

Why real processes: a SIGKILL mid-run and a `jax.distributed` job of several
processes are the only honest tests of crash recovery and multi-process SPMD;
an in-process stand-in would share memory, devices and the compile cache with
the test and could not be killed.

Why a derived config: the tiny synthetic config's 4-stage ResNet takes ~50 s to
compile one round on a loaded 2-core machine; a 2-stage ResNet (same model
code, same engine) compiles in a few seconds. The config is written to a temp
directory so that the tests touch neither `experiments/` nor the default data
cache, and all processes of a test share one persistent compile cache.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_CONFIG = '''\
"""Tiny synthetic FedFace with a 2-stage backbone (written by tests/federated_cli.py)."""

from experiments import fedface_synthetic


def get_config(arg=None):
  del arg
  config = fedface_synthetic.get_config("variant=tiny,pretrained={pretrain_dir}")
  config.data.data_dir = "{data_dir}"
  config.model.kwargs = dict(widths=(8, 16), blocks=(1, 1), strides=(2, 2))
  config.eval.every_rounds = 0      # the server state is under test, not TAR
  config.eval.at_round_0 = False
  config.keep_checkpoints = 100     # keep every round, to compare round by round
  return config
'''


def write_config(root: pathlib.Path) -> str:
  """Writes the test config under `root`; pretrain -> root/pretrain, data -> root/data."""
  path = root / "fedface_test_config.py"
  path.write_text(_CONFIG.format(pretrain_dir=root / "pretrain", data_dir=root / "data"))
  return str(path)


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("fedface_test_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def env(root: pathlib.Path, num_devices: int = 1) -> dict:
  """Environment of a child process: CPU only, `num_devices` fake devices.

  Like tests/conftest.py, most XLA optimisations are off (compile time
  dominates these tiny runs); the compile cache under `root` is shared by all
  processes of a test, so only the first run of a program compiles it.
  """
  e = dict(os.environ)
  e.update(JAX_PLATFORMS="cpu",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
           JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           PYTHONUNBUFFERED="1")
  if not e.get("FEDFACE_TEST_OPTIMIZE"):
    e["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  return e


def command(module: str, config_path: str, workdir, *flags: str) -> list[str]:
  return [sys.executable, "-m", module, f"--config={config_path}", f"--workdir={workdir}",
          *flags]


def start(cmd: list[str], child_env: dict, log_path: pathlib.Path) -> subprocess.Popen:
  """Starts `cmd` in the repository root with stdout+stderr to `log_path` (no pipe to fill)."""
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env, stdout=log,
                          stderr=subprocess.STDOUT)
  proc.log_path = log_path
  log.close()  # The child holds its own copy of the descriptor.
  return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
  """Waits for `proc`, fails with its log tail unless it exited 0; returns the log."""
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  text = pathlib.Path(proc.log_path).read_text()
  if proc.returncode != 0:
    raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{text[-4000:]}")
  return text


def pretrain(config_path: str, root: pathlib.Path) -> None:
  """theta_0 for the federated runs: `launch.pretrain` on the test config (2 steps)."""
  finish(start(command("launch.pretrain", config_path, root / "pretrain"), env(root),
               root / "pretrain.log"))


def pretrained_workspace(tmp_path_factory, name: str) -> tuple[pathlib.Path, str]:
  """A tmp root with the derived tiny config and its pretrained backbone (module fixtures)."""
  root = tmp_path_factory.mktemp(name)
  config_path = write_config(root)
  pretrain(config_path, root)
  return root, config_path


def finished_steps(checkpoint_dir: pathlib.Path) -> list[int]:
  """Steps whose checkpoint is final: orbax writes `<step>.orbax-checkpoint-tmp-*`
  and renames it to `<step>` only when complete."""
  if not checkpoint_dir.is_dir():
    return []
  return sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit())


def wait_for_step(checkpoint_dir: pathlib.Path, step: int, proc: subprocess.Popen,
                  timeout: float = 300) -> int:
  """Polls until a checkpoint of round >= `step` is final; fails if `proc` exits first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = finished_steps(checkpoint_dir)
    if steps and steps[-1] >= step:
      return steps[-1]
    if proc.poll() is not None:
      raise AssertionError(f"{proc.args} exited {proc.returncode} before round {step}:\n"
                           f"{pathlib.Path(proc.log_path).read_text()[-4000:]}")
    time.sleep(0.05)
  raise AssertionError(f"no checkpoint >= {step} in {checkpoint_dir} after {timeout} s")


def restore_server_state(config, workdir, step: int) -> dict:
  """Restores round `step` of a run exactly as `engine.run` resumes it (one device here).

  The abstract state comes from the engine's own `run.build_run`, so this
  checks the checkpoint against the structure, dtypes and shapes a resume
  needs, whatever the number of processes and devices that wrote it.
  """
  # pylint: disable=g-import-not-at-top
  from fedface_jax import checkpoint as ckpt_lib
  from fedface_jax import models
  from fedface_jax import sharding as sh
  from fedface_jax.federated import algorithm as alg_lib
  from fedface_jax.federated import run as run_lib
  from fedface_jax import data as data_lib
  fcfg = alg_lib.apply_method(config.federated)
  model = models.create_model(config.model.name, config.model.embedding_dim,
                              **config.model.get("kwargs", {}))
  faces = data_lib.load_splits(config)["federated"]
  mesh = sh.make_mesh(1, 1, jax.devices()[:1])
  algo = run_lib.build_run(fcfg, model, faces, mesh)
  with ckpt_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints") as ck:
    return jax.device_get(ck.restore(step, algo.abstract_state))


def assert_states_equal(a: dict, b: dict, rtol: float = 0.0, atol: float = 0.0) -> None:
  """Same keys (params, table, server_opt, round, rng) and leaves; exact by default."""
  assert sorted(a) == sorted(b) == ["params", "rng", "round", "server_opt", "table"]
  paths_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  paths_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(paths_a, paths_b):
    x, y = np.asarray(x), np.asarray(y)
    name = jax.tree_util.keystr(path)
    assert x.dtype == y.dtype and x.shape == y.shape, name
    if rtol == atol == 0.0 or not np.issubdtype(x.dtype, np.inexact):
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)
