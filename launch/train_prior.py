"""Trains (or resumes) the public-face DDPM prior that enhances attack reconstructions.

The prior sees only the *pretrain* identities of the config's split (public faces), never the
federated identities the attack targets. It is cached as an orbax checkpoint in --workdir, which
`run_attack` (config.enhance.prior_workdir) loads without retraining.

  python -m launch.train_prior --config experiments/prior_synthetic.py:variant=demo \
      --workdir runs/prior/synthetic_demo
  python -m launch.train_prior --config experiments/prior_celeba.py \
      --workdir runs/prior/celeba_demo
"""

from absl import flags

from launch import common

common.define_flags("experiments/prior_synthetic.py")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from fedface_jax.attack.diffusion import train_prior as tp
  from fedface_jax import data as data_lib
  # pylint: enable=g-import-not-at-top
  cfg = FLAGS.config
  splits = data_lib.load_splits(cfg)
  public = splits["pretrain"]
  fed_names = set(splits["federated"].identity_names)
  if fed_names & set(public.identity_names):
    raise ValueError("pretrain and federated identities overlap; the prior would see victims")
  print(f"prior on {public.num_images} images of {public.num_identities} public (pretrain) "
        f"identities; {len(fed_names)} federated identities excluded")
  params = tp.load_or_train_prior(cfg.prior, public.images, FLAGS.workdir)
  n = sum(int(np.prod(x.shape)) for x in __import__("jax").tree.leaves(params))
  print(f"prior ready in {FLAGS.workdir} ({n} parameters)")


if __name__ == "__main__":
  common.run(main)
