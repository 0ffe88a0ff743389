"""Keep freed host memory inside the process, so XLA:CPU's per-call buffers stop page-faulting.

Why this exists: every call of a jitted function on XLA:CPU allocates its temporary buffers (a
convolution network's activations: tens of MB per local step) with malloc and frees them at
the end. glibc serves blocks that large with fresh `mmap` pages (its mmap threshold) and hands
freed heap tops back to the kernel (its trim threshold), so the next call touches new pages
and the kernel zero-fills each one on a page fault. Measured on the engine's host loop
(`scripts/host_malloc_probe.py`, benchmarks/host_malloc_probe.json: resnet_small at 64x64, 20
photos, 5 local steps, 2 streams, 2-core CPU): 43,103 minor page faults and 168.7 ms per client
with glibc's defaults; 773 faults and 123.1 ms (1.37x) with the settings below. Fusing the 5
steps into one call (`host_loop_fused_steps`) had hidden part of it (131.7 ms) by allocating
once per 5 steps. The mmap threshold and the top pad are both needed (either alone left most
of the faults in a check made while choosing them, not committed).

The cost: memory freed after a peak stays with the process (its RSS does not shrink back), as
with tcmalloc or jemalloc, which a running interpreter cannot switch to; a process that runs
one phase after another holds what earlier phases freed (the benchmark worker's keep rows show
0.5-0.7 GiB more peak RSS, BENCHMARKS.md). `launch/common.py` applies this at start-up unless `--host_malloc=system`;
`malloc_env()` gives the same settings as environment variables for a process that starts
another interpreter (the benchmark's peers), which glibc reads at its start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h) and the values applied: (param, value, env variable).
_SETTINGS = (
    ("M_TRIM_THRESHOLD", -1, 2**31 - 1, "MALLOC_TRIM_THRESHOLD_"),  # trim only above 2 GiB
    ("M_TOP_PAD", -2, 256 << 20, "MALLOC_TOP_PAD_"),                # grow heaps 256 MiB at a time
    ("M_MMAP_THRESHOLD", -3, 1 << 30, "MALLOC_MMAP_THRESHOLD_"),    # mmap only blocks >= 1 GiB
)
HOST_MALLOC = ("keep", "system")
_applied: list[str] = []   # the mode `apply` set in this process


def malloc_env() -> dict[str, str]:
  """The settings as glibc's environment variables (read when a process starts)."""
  return {env: str(value) for _, _, value, env in _SETTINGS}


def keep_freed_memory() -> dict[str, bool] | None:
  """Applies the settings to this process with `mallopt`; which were accepted.

  Returns None where the C library is not glibc (no `mallopt`): nothing is changed there.
  Allocations made before the call are not affected, so call it early.
  """
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return None
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return {label: bool(mallopt(param, value))
          for label, param, value, _ in _SETTINGS}


def apply(mode: str) -> dict[str, bool] | None:
  """`mode` "keep": `keep_freed_memory()`; "system": glibc's defaults, nothing changed."""
  if mode not in HOST_MALLOC:
    raise ValueError(f"host_malloc must be one of {HOST_MALLOC}, got {mode!r}")
  _applied.append(mode)
  return keep_freed_memory() if mode == "keep" else None


def current_mode() -> str:
  """What this process runs with: "keep" if applied here or set by `malloc_env()` at start."""
  if "keep" in _applied or all(os.environ.get(k) == v for k, v in malloc_env().items()):
    return "keep"
  return "system"
