"""The curious-client attack in the reference setting on the CelebA crops, over seeds.

  python -m launch.attack_reference --seeds=0,1,2 \\
      --config=experiments/attack_celeba.py:variant=reference128,judge=both
  python -m launch.attack_reference --seeds=0,1,2 --workdir=runs/attack/celeba_reference128

The config is `experiments/attack_celeba.py:variant=reference128` (ATTACK.md 3: 128 px, sf=4, K=4,
B=16, tau=3, eta=0.003, 100 Adam iterations, untrained LeNet). judge=dlib by default (no face
backbone needed); judge=both adds the model judge (needs runs/celeba/pretrain/backbone). One
attack per seed under --workdir/seed<s> (finished seeds are reused unless --rerun); writes
results/attack-celeba-reference.json and the RESULTS.md block `attack-celeba-reference`.
Reconstructions of real faces stay under --workdir (runs/, gitignored): never commit them.
Cost: 48 victim photos at 128 px through a 3-step unroll of the 34M-parameter LeNet, 100 times.
On 2 CPU cores one seed takes ~44 min (seed 0, 2026-12-04: honest round 64 s, judges' gallery
172 s, 100 iterations at 23.7 s each), since the attack's loops run as a host loop of jitted
iterations with unrolled local steps there (`attack/optimise.py`; inside `lax.scan`, as before,
an iteration cost ~12x more). On a GPU it is minutes.
"""

from absl import flags

from launch import _attack_flags
from launch import common

common.define_flags("experiments/attack_celeba.py:variant=reference128")
_attack_flags.define_results("results/attack-celeba-reference.json")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (participants, round, attack init); the "
                  "published block has 3 (~44 min each on 2 CPU cores).")
flags.DEFINE_bool("rerun", False, "Rerun finished seeds (without it, a finished seed of "
                  "another config stops the run).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  from reporting import attack_reference  # pylint: disable=g-import-not-at-top
  workdir = FLAGS.workdir or "runs/attack/celeba_reference128"
  outs = attack_reference.run_seeds(FLAGS.config, [int(s) for s in FLAGS.seeds], workdir,
                                    rerun=FLAGS.rerun)
  summary = attack_reference.summarize(outs)
  print(attack_reference.markdown(summary))
  print("\n".join(attack_reference.facts(summary)))
  if FLAGS.update_results_md:
    path = attack_reference.write(summary, common.invocation("launch.attack_reference"),
                                  FLAGS.results_dir)
    print(f"wrote {path} and RESULTS.md block {attack_reference.BLOCK}")


if __name__ == "__main__":
  common.run(main)
