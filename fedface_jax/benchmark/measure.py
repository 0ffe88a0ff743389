"""Measurement helpers: peak FLOP/s, XLA FLOP counts, compile vs steady-state time, memory.

Why this module exists: a throughput number is only interpretable next to the machine's own
ceiling and the program's own work. Everything here is measured in the same process as the
benchmark it annotates: the matmul peak (so MFU is relative to what this machine, at this load,
actually delivers), XLA's cost analysis of the *compiled* program (so FLOPs are what runs, not a
hand count), compile time kept apart from steady-state time, and the process's peak RSS (reset
per configuration where Linux allows it, so each row has its own peak).
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def load_average() -> tuple[float, float, float]:
  """1/5/15-min load averages; recorded with every timing because the machine is shared."""
  return os.getloadavg()


def peak_matmul_flops(size: int = 2048, reps: int = 5, dtype=jnp.float32) -> float:
  """Best-of-`reps` FLOP/s of a jitted [size, size] @ [size, size] matmul on device 0.

  The best rep, not the mean: the peak is a ceiling, and on a shared machine the slow reps
  measure the neighbours.
  """
  if size < 1 or reps < 1:
    raise ValueError(f"size and reps must be >= 1, got {size}, {reps}")
  # Random data, not ones: uniform operands run measurably faster on some GPUs (the matrix
  # units' power draw), which would inflate the ceiling and deflate every MFU.
  x = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(x))
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(x))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * size ** 3 / best


def compiled_cost(compiled) -> dict[str, float]:
  """XLA's cost analysis of a compiled program as one dict (older JAX returns a list)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  if not isinstance(ca, dict):
    raise ValueError(f"unexpected cost_analysis() result {type(ca).__name__}")
  return {k: float(v) for k, v in ca.items() if isinstance(v, (int, float))}


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, per device program (SPMD: per shard).

  Caveat: XLA's HloCostAnalysis counts a while-loop body once, so programs with `lax.scan`
  (chunks, local steps) are undercounted; `flops_per_client_step` sidesteps that.
  """
  flops = compiled_cost(compiled).get("flops", 0.0)
  if not flops > 0:
    raise ValueError(f"cost analysis gave no positive 'flops': {compiled_cost(compiled)}")
  return flops


# Where `step_flops` counted: on a CPU run, or on a GPU machine's host CPU. Both are CPU compiles
# of the same step (`scripts/recount_benchmark_flops.py` checks rows against them).
FLOPS_COMPILED_CPU = "compiled (cpu)"
FLOPS_COMPILED_HOST_CPU = "compiled for the host cpu"


def step_flops(jitted, *args) -> tuple[float, str]:
  """(FLOPs of one call, source) for a program without loops, counted where it is honest.

  XLA's cost analysis of the program compiled for the CPU. On a GPU the compiled program's
  convolutions and matmuls are library calls (cuDNN, cuBLAS custom-calls) that its cost analysis
  counts as zero (and JAX 0.11 gives no cost analysis of the lowered program there), so the
  same program is compiled for the host CPU (`JAX_PLATFORMS=cuda,cpu`) and counted there. If no
  CPU backend is up, the count is NaN and says so: `scripts/recount_benchmark_flops.py` fills it
  in afterwards from the row's workload, never a wrong MFU.
  """
  if jax.default_backend() == "cpu":
    return compiled_flops(jitted.lower(*args).compile()), FLOPS_COMPILED_CPU
  try:
    cpu = jax.devices("cpu")[0]
    on_cpu = jax.device_put(args, cpu)
    return compiled_flops(jitted.lower(*on_cpu).compile()), FLOPS_COMPILED_HOST_CPU
  except Exception as e:  # pylint: disable=broad-except
    return float("nan"), f"unavailable: {e!r}"[:300]


def lower_and_compile(jitted, *args) -> tuple[Any, float, float]:
  """(compiled, lower_s, compile_s): compile time is reported apart from steady state."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return compiled, t1 - t0, t2 - t1


def time_calls(fn: Callable[[], Any], reps: int, warmup: int = 0) -> list[float]:
  """Wall seconds of `reps` calls of `fn()` (each blocked until ready), after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return out


def spread(values: Sequence[float]) -> dict[str, float]:
  """n, median and interquartile range (q1, q3; linear interpolation) of `values`.

  Why median and IQR: on a shared machine a few repetitions are hit by the neighbours; the
  median ignores them and the IQR says how much the middle half moved.
  """
  v = np.asarray(list(values), np.float64)
  if v.size == 0 or not np.all(np.isfinite(v)):
    raise ValueError(f"spread needs >= 1 finite value, got {list(values)!r}")
  q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
  return {"n": int(v.size), "median": med, "q1": q1, "q3": q3, "iqr": q3 - q1}


def rate_spread(count: float, times: Sequence[float]) -> dict[str, float]:
  """`spread` of the per-repetition rates count / t (e.g. client updates per second)."""
  if any(t <= 0 for t in times):
    raise ValueError(f"times must be > 0, got {list(times)!r}")
  return spread([count / t for t in times])


def timed_reps(fn: Callable[[], Any], min_reps: int, min_total_s: float = 0.0,
               max_reps: int | None = None) -> list[float]:
  """Wall seconds of calls of `fn()` (each blocked until ready): at least `min_reps` calls, and
  more while their total is under `min_total_s` (fast rows get more repetitions), at most
  `max_reps`. The caller warms up (compiles) first and awaits it.
  """
  if min_reps < 1:
    raise ValueError(f"min_reps must be >= 1, got {min_reps}")
  max_reps = max(min_reps, int(max_reps or min_reps))
  out: list[float] = []
  while len(out) < min_reps or (sum(out) < min_total_s and len(out) < max_reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return out


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported.

  Linux >= 4.0: writing "5" to /proc/self/clear_refs. Without it, `peak_rss_bytes` is the
  process-lifetime peak, which is why the benchmark runs its configurations smallest first.
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """Peak resident set size of this process: VmHWM (resettable), else getrusage's ru_maxrss."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def device_memory(devices: Sequence[Any] | None = None) -> dict[str, int] | None:
  """Summed `memory_stats()` (bytes_in_use, peak_bytes_in_use) over devices; None on CPU.

  The CPU backend returns no stats (host memory is the RSS above); GPUs and TPUs do.
  """
  devices = jax.local_devices() if devices is None else devices
  total: dict[str, int] = {}
  for d in devices:
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if not stats:
      return None
    for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit"):
      if k in stats:
        total[k] = total.get(k, 0) + int(stats[k])
  return total or None
