"""How the engine's loops over clients and local steps run.

`federated.execution`: "auto" (default) | "compiled" | "host_loop".
  * "compiled": the whole round is one jitted program (`rounds.make_round_fn`):
    `lax.scan` over client chunks and local steps, `vmap` within a chunk,
    `shard_map` over devices. Needed for a multi-device mesh or several
    processes. On one GPU it is the fast choice for small models, whose host
    loop of small steps is bound by kernel launches, but not for a face
    backbone at full size: on an H200 (BENCHMARKS.md, GPU section) sphere20 at
    112x112 ran 2.4x faster in the host loop, because `vmap` over per-client
    weights makes every convolution a grouped one (chunk 1, dense, was not
    measured there), while resnet_small at 64x64 and the toy CNN ran 2.6x and
    5.3x faster compiled;
  * "host_loop": clients one after another, one jitted local step per call
    (`host_loop.py`). One device, one process only. On XLA:CPU it is the
    faster choice (BENCHMARKS.md has the measured rows), because the CPU
    backend's fast convolution path is lost inside `while` loops and for the
    grouped convolutions that `vmap` over per-client weights produces;
  * "auto": "host_loop" on a one-device CPU mesh in a single process, else
    "compiled". On one GPU with a large backbone, set "host_loop" (or try
    `federated.clients_per_chunk=1`) after timing both: the default stays
    "compiled" until chunk 1 has been measured on a GPU.

Both give the same round to float rounding (tests/test_host_loop.py).

Unrolling, for the compiled round only:

XLA:CPU compiles a `while` body without its fast convolution path, so a plain
(un-vmapped) CNN gradient step runs much slower inside a `lax.scan` than the
same steps unrolled. In the engine's round, though, the vmapped (grouped)
convolutions dominate and unrolling multiplies compile time: the synthetic demo's
rounds were slower unrolled, compile included. The default is therefore "off";
"on" is there to try on a backend or workload where the loop body is the
bottleneck.

`federated.unroll_loops`: "off" (default) | "on". The local-step loop is
unrolled fully; the loop over client chunks up to `MAX_CHUNK_UNROLL` iterations.
"""

from __future__ import annotations

import jax

MAX_CHUNK_UNROLL = 32
EXECUTIONS = ("auto", "compiled", "host_loop")


def resolve_execution(setting: str, mesh) -> str:
  """"compiled" or "host_loop" for `federated.execution` on `mesh` (see the module doc)."""
  if setting not in EXECUTIONS:
    raise ValueError(f"federated.execution must be one of {EXECUTIONS}, got {setting!r}")
  single = mesh.size == 1 and jax.process_count() == 1
  if setting == "host_loop" and not single:
    raise ValueError(
        f"federated.execution='host_loop' runs clients on one device in one process; this mesh "
        f"has {mesh.size} devices over {jax.process_count()} processes. Use 'compiled' or 'auto'.")
  if setting == "auto":
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    return "host_loop" if single and on_cpu else "compiled"
  return setting


def unroll_factor(setting: str, length: int, limit: int | None = None) -> int:
  """The `unroll=` argument of a `lax.scan` of `length` iterations."""
  if setting not in ("on", "off"):
    raise ValueError(f"federated.unroll_loops must be 'on' or 'off', got {setting!r}")
  if setting == "off" or length < 1:
    return 1
  return max(1, min(length, limit or length))
