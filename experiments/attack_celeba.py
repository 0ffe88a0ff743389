"""Curious-client attack on the shared real faces (../shared/data/celeba_faces_112), CPU-sized.

Victims are federated identities of the pretrain_celeba split; recognisability is measured with the
backbone of pretrain_celeba against all 60 enrolled identities. Outputs (grids of real faces) stay
under runs/, which is gitignored: never commit them.

  python -m launch.pretrain --config experiments/pretrain_celeba.py \
      --workdir runs/celeba/pretrain
  python -m launch.attack --config experiments/attack_celeba.py:clients=2 \
      --workdir runs/attack/celeba_k2
  # objective=fedface attacks real FedFace rounds of the face backbone instead of a LeNet.
  # judge=dlib (default: dlib's ResNet, independent of the attack) | model | both.
  python -m launch.attack_results --suite=celeba      # the sweeps, on these faces
"""

from experiments import common
from experiments import pretrain_celeba
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, objective="paper_faithful", pretrained="runs/celeba/pretrain", clients=4, images=2,
      tau=1, iterations=200, knows_k=True, enhance=False, noise=-1.0, clip=0.0, seed=0,
      root=pretrain_celeba.DEFAULT_ROOT, judge="dlib")
  config = pretrain_celeba.get_config(f"root={arg.root}")
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method="fedface", num_rounds=1, clients_per_round=arg.clients,
      embedding_dim=config.model.embedding_dim, local_steps=arg.tau, batch_size=arg.images,
      client_lr=0.01, clients_per_chunk=4)
  config.attack = common.attack_section(
      objective=arg.objective, num_clients=arg.clients, images_per_client=arg.images,
      holdout_images=4, tau=arg.tau, image_size=32, sf=2, iterations=arg.iterations,
      knows_num_clients=arg.knows_k, participants_seed=arg.seed, judge=arg.judge)
  config.enhance = common.enhance_section(
      enabled=arg.enhance, prior_variant="demo", prior_workdir="runs/prior/celeba_demo",
      train_if_missing=False)
  if arg.noise >= 0:   # DP-FedAvg of the engine (federated.dp), see fedface_jax/federated/privacy.py
    config.federated.dp.update(dict(enabled=True, clip_norm=arg.clip, noise_multiplier=arg.noise))
  return config
