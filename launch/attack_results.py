"""Curious-client attack sweeps (K, photos per client, tau, DP-FedAvg, secure aggregation, fedface
class-embedding knowledge) and the RESULTS.md `attack-<suite>` block.

  python -m launch.attack_results --suite=synthetic        # see the block for its duration
  python -m launch.attack_results --suite=synthetic --defence_cost --sweeps=
      # FedFace TAR@FAR under the same DP (one FedFace run per noise level: ~10 min each on 2
      # cores); the sweep tables are re-read from the last sweep run's JSON
  python -m launch.attack_results --suite=celeba           # needs runs/celeba/pretrain/backbone

Every point runs 3 seeds (the base point 5; --seeds, --base_seeds), and the tables show the mean
with a 95% bootstrap CI over (seed, victim) units. Identity judge: --judge (synthetic default
model, celeba default dlib). Needs the suite's pretrained backbone (synthetic: runs/demo/pretrain
from `make demo`).
Per-point outputs (grids of faces: never commit them) go under --workdir.
"""

from absl import flags

from launch import _attack_flags

_attack_flags.define_suite("attack_results", "Root of the per-point runs")
_attack_flags.define_results("results/attack-<suite>.json")
flags.DEFINE_list("sweeps", "victims,images,tau,dp,secure_aggregation,class_embedding",
                  "Sweeps to run; empty: reuse the last run's JSON for the tables.")
flags.DEFINE_list("victims", None, "Victim counts V (K = V + 1).")
flags.DEFINE_list("images", None, "Photos per client.")
flags.DEFINE_list("taus", None, "Local steps.")
flags.DEFINE_list("noise", None, "DP noise multipliers z of the attack sweep.")
flags.DEFINE_float("clip_norm", None,
                   "DP clip S of the attack sweep (0: median victim delta norm).")
flags.DEFINE_list("seeds", None, "Seeds of every sweep point but the base (default 0,1,2).")
flags.DEFINE_list("base_seeds", None, "Seeds of the base point (default 0,1,2,3,4).")
flags.DEFINE_enum("judge", None, ["model", "dlib", "both"],
                  "Identity judge (default: synthetic model, celeba dlib).")
flags.DEFINE_enum("matching", None, ["l2", "cosine", "cosine_per_layer"],
                  "Gradient-matching loss of every point (default: the attack config's, l2).")
flags.DEFINE_enum("fedface_init", None, ["uniform", "public"],
                  "fedface objective's start: uniform noise (default) or public faces.")
flags.DEFINE_integer("iterations", None, "Inversion iterations (LeNet objectives).")
flags.DEFINE_integer("fedface_iterations", None, "Inversion iterations (fedface objective).")
flags.DEFINE_string("prior_workdir", None, "enhance sweep: the public-face prior's launch.train_prior "
                    "workdir (default runs/prior/<suite>_demo).")
flags.DEFINE_integer("prior_num_steps", None, "enhance sweep: the prior's training steps, when "
                     "it was trained with steps= (default: the variant's).")
flags.DEFINE_bool("defence_cost", False, "Also run FedFace under DP-FedAvg and report TAR@FAR.")
flags.DEFINE_list("defence_noise", None, "Noise multipliers of the defence-cost FedFace runs.")
flags.DEFINE_integer("defence_rounds", None,
                     "Rounds of each defence-cost FedFace run (default: the config's).")
flags.DEFINE_string("defence_baseline", "runs/demo/fedface",
                    "Finished no-DP FedFace run to reuse as the defence baseline ('' = run one).")
flags.DEFINE_string("block", "", "RESULTS.md block and results JSON name (default attack-<suite>); "
                    "give a sweep run apart from the main one its own (and its own --workdir).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from experiments import attack_sweeps as sweep_configs
  from launch import common
  from reporting import attack_sweeps
  from reporting import attack_tables
  from reporting import defence_cost
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  overrides = {"sweeps": tuple(s for s in FLAGS.sweeps if s)}
  for name, cast in (("victims", int), ("images", int), ("taus", int), ("noise", float),
                     ("defence_noise", float), ("seeds", int), ("base_seeds", int)):
    if getattr(FLAGS, name) is not None:
      overrides[name] = tuple(cast(x) for x in getattr(FLAGS, name))
  for name in ("pretrained", "clip_norm", "iterations", "fedface_iterations", "defence_rounds",
               "judge", "matching", "prior_workdir", "prior_num_steps", "fedface_init"):
    if getattr(FLAGS, name) is not None:
      overrides[name] = getattr(FLAGS, name)
  scfg = sweep_configs.sweep_config(FLAGS.suite, **overrides)
  workdir = _attack_flags.suite_workdir("attack_results")
  command = common.invocation("launch.attack_results")
  result = attack_sweeps.run_or_reuse(scfg, workdir, command)
  cost = defence_cost.run_or_reuse(scfg, workdir, command, FLAGS.defence_cost,
                                   baseline_workdir=FLAGS.defence_baseline)
  section = attack_tables.markdown_section(FLAGS.suite, command, result, cost, block=FLAGS.block)
  print(section)
  if FLAGS.update_results_md:
    path = attack_tables.write_block(FLAGS.suite, command, section, result, FLAGS.results_dir,
                                     block=FLAGS.block)
    if path is not None:
      print(f"wrote {path}")


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
