"""FedFace sized for one GPU: sphere20 on 112x96 faces, 1,000 clients per round, bf16 compute.

The paper's client count per round on one accelerator, with the embedded synthetic faces so it runs
with no dataset download (point `root=` at an aligned 112x96 image folder for real faces). Compute
is bfloat16 (`model.dtype`; params, optimiser state, embeddings and losses stay float32) and each
sphere stage is rematerialised (`model.remat`), so a chunk of clients fits in memory.
`clients_per_chunk` (clients trained at once by one vmapped program) trades memory for speed: sweep
it with `launch.benchmark` on the target GPU and set the fastest that fits. No GPU has run this
config yet (see BENCHMARKS.md, GPU section); the default chunk of 50 is an estimate from the 2-core
CPU runs scaled by memory, not a measurement.

  make venv ACCEL=cuda12
  python -m launch.pretrain --config experiments/fedface_gpu.py --workdir runs/gpu/pretrain
  python -m launch.fedface --config experiments/fedface_gpu.py:method=fedface \
      --workdir runs/gpu/fedface
  # args: method=fedface|fedface_nosp|fedavg|fedaws, clients_per_chunk=50, dtype=bfloat16|float32,
  #   remat=1|0, root=<image folder> (default: synthetic faces), pretrained=<dir>
"""

import ml_collections as mlc

from experiments import common
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, method="fedface", clients_per_chunk=50, dtype="bfloat16", remat=1, root="",
      pretrained="runs/gpu/pretrain")
  config = mlc.ConfigDict()
  config.seed = 0
  if arg.root:
    config.data = common.image_folder_data(arg.root, image_size=(112, 96))
  else:
    config.data = common.synthetic_data(num_identities=3000, images_per_identity=20,
                                        image_size=(112, 96))
  config.splits = common.splits(pretrain=1000, federated=1500, evaluation=-1)
  config.splits.validation = 100
  config.model = common.model("sphere20", 512, dtype=arg.dtype, remat=bool(int(arg.remat)))
  common.pretrain_section(config, num_steps=20_000, batch_size=256, lr=0.1)
  config.eval = common.evaluation(flip=True, num_impostor_pairs=1_000_000, every_rounds=10)
  config.eval.split = "validation"
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=100, clients_per_round=1000, embedding_dim=512,
      local_steps=5, batch_size=16, client_lr=0.03,
      clients_per_chunk=int(arg.clients_per_chunk))
  config.fault_injection = dict(nan_client_ids=())
  return config
