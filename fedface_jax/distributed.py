"""Multi-process (multi-host) start-up, so single-host runs need no flags at all.

`maybe_initialize_distributed` calls `jax.distributed.initialize` only when a
multi-process run is asked for, and must run before anything touches a JAX
backend (`jax.devices()`, `jax.process_index()`, any computation): JAX refuses
to initialise the distributed runtime afterwards. Launch scripts therefore
call it first thing in `main`.

This is the one module of `fedface_jax/` that knows about absl flags
(`define_distributed_flags`): the three flags are the same for every entry
point in `launch/`, so they are defined once here rather than copied. absl is
imported lazily inside those helpers, so importing this module defines no flags
and the library stays flag-free.
"""

from typing import Sequence

from absl import logging
import jax


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 local_device_ids: Sequence[int] | None = None) -> bool:
  """Initialises `jax.distributed` when a multi-process run is requested.

  Requested means `num_processes > 1` or a coordinator address is given. With
  `num_processes > 1` and no address, JAX auto-detects the cluster (SLURM,
  Open MPI, TPU pods). Calling again after initialisation is a no-op.

  Returns:
    Whether the distributed runtime is initialised.
  """
  if jax.distributed.is_initialized():
    logging.info("jax.distributed already initialised (process %d of %d).",
                 jax.process_index(), jax.process_count())
    return True
  if not coordinator_address and (num_processes or 1) <= 1:
    logging.info("Single-process run: jax.distributed not initialised.")
    return False
  jax.distributed.initialize(
      coordinator_address=coordinator_address or None,
      num_processes=num_processes,
      process_id=process_id,
      local_device_ids=list(local_device_ids) if local_device_ids is not None else None)
  logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_primary() -> bool:
  """Whether this is process 0, the one that writes logs, metrics and files."""
  return jax.process_index() == 0


def define_distributed_flags(flag_values=None):
  """Defines `--coordinator_address`, `--num_processes`, `--process_id`.

  For launch scripts. Safe to call from several modules: flags already defined
  are left alone.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top  # See module docstring.
  flag_values = flags.FLAGS if flag_values is None else flag_values
  if "coordinator_address" not in flag_values:
    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0's coordinator, for multi-process runs.",
                        flag_values=flag_values)
  if "num_processes" not in flag_values:
    flags.DEFINE_integer("num_processes", 1, "Number of processes (hosts) in the run.",
                         lower_bound=1, flag_values=flag_values)
  if "process_id" not in flag_values:
    flags.DEFINE_integer("process_id", 0, "Index of this process, 0..num_processes-1.",
                         lower_bound=0, flag_values=flag_values)


def initialize_from_flags(flag_values=None) -> bool:
  """`maybe_initialize_distributed` with the values of `define_distributed_flags`."""
  from absl import flags  # pylint: disable=g-import-not-at-top  # See module docstring.
  flag_values = flags.FLAGS if flag_values is None else flag_values
  address = flag_values.coordinator_address
  # Without an address JAX auto-detects the cluster; the default process_id=0
  # would then be wrong on every process but one, so it is not passed.
  return maybe_initialize_distributed(
      coordinator_address=address,
      num_processes=flag_values.num_processes,
      process_id=flag_values.process_id if address else None)
