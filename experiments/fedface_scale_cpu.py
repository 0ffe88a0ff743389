"""FedFace at population scale on a 2-core CPU: 1,000 clients per round, a 100,000-row class table.

Why: the engine is meant to scale with clients and identities (clients chunked
and vmapped, never one parameter copy per client; the class table sharded and
compared block by block, never a C x C matrix or a full-table gather). This
config checks that on a laptop-class machine with the compute kept small:
32x32 synthetic faces, a narrow resnet_small, 4 photos per client, one local
step, 2 rounds, 3 spreadout steps per round. The dataset holds 1,000 federated
identities; `federated.num_class_rows` sizes the server table for a 100,000
client population (rows past the clients are zero, never sampled and masked
out of spreadout, but every spreadout step still scores the round's 1,000 rows
against all 100,000 rows in [1000, 4096] blocks). theta_0 comes from a 20-step
pretraining: accuracy is not the point here, memory and round time are.

  python -m launch.pretrain --config experiments/fedface_scale_cpu.py \
      --workdir runs/scale_cpu/pretrain
  /usr/bin/time -v python -m launch.fedface --config experiments/fedface_scale_cpu.py \
      --workdir runs/scale_cpu/fedface
"""

from experiments import common
from fedface_jax import config_utils
import ml_collections as mlc


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, pretrained="runs/scale_cpu/pretrain",
                                      table_rows=100_000, clients_per_round=1000, rounds=2)
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.synthetic_data(num_identities=1150, images_per_identity=4,
                                      image_size=(32, 32))
  config.splits = common.splits(pretrain=100, federated=1000, evaluation=-1)
  config.model = common.model("resnet_small", 128, kwargs=dict(widths=(8, 16, 32, 64)))
  common.pretrain_section(config, num_steps=20, batch_size=64, lr=0.1, warmup_steps=0)
  config.eval = common.evaluation(flip=False, num_impostor_pairs=20_000)
  config.eval.at_round_0 = False   # a scale run: memory and round time, not TAR
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method="fedface", num_rounds=arg.rounds, clients_per_round=arg.clients_per_round,
      embedding_dim=config.model.embedding_dim, local_steps=1, batch_size=4,
      max_images_per_client=4, clients_per_chunk=50, spread_steps=3)
  config.federated.num_class_rows = arg.table_rows
  config.federated.checkpoint_every_rounds = 1
  config.fault_injection = dict(nan_client_ids=())
  return config
