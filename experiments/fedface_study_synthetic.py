"""FedFace with headroom on the synthetic faces: few public identities, many phones.

The setting in which a federated method can show a gain (docs/FEDFACE.md, "What the project
measured"): theta_0 is CosFace on only 100 public identities, and 1,000 one-identity clients
hold the identities theta_0 never saw. 100 validation identities choose every variant and
hyper-parameter; the 400 evaluation identities are used for the final tables only.

  python -m launch.pretrain --config experiments/fedface_study_synthetic.py \\
      --workdir runs/study/pretrain
  python -m launch.fedface --config experiments/fedface_study_synthetic.py:method=fedface \\
      --workdir runs/study/fedface
  # the whole study (theta_0, oracles, every method x 3 seeds, bootstrap CIs, RESULTS.md):
  python -m launch.fedface_study --config experiments/fedface_study_synthetic.py \\
      --workroot runs/study
  # args: variant=study|tiny (tests), method=fedface|fedface_nosp|fedavg|fedaws,
  #   class_embedding=frozen|reestimate|client_trained, public_negatives=0|1,
  #   reduction=row_sum|pair_mean, seed=0, server_momentum=0 (FedAvg) | 0.9 (FedAvgM),
  #   server_lr=1.0, client_lr=0 (config's), num_rounds=0, clients_per_round=0 (config's),
  #   margin=0.9 (client positive-only hinge), spread_margin=0.3,
  #   train_split=pretrain|pretrain+federated (the central oracle), pretrained=<dir>
"""

from experiments import common
from fedface_jax import config_utils
import ml_collections as mlc


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="study", pretrained="runs/study/pretrain", **common.STUDY_ARGS,
      margin=0.9, spread_margin=0.3)
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.synthetic_data(num_identities=1600, images_per_identity=20,
                                      image_size=(32, 32))
  config.splits = common.splits(pretrain=100, federated=1000, evaluation=-1)
  config.splits.validation = 100
  config.model = common.model("resnet_small", 128)
  common.pretrain_section(config, num_steps=1500, batch_size=128, lr=0.1)
  config.train_split = arg.train_split
  config.init_head = "random"
  config.eval = common.evaluation(every_rounds=10)
  config.eval.split = "validation"   # in-run curves; the study's final tables use evaluation
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=40, clients_per_round=50, embedding_dim=128,
      local_steps=5, batch_size=16, client_lr=0.03, clients_per_chunk=5, seed=int(arg.seed))
  config.fault_injection = dict(nan_client_ids=())
  if arg.variant == "tiny":   # tests: the same study in seconds
    config.data = common.synthetic_data(num_identities=30, images_per_identity=4,
                                        image_size=(32, 32))
    config.splits = common.splits(pretrain=8, federated=10, evaluation=-1)
    config.splits.validation = 6
    # The model of pretrain_synthetic's tiny variant, so the demo's tiny attack can use it.
    config.model.embedding_dim = 32
    config.model.kwargs = dict(widths=(8, 16, 16, 32))
    config.num_steps, config.batch_size, config.optimizer.warmup_steps = 2, 16, 0
    config.checkpoint_every_steps = 2
    config.eval = common.evaluation(flip=False, num_impostor_pairs=500, every_rounds=1)
    config.eval.split = "validation"
    f = config.federated
    f.num_rounds, f.clients_per_round, f.embedding_dim, f.clients_per_chunk = 2, 4, 32, 2
    f.client.local_steps, f.client.batch_size = 1, 4
    f.spreadout.steps = 2
  elif arg.variant != "study":
    raise ValueError(f"unknown variant {arg.variant!r}; valid: study, tiny")
  # The run's choices last, so that they hold in the tiny variant too.
  config.federated.client.margin = float(arg.margin)   # positive-only hinge (FedFace, FedAwS)
  config.federated.spreadout.margin = float(arg.spread_margin)
  common.apply_study_args(config.federated, arg)
  return config
