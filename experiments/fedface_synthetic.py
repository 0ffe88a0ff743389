"""FedFace (and baselines) on the synthetic faces, starting from pretrain_synthetic.

  python -m launch.pretrain --config experiments/pretrain_synthetic.py \
      --workdir runs/synthetic/pretrain
  python -m launch.fedface --config experiments/fedface_synthetic.py:method=fedface \
      --workdir runs/synthetic/fedface
  # methods: fedface | fedface_nosp | fedavg | fedaws   (the centralised oracle: launch.results,
  #   which fine-tunes theta_0 on the pooled federated identities: results.oracle_config)
  # plug-in algorithms (federated/algorithms/): FedProx (proximal weight mu) and SCAFFOLD
  python -m launch.fedface --config experiments/fedface_synthetic.py:method=fedprox,mu=0.01 \
      --workdir runs/synthetic/fedprox
  python -m launch.fedface --config experiments/fedface_synthetic.py:method=scaffold \
      --workdir runs/synthetic/scaffold
  # 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 ... --config.mesh.classes=2
"""

from experiments import common
from experiments import pretrain_synthetic
from fedface_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_config_arg(arg, variant="demo", method="fedface",
                                      pretrained="runs/synthetic/pretrain", mu=0.01)
  config = pretrain_synthetic.get_config(f"variant={arg.variant}")
  config.pretrained_backbone = f"{arg.pretrained}/backbone"
  if arg.variant == "tiny":
    config.federated = common.federated_section(
        method=arg.method, num_rounds=2, clients_per_round=4, embedding_dim=32,
        local_steps=2, batch_size=4, clients_per_chunk=2)
    config.eval.every_rounds = 1
  else:
    config.federated = common.federated_section(
        method=arg.method, num_rounds=30 if arg.variant == "demo" else 100,
        clients_per_round=30 if arg.variant == "demo" else 100,
        embedding_dim=config.model.embedding_dim, local_steps=5, batch_size=16, client_lr=0.03,
        clients_per_chunk=5)
    config.eval.every_rounds = 10
  if arg.method == "fedprox":
    config.federated.fedprox = dict(mu=float(arg.mu))
  elif arg.method == "scaffold":
    # Option II of SCAFFOLD needs plain SGD clients (federated/algorithms/scaffold.py).
    config.federated.client.optimizer.update(name="sgd", momentum=0.0)
  config.fault_injection = dict(nan_client_ids=())
  return config
