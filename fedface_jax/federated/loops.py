"""Whether to unroll the engine's `lax.scan` loops (local steps, client chunks).

XLA:CPU compiles a `while` body without its fast convolution path: a plain
(un-vmapped) CNN gradient step inside a 4-step `lax.scan` ran 12x slower than
the same four steps unrolled (2.23 s vs 0.19 s, resnet_small, batch 16, 32x32,
2-core CPU under load). In the engine's round, though, the vmapped (grouped)
convolutions dominate and unrolling multiplies compile time: 3 rounds of the
synthetic demo config took 194 s unrolled vs 115 s rolled, compile included
(same machine, load ~6). So the default is "off"; "on" is there to try on a
backend or workload where the loop body is the bottleneck (BENCHMARKS.md has
the profile).

`federated.unroll_loops`: "off" (default) | "on". The local-step loop is
unrolled fully; the loop over client chunks up to `MAX_CHUNK_UNROLL` iterations.
"""

from __future__ import annotations

MAX_CHUNK_UNROLL = 32


def unroll_factor(setting: str, length: int, limit: int | None = None) -> int:
  """The `unroll=` argument of a `lax.scan` of `length` iterations."""
  if setting not in ("on", "off"):
    raise ValueError(f"federated.unroll_loops must be 'on' or 'off', got {setting!r}")
  if setting == "off" or length < 1:
    return 1
  return max(1, min(length, limit or length))
