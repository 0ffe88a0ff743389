"""Host-side batches for centralised training, from the decoded uint8 cache.

Images are already decoded into a memory-mapped uint8 array, so a batch is a
fancy-index read plus a device transfer; nothing is decoded in the hot loop.
Batch `t` depends only on (seed, t), so a resumed run sees exactly the batches
an uninterrupted run would have seen. A background thread keeps the next
batches ready while the device computes.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import jax
import numpy as np


class RandomBatches:
  """Deterministic random batches (with replacement across steps) of a FaceArrays."""

  def __init__(self, faces, batch_size: int, seed: int):
    if faces.num_images == 0:
      raise ValueError("cannot train on an empty set of images")
    self._faces = faces
    self._batch_size = batch_size
    self._seed = seed

  def indices(self, step: int) -> np.ndarray:
    rng = np.random.default_rng([self._seed, step])
    return np.sort(rng.integers(0, self._faces.num_images, self._batch_size))

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    idx = self.indices(step)
    return np.asarray(self._faces.images[idx]), np.asarray(self._faces.labels[idx])


def prefetch(fetch, steps: range, sharding, depth: int = 2) -> Iterator:
  """Yields `(step, device batch)` for `steps`, computing ahead in a thread.

  `fetch(step)` returns a tuple of host arrays; each is placed with `sharding`
  through `jax.make_array_from_process_local_data`, which is also the
  multi-host path (each process supplies its local slice).
  """
  out: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def worker():
    try:
      for step in steps:
        if stop.is_set():
          return
        out.put((step, fetch(step)))
    except Exception as e:  # pylint: disable=broad-except
      out.put(e)
      return
    out.put(None)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      item = out.get()
      if item is None:
        return
      if isinstance(item, Exception):
        raise item
      step, host = item
      yield step, tuple(
          jax.make_array_from_process_local_data(sharding, x) for x in host)
  finally:
    stop.set()
