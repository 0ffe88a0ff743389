"""Every `python -m launch.X ...` command printed in the docs, extracted, checked and run.

Why this exists: the README and the experiment docstrings are where a user copies commands from,
and nothing executed them, so they rotted (a renamed flag, a removed variant, a multi-device
command that crashed in its first round). This script finds every documented command and

  * `check` (what tests/test_documented_commands.py runs, seconds): imports each launcher and
    parses the command with the launcher's own absl FLAGS, exactly as `app.run` would, so an
    unknown `--flag`, a config file that does not load with its `:arg`, or a `--config.x.y=v`
    override of a key the config lacks is an error. Loading a config must not touch its data
    (checked with an audit hook on file accesses).
  * `run` (`make check-commands`, tens of minutes on 2 cores): runs each command for real, for
    one round / one step (tiny overrides appended per launcher, see `plan`), in a temporary
    directory with symlinks to `experiments/` and `launch/` so that the documented relative paths
    work unchanged and `runs/...` lands there, in dependency order (pretraining first). Prints a
    table of id, command, status and seconds; exits non-zero if any command failed.
  * `list`: the extracted commands with their ids (`file:line`).

Sources: README.md, docs/*.md (fenced code blocks and inline `code` spans), and the module
docstrings of experiments/*.py and launch/*.py. A command is a line (backslash continuations
joined) that starts with optional `VAR=value` environment assignments, an optional `time` /
`/usr/bin/time -v` prefix, then `python -m launch.<name>`. Comment lines (`# ...`) are notes or
placeholders and are ignored; a trailing `# comment` is dropped. A line of bare `--flags` right
after a command (the README's "plus --coordinator_address=...") is a fragment of that command:
checked with it, never run. A command with a `...` placeholder argument is checked, never run.

Usage (from the repository root, with the venv's python):
  python scripts/documented_commands.py list
  python scripts/documented_commands.py check
  python scripts/documented_commands.py run [--only SUBSTRING ...] [--keep DIR] [--fast_compile]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The shared real faces, where experiments/pretrain_celeba.py looks for them (relative to the repo).
CELEBA_ROOT = REPO_ROOT.parent / "shared" / "data" / "celeba_faces_112"

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A line that is a command: env assignments, an optional `time` prefix, python -m launch.X.
_COMMAND_START_RE = re.compile(
    r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:(?:/usr/bin/)?time(?:\s+-\S+)*\s+)?"
    r"\S*python[0-9.]*\s+-m\s+launch\.")
_INLINE_CODE_RE = re.compile(r"`([^`\n]*python[0-9.]*\s+-m\s+launch\.[^`\n]*)`")
_PLACEHOLDER_RE = re.compile(r"\.\.\.|^<[^>]*>$|=<[^>]*>$")


@dataclasses.dataclass(frozen=True)
class Command:
  """One documented command (or a flag fragment that extends the command before it)."""
  id: str                      # "README.md:57": file and line where the command starts
  text: str                    # as documented, continuations joined, trailing comment dropped
  module: str                  # "launch.fedface"
  args: tuple[str, ...]        # argv after `-m module`
  env: tuple[tuple[str, str], ...] = ()   # leading VAR=value assignments, kept for the run
  fragment_of: str | None = None          # id of the command this fragment's flags extend
  placeholder: bool = False    # has a `...` / `<...>` argument: checked, never run

  @property
  def source(self) -> str:
    return self.id.rsplit(":", 1)[0]


# ------------------------------------------------------------------------------------ extraction


def parse_command_text(text: str) -> tuple[dict[str, str], str, list[str]] | None:
  """`"XLA_FLAGS=x /usr/bin/time -v python -m launch.a --b c  # d"` -> (env, module, args)."""
  try:
    tokens = shlex.split(text, comments=True)
  except ValueError:
    return None
  env = {}
  i = 0
  while i < len(tokens) and _ENV_RE.match(tokens[i]):
    key, _, value = tokens[i].partition("=")
    env[key] = value
    i += 1
  if i < len(tokens) and tokens[i] in ("time", "/usr/bin/time"):
    i += 1
    while i < len(tokens) and tokens[i].startswith("-"):
      i += 1
  if not (i + 2 < len(tokens) and re.fullmatch(r"\S*python[0-9.]*", tokens[i])
          and tokens[i + 1] == "-m" and tokens[i + 2].startswith("launch.")):
    return None
  return env, tokens[i + 2], tokens[i + 3:]


def _is_placeholder(args) -> bool:
  return any(_PLACEHOLDER_RE.search(a) for a in args)


def _scan_lines(lines: list[tuple[int, str]], source: str, inline_code: bool) -> list[Command]:
  """Commands in a block of (line number, text) lines: a code block or a docstring."""
  out = []
  last = None   # the previous command of this block, for flag fragments
  i = 0
  while i < len(lines):
    lineno, text = lines[i]
    joined = text.strip()
    # A trailing backslash continues the line (`\\` in the source of a non-raw docstring).
    while joined.endswith("\\") and i + 1 < len(lines):
      i += 1
      joined = joined.rstrip("\\").rstrip() + " " + lines[i][1].strip()
    i += 1
    if not joined:
      continue
    if joined.startswith("#"):   # a note or a placeholder (`# 8 devices: ... --x=2`)
      continue
    if _COMMAND_START_RE.match(joined):
      parsed = parse_command_text(joined)
      if parsed is None:
        continue
      env, module, args = parsed
      last = Command(id=f"{source}:{lineno}", text=_drop_comment(joined), module=module,
                     args=tuple(args), env=tuple(env.items()), placeholder=_is_placeholder(args))
      out.append(last)
    elif joined.startswith("--") and last is not None:
      try:
        extra = shlex.split(joined, comments=True)
      except ValueError:
        continue
      out.append(dataclasses.replace(
          last, id=f"{source}:{lineno}", text=_drop_comment(joined), args=last.args + tuple(extra),
          fragment_of=last.id, placeholder=last.placeholder or _is_placeholder(extra)))
    else:
      last = None
      if inline_code:
        out.extend(_inline_commands(lineno, joined, source))
  return out


def _drop_comment(text: str) -> str:
  """The command without a trailing `  # comment` (a `#` inside a token is kept)."""
  m = re.search(r"\s+#\s", text + " ")
  return text[:m.start()].rstrip() if m else text


def _inline_commands(lineno: int, text: str, source: str) -> list[Command]:
  out = []
  for m in _INLINE_CODE_RE.finditer(text):
    parsed = parse_command_text(m.group(1))
    if parsed is None:
      continue
    env, module, args = parsed
    out.append(Command(id=f"{source}:{lineno}", text=m.group(1).strip(), module=module,
                       args=tuple(args), env=tuple(env.items()),
                       placeholder=_is_placeholder(args)))
  return out


def extract_markdown(path: pathlib.Path, root: pathlib.Path = REPO_ROOT) -> list[Command]:
  """Commands in fenced code blocks (line by line) and in inline `code` spans of prose."""
  source = str(path.relative_to(root))
  out, block, in_fence = [], [], False
  for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if line.lstrip().startswith("```"):
      if in_fence:
        out.extend(_scan_lines(block, source, inline_code=False))
        block = []
      in_fence = not in_fence
      continue
    if in_fence:
      block.append((lineno, line))
    else:
      out.extend(_inline_commands(lineno, line, source))
  return out


def extract_python_docstring(path: pathlib.Path, root: pathlib.Path = REPO_ROOT) -> list[Command]:
  """Commands in a module docstring (with their line numbers in the file)."""
  source = str(path.relative_to(root))
  tree = ast.parse(path.read_text(encoding="utf-8"))
  if not (tree.body and isinstance(tree.body[0], ast.Expr)
          and isinstance(tree.body[0].value, ast.Constant)
          and isinstance(tree.body[0].value.value, str)):
    return []
  node = tree.body[0].value
  # The raw source lines, not the string's value: in a non-raw docstring a trailing backslash
  # joins lines already (and would shift every line number after it).
  raw = path.read_text(encoding="utf-8").splitlines()[node.lineno - 1:node.end_lineno]
  lines = [(node.lineno + k, line) for k, line in enumerate(raw)]
  lines[0] = (lines[0][0], re.sub(r'^\s*[rRuU]?("""|\'\'\')', "", lines[0][1]))
  lines[-1] = (lines[-1][0], re.sub(r'("""|\'\'\')\s*$', "", lines[-1][1]))
  return _scan_lines(lines, source, inline_code=True)


