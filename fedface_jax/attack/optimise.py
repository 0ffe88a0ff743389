"""The optimisation loop the gradient-inversion attacks share (`inversion.py`).

Why one loop: the three attacks differ in their objective, optimiser and projection, not in how
they are run. The loss at every iteration is recorded before the update, as the reference's
`closure` does, and a progress bar advances once per chunk of iterations.

Two ways to run the iterations (`loop`):
  * "scan": each chunk is one jitted `lax.scan` of iterations (no Python between iterations). Right
    on GPU/TPU, where a `while` body compiles like straight-line code.
  * "host": one jitted iteration per call, dispatched asynchronously from Python, so that no
    convolution gradient sits inside a `while` loop. XLA:CPU compiles a `while` body without its
    fast convolution path: the reference's LeNet at 128 px (16 photos, tau = 3, second order) took
    108 s per iteration in a scan of length 1 with the local steps a scan too, 65 s with the steps
    unrolled, and 9.2 s in the host loop with unrolled steps, to the same loss
    (`benchmarks/attack_loop_probe.json`, `scripts/attack_loop_probe.py`). The engine avoids the
    same trap with its host loop (`federated/loops.py`).
  * "auto" (default): "host" on the CPU backend, else "scan".
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedface_jax import progress as progress_lib

PyTree = Any
LOOPS = ("auto", "scan", "host")


def resolve_loop(loop: str) -> str:
  """"scan" or "host" for a `loop` setting on the default backend (see the module doc)."""
  if loop not in LOOPS:
    raise ValueError(f"attack loop must be one of {LOOPS}, got {loop!r}")
  if loop == "auto":
    return "host" if jax.default_backend() == "cpu" else "scan"
  return loop


@dataclasses.dataclass
class RunOutput:
  """The variables at the end, the loss at every iteration, and the outputs at the end."""

  variables: PyTree
  loss_history: np.ndarray
  matching_history: np.ndarray
  final_total: float
  final_matching: float
  final_outputs: dict[str, np.ndarray]
  timing: dict[str, float]


class Runner:
  """Minimises `objective(variables, aux) -> (total, outputs)` in jitted chunks of scan steps.

  `outputs` is a dict with at least `"matching"` (recorded every iteration); the whole dict is
  returned once, at the final variables (e.g. the upsampled images, the class embeddings used), so
  that nothing has to be recompiled after the run.

  Arrays that the objective reads (global params, target, labels) travel in `aux` as jit
  *arguments*, never as closure constants, so a 34M-parameter model is not baked into the compiled
  program. One runner compiles once and serves every restart of the same shapes.

  `loop`: "auto" | "scan" | "host", see the module doc. Both loops run the same iterations; they
  agree to float rounding (tests/test_attack_inversion.py).
  """

  def __init__(self, objective: Callable[[PyTree, PyTree], tuple[jax.Array, jax.Array]],
               tx: optax.GradientTransformation, project: Callable[[PyTree], PyTree] | None = None,
               loop: str = "auto"):
    self._objective = objective
    self._tx = tx
    self._project = project
    self.loop = resolve_loop(loop)
    self._chunk_fn = jax.jit(self._chunk, static_argnames=("length",))
    self._step_fn = jax.jit(self._step)
    self._evaluate_fn = jax.jit(self._objective)

  def _step(self, v, s, aux):
    (total, outputs), grads = jax.value_and_grad(self._objective, has_aux=True)(v, aux)
    updates, s = self._tx.update(grads, s, v)
    v = optax.apply_updates(v, updates)
    if self._project is not None:
      v = self._project(v)
    return v, s, total, outputs["matching"]

  def _chunk(self, variables, opt_state, aux, length: int):
    def body(carry, _):
      v, s, total, matching = self._step(*carry, aux)
      return (v, s), (total, matching)

    (variables, opt_state), (totals, matchings) = jax.lax.scan(
        body, (variables, opt_state), None, length=length)
    # The objective at the chunk's final variables, in the same program: a separate jitted
    # evaluation would cost a second compilation (seconds on CPU) for a value needed once per run.
    return variables, opt_state, totals, matchings, self._objective(variables, aux)

  def _host_chunk(self, variables, opt_state, aux, length: int, last: bool):
    """`_chunk` as `length` asynchronous calls of one jitted iteration (no `while` loop)."""
    totals, matchings = [], []
    for _ in range(length):
      variables, opt_state, total, matching = self._step_fn(variables, opt_state, aux)
      totals.append(total)
      matchings.append(matching)
    final = self._evaluate_fn(variables, aux) if last else None
    return variables, opt_state, jnp.stack(totals), jnp.stack(matchings), final

  def run(self, variables: PyTree, aux: PyTree, iterations: int, chunk: int = 10,
          progress: bool = True, desc: str = "inversion") -> RunOutput:
    if iterations < 1:
      raise ValueError(f"iterations must be >= 1, got {iterations}")
    chunk = max(1, min(int(chunk), iterations))
    opt_state = self._tx.init(variables)
    totals, matchings = [], []
    t0 = time.perf_counter()
    first_chunk_s = float("nan")
    done = 0
    with progress_lib.progress(iterations, desc, disable=not progress, unit="it") as bar:
      while done < iterations:
        length = min(chunk, iterations - done)
        if self.loop == "host":
          variables, opt_state, tot, mat, final = self._host_chunk(
              variables, opt_state, aux, length, last=done + length >= iterations)
        else:
          variables, opt_state, tot, mat, final = self._chunk_fn(variables, opt_state, aux,
                                                                 length=length)
        tot = np.asarray(tot)  # blocks: the timing below is real
        totals.append(tot)
        matchings.append(np.asarray(mat))
        if done == 0:
          first_chunk_s = time.perf_counter() - t0
        done += length
        bar.update(length)
        bar.set_postfix(loss=f"{float(tot[-1]):.4g}")
    total_s = time.perf_counter() - t0
    steady = iterations - min(chunk, iterations)
    timing = {
        "total_s": total_s,
        "first_chunk_s": first_chunk_s,
        "per_iteration_s": (total_s - first_chunk_s) / steady if steady else float("nan"),
    }
    loss_history = np.concatenate(totals)
    if not np.all(np.isfinite(loss_history)):
      logging.warning("%s: %d of %d iterations had a non-finite loss", desc,
                      int(np.sum(~np.isfinite(loss_history))), iterations)
    final_total, final_outputs = final
    final_outputs = jax.tree.map(np.asarray, final_outputs)
    return RunOutput(variables, loss_history, np.concatenate(matchings), float(final_total),
                     float(final_outputs["matching"]), final_outputs, timing)

