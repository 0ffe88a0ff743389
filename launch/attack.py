"""Curious-client inversion attack: one honest round of the federated engine, then inversion.

  python -m launch.attack --config experiments/attack_synthetic.py:variant=demo \
      --workdir runs/attack/synthetic_demo
  python -m launch.attack --config experiments/attack_synthetic.py:variant=fedface \
      --workdir runs/attack/synthetic_fedface
  python -m launch.attack --config experiments/attack_celeba.py:clients=2 \
      --workdir runs/attack/celeba_k2        # real faces: outputs stay under runs/ (gitignored)

Writes grid_*.png (original / reconstruction / enhanced), metrics.json (per-image metrics) and
table.md under --workdir, and prints the table.
"""

from absl import flags

from launch import common

common.define_flags("experiments/attack_synthetic.py")
common.define_results_md_flag()
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_runtime()
  # pylint: disable=g-import-not-at-top
  from reporting import attack_tables
  from reporting import results_md
  # pylint: enable=g-import-not-at-top
  out = attack_tables.run_attack(FLAGS.config, FLAGS.workdir)
  print(out["table"])
  print(f"matching loss {out['loss_first']:.4g} -> {out['loss_last']:.4g}; target recovery "
        f"rel. error {out['target_recovery_rel_err']}; {out['num_victims']} victims, gallery of "
        f"{out['gallery_identities']} identities; enhancement: {out['enhance_status']}; "
        f"{out['timing_s']:.0f} s; outputs in {out['workdir']}")
  if FLAGS.results_md_key:
    section = results_md.section(FLAGS.results_md_key, common.invocation("launch.attack"),
                                 out["table"], (f"Enhancement: {out['enhance_status']}",))
    results_md.update_results_md("RESULTS.md", FLAGS.results_md_key, section)


if __name__ == "__main__":
  common.run(main)
