"""The FedFace study on the real faces of ../shared/data/celeba_faces_112, from a theta_0 of ours.

The synthetic study's machinery (`launch.fedface_study`: theta_0, oracles, variants chosen on
validation identities, 3 seeds, bootstrap CIs) on 239 real identities: 100 pretrain (theta_0's
public identities), 60 one-identity clients, 20 validation and the remaining 59 for evaluation.
theta_0 is a small CosFace model trained on 100 identities: a weak start on real faces (see the
issue on a real pretrained encoder), so this block measures the method's mechanics on real images,
not the paper's setting. Sized for 2 CPU cores at 64x64.

  python -m launch.fedface_study --config experiments/fedface_study_celeba.py \\
      --workroot runs/study_celeba --block fedface-study-celeba
  # args as experiments/fedface_study_synthetic.py: method, class_embedding, public_negatives,
  #   reduction, server_momentum, server_lr, seed, train_split, pretrained, root
"""

import os

import ml_collections as mlc

from experiments import common
from experiments import pretrain_celeba
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="study", pretrained="runs/study_celeba/pretrain", **common.STUDY_ARGS,
      root=os.path.normpath(pretrain_celeba.DEFAULT_ROOT))
  if arg.variant != "study":
    raise ValueError(f"unknown variant {arg.variant!r}; valid: study")
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.image_folder_data(arg.root, image_size=(64, 64))
  config.splits = common.splits(pretrain=100, federated=60, evaluation=-1)
  config.splits.validation = 20
  config.model = common.model("resnet_small", 128)
  common.pretrain_section(config, num_steps=600, batch_size=64, lr=0.1, warmup_steps=50)
  config.train_split = arg.train_split
  config.init_head = "random"
  config.eval = common.evaluation(every_rounds=4)
  config.eval.split = "validation"   # in-run curves; the study's final tables use evaluation
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=12, clients_per_round=20, embedding_dim=128,
      local_steps=2, batch_size=16, client_lr=0.03, clients_per_chunk=5, seed=int(arg.seed))
  common.apply_study_args(config.federated, arg)
  config.fault_injection = dict(nan_client_ids=())
  return config
