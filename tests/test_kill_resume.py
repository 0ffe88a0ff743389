"""SIGKILL at several seeded moments, restart each time: the run ends bit for bit where an
uninterrupted run ends, and every intermediate checkpoint equals the uninterrupted one.

Covers pretraining (`launch.pretrain`) and federated rounds on the host loop (1 device) and on
the compiled path (8 fake devices, 8 clients a round over the mesh). Each victim life is ended
by one kill point of a plan drawn from a seed (`FEDFACE_KILL_SEED`, default 0):
  * "save:before" / "save:during" / "save:after": the process kills itself inside
    `Checkpointer.save` of a given step (the `FEDFACE_TEST_KILL_IN_SAVE` hook in
    fedface_jax/checkpoint.py): before orbax writes, while orbax's tmp directory exists, or
    once the step is final but before its checksum record;
  * "time": the test SIGKILLs the process a seeded fraction of a round (or step) after a given
    checkpoint is final, timed from the uninterrupted run's own pace: it lands inside the
    computation of the next round, or its save.
Every plan holds a "save:during" and a "time" kill. After each kill the run must restart (no
state is left that cannot resume), and the test checks it resumed from the newest final step.

Slow: 25-55 s per path on the 2-core dev machine (one reference run and four victim lives, with a
shared persistent compile cache). tests/test_federated_resume.py is the default-suite check.
The last test truncates a checkpoint of a real run (fallback; exit status 2 if it is the only one).
"""

import json
import os
import pathlib
import random
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import federated_cli as cli
from fedface_jax import checkpoint as ckpt_lib

SEED = int(os.environ.get("FEDFACE_KILL_SEED", "0"))
NUM_KILLS = 3
NUM_ROUNDS = 7
NUM_STEPS = 8
SAVE_KINDS = ("save:before", "save:during", "save:after")



def kill_plan(seed: int, num_steps: int) -> list[tuple[int, str, float]]:
  """NUM_KILLS (step, kind, fraction) with increasing steps in 1..num_steps-2, from `seed`.

  A "time" kill after step s lands in step s+1 (whose save may be done already), so the next
  kill point is at s+2 or later, and none is past num_steps-2.
  """
  rng = random.Random(seed)
  while True:
    kinds = ["save:during", "time", rng.choice(SAVE_KINDS + ("time",))]
    rng.shuffle(kinds)
    steps = sorted(rng.sample(range(1, num_steps - 1), NUM_KILLS))
    if all(b >= a + 2 for a, b, k in zip(steps, steps[1:], kinds) if k == "time"):
      return [(s, k, rng.random()) for s, k in zip(steps, kinds)]


def test_kill_plans_are_seeded_and_cover_both_kinds():
  assert kill_plan(3, 6) == kill_plan(3, 6)
  assert len({tuple(kill_plan(s, 6)) for s in range(10)}) > 5
  for s in range(20):
    plan = kill_plan(s, NUM_ROUNDS)
    kinds = [k for _, k, _ in plan]
    assert "save:during" in kinds and "time" in kinds
    steps = [st for st, _, _ in plan]
    assert steps == sorted(set(steps)) and 1 <= steps[0] and steps[-1] < NUM_ROUNDS - 1
    assert all(b >= a + 2 for a, b, k in zip(steps, steps[1:], kinds) if k == "time")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  return cli.pretrained_workspace(tmp_path_factory, "kill")


def _raw_state(checkpoint_dir: pathlib.Path, step: int) -> dict:
  """The arrays of a saved step as written, whatever the template (no shardings needed)."""
  restored = ocp.StandardCheckpointer().restore(checkpoint_dir / str(step) / "default")
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}