def source_files(root: pathlib.Path = REPO_ROOT) -> list[pathlib.Path]:
  files = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
  files += sorted((root / "experiments").glob("*.py")) + sorted((root / "launch").glob("*.py"))
  return [f for f in files if f.is_file()]


def extract_all(root: pathlib.Path = REPO_ROOT) -> list[Command]:
  """Every documented command, in source order (README, docs, experiments, launch)."""
  out = []
  for f in source_files(root):
    out.extend(extract_markdown(f, root) if f.suffix == ".md"
               else extract_python_docstring(f, root))
  return out


def mentioned_experiment_files(root: pathlib.Path = REPO_ROOT) -> dict[str, list[str]]:
  """`experiments/x.py` paths named anywhere in the sources -> where ("file:line")."""
  found = {}
  for f in source_files(root):
    for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
      for m in re.finditer(r"experiments/[A-Za-z0-9_]+\.py", line):
        found.setdefault(m.group(0), []).append(f"{f.relative_to(root)}:{lineno}")
  return found


# ---------------------------------------------------------------------------------- static check


def flag_value(args, name: str) -> str | None:
  """The last value of `--name` / `--name=v` / `--name v` in `args` (absl: the last one wins)."""
  value = None
  for i, a in enumerate(args):
    if a in (f"--{name}", f"-{name}") and i + 1 < len(args):
      value = args[i + 1]
    elif a.startswith(f"--{name}=") or a.startswith(f"-{name}="):
      value = a.split("=", 1)[1]
  return value


