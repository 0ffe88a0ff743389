"""Public-face DDPM prior and diffusion enhancers (SDEdit, DDRM) for attack reconstructions.

See ATTACK.md §4. Typical use:

  config = default_prior_config("demo")
  params = load_or_train_prior(config, public_faces_u8, workdir)
  model, schedule = build_prior(config)
  out01 = ddrm_super_resolution(params, model.apply, recon01_16x16, scale=2, sigma_0=0.05,
                                rng=key, schedule=schedule)

`train_prior` names the submodule here (its function of the same name is
`fedface_jax.attack.diffusion.train_prior.train_prior`).
"""

from fedface_jax.attack.diffusion.ddpm import ddim_sample
from fedface_jax.attack.diffusion.ddpm import ddpm_sample
from fedface_jax.attack.diffusion.ddpm import diffusion_loss
from fedface_jax.attack.diffusion.enhance import ddrm_super_resolution
from fedface_jax.attack.diffusion.enhance import measurement_consistent_ddim
from fedface_jax.attack.diffusion.enhance import sdedit
from fedface_jax.attack.diffusion.schedule import linear_beta_schedule
from fedface_jax.attack.diffusion.schedule import Schedule
from fedface_jax.attack.diffusion.train_prior import build_prior
from fedface_jax.attack.diffusion.train_prior import default_prior_config
from fedface_jax.attack.diffusion.train_prior import load_or_train_prior
from fedface_jax.attack.diffusion.train_prior import sample_prior
from fedface_jax.attack.diffusion.train_prior import save_sample_grid
from fedface_jax.attack.diffusion.unet import UNet
