"""Two `launch.fedface` processes joined by `jax.distributed` compute what one process computes.

Multi-host is SPMD: every process runs the same round loop, loads only its
own block of the round's clients and contributes it through
`jax.make_array_from_process_local_data` (federated/engine.py). This runs that
for real on localhost: two OS processes with 2 fake CPU devices each, joined
through a coordinator on a free port, CPU collectives over gloo (the default
`jax_cpu_collectives_implementation` in JAX 0.10), against one process with 4
devices and the same ("data"=2, "classes"=2) mesh. Both the client axis and the
class table therefore span the two processes: mean-feature init, the round's
row gather/psum, the FedAvg psum, spreadout and the sharded checkpoint write
all cross the process boundary.
"""

import socket

import pytest

import federated_cli as cli

# 3 clients per round on 4 devices: a padded round (4 slots), whose padding slot lies in
# the second process's block, so masking the padding must work across processes too.
FLAGS = ("--config.federated.num_rounds=2", "--config.federated.checkpoint_every_rounds=1",
         "--config.federated.clients_per_round=3",
         "--config.mesh.data=2", "--config.mesh.classes=2")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# ~2 min on the 2-core dev machine (four process start-ups, two cold compiles); in the
# default suite all the same, since CI must check them.


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  return cli.pretrained_workspace(tmp_path_factory, "multiprocess")


def test_two_processes_match_one_process(pretrained):
  root, config_path = pretrained
  multi_dir, single_dir = root / "two_processes", root / "one_process"
  address = f"localhost:{_free_port()}"
  procs = [cli.start(cli.command("launch.fedface", config_path, multi_dir, *FLAGS,
                                 f"--coordinator_address={address}", "--num_processes=2",
                                 f"--process_id={p}"),
                     cli.env(root, num_devices=2), root / f"process_{p}.log")
           for p in range(2)]
  single = cli.start(cli.command("launch.fedface", config_path, single_dir, *FLAGS),
                     cli.env(root, num_devices=4), root / "one_process.log")
  try:
    logs = [cli.finish(p) for p in procs]
    cli.finish(single)
  finally:
    for p in (*procs, single):   # a failed process leaves its peer waiting on the coordinator
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in enumerate(logs):
    assert f"process {p}/2, 2 local / 4 global devices" in log, log[-2000:]

  config = cli.load_config(config_path)
  multi = cli.restore_server_state(config, multi_dir, 2)
  one = cli.restore_server_state(config, single_dir, 2)
  assert int(multi["round"]) == 2
  # Same mesh and program; only the psums run over gloo instead of in-process,
  # which may add in a different order: float32 rounding, nothing more.
  cli.assert_states_equal(multi, one, rtol=1e-5, atol=5e-6)
  # Round 1 is also checkpointed by both processes together and restorable.
  cli.assert_states_equal(cli.restore_server_state(config, multi_dir, 1),
                          cli.restore_server_state(config, single_dir, 1),
                          rtol=1e-5, atol=5e-6)
