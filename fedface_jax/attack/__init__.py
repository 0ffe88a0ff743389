"""Curious-client gradient inversion (Wilson et al., arXiv 2410.04661; spec in docs ATTACK.md).

One honest-but-curious FedAvg client sees w_t and w_{t+1}; from their difference (``updates``) it
reconstructs the other clients' images by matching an unrolled simulation of local training
(``unroll``, ``objectives``, ``inversion``), then scores them (``metrics``, ``matching``) and draws
them (``grids``). ``lenet`` is the reference victim model. Everything takes plain
``apply_fn(params, x)`` callables, so any linen model plugs in.
"""

from fedface_jax.attack.inversion import fedface_attack_config
from fedface_jax.attack.inversion import invert_fedface
from fedface_jax.attack.inversion import invert_inverting_gradients
from fedface_jax.attack.inversion import invert_paper_faithful
from fedface_jax.attack.inversion import InversionResult
from fedface_jax.attack.inversion import inverting_gradients_config
from fedface_jax.attack.inversion import paper_faithful_config
from fedface_jax.attack.lenet import init_lenet
from fedface_jax.attack.lenet import LeNet5
from fedface_jax.attack.unroll import per_client_unrolled_pseudograd
from fedface_jax.attack.unroll import unrolled_pseudograd
from fedface_jax.attack.updates import client_pseudo_gradient
from fedface_jax.attack.updates import diluted_update
from fedface_jax.attack.updates import remove_own_update
