"""Curious-client inversion attack on the synthetic faces (ATTACK.md), honest round by FedFace.

  python -m launch.pretrain --config experiments/pretrain_synthetic.py \
      --workdir runs/synthetic/pretrain
  python -m launch.attack --config experiments/attack_synthetic.py:variant=demo \
      --workdir runs/attack/synthetic_demo
  # objectives: objective=paper_faithful | inverting_gradients | fedface
  # with the demo's backbone (make demo): ...attack_synthetic.py:pretrained=runs/demo/pretrain
  # the K / n_k / tau / DP / secure-aggregation sweeps (backbone: runs/demo/pretrain):
  python -m launch.attack_results --suite=synthetic
  # optional public-face prior for the enhancement (pretrain identities only):
  python -m launch.train_prior --config experiments/prior_synthetic.py:variant=demo \
      --workdir runs/prior/synthetic_demo

Variants: tiny (tests, seconds; 16 px LeNet), demo (the `launch.demo` attack, well under 2 min on
2 CPU cores: K=4 clients of 2 photos, 32 px LeNet, 200 Adam iterations), fedface (the demo backbone
attacked through real FedFace rounds, all three class-embedding modes).
"""

from experiments import common
from experiments import pretrain_synthetic
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="demo", objective="", pretrained="", clients=0, images=0, tau=0,
      iterations=0, knows_k=True, enhance=True, noise=-1.0, clip=0.0, seed=0, judge="model")
  base_variant = "tiny" if arg.variant == "tiny" else "demo"
  config = pretrain_synthetic.get_config(f"variant={base_variant}")
  pretrained = arg.pretrained or ("runs/tiny/pretrain" if base_variant == "tiny"
                                  else "runs/synthetic/pretrain")
  config.pretrained_backbone = f"{pretrained}/backbone"
  config.federated = common.federated_section(
      method="fedface", num_rounds=1, clients_per_round=4, embedding_dim=config.model.embedding_dim,
      local_steps=1, batch_size=2, client_lr=0.01, clients_per_chunk=4)
  if arg.variant == "tiny":
    config.attack = common.attack_section(
        num_clients=3, images_per_client=1, holdout_images=2, image_size=16, sf=2,
        iterations=30, progress=False)
    config.enhance = common.enhance_section(enabled=False)
  elif arg.variant == "demo":
    config.attack = common.attack_section(
        num_clients=4, images_per_client=2, holdout_images=4, image_size=32, sf=2, iterations=200)
    config.enhance = common.enhance_section(
        enabled=arg.enhance, prior_variant="demo", prior_workdir="runs/prior/synthetic_demo",
        train_if_missing=False)
  elif arg.variant == "fedface":
    config.attack = common.attack_section(
        objective="fedface", num_clients=4, images_per_client=2, holdout_images=4, sf=2,
        iterations=200)
    config.enhance = common.enhance_section(enabled=False)
  else:
    raise ValueError(f"unknown variant {arg.variant!r}; valid: tiny, demo, fedface")
  a = config.attack
  if arg.objective:
    a.objective = arg.objective
  a.num_clients = arg.clients or a.num_clients
  a.images_per_client = arg.images or a.images_per_client
  a.tau = arg.tau or a.tau
  a.iterations = arg.iterations or a.iterations
  a.knows_num_clients = arg.knows_k
  a.participants_seed = arg.seed
  a.judge = arg.judge   # model | dlib | both (dlib: the independent judge, unaligned chips)
  # DP-FedAvg of the engine (federated.dp), see fedface_jax/federated/privacy.py.
  if arg.noise >= 0:
    config.federated.dp.update(dict(enabled=True, clip_norm=arg.clip, noise_multiplier=arg.noise))
  return config
