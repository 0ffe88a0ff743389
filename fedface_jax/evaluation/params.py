"""Verification of a model's parameters on held-out faces, as configured by a run's config.

Why here: the pretraining trainer, every federated round and the study drivers evaluate the same
way (same pairs, flip, seed and FARs from `config.eval`); one function keeps the trainer and the
engine from reaching into each other for it.
"""

from __future__ import annotations

from typing import Any

from fedface_jax.evaluation import api


def make_embed_fn(model, params):
  """A jitted float-images -> embeddings function for evaluation."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda x: model.apply({"params": params}, x))


def eval_split(config) -> str:
  """The split in-run evaluation uses: `config.eval.split` ("evaluation" by default).

  A study that tunes sets `eval.split = "validation"`, so that in-run numbers,
  which people look at while choosing, never come from the evaluation identities.
  """
  return config.eval.split


def evaluate_params(model, params, faces, config, out_dir: str | None = None,
                    name: str = "pretrained") -> dict[str, Any]:
  """Verification report of `model` with `params` on `faces` (a `FaceArrays`), per `config.eval`.

  `params` may live on devices (sharded or replicated); they are fetched to the host once.
  """
  import jax  # pylint: disable=g-import-not-at-top
  embed_fn = make_embed_fn(model, jax.device_get(params))
  return api.evaluate_verification(
      embed_fn, faces, flip=config.eval.flip,
      num_impostor_pairs=config.eval.num_impostor_pairs, seed=config.seed,
      fars=tuple(config.eval.fars), out_dir=out_dir, name=name)
