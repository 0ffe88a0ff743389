"""FedFace (and baselines) on the shared real faces, from pretrain_celeba.

60 federated identities = 60 one-identity clients; evaluation on the held-out rest.

  python -m launch.pretrain --config experiments/pretrain_celeba.py \
      --workdir runs/celeba/pretrain
  python -m launch.fedface --config experiments/fedface_celeba.py:method=fedface \
      --workdir runs/celeba/fedface
"""

from experiments import common
from experiments import pretrain_celeba
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, method="fedface",
                                      pretrained="runs/celeba/pretrain")
  config = pretrain_celeba.get_config()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=12, clients_per_round=20, embedding_dim=128,
      local_steps=2, batch_size=16, client_lr=0.03, clients_per_chunk=5)
  # Sized for a 2-core CPU (~1 min a round at 64x64): 12 rounds x 20 clients covers
  # each of the 60 clients ~4 times. On a GPU raise num_rounds / local_steps freely.
  config.eval.every_rounds = 4
  config.fault_injection = dict(nan_client_ids=())
  return config
