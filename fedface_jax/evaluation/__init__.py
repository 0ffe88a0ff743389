"""Face verification evaluation: metrics, pairs, embeddings, protocols, bootstrap CIs, plots.

Why a package: the same TAR@FAR / ROC / accuracy code must serve held-out identities during
training, LFW, IJB-A and IJB-B/C, with the two reference rules (FedFace/facepy and insightface)
selectable, so that every number in the project is computed one way. Plotting (matplotlib) is
imported only when a figure is written.
"""

from fedface_jax.evaluation.api import evaluate_embeddings
from fedface_jax.evaluation.api import evaluate_lfw  # images -> report; see protocols for features
from fedface_jax.evaluation.api import evaluate_verification
from fedface_jax.evaluation.api import format_results_table
from fedface_jax.evaluation.bootstrap import bootstrap_models
from fedface_jax.evaluation.bootstrap import bootstrap_verification
from fedface_jax.evaluation.bootstrap import paired_bootstrap
from fedface_jax.evaluation.embeddings import compute_embeddings
from fedface_jax.evaluation.pairs import all_pairs_scores
from fedface_jax.evaluation.pairs import make_verification_pairs
from fedface_jax.evaluation.pairs import pair_scores
from fedface_jax.evaluation.params import eval_split
from fedface_jax.evaluation.params import evaluate_params
from fedface_jax.evaluation.params import make_embed_fn
from fedface_jax.evaluation.protocols import evaluate_ijb
from fedface_jax.evaluation.protocols import evaluate_ijba
from fedface_jax.evaluation.protocols import evaluate_ijbc_vanilla
from fedface_jax.evaluation.protocols import read_ijb_protocol
from fedface_jax.evaluation.protocols import read_ijba_split
from fedface_jax.evaluation.protocols import read_lfw_pairs
from fedface_jax.evaluation.protocols import template_features
from fedface_jax.evaluation.verification import equal_error_rate
from fedface_jax.evaluation.verification import kfold_accuracy
from fedface_jax.evaluation.verification import roc_auc
from fedface_jax.evaluation.verification import roc_curve_points
from fedface_jax.evaluation.verification import tar_at_far
from fedface_jax.evaluation.verification import verification_report