def _check_one(module: str, args: list[str]) -> dict[str, Any]:
  """In a forked child with `module` imported: parse `args` with its FLAGS; returns a report."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  accessed = []

  def hook(event, event_args):
    if event in ("open", "os.listdir", "os.scandir") and event_args:
      path = event_args[0]
      if isinstance(path, (str, bytes, os.PathLike)):
        accessed.append(os.fsdecode(path))

  argv = [module] + list(args)
  sys.argv = argv
  sys.addaudithook(hook)
  try:
    leftover = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    return {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}
  if len(leftover) > 1:
    return {"ok": False, "error": f"positional arguments the launcher ignores: {leftover[1:]}"}
  report = {"ok": True}
  if "config" in flags.FLAGS:
    config = flags.FLAGS.config
    report["config_arg"] = flag_value(args, "config")
    if isinstance(config, str) and config.partition(":")[0].endswith(".py"):
      # A plain string flag naming a config file (launch.fedface_study): load it the same way.
      try:
        config = load_config(config)
      except Exception as e:  # pylint: disable=broad-except
        return {"ok": False, "error": f"--config {config}: {type(e).__name__}: {e}"}
    data = config.get("data") if hasattr(config, "get") else None
    root = data.get("root", "") if data is not None and hasattr(data, "get") else ""
    report["data_root"] = root
    if root:
      real_root = os.path.realpath(root)
      touched = sorted({p for p in accessed
                        if os.path.realpath(p) == real_root
                        or os.path.realpath(p).startswith(real_root.rstrip("/") + "/")})
      if touched:
        return {"ok": False, "error": f"loading the config touched its data root {root}: "
                                      f"{touched[:5]}"}
  return report


def _check_launcher(module: str, argvs: list[list[str]]) -> list[dict[str, Any]]:
  """Imports `module` (in a forked child) and checks each argv in a grandchild."""
  if importlib.util.find_spec(module) is None:
    return [{"ok": False, "error": f"no module {module}"}] * len(argvs)
  try:
    importlib.import_module(module)
  except Exception as e:  # pylint: disable=broad-except
    return [{"ok": False, "error": f"importing {module}: {type(e).__name__}: {e}"}] * len(argvs)
  return [_in_fork(_check_one, module, args) for args in argvs]


def _in_fork(fn, *args) -> Any:
  """fn(*args) in a forked child (fresh copy of the absl flag registry), result via a pipe."""
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:   # child
    os.close(read_fd)
    try:
      result = fn(*args)
    except BaseException as e:  # pylint: disable=broad-except
      result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    with os.fdopen(write_fd, "w") as f:
      json.dump(result, f, default=str)
    os._exit(0)  # pylint: disable=protected-access
  os.close(write_fd)
  with os.fdopen(read_fd) as f:
    text = f.read()
  os.waitpid(pid, 0)
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return {"ok": False, "error": f"checker child died: {text[:500]!r}"}


def check_in_process(commands: list[Command]) -> dict[str, dict[str, Any]]:
  """{command id: {"ok": bool, "error": str, ...}}; must run in a process with no launcher flags.

  The repository root must be the working directory and on sys.path (relative config paths).
  """
  import absl.flags  # pylint: disable=g-import-not-at-top,unused-import
  import ml_collections  # pylint: disable=g-import-not-at-top,unused-import
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,unused-import
  by_module: dict[str, list[Command]] = {}
  for c in commands:
    by_module.setdefault(c.module, []).append(c)
  results = {}
  for module, cmds in by_module.items():
    reports = _in_fork(_check_launcher, module, [list(c.args) for c in cmds])
    if isinstance(reports, dict):   # the launcher child itself failed
      reports = [reports] * len(cmds)
    for c, r in zip(cmds, reports):
      results[c.id] = r
  return results


def check(commands: list[Command], python: str = sys.executable,
          timeout_s: float = 300) -> dict[str, dict[str, Any]]:
  """`check_in_process` in a fresh interpreter at the repository root (safe from any process)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run(
      [python, str(pathlib.Path(__file__).resolve()), "_check_stdin"],
      input=json.dumps([dataclasses.asdict(c) for c in commands]), capture_output=True,
      text=True, cwd=REPO_ROOT, env=env, timeout=timeout_s, check=False)
  if proc.returncode:
    raise RuntimeError(f"checker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _commands_from_json(text: str) -> list[Command]:
  items = json.loads(text)
  return [Command(**dict(d, args=tuple(d["args"]), env=tuple(tuple(e) for e in d["env"])))
          for d in items]


# ------------------------------------------------------------------------------- run: the plan

# Launchers in dependency order: a stage may read what an earlier stage wrote (backbones under
# runs/.../pretrain, the prior under runs/prior/..., the sweep JSON of attack_results).
STAGES = ("launch.pretrain", "launch.train_prior", "launch.fedface", "launch.evaluate",
          "launch.attack", "launch.attack_results", "launch.results", "launch.fedface_study",
          "launch.demo", "launch.benchmark", "launch.attack_peer")
FAKE_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
# Sizes of the tree generated for an external dataset root (`root=/data/casia`).
GEN_IDENTITIES, GEN_IMAGES = 16, 4
GEN_SPLITS = dict(pretrain=8, federated=4, evaluation=-1)
PAPER_SCALE_MODELS = ("sphere64", "iresnet50")


@dataclasses.dataclass
class Plan:
  """How `command` runs (or why it does not)."""
  command: Command
  args: list[str]                 # the documented args, substituted, plus the tiny overrides
  env: dict[str, str]
  overrides: list[str]            # what was appended (shown in the log)
  notes: list[str]                # substitutions made
  skip: str = ""                  # non-empty: not run, and why
  error: str = ""                 # non-empty: cannot be run as planned (counts as a failure)
  results_jsonl: str = ""         # launch.benchmark: its rows (an error row is a failure)
  generate: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # root -> (h, w)
  stage: int = 0

  def key(self) -> tuple:
    """Two plans with the same key are the same run (absl: the last value of a flag wins)."""
    flags = canonical_flags(self.args)
    if self.command.module == "launch.benchmark":   # stateless: the workdir does not matter
      flags.pop("workdir", None)
    return (self.command.module, tuple(sorted(self.env.items())), tuple(sorted(flags.items())))


def canonical_flags(args) -> dict[str, str]:
  """`["--a", "1", "--b=2", "--noc"]` -> {"a": "1", "b": "2", "noc": ""} (the last value wins)."""
  out = {}
  i = 0
  while i < len(args):
    a = args[i]
    name, has_value, value = a.lstrip("-").partition("=")
    if not has_value and i + 1 < len(args) and not args[i + 1].startswith("-"):
      value = args[i + 1]
      i += 1
    out[name] = value
    i += 1
  return out


def load_config(config_arg: str):
  """The ConfigDict of `path[:arg]`, as config_flags builds it (without overrides)."""
  path, has_arg, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location(
      "_doc_config_" + re.sub(r"\W", "_", path), REPO_ROOT / path)
  module = importlib.util.module_from_spec(spec)
  if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
  spec.loader.exec_module(module)
  return module.get_config(arg) if has_arg else module.get_config()


def _has(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _config_overrides(module: str, config, multi_device: bool) -> list[tuple[str, Any]]:
  """(key, value) pairs that make one step / one round of `module` on `config` (required)."""
  fed_rounds = 2 if multi_device else 1   # the acceptance: 2 rounds on fake devices
  if module == "launch.pretrain":
    out = [("num_steps", 1), ("eval.num_impostor_pairs", 1000)]
    if _get(config, "batch_size") > 16:
      out.append(("batch_size", 16))
    return out
  if module == "launch.fedface":
    return [("federated.num_rounds", fed_rounds), ("eval.at_round_0", False),
            ("eval.num_impostor_pairs", 1000)]
  if module == "launch.evaluate":
    return [("eval.num_impostor_pairs", 1000)]
  if module == "launch.train_prior":
    return [("prior.train.num_steps", 1), ("prior.train.warmup_steps", 0),
            ("prior.sample.num_grid", 0)]
  if module == "launch.attack":
    # The prior of the documented train_prior command ran 1 step: count that as finished.
    return [("attack.iterations", 1), ("enhance.num_steps", 2), ("enhance.prior_num_steps", 1)]
  return []


def _paper_scale_overrides(module: str) -> list[tuple[str, Any]]:
  """A paper-scale model (sphere64 at 112x96) on a 2-core CPU: a few tiny clients and batches."""
  if module == "launch.pretrain":
    return [("batch_size", 4)]
  if module == "launch.fedface":
    return [("federated.num_rounds", 1),   # minutes a round on 8 fake devices
            ("federated.clients_per_round", 4), ("federated.clients_per_chunk", 2),
            ("federated.client.local_steps", 1), ("federated.client.batch_size", 2),
            ("federated.max_images_per_client", 4)]
  return []


def _fmt(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def _needs_celeba(config=None, args=()) -> bool:
  if config is not None and _has(config, "data.root") and _get(config, "data.root"):
    return os.path.realpath(_get(config, "data.root")) == os.path.realpath(CELEBA_ROOT)
  return "celeba" in (flag_value(args, "dataset"), flag_value(args, "suite"))


def plan(command: Command, workspace: pathlib.Path, documented: list[Command]) -> Plan:
  """The run of one documented command: substitutions, tiny overrides, skip reason."""
  p = Plan(command=command, args=list(command.args), env=dict(command.env), overrides=[],
           notes=[], stage=STAGES.index(command.module) if command.module in STAGES
           else len(STAGES))
  module = command.module
  if command.fragment_of:
    p.skip = f"flag fragment of {command.fragment_of} (several hosts): checked, not run"
    return p
  if command.placeholder:
    p.skip = "placeholder argument (...): checked, not run"
    return p
  extra: list[str] = []
  config_arg = flag_value(p.args, "config")
  config = None
  if config_arg is not None:
    # An external dataset root that is absent here: a tiny generated <identity>/<image> tree.
    path, _, arg = config_arg.partition(":")
    items = [kv for kv in arg.split(",") if kv]
    generated = None
    for k, kv in enumerate(items):
      key, _, value = kv.partition("=")
      if key == "root" and os.path.isabs(value) and not os.path.exists(value):
        generated = workspace / "external" / value.strip("/").replace("/", "_")
        items[k] = f"root={generated}"
        p.notes.append(f"root={value} -> generated tree {generated}")
    if generated is not None:
      new_arg = f"{path}:{','.join(items)}"
      p.args = [new_arg if a == config_arg else a.replace(config_arg, new_arg) for a in p.args]
      config_arg = new_arg
    if module == "launch.benchmark":
      if "benchmark_gpu" in path:
        p.skip = ("GPU-sized benchmark (full factorial): checked, not run; the CPU smoke "
                  "commands cover the launcher")
        return p
      if arg != "variant=smoke":
        new_arg = f"{path}:variant=smoke"
        p.args = [new_arg if a == config_arg else a.replace(config_arg, new_arg) for a in p.args]
        p.notes.append(f"{config_arg} -> {new_arg} (benchmark workers re-read the config "
                       "file, so --config.* overrides cannot shrink them)")
        config_arg = new_arg
    try:
      config = load_config(config_arg)
    except Exception as e:  # pylint: disable=broad-except
      p.skip = f"config does not load: {type(e).__name__}: {e}"
      return p
    if generated is not None:
      p.generate[str(generated)] = tuple(_get(config, "data.image_size"))
      extra.append(f"--config.data.data_dir={workspace / 'data_cache'}")
      extra += [f"--config.splits.{k}={v}" for k, v in GEN_SPLITS.items()
                if _has(config, f"splits.{k}")]
  if _needs_celeba(config, p.args) and not CELEBA_ROOT.is_dir():
    p.skip = f"needs the shared CelebA faces ({CELEBA_ROOT} is absent)"
    return p
  multi_device = False
  mesh = {k: flag_value(p.args, f"config.mesh.{k}") for k in ("data", "classes")}
  if any(v not in (None, "1", "-1") for v in mesh.values()):
    multi_device = True
    if "XLA_FLAGS" not in p.env and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
      p.env["XLA_FLAGS"] = FAKE_DEVICES_FLAG
      p.notes.append("mesh over several devices: XLA_FLAGS=" + FAKE_DEVICES_FLAG)
  if "device_count" in p.env.get("XLA_FLAGS", ""):
    multi_device = True
  if config is not None:
    overrides = dict(_config_overrides(module, config, multi_device))
    if _has(config, "model.name") and _get(config, "model.name") in PAPER_SCALE_MODELS:
      overrides.update(_paper_scale_overrides(module))
    for key, value in overrides.items():
      if not _has(config, key):
        p.skip = (f"tiny override --config.{key} names no field of {config_arg}: update "
                  "_config_overrides in scripts/documented_commands.py")
        return p
      extra.append(f"--config.{key}={_fmt(value)}")
  if module == "launch.attack_results":
    extra += ["--victims=1", "--images=1", "--taus=1", "--noise=0.0", "--iterations=1",
              "--fedface_iterations=1", "--defence_noise=0.1", "--defence_rounds=1"]
    suite = flag_value(p.args, "suite") or "synthetic"
    if suite == "synthetic" and flag_value(p.args, "pretrained") is None:
      # Its default backbone is make demo's (runs/demo/pretrain, the full demo); the documented
      # pretraining of the same config writes runs/synthetic/pretrain.
      extra.append("--pretrained=runs/synthetic/pretrain")
  elif module == "launch.attack_peer":
    if not (REPO_ROOT / ".peer_venvs" / "breaching" / "bin" / "python").exists():
      p.skip = "needs the breaching venv (bash scripts/setup_peer_venvs.sh breaching)"
      return p
    suite = flag_value(p.args, "suite") or "synthetic"
    extra += ["--seeds=0", "--iterations=1", "--peer_iterations=1", "--noupdate_results_md"]
    if suite == "synthetic" and flag_value(p.args, "pretrained") is None:
      extra.append("--pretrained=runs/synthetic/pretrain")   # as launch.attack_results
  elif module == "launch.results":
    if (flag_value(p.args, "dataset") or "synthetic") != "synthetic":
      p.skip = ("launch.results has no size flag for celeba (pretraining + 4 methods + oracle "
                "at full size, hours on 2 cores); checked, not run")
      return p
    workdir = flag_value(p.args, "workdir")
    extra += ["--variant=tiny", f"--workdir={workdir.rstrip('/')}_tiny"]
    p.notes.append(f"workdir {workdir} -> {workdir.rstrip('/')}_tiny: its pretrain/ and "
                   "fedface/ hold the documented (non-tiny) runs of that config")
  elif module == "launch.fedface_study":
    workroot = flag_value(p.args, "workroot") or "runs/study"
    extra += ["--variant=tiny", "--seeds=0", "--num_resamples=20",
              f"--workroot={workroot.rstrip('/')}_tiny"]
    p.notes.append(f"workroot {workroot} -> {workroot.rstrip('/')}_tiny: runs of the "
                   "documented (non-tiny) config may live there")
  elif module == "launch.demo":
    extra.append("--variant=tiny")
  elif module == "launch.benchmark":
    if flag_value(p.args, "parts") is None:
      extra.append("--parts=sweep,class_table")
    # Its workers run with cwd = the repository (reporting/benchmark_suite.py), so a relative
    # --workdir only works from the repository root, which the documented commands assume.
    workdir = workspace / "work" / (flag_value(p.args, "workdir") or "runs/benchmark")
    extra.append(f"--workdir={workdir}")
    p.notes.append(f"--workdir made absolute ({workdir}): workers run in the repository")
    p.results_jsonl = str(workdir / "results.jsonl")
  elif module not in STAGES:
    p.error = (f"no tiny overrides known for {module}: add them to plan() in "
               "scripts/documented_commands.py (and its stage to STAGES)")
    return p
  p.args += extra
  p.overrides = extra
  return p


# ----------------------------------------------------------------------------------- run: run it


def make_workspace(root: pathlib.Path) -> pathlib.Path:
  """root/work (the cwd of every run: experiments/ and launch/ link to the repo) + root/shared."""
  work = root / "work"
  work.mkdir(parents=True, exist_ok=True)
  for name in ("experiments", "launch"):
    link = work / name
    if not link.exists():
      link.symlink_to(REPO_ROOT / name, target_is_directory=True)
  # experiments/pretrain_celeba.py finds the faces at <experiments>/../../shared/data.
  shared = REPO_ROOT.parent / "shared"
  if shared.is_dir() and not (root / "shared").exists():
    (root / "shared").symlink_to(shared, target_is_directory=True)
  return work


def generate_image_tree(root: pathlib.Path, image_size=(112, 96),
                        identities: int = GEN_IDENTITIES, images: int = GEN_IMAGES) -> None:
  """A tiny <root>/<identity>/<image>.jpg tree (Pillow): noise around a per-identity colour."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  h, w = int(image_size[0]), int(image_size[1])
  for i in range(identities):
    d = root / f"identity_{i:03d}"
    d.mkdir(parents=True, exist_ok=True)
    base = rng.integers(30, 225, size=3)
    for j in range(images):
      pixels = np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(d / f"{j:04d}.jpg", quality=90)


def _run_one(p: Plan, work: pathlib.Path, log_path: pathlib.Path, timeout_s: float,
             base_env: dict[str, str]) -> tuple[str, float, str]:
  env = dict(base_env)
  env.update(p.env)
  argv = [sys.executable, "-m", p.command.module] + p.args
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    log.write(f"# {p.command.id}: {p.command.text}\n# run: {shlex.join(argv)}\n")
    log.write(f"# env: {p.env}\n# notes: {p.notes}\n\n")
    log.flush()
    try:
      rc = subprocess.run(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                          timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
      return "TIMEOUT", time.perf_counter() - t0, f"over {timeout_s:.0f} s"
  seconds = time.perf_counter() - t0
  tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
  if rc < 0:   # killed by a signal: name it (SIGTERM from outside, SIGKILL from the OOM killer)
    try:
      tail = [f"killed by {signal.Signals(-rc).name}; last line: " + (tail[0] if tail else "")]
    except ValueError:
      pass
  if rc == 0 and p.results_jsonl:   # the benchmark exits 0 with error rows for failed workers
    rows = []
    if os.path.isfile(p.results_jsonl):
      with open(p.results_jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    errors = [r for r in rows if r.get("kind") == "error"]
    if errors or not any(r.get("kind") == "round" for r in rows):
      return "FAIL(rows)", seconds, (f"{len(errors)} error rows in {p.results_jsonl}: "
                                     f"{errors[0].get('error') if errors else 'no round rows'}")
  return ("ok" if rc == 0 else f"FAIL({rc})"), seconds, (tail[0] if tail else "")


def run(commands: list[Command], root: pathlib.Path, timeout_s: float, fast_compile: bool,
        only: list[str], dry_run: bool = False) -> int:
  """Runs every command (filtered by `only` substrings of id or text); prints the table."""
  work = make_workspace(root)
  logs = root / "logs"
  logs.mkdir(exist_ok=True)
  base_env = dict(os.environ)
  base_env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO_ROOT)] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])
  base_env.setdefault("JAX_PLATFORMS", "cpu")
  base_env["PYTHONUNBUFFERED"] = "1"
  base_env["JAX_COMPILATION_CACHE_DIR"] = str(root / "jax_cache")
  if fast_compile:
    base_env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  plans = [plan(c, root, commands) for c in commands]
  order = sorted(range(len(plans)), key=lambda k: (plans[k].stage, k))
  first_of: dict[tuple, str] = {}
  rows = []
  failed = 0
  for n, k in enumerate(order):
    p = plans[k]
    c = p.command
    if only and not any(s in c.id or s in c.text for s in only):
      continue
    if p.error:
      failed += 1
      rows.append((c.id, c.text, "FAIL(plan)", None, p.error))
      _print_progress(rows[-1])
      continue
    if p.skip:
      rows.append((c.id, c.text, "skip", None, p.skip))
      _print_progress(rows[-1])
      continue
    key = p.key()
    if key in first_of:
      rows.append((c.id, c.text, "dup", None, f"same run as {first_of[key]}"))
      _print_progress(rows[-1])
      continue
    first_of[key] = c.id
    if dry_run:
      env = "".join(f"{k}={v} " for k, v in p.env.items())
      rows.append((c.id, c.text, "plan", None,
                   f"{env}python -m {c.module} {shlex.join(p.args)}"
                   + (f"  [{'; '.join(p.notes)}]" if p.notes else "")))
      _print_progress(rows[-1])
      continue
    for gen_root, size in p.generate.items():
      if not pathlib.Path(gen_root).is_dir():
        generate_image_tree(pathlib.Path(gen_root), size)
    log_path = logs / f"{n:02d}_{c.id.replace('/', '_').replace(':', '_')}.log"
    try:
      status, seconds, tail = _run_one(p, work, log_path, timeout_s, base_env)
    except Terminated:
      failed += 1
      rows.append((c.id, c.text, "TERMINATED", None, f"SIGTERM to the checker (log: {log_path})"))
      _print_progress(rows[-1])
      break
    if status != "ok":
      failed += 1
      tail = f"{tail} (log: {log_path})"
    rows.append((c.id, c.text, status, seconds, tail if status != "ok" else " ".join(p.overrides)))
    _print_progress(rows[-1])
  print_table(rows)
  return 1 if failed else 0


def _print_progress(row) -> None:
  cid, _, status, seconds, detail = row
  secs = "" if seconds is None else f" {seconds:.0f} s"
  print(f"[check-commands] {cid}: {status}{secs}  {detail}", flush=True)


def print_table(rows) -> None:
  print("\n| id | command | status | s |\n|---|---|---|---|")
  for cid, text, status, seconds, detail in rows:
    note = f" ({detail})" if status in ("skip", "dup") or status.startswith(("FAIL", "TIM")) else ""
    secs = "" if seconds is None else f"{seconds:.0f}"
    print(f"| {cid} | `{text}` | {status}{note} | {secs} |")
  counts = {}
  for r in rows:
    s = r[2].split("(")[0]
    counts[s] = counts.get(s, 0) + 1
  print("\n" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), flush=True)


# ------------------------------------------------------------------------------------------ main


class Terminated(Exception):
  """SIGTERM arrived."""


def _on_sigterm(signum, frame):
  del signum, frame
  raise Terminated()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="cmd", required=True)
  sub.add_parser("list", help="print the extracted commands")
  sub.add_parser("check", help="parse every command with its launcher's flags (seconds)")
  sub.add_parser("_check_stdin", help=argparse.SUPPRESS)
  r = sub.add_parser("run", help="run every command for one step / one round")
  r.add_argument("--only", nargs="*", default=[], help="substrings of ids or commands to run")
  r.add_argument("--keep", default="", help="run in this directory and keep it")
  r.add_argument("--timeout_s", type=float, default=1200, help="per command")
  r.add_argument("--dry_run", action="store_true", help="print what would run, run nothing")
  r.add_argument("--fast_compile", action="store_true",
                 help="JAX_DISABLE_MOST_OPTIMIZATIONS=1 (as the tests do): faster compiles")
  args = parser.parse_args(argv)
  # SIGTERM (a shared machine's cleanup, a CI timeout): stop the running command (subprocess.run
  # kills it on the way out), print the table so far and remove the temporary directory.
  signal.signal(signal.SIGTERM, _on_sigterm)
  if args.cmd == "_check_stdin":
    os.chdir(REPO_ROOT)
    if str(REPO_ROOT) not in sys.path:
      sys.path.insert(0, str(REPO_ROOT))
    print(json.dumps(check_in_process(_commands_from_json(sys.stdin.read()))))
    return 0
  commands = extract_all()
  if args.cmd == "list":
    for c in commands:
      flags = (" [fragment]" if c.fragment_of else "") + (" [placeholder]" if c.placeholder else "")
      env = "".join(f"{k}={v} " for k, v in c.env)
      print(f"{c.id}{flags}: {env}python -m {c.module} {shlex.join(c.args)}")
    print(f"{len(commands)} commands")
    return 0
  if args.cmd == "check":
    results = check(commands)
    bad = 0
    for c in commands:
      res = results[c.id]
      bad += not res["ok"]
      print(f"{c.id}: {'ok' if res['ok'] else 'ERROR ' + res['error']}")
    missing = [p for p in mentioned_experiment_files() if not (REPO_ROOT / p).is_file()]
    for path in missing:
      print(f"missing file named in the docs: {path} ({mentioned_experiment_files()[path]})")
    print(f"{len(commands)} commands, {bad} errors, {len(missing)} missing files")
    return 1 if bad or missing else 0
  if args.keep:
    root = pathlib.Path(args.keep).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return run(commands, root, args.timeout_s, args.fast_compile, args.only, args.dry_run)
  root = pathlib.Path(tempfile.mkdtemp(prefix="fedface_doc_commands_"))
  try:
    return run(commands, root, args.timeout_s, args.fast_compile, args.only, args.dry_run)
  finally:
    print(f"[check-commands] removing {root} (keep it with --keep DIR)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
