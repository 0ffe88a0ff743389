"""Public-face DDPM prior on the synthetic faces' *pretrain* identities (never the federated ones).

  python -m launch.train_prior --config experiments/prior_synthetic.py:variant=demo \
      --workdir runs/prior/synthetic_demo
  # variants: tiny (tests: 16 px, 20 steps), demo (32 px, the attack_synthetic enhancer),
  #           full (64 px, GPU); steps=N overrides the number of training steps.
"""

from experiments import pretrain_synthetic
from fedface_jax import config_utils
from fedface_jax.attack.diffusion import train_prior as tp


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, variant="demo", steps=0)
  config = pretrain_synthetic.get_config(
      "variant=tiny" if arg.variant == "tiny" else "variant=demo")
  config.prior = tp.default_prior_config(arg.variant)
  if arg.steps:
    config.prior.train.num_steps = arg.steps
  return config
