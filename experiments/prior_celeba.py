"""Public-face DDPM prior on the shared real faces' *pretrain* identities (120 of 239).

The 60 federated identities (the attack's victims) are never seen by the prior.

  python -m launch.train_prior --config experiments/prior_celeba.py \
      --workdir runs/prior/celeba_demo
"""

from experiments import pretrain_celeba
from fedface_jax import config_utils
from fedface_jax.attack.diffusion import train_prior as tp


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, variant="demo", steps=0)
  config = pretrain_celeba.get_config()
  config.prior = tp.default_prior_config(arg.variant)
  if arg.steps:
    config.prior.train.num_steps = arg.steps
  return config
