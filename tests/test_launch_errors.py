"""User mistakes end a launcher with one clear line and exit status 2; bugs keep a traceback.

Run as real processes, since what is under test is what a user sees on the terminal: stderr,
the exit status, and no traceback unless asked for (`--verbosity=1`).
"""

import io
import os
import subprocess
import sys

import pytest

from fedface_jax import errors
from fedface_jax import progress
from launch import common
from tests import federated_cli

REPO = federated_cli.REPO_ROOT


def _launch(module, *args, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", module, f"--workdir={tmp_path / 'w'}", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stderr


def _error_line(stderr):
  lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def test_unknown_config_key_is_one_line_naming_it(tmp_path):
  code, stderr = _launch("launch.pretrain", "--config.data.rooot=x", tmp_path=tmp_path)
  assert code == 2, stderr[-3000:]
  assert "Traceback" not in stderr
  line = _error_line(stderr)
  assert "unknown config key config.data.rooot" in line and "did you mean 'root'" in line


def test_missing_data_root_is_one_line_and_verbosity_shows_the_traceback(tmp_path):
  config = f"--config=experiments/pretrain_celeba.py:root={tmp_path / 'no_faces'}"
  code, stderr = _launch("launch.pretrain", config, tmp_path=tmp_path)
  assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
  line = _error_line(stderr)
  assert f"image folder root does not exist: {tmp_path / 'no_faces'}" in line
  assert "set data.root" in line  # How to fix it.
  code, stderr = _launch("launch.pretrain", config, "--verbosity=1", tmp_path=tmp_path)
  assert code != 0 and "Traceback" in stderr and "MissingInputError" in stderr


def test_bad_flag_and_bad_config_arg_exit_2(tmp_path):
  code, stderr = _launch("launch.pretrain", "--no_such_flag=1", tmp_path=tmp_path)
  assert code == 2 and "no_such_flag" in _error_line(stderr)
  code, stderr = _launch("launch.pretrain", "--config=experiments/pretrain_synthetic.py:varient=x",
                         tmp_path=tmp_path)
  assert code == 2 and "Traceback" not in stderr
  assert "Unknown config arg 'varient'" in _error_line(stderr)
  code, stderr = _launch("launch.pretrain", "--config=experiments/no_such_config.py",
                         tmp_path=tmp_path)
  assert code == 2 and "Traceback" not in stderr
  assert "no_such_config.py" in _error_line(stderr)


def test_a_bug_keeps_its_traceback(tmp_path):
  script = tmp_path / "buggy.py"
  script.write_text(
      "from launch import common\n\n"
      "def main(argv):\n  raise RuntimeError('a genuine bug')\n\n"
      "def missing(argv):\n  raise FileNotFoundError('not a user error')\n\n"
      "if __name__ == '__main__':\n"
      "  import sys\n  common.run(main if sys.argv[1:] == ['bug'] else missing)\n")
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  for arg, message in (("bug", "RuntimeError: a genuine bug"),
                       ("oserror", "FileNotFoundError: not a user error")):
    proc = subprocess.run([sys.executable, str(script), arg], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and message in proc.stderr


def test_user_errors_are_the_builtin_errors_callers_catch():
  assert issubclass(errors.MissingInputError, FileNotFoundError)
  assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataError, ValueError)
  with pytest.raises(errors.DataError):
    from fedface_jax.data import image_folder  # pylint: disable=g-import-not-at-top
    image_folder.scan_image_folder(REPO / "launch")  # Files only, no identity folders.
  assert common.USER_ERROR_STATUS == 2


class _Tty(io.StringIO):

  def isatty(self):
    return True


def test_progress_refreshes_every_10_s_in_a_log_and_every_second_on_a_terminal(monkeypatch):
  assert progress.min_interval(io.StringIO()) == 10.0
  assert progress.min_interval(_Tty()) == 1.0
  monkeypatch.setattr(sys, "stderr", io.StringIO())
  with progress.progress(5, "x", disable=False) as bar:
    assert bar.mininterval == 10.0
  monkeypatch.setattr(sys, "stderr", _Tty())
  with progress.progress(5, "x", disable=False) as bar:
    assert bar.mininterval == 1.0


def test_a_loss_set_every_step_does_not_write_a_line_per_step(monkeypatch):
  """tqdm's set_postfix redraws at once by default; in a log that was one line per step."""
  log = io.StringIO()
  monkeypatch.setattr(sys, "stderr", log)
  with progress.progress(500, "x", disable=False) as bar:
    for step in range(500):
      bar.update(1)
      bar.set_postfix(loss=f"{step:.3f}")
  draws = log.getvalue().count("\r")
  assert draws < 10, draws   # open, close, and at most a redraw per 10 s


def test_tfds_preparation_does_not_claim_a_download(tmp_path, capfd):
  from fedface_jax import data  # pylint: disable=g-import-not-at-top
  c = data.default_data_config()
  c.num_identities, c.images_per_identity, c.image_size = 3, 2, (16, 16)
  c.data_dir, c.progress = str(tmp_path), False
  data.load_faces(c)
  out, err = capfd.readouterr()
  assert "Downloading" not in out + err and "downloaded" not in out + err
