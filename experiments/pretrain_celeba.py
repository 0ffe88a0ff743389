"""CosFace pretraining on the shared real faces (../shared/data/celeba_faces_112).

239 identities: 120 pretrain, 60 federated (one client each), the rest held out.

  python -m launch.pretrain --config experiments/pretrain_celeba.py \
      --workdir runs/celeba/pretrain
  python -m launch.evaluate --config experiments/pretrain_celeba.py \
      --workdir runs/celeba/pretrain
"""

import os

import ml_collections as mlc

from experiments import common
from fedface_jax import config_utils

DEFAULT_ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                            "celeba_faces_112")
# The resolution the CelebA backbone trains at (and so the model judge's input size elsewhere).
DEFAULT_SIZE = 64


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, root=os.path.normpath(DEFAULT_ROOT), size=DEFAULT_SIZE)
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.image_folder_data(arg.root, image_size=(arg.size, arg.size))
  config.splits = common.splits(pretrain=120, federated=60, evaluation=-1)
  config.model = common.model("resnet_small", 128)
  # ~2,300 pretrain images: 600 x 64 is ~17 epochs, minutes on two CPU cores.
  common.pretrain_section(config, num_steps=600, batch_size=64, lr=0.1, warmup_steps=50)
  config.eval = common.evaluation()
  config.mesh = common.mesh()
  return config
