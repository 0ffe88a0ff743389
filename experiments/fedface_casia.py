"""Paper-scale FedFace on CASIA-WebFace as an image folder (a GPU/TPU job; it cannot run on a CPU).

The setting of FedFace (FEDFACE.md sections 2-4): sphere64 (64-layer SphereFace-style residual net,
no batch norm) on 112x96 faces, theta_0 pretrained with CosFace on 9,000 CASIA identities, then
1,000 one-identity clients with the positive-only loss (m = 0.9) and server spreadout (cosine 0.3,
10 steps, lr 0.01, momentum 0.9). Values marked UNCONFIRMED in FEDFACE.md (clients per round,
rounds, local steps) take the reference code's values where it has them and are config arguments.

  # CASIA-WebFace aligned to 112x96 as <root>/<identity>/<image>.jpg (10,575 identities):
  python -m launch.pretrain --config experiments/fedface_casia.py:root=/data/casia \
      --workdir runs/casia/pretrain
  python -m launch.fedface --config experiments/fedface_casia.py:root=/data/casia,method=fedface \
      --workdir runs/casia/fedface
  # 8 accelerators on one host: clients over 4, class table over 2 (its own workdir: a
  # checkpoint resumes only on the mesh that wrote it):
  python -m launch.fedface --config experiments/fedface_casia.py:root=/data/casia \
      --config.mesh.data=4 --config.mesh.classes=2 --workdir runs/casia/fedface_8dev
  # several hosts: the same command on each, plus
  #   --coordinator_address=HOST0:1234 --num_processes=N --process_id=i
"""

import ml_collections as mlc

from experiments import common
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, root="/data/casia_webface_112x96", method="fedface", pretrained="runs/casia/pretrain",
      clients_per_round=100, rounds=200, local_steps=1)
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.image_folder_data(arg.root, image_size=(112, 96))
  # 9,000 pretrain identities, 1,000 one-identity clients, the remaining ~575 held out.
  config.splits = common.splits(pretrain=9000, federated=1000, evaluation=-1,
                                min_images_per_identity=2)
  config.model = common.model("sphere64", 512)
  # Reference pretraining: SGD momentum 0.9, lr 0.01 constant, batch 128, CosFace s=64 m=0.35.
  common.pretrain_section(config, num_steps=30 * 3232, batch_size=128, lr=0.01,
                          warmup_steps=0)
  config.optimizer.schedule = "constant"
  config.optimizer.weight_decay = 0.0
  config.loss.scale, config.loss.margin = 64.0, 0.35
  config.eval = common.evaluation(flip=True, num_impostor_pairs=2_000_000)
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=int(arg.rounds), clients_per_round=int(arg.clients_per_round),
      embedding_dim=512, local_steps=int(arg.local_steps), batch_size=256, client_lr=0.01,
      server_lr=1.0, spread_weight=1.0, spread_steps=10, spread_lr=0.01,
      max_images_per_client=512, clients_per_chunk=4)
  config.eval.every_rounds = 20
  config.fault_injection = dict(nan_client_ids=())
  return config
