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
  # the reference setting of ATTACK.md 3 (128 px, sf=4, K=4, B=16, tau=3, eta=0.003, 100 it.):
  python -m launch.attack_reference --seeds=0,1,2   # RESULTS.md `attack-celeba-reference`

Variants: "" (default, CPU-sized: 32 px LeNet, sf=2) and reference128 (the reference's
hyper-parameters, ATTACK.md 3: the crops loaded at 128x128 instead of 64, a 32x32 latent
upsampled x4, K=4 clients of B=16 photos, tau=3 full-batch steps at eta=0.003, Adam 0.1 -> 0.01
cosine over 100 iterations, untrained LeNet, paper_faithful). The variant's values win over the
clients/images/tau/iterations arguments, so the setting cannot drift by accident.
"""

from experiments import common
from experiments import pretrain_celeba
from fedface_jax import config_utils

VARIANTS = ("", "reference128")
# ATTACK.md 3 ([C:utils/config.yaml]): the reference's attack hyper-parameters, victims at 128 px.
REFERENCE = dict(objective="paper_faithful", num_clients=4, images_per_client=16, tau=3,
                 eta=0.003, image_size=128, sf=4, iterations=100, lr=0.1, lr_min=0.01,
                 matching="l2", tv_weight=0.0, client_momentum=0.0)


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="", objective="paper_faithful", pretrained="runs/celeba/pretrain", clients=4,
      images=2, tau=1, iterations=200, knows_k=True, enhance=False, noise=-1.0, clip=0.0, seed=0,
      root=pretrain_celeba.DEFAULT_ROOT, judge="dlib")
  if arg.variant not in VARIANTS:
    raise ValueError(f"unknown variant {arg.variant!r}; valid: {VARIANTS}")
  ref = arg.variant == "reference128"
  if ref:   # ATTACK.md 3; judge, seed and knows_k stay arguments
    arg.update(dict(clients=4, images=16, tau=3, iterations=100))
  size = REFERENCE["image_size"] if ref else 64
  config = pretrain_celeba.get_config(f"root={arg.root},size={size}")
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method="fedface", num_rounds=1, clients_per_round=arg.clients,
      embedding_dim=config.model.embedding_dim, local_steps=arg.tau, batch_size=arg.images,
      client_lr=0.01, clients_per_chunk=4)
  config.attack = common.attack_section(
      objective=arg.objective, num_clients=arg.clients, images_per_client=arg.images,
      holdout_images=4, tau=arg.tau, image_size=32, sf=2, iterations=arg.iterations,
      knows_num_clients=arg.knows_k, participants_seed=arg.seed, judge=arg.judge)
  if ref:
    config.attack.update(REFERENCE)
    config.attack.max_grid_columns = 16
    # The photos are loaded at 128 px; the model judge is the backbone pretrained at 64.
    config.attack.model_judge_size = pretrain_celeba.DEFAULT_SIZE
    # A seed sets the participants, the round and the attack's init, as in the sweeps.
    config.attack.attack_seed = arg.seed
    config.federated.seed = arg.seed
  config.enhance = common.enhance_section(
      enabled=arg.enhance, prior_variant="demo", prior_workdir="runs/prior/celeba_demo",
      train_if_missing=False)
  # DP-FedAvg of the engine (federated.dp), see fedface_jax/federated/privacy.py.
  if arg.noise >= 0:
    config.federated.dp.update(dict(enabled=True, clip_norm=arg.clip, noise_multiplier=arg.noise))
  return config
