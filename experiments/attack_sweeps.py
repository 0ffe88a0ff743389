"""The curious-client attack sweeps as configs: the axes, and the attack config of each point.

  python -m launch.attack_results --suite=synthetic        # runs them (reporting/attack_sweeps.py)

Sweep axes are "one at a time" around a base point (e.g. 4 victims x 2 photos, tau = 1, no
defence). The victim axis counts the *victims* V, i.e. the K - 1 clients other than the attacker
(K = V + 1 clients take part): K = 1 would leave nothing to attack. A `Point` is one attack; its
config is `point_config(sweep, point)`, an `experiments/attack_<suite>.py` config with the point's
protocol knobs set.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections as mlc

from experiments import attack_celeba
from experiments import attack_synthetic
from experiments import fedface_celeba
from experiments import fedface_study_synthetic

SUITES = ("synthetic", "celeba")
SWEEPS = ("victims", "images", "tau", "dp", "secure_aggregation", "class_embedding", "enhance")
# The FedFace variant chosen on validation by the synthetic study
# (fedface-study-synthetic-selection).
STUDY_FEDFACE = ("method=fedface,class_embedding=frozen,reduction=row_sum,server_momentum=0.9,"
                 "server_lr=2.0,client_lr=0.1")
DEFAULT_PRETRAINED = {"synthetic": "runs/demo/pretrain", "celeba": "runs/celeba/pretrain"}
# The public-face DDPM prior of the `enhance` sweep (`launch.train_prior`, demo variant).
DEFAULT_PRIOR = {"synthetic": "runs/prior/synthetic_demo", "celeba": "runs/prior/celeba_demo"}


def sweep_config(suite: str = "synthetic", **overrides) -> mlc.ConfigDict:
  """The sweep's axes and sizes; `overrides` replace fields (tests pass tiny axes).

  Sizes are for a 2-core CPU: the synthetic suite runs 32 px LeNet attacks with `iterations` Adam
  steps (the demo attack's 200), and the fedface objective with `fedface_iterations`.
  """
  if suite not in SUITES:
    raise ValueError(f"unknown suite {suite!r}; valid: {SUITES}")
  c = mlc.ConfigDict(dict(
      suite=suite,
      variant="demo",   # synthetic attack-config variant: demo | tiny (tests)
      pretrained=DEFAULT_PRETRAINED[suite],   # a launch.pretrain workdir (its backbone/)
      sweeps=SWEEPS,
      victims=(1, 2, 4, 8, 16),   # V = K - 1 victims; K = V + 1 clients take part
      images=(1, 2, 4),           # photos per client n_k
      taus=(1, 3, 5),             # local full-batch GD steps
      noise=(0.0, 0.01, 0.1, 1.0),   # DP-FedAvg noise multipliers z
      clip_norm=0.0,              # DP clip S; 0 = median victim ||delta_k|| at the base point
      base_victims=4, base_images=2, base_tau=1,
      objective="paper_faithful",  # of the K / n / tau / DP / SA sweeps
      iterations=200,
      fedface_iterations=100,
      class_embedding_modes=("known", "mean_feature", "joint"),
      fedface_init="uniform",     # fedface objective's start: uniform | public (public faces)
      matching="",                # gradient-matching loss of every point; "" = the attack
                                  # config's (l2, the reference's); cosine | cosine_per_layer
      # Seeds of each point: one seed sets the honest round's participants (which federated
      # identities are the attacker and the victims), the engine's round seed and the attack's
      # initialisation. The base point (shared by several sweeps, the reference of every
      # comparison) runs base_seeds, every other point seeds; CIs bootstrap (seed, victim) units.
      seeds=(0, 1, 2),
      base_seeds=(0, 1, 2, 3, 4),
      judge="",                   # "" = the suite's attack config (synthetic: model, celeba: dlib)
      # The enhance sweep: the base point's attacks, enhanced with a public-face prior trained
      # beforehand (`launch.train_prior`; a missing prior is an error, not a skip).
      prior_workdir=DEFAULT_PRIOR[suite],
      prior_variant="demo",       # diffusion.train_prior.default_prior_config variant
      prior_num_steps=0,          # > 0: the prior's training steps (else the variant's)
      enhance_method="ddrm",      # ddrm | sdedit
      # Defence cost (FedFace TAR@FAR under the same DP): off unless asked for, minutes per run.
      defence_noise=(0.01, 0.1, 1.0),
      defence_clip_norm=0.0,       # 0 = mean client ||delta|| of one probe round from theta_0
      defence_rounds=0,            # 0 = the fedface config's own num_rounds
  ))
  c.update(overrides)
  return c


def base_attack_config(scfg: mlc.ConfigDict, objective: str) -> mlc.ConfigDict:
  """The experiment config every point starts from (enhancement off: raw reconstructions)."""
  if scfg.suite == "synthetic":
    variant = scfg.variant if scfg.variant == "tiny" else (
        "fedface" if objective == "fedface" else "demo")
    config = attack_synthetic.get_config(
        f"variant={variant},enhance=false,pretrained={scfg.pretrained}")
  else:
    config = attack_celeba.get_config(f"objective={objective},pretrained={scfg.pretrained}")
  config.attack.objective = objective
  config.attack.progress = False
  config.enhance.enabled = False
  return config


@dataclasses.dataclass(frozen=True)
class Point:
  """One attack: the protocol knobs that the sweeps vary."""
  victims: int
  images: int
  tau: int
  objective: str = "paper_faithful"
  noise: float | None = None      # DP-FedAvg z; None = DP off
  clip: float | None = None
  secure_aggregation: bool = False
  enhance: bool = False           # also enhance the reconstructions with the public prior

  @property
  def name(self) -> str:
    s = f"{self.objective}_v{self.victims}_n{self.images}_tau{self.tau}"
    if self.noise is not None:
      s += f"_dp_z{self.noise:g}_S{self.clip:.3g}"
    return s + ("_sa" if self.secure_aggregation else "") + ("_enhanced" if self.enhance else "")


def base_point(scfg: mlc.ConfigDict) -> Point:
  return Point(int(scfg.base_victims), int(scfg.base_images), int(scfg.base_tau),
               str(scfg.objective))


def point_seeds(scfg: mlc.ConfigDict, p: Point) -> tuple[int, ...]:
  """The seeds point `p` runs: `base_seeds` at the base point (enhanced or not), `seeds` elsewhere."""
  seeds = (scfg.base_seeds if dataclasses.replace(p, enhance=False) == base_point(scfg)
           else scfg.seeds)
  seeds = tuple(int(s) for s in seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
  return seeds


def point_config(scfg: mlc.ConfigDict, p: Point, seed: int = 0) -> mlc.ConfigDict:
  """The attack config of point `p` under `seed` (participants, round and attack init)."""
  config = base_attack_config(scfg, p.objective)
  a = config.attack
  a.num_clients = p.victims + 1
  a.images_per_client = p.images
  a.tau = p.tau
  a.participants_seed = int(seed)
  a.attack_seed = int(seed)
  config.federated.seed = int(seed)
  if scfg.judge:
    a.judge = str(scfg.judge)
  if scfg.matching:
    a.matching = str(scfg.matching)
  if p.objective == "fedface":
    a.iterations = int(scfg.fedface_iterations)
    a.class_embedding_modes = tuple(scfg.class_embedding_modes)
    a.fedface_init = str(scfg.fedface_init)
  else:
    a.iterations = int(scfg.iterations)
  if p.enhance:
    e = config.enhance
    e.enabled, e.method, e.train_if_missing = True, str(scfg.enhance_method), False
    e.prior_workdir, e.prior_variant = str(scfg.prior_workdir), str(scfg.prior_variant)
    e.prior_num_steps = int(scfg.prior_num_steps)
  f = config.federated
  f.clients_per_round = p.victims + 1
  f.secure_aggregation = bool(p.secure_aggregation)
  if p.noise is not None:
    f.dp = mlc.ConfigDict(dict(enabled=True, clip_norm=float(p.clip),
                               noise_multiplier=float(p.noise), delta=0.0, accounting="rdp"))
  return config


def fedface_config(scfg: mlc.ConfigDict) -> mlc.ConfigDict:
  """The FedFace run whose TAR@FAR under DP is the defence's cost (one evaluation at the end)."""
  if scfg.suite == "synthetic":
    # The study's FedFace (the variant its validation identities chose, RESULTS.md) on the
    # study's faces, from the same theta_0 the attack uses (the demo's), scored on the
    # evaluation identities: the utility side of the privacy-utility figure.
    config = fedface_study_synthetic.get_config(
        f"{STUDY_FEDFACE},pretrained={scfg.pretrained}")
    config.eval.split = "evaluation"
  else:
    config = fedface_celeba.get_config("method=fedface")
    config.pretrained_backbone = os.path.join(scfg.pretrained, "backbone")
  if scfg.defence_rounds:
    config.federated.num_rounds = int(scfg.defence_rounds)
  # One evaluation at the end of each run (theta_0's once, in the no-noise run).
  config.eval.every_rounds = int(config.federated.num_rounds)
  return config
