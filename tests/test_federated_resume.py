"""A federated run SIGKILLed mid-way and restarted ends exactly where an uninterrupted run ends.

This is the engine's central promise (federated/engine.py): clients of round t
come from (seed, t) and client randomness from (rng, t, client), and the
checkpoint holds the whole server state, so a resume from the last finished
round replays the remaining rounds bit for bit. The kill is a real SIGKILL of
a `launch.fedface` process (no cleanup, no `finally`) that the process sends
itself while orbax writes round KILL_IN_SAVE's checkpoint (the
`FEDFACE_TEST_KILL_IN_SAVE` hook of fedface_jax/checkpoint.py), so the restart
also meets a half-written tmp directory of the step it must write again. One
device, host loop; tests/test_kill_resume.py (slow) kills at several seeded
moments (mid-round, before/during/after a save) on the host loop, on the
compiled path over 8 devices and in pretraining.
"""

import pathlib
import signal

import jax
import pytest

import federated_cli as cli
from fedface_jax import checkpoint as ckpt_lib

NUM_ROUNDS = 6
KILL_IN_SAVE = 3   # SIGKILL while the checkpoint of round 3 is being written
ROUND_FLAGS = (f"--config.federated.num_rounds={NUM_ROUNDS}",
               "--config.federated.checkpoint_every_rounds=1")


# ~45 s on the 2-core dev machine (four process start-ups, one cold compile); in the
# default suite all the same, since CI must check them.


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  return cli.pretrained_workspace(tmp_path_factory, "resume")


def test_sigkill_then_resume_matches_uninterrupted_run(pretrained):
  root, config_path = pretrained
  child_env = cli.env(root)
  ref_dir, run_dir = root / "uninterrupted", root / "killed"
  # Independent runs: started together so the reference overlaps the victim.
  ref = cli.start(cli.command("launch.fedface", config_path, ref_dir, *ROUND_FLAGS),
                  child_env, root / "uninterrupted.log")
  try:
    victim = cli.start(cli.command("launch.fedface", config_path, run_dir, *ROUND_FLAGS),
                       dict(child_env, **{ckpt_lib.KILL_IN_SAVE_ENV: f"{KILL_IN_SAVE}:during"}),
                       root / "victim.log")
    try:
      victim.wait(timeout=300)
    finally:
      if victim.poll() is None:
        victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL, pathlib.Path(victim.log_path).read_text()

    killed_at = cli.finished_steps(run_dir / "checkpoints")[-1]
    # Mid-write: the step is not final and its tmp directory is left behind (unless the
    # save outran the hook's watcher thread, which then kills right after it).
    tmp = [p.name for p in (run_dir / "checkpoints").iterdir()
           if p.name.startswith(f"{KILL_IN_SAVE}.orbax-checkpoint-tmp")]
    assert (killed_at, bool(tmp)) in ((KILL_IN_SAVE - 1, True), (KILL_IN_SAVE, False))
    config = cli.load_config(config_path)
    # The killed run's last finished checkpoint restores into the engine's state.
    at_kill = cli.restore_server_state(config, run_dir, killed_at)
    assert int(at_kill["round"]) == killed_at

    log = cli.finish(cli.start(cli.command("launch.fedface", config_path, run_dir, *ROUND_FLAGS),
                               child_env, root / "resumed.log"))
    assert f"Resumed federated run at round {killed_at}" in log
    cli.finish(ref)
  finally:
    if ref.poll() is None:   # a failure above must not leave the reference running
      ref.kill()
      ref.wait()

  # Identical to the uninterrupted run at the kill point and at the end: params,
  # class table, server optimiser state, round and RNG, bit for bit.
  cli.assert_states_equal(at_kill, cli.restore_server_state(config, ref_dir, killed_at))
  final = cli.restore_server_state(config, run_dir, NUM_ROUNDS)
  assert int(final["round"]) == NUM_ROUNDS
  cli.assert_states_equal(final, cli.restore_server_state(config, ref_dir, NUM_ROUNDS))
  # The resumed run really trained past the kill point.
  assert any((a != b).any() for a, b in zip(
      jax.tree.leaves(at_kill["params"]), jax.tree.leaves(final["params"])))
