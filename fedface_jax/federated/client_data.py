"""One-identity clients and the deterministic choice of who joins each round.

In FedFace every phone holds photos of its owner only, so a client is an
identity of the federated split. A round's clients depend only on
(seed, round), so a resumed run samples exactly the clients an uninterrupted
run would have sampled, whatever happened in between.
"""

from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np


@dataclasses.dataclass(frozen=True)
class RoundData:
  """Host arrays for one round, padded to a common image count.

  images: [M, n_max, H, W, 3] uint8; slots past `num_images[k]` are zeros and
    are never sampled by the client's local batches.
  num_images: [M] int32, the FedAvg weight of each client.
  client_ids: [M] int32 rows of the class-embedding table.
  """
  images: np.ndarray
  num_images: np.ndarray
  client_ids: np.ndarray


class FederatedClients:
  """The federated identities of a FaceArrays, one client each.

  Clients with fewer than `min_images` photos are dropped (logged and
  counted: a client with one photo cannot form a meaningful mean feature or a
  local batch); clients with more than `max_images` keep their first
  `max_images`, so a round has a fixed shape and compiles once.
  """

  def __init__(self, faces, min_images: int = 2, max_images: int = 32):
    if min_images < 1 or max_images < min_images:
      raise ValueError(f"need 1 <= min_images <= max_images, got {min_images}, {max_images}")
    counts = np.bincount(faces.labels, minlength=faces.num_identities)
    keep = np.flatnonzero(counts >= min_images)
    self.num_dropped = int(faces.num_identities - keep.size)
    if self.num_dropped:
      logging.warning("Dropped %d of %d federated identities with < %d images",
                      self.num_dropped, faces.num_identities, min_images)
    if keep.size == 0:
      raise ValueError(f"no federated identity has >= {min_images} images")
    order = np.argsort(faces.labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    self._faces = faces
    self._image_index = [order[starts[i]:starts[i + 1]][:max_images] for i in keep]
    self.identity_index = keep.astype(np.int32)  # client id -> identity in faces
    self.max_images = int(min(max_images, counts[keep].max()))
    self.image_shape = faces.images.shape[1:]

  @property
  def num_clients(self) -> int:
    return len(self._image_index)

  def num_images(self, client_ids) -> np.ndarray:
    return np.array([len(self._image_index[c]) for c in client_ids], np.int32)

  def client_images(self, client_id: int) -> np.ndarray:
    return np.asarray(self._faces.images[np.sort(self._image_index[client_id])])

  def round_data(self, client_ids: np.ndarray) -> RoundData:
    client_ids = np.asarray(client_ids, np.int32)
    images = np.zeros((len(client_ids), self.max_images, *self.image_shape), np.uint8)
    for k, c in enumerate(client_ids):
      imgs = self.client_images(int(c))
      images[k, :len(imgs)] = imgs
    return RoundData(images, self.num_images(client_ids), client_ids)


def sample_clients(seed: int, round_index: int, num_clients: int,
                   clients_per_round: int) -> np.ndarray:
  """Clients of round `round_index`: uniform without replacement, from (seed, round)."""
  if clients_per_round > num_clients:
    raise ValueError(f"clients_per_round={clients_per_round} > {num_clients} clients")
  rng = np.random.default_rng([seed, round_index])
  return np.sort(rng.choice(num_clients, clients_per_round, replace=False)).astype(np.int32)
