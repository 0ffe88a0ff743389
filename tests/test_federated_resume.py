"""A federated run SIGKILLed mid-way and restarted ends exactly where an uninterrupted run ends.

This is the engine's central promise (federated/engine.py): clients of round t
come from (seed, t) and client randomness from (rng, t, client), and the
checkpoint holds the whole server state, so a resume from the last finished
round replays the remaining rounds bit for bit. The kill is a real SIGKILL of
a `launch.fedface` process (no cleanup, no `finally`), taken while the run is
between rounds or inside one, so this also exercises orbax's
write-then-rename crash safety.
"""

import signal

import jax
import pytest

import federated_cli as cli

NUM_ROUNDS = 6
KILL_AFTER = 2   # SIGKILL once a checkpoint of round >= 2 is final
ROUND_FLAGS = (f"--config.federated.num_rounds={NUM_ROUNDS}",
               "--config.federated.checkpoint_every_rounds=1")


# ~2 min on the 2-core dev machine (four process start-ups, one cold compile); in the
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
    # The sleep after each round's checkpoint only widens the window in which the
    # kill lands; when it lands is decided by polling, not by the sleep.
    victim = cli.start(cli.command("launch.fedface", config_path, run_dir, *ROUND_FLAGS,
                                   "--test_sleep_after_round_s=1.5"),
                       child_env, root / "victim.log")
    try:
      cli.wait_for_step(run_dir / "checkpoints", KILL_AFTER, victim)
    finally:
      victim.send_signal(signal.SIGKILL)
      victim.wait()
    assert victim.returncode == -signal.SIGKILL

    killed_at = cli.finished_steps(run_dir / "checkpoints")[-1]
    assert KILL_AFTER <= killed_at < NUM_ROUNDS, "the kill must interrupt the run"
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