def _assert_same_steps(victim: pathlib.Path, reference: pathlib.Path, last: int):
  steps = cli.finished_steps(victim)
  assert steps[-1] == last and cli.finished_steps(reference)[-1] == last
  for step in steps:
    a, b = _raw_state(victim, step), _raw_state(reference, step)
    assert a.keys() == b.keys(), step
    for name in a:
      assert a[name].dtype == b[name].dtype, (step, name)
      np.testing.assert_array_equal(a[name], b[name], err_msg=f"step {step} {name}")
    # Every final step of the victim was sealed or predates the record; none is damaged.
    assert ckpt_lib.verify_checksums(str(victim / str(step))) is None, step


def _pace(workdir: pathlib.Path, key: str) -> float:
  """Median seconds per round/step of the uninterrupted run, from its metrics."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  if key == "train/round_s":
    times = [r[key] for r in rows if key in r]
  else:  # pretraining logs cumulative elapsed time
    elapsed = [r[key] for r in rows if key in r]
    times = np.diff(elapsed).tolist()
  assert times, f"no {key} in {workdir}/metrics.jsonl"
  return float(np.median(times))


def _run_with_kills(cmd, child_env, workdir: pathlib.Path, root: pathlib.Path, name: str,
                    plan, pace_s: float, last: int, resumed_line: str) -> list[str]:
  """Runs `cmd` to the end through one life per kill point; returns what each kill hit."""
  checkpoints = workdir / "checkpoints"
  hits = []
  for life, (step, kind, frac) in enumerate(plan):
    before = cli.finished_steps(checkpoints)
    env = dict(child_env)
    if kind.startswith("save:"):
      env[ckpt_lib.KILL_IN_SAVE_ENV] = f"{step}:{kind.split(':')[1]}"
    proc = cli.start(cmd, env, root / f"{name}_life{life}.log")
    try:
      if kind == "time":
        cli.wait_for_step(checkpoints, step, proc)
        time.sleep(frac * pace_s)
        proc.send_signal(signal.SIGKILL)
      proc.wait(timeout=300)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    log = pathlib.Path(proc.log_path).read_text()
    assert proc.returncode == -signal.SIGKILL, f"life {life} ({kind} at {step}) exited " \
        f"{proc.returncode}, not killed:\n{log[-3000:]}"
    after = cli.finished_steps(checkpoints)
    if before:
      assert f"{resumed_line} {before[-1]}" in log, f"life {life} did not resume at {before[-1]}"
    tmp = sorted(p.name for p in checkpoints.iterdir() if not p.name.isdigit()) \
        if checkpoints.is_dir() else []
    if kind == "save:during":  # Mid-write, unless the save outran the watcher thread.
      assert any(n.startswith(f"{step}.orbax-checkpoint-tmp") for n in tmp) or step in after
    elif kind.startswith("save:"):
      assert (step in after) == (kind == "save:after"), (kind, step, after)
    hits.append(f"{kind}@{step}(+{frac:.2f}): final steps {after[-3:]}, tmp {tmp}")
  log = cli.finish(cli.start(cmd, child_env, root / f"{name}_final.log"))
  steps = cli.finished_steps(checkpoints)
  assert steps[-1] == last
  return hits


FEDERATED_PATHS = {
    "host_loop_1dev": (1, ("--config.federated.execution=host_loop",)),
    "compiled_8dev": (8, ("--config.federated.execution=compiled",
                          "--config.federated.clients_per_round=8")),
}


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(FEDERATED_PATHS))
def test_federated_killed_at_seeded_moments_matches_uninterrupted_run(pretrained, path):
  root, config_path = pretrained
  num_devices, extra = FEDERATED_PATHS[path]
  child_env = cli.env(root, num_devices)
  flags = (f"--config.federated.num_rounds={NUM_ROUNDS}",
           "--config.federated.checkpoint_every_rounds=1", *extra)
  ref_dir, run_dir = root / f"{path}_reference", root / f"{path}_killed"
  cli.finish(cli.start(cli.command("launch.fedface", config_path, ref_dir, *flags), child_env,
                       root / f"{path}_reference.log"))
  plan = kill_plan(SEED, NUM_ROUNDS)
  hits = _run_with_kills(cli.command("launch.fedface", config_path, run_dir, *flags), child_env,
                         run_dir, root, path, plan, _pace(ref_dir, "train/round_s"), NUM_ROUNDS,
                         "Resumed federated run at round")
  print(path, "seed", SEED, hits)
  _assert_same_steps(run_dir / "checkpoints", ref_dir / "checkpoints", NUM_ROUNDS)


@pytest.mark.slow
def test_pretraining_killed_at_seeded_moments_matches_uninterrupted_run(pretrained):
  root, config_path = pretrained
  child_env = cli.env(root)
  flags = (f"--config.num_steps={NUM_STEPS}", "--config.checkpoint_every_steps=1",
           "--config.log_every_steps=1")
  ref_dir, run_dir = root / "pretrain_reference", root / "pretrain_killed"
  cli.finish(cli.start(cli.command("launch.pretrain", config_path, ref_dir, *flags), child_env,
                       root / "pretrain_reference.log"))
  plan = kill_plan(SEED + 1, NUM_STEPS)
  hits = _run_with_kills(cli.command("launch.pretrain", config_path, run_dir, *flags), child_env,
                         run_dir, root, "pretrain", plan, _pace(ref_dir, "train/elapsed_s"),
                         NUM_STEPS, "Resumed pretraining from step")
  print("pretrain seed", SEED + 1, hits)
  _assert_same_steps(run_dir / "checkpoints", ref_dir / "checkpoints", NUM_STEPS)


def _truncate_largest_file(step_dir: pathlib.Path):
  files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != ckpt_lib.CHECKSUM_FILE]
  victim = max(files, key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])


@pytest.mark.slow
def test_truncated_checkpoint_in_a_real_run(pretrained):
  """The newest step truncated: the run resumes from the one before and still ends bit for bit
  where an uninterrupted run ends; the only step truncated: one line, exit status 2."""
  root, config_path = pretrained
  child_env = cli.env(root)
  flags = ("--config.federated.num_rounds=4", "--config.federated.checkpoint_every_rounds=1",
           "--config.federated.execution=host_loop")
  ref_dir, run_dir, lone_dir = root / "trunc_reference", root / "trunc_run", root / "trunc_lone"
  cmd = lambda workdir, *more: cli.command("launch.fedface", config_path, workdir, *flags, *more)
  cli.finish(cli.start(cmd(ref_dir), child_env, root / "trunc_reference.log"))
  cli.finish(cli.start(cmd(run_dir, "--stop_after_rounds=3"), child_env, root / "trunc_a.log"))
  _truncate_largest_file(run_dir / "checkpoints" / "3")
  log = cli.finish(cli.start(cmd(run_dir), child_env, root / "trunc_b.log"))
  assert "checkpoint step 3 unreadable (" in log and "); resuming from step 2" in log
  assert "Resumed federated run at round 2" in log
  assert [p.name.split("-")[0] for p in (run_dir / "checkpoints").iterdir()
          if ".unreadable-" in p.name] == ["3.unreadable"]
  _assert_same_steps(run_dir / "checkpoints", ref_dir / "checkpoints", 4)

  cli.finish(cli.start(cmd(lone_dir, "--stop_after_rounds=0"), child_env, root / "lone_a.log"))
  assert cli.finished_steps(lone_dir / "checkpoints") == [0]
  _truncate_largest_file(lone_dir / "checkpoints" / "0")
  proc = cli.start(cmd(lone_dir), child_env, root / "lone_b.log")
  proc.wait(timeout=300)
  text = pathlib.Path(proc.log_path).read_text()
  assert proc.returncode == 2 and "Traceback" not in text, text[-3000:]
  lines = [ln for ln in text.splitlines() if ln.startswith("error: ")]
  assert len(lines) == 1, text[-3000:]
  step_dir = lone_dir / "checkpoints" / "0"
  assert lines[0].startswith(f"error: checkpoint step 0 at {step_dir} is unreadable: default/")
  assert f"delete {step_dir} (the only step) to start over" in lines[0]
