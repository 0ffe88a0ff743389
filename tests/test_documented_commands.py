"""Every command printed in the README, docs/ and the experiment / launcher docstrings still parses.

Why: those commands are what users copy, and nothing ran them, so they rotted. Each one is parsed
here by its own launcher's absl FLAGS (scripts/documented_commands.py `check`), exactly as
`app.run` would parse it: the launcher module exists, every `--flag` is one of its flags, the
`--config path[:arg]` file loads with that arg, and every `--config.x.y=v` override names a field
of the config (ml_collections refuses unknown fields, so a renamed key fails here). Configs with
an external dataset root (`experiments/fedface_casia.py:root=/data/casia`) load too: loading a
config must not touch its data, which the checker verifies with an audit hook on file accesses.
Nothing trains here (~10 s); `make check-commands` runs each command for one step / one round.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_script():
  spec = importlib.util.spec_from_file_location(
      "documented_commands", REPO_ROOT / "scripts" / "documented_commands.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module   # dataclasses look their module up by name
  spec.loader.exec_module(module)
  return module


dc = _load_script()
COMMANDS = dc.extract_all()
# Commands that must fail the check: if the checker accepted these, it would accept anything.
_BROKEN = (
    ("renamed config key", "launch.fedface", "--config", "experiments/fedface_synthetic.py",
     "--workdir", "w", "--config.federated.num_roundz=1"),
    ("unknown config arg", "launch.pretrain", "--config",
     "experiments/pretrain_synthetic.py:variantt=tiny", "--workdir", "w"),
    ("removed variant", "launch.pretrain", "--config",
     "experiments/pretrain_synthetic.py:variant=huge", "--workdir", "w"),
    ("unknown flag", "launch.evaluate", "--config", "experiments/pretrain_synthetic.py",
     "--workdir", "w", "--lfw_pair=x"),
    ("missing launcher", "launch.no_such_launcher", "--workdir", "w"),
    ("ignored positional", "launch.demo", "--workdir", "w", "tiny"),
    ("missing config file", "launch.pretrain", "--config", "experiments/no_such.py",
     "--workdir", "w"),
)


@pytest.fixture(scope="module")
def results():
  broken = [dc.Command(id=f"broken:{name}", text="", module=module, args=tuple(args))
            for name, module, *args in _BROKEN]
  return dc.check(COMMANDS + broken)


def test_extraction_finds_the_documented_commands():
  # A broken extractor must not pass vacuously.
  assert len(COMMANDS) >= 40, [c.id for c in COMMANDS]
  ids = {c.id for c in COMMANDS}
  assert len(ids) == len(COMMANDS), "ids (file:line) must be unique"
  assert sum(c.source == "README.md" for c in COMMANDS) >= 10
  by_text = {c.text: c for c in COMMANDS}
  readme_8dev = ("XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m launch.fedface "
                 "--config experiments/fedface_synthetic.py --config.mesh.data=4 "
                 "--config.mesh.classes=2 --workdir runs/fed8")
  assert readme_8dev in by_text, "the README's multi-device command (continuation joined)"
  cmd = by_text[readme_8dev]
  assert dict(cmd.env) == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert cmd.module == "launch.fedface" and cmd.args[-2:] == ("--workdir", "runs/fed8")
  # `/usr/bin/time -v` is dropped; a flag fragment is attached to the command before it.
  assert any(c.id.startswith("experiments/fedface_scale_cpu.py") and c.module == "launch.fedface"
             for c in COMMANDS)
  fragments = [c for c in COMMANDS if c.fragment_of]
  assert any("--num_processes=2" in c.args and c.fragment_of == cmd.id for c in fragments)


def test_every_experiment_docstring_holds_its_launch_command():
  for path in sorted((REPO_ROOT / "experiments").glob("*.py")):
    if "def get_config" not in path.read_text():
      continue
    name = f"experiments/{path.name}"
    own = [c for c in COMMANDS
           if c.source == name and (dc.flag_value(c.args, "config") or "").split(":")[0] == name]
    assert own, f"{name}: its docstring shows no command that runs it"


def test_extractor_rules():
  lines = [
      (1, "  XLA_FLAGS=--a=1 /usr/bin/time -v python -m launch.fedface \\"),
      (2, "      --config experiments/x.py:root=/d,k=1 --workdir w   # trailing comment"),
      (3, "  # python -m launch.pretrain --config experiments/y.py ...   (a note: ignored)"),
      (4, "      --num_processes=2 --process_id=0   # (1 on the second host)"),
      (5, "  make demo   # = python -m launch.demo"),
      (6, "  python -m launch.evaluate --workdir ... --lfw_root /data/lfw"),
      (7, "  Prose naming `python -m launch.demo --workdir runs/d` inline."),
  ]
  cmds = dc._scan_lines(lines, "doc.py", inline_code=True)  # pylint: disable=protected-access
  assert [c.id for c in cmds] == ["doc.py:1", "doc.py:4", "doc.py:6", "doc.py:7"]
  first, fragment, placeholder, inline = cmds
  assert first.env == (("XLA_FLAGS", "--a=1"),) and first.module == "launch.fedface"
  assert first.args == ("--config", "experiments/x.py:root=/d,k=1", "--workdir", "w")
  assert fragment.fragment_of == "doc.py:1" and fragment.args[-1] == "--process_id=0"
  assert placeholder.placeholder and not first.placeholder
  assert inline.module == "launch.demo" and inline.args == ("--workdir", "runs/d")


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_parses(command, results):
  res = results[command.id]
  assert res["ok"], f"{command.id}: `{command.text}`\n{res['error']}"


def test_checker_rejects_broken_commands(results):
  for name, *_ in _BROKEN:
    assert not results[f"broken:{name}"]["ok"], f"the checker accepted a command with a {name}"


def test_external_root_config_loads_without_its_data(results):
  casia = [c for c in COMMANDS if "root=/data/casia" in c.text]
  assert casia, "the CASIA commands (an external dataset root) are documented"
  for c in casia:
    assert results[c.id]["ok"] and results[c.id]["data_root"] == "/data/casia", results[c.id]


def test_docs_name_only_existing_experiment_files():
  missing = {p: where for p, where in dc.mentioned_experiment_files().items()
             if not (REPO_ROOT / p).is_file()}
  assert not missing, f"docs name experiment files that do not exist: {missing}"


@pytest.mark.slow
def test_documented_commands_run(tmp_path):
  """`make check-commands`: every command for one step / one round (tens of minutes)."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)   # conftest's 8 fake devices: each command sets its own
  proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "documented_commands.py"),
                         "run", "--keep", str(tmp_path)], env=env, cwd=REPO_ROOT,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
