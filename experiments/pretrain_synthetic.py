"""CosFace pretraining on the embedded synthetic faces (the demo default).

  python -m launch.pretrain --config experiments/pretrain_synthetic.py \
      --workdir runs/synthetic/pretrain
  # variants: experiments/pretrain_synthetic.py:variant=tiny (tests, seconds) | demo (default,
  #   32x32, minutes on a CPU) | full (64x64, 2,000 identities; a GPU job)
  # 8 devices:  XLA_FLAGS=--xla_force_host_platform_device_count=8 ... \
  #     --config.mesh.data=2 --config.mesh.classes=4
"""

import ml_collections as mlc

from experiments import common
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, variant="demo")
  config = mlc.ConfigDict()
  config.seed = 0
  if arg.variant == "tiny":
    config.data = common.synthetic_data(num_identities=24, images_per_identity=6,
                                        image_size=(32, 32))
    config.splits = common.splits(pretrain=12, federated=6, evaluation=-1)
    config.model = common.model("resnet_small", 32, kwargs=dict(widths=(8, 16, 16, 32)))
    common.pretrain_section(config, num_steps=2, batch_size=16, lr=0.1, warmup_steps=0)
    config.eval = common.evaluation(flip=False, num_impostor_pairs=2000)
  elif arg.variant == "demo":
    # 32x32 keeps `make demo` to minutes on two CPU cores; `variant=full` is the 64x64 setting.
    config.data = common.synthetic_data(num_identities=700, images_per_identity=20,
                                        image_size=(32, 32))
    config.splits = common.splits(pretrain=400, federated=150, evaluation=-1)
    config.model = common.model("resnet_small", 128)
    common.pretrain_section(config, num_steps=1500, batch_size=128, lr=0.1)
    config.eval = common.evaluation()
  elif arg.variant == "full":
    config.data = common.synthetic_data(num_identities=2000, images_per_identity=20,
                                        image_size=(64, 64))
    config.splits = common.splits(pretrain=1000, federated=500, evaluation=-1)
    config.model = common.model("resnet_small", 256)
    common.pretrain_section(config, num_steps=6000, batch_size=128, lr=0.1)
    config.eval = common.evaluation()
  else:
    raise ValueError(f"unknown variant {arg.variant!r}; valid: tiny, demo, full")
  config.mesh = common.mesh()
  return config
