"""Method x TAR@FAR tables of RESULTS.md: pretrained, FedAvg, FedAwS, FedFace (+/- spreadout),
centralised oracle, all from one theta_0 and evaluated on the same held-out identities.

  python -m launch.results --dataset=synthetic --workdir=runs/synthetic
  python -m launch.results --dataset=celeba --workdir=runs/celeba
Resumable: re-running finishes only what is missing.
"""

import os

from absl import flags

flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "celeba"], "Which data.")
flags.DEFINE_string("workdir", None, "Root of the runs.")
flags.DEFINE_string("variant", "demo", "Config variant (synthetic only): demo | tiny.")
flags.DEFINE_bool("update_results_md", True, "Rewrite this dataset's RESULTS.md block.")
flags.DEFINE_list("methods", "fedavg,fedaws,fedface_nosp,fedface", "Federated methods.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from experiments import fedface_celeba
  from experiments import fedface_synthetic
  from experiments import pretrain_celeba
  from experiments import pretrain_synthetic
  from launch import common
  from reporting import method_comparison
  from reporting import results_md
  # pylint: enable=g-import-not-at-top
  common.quiet_library_logs()
  if FLAGS.dataset == "synthetic":
    pre = pretrain_synthetic.get_config(f"variant={FLAGS.variant}")
    fed = lambda m: fedface_synthetic.get_config(f"variant={FLAGS.variant},method={m}")
    title = f"Synthetic faces ({FLAGS.variant})"
  else:
    pre = pretrain_celeba.get_config()
    fed = lambda m: fedface_celeba.get_config(f"method={m}")
    title = "Real faces (../shared/data/celeba_faces_112)"
  with common.exit_on_config_mismatch(hint="use a new --workdir, or delete that run to redo it"):
    result = method_comparison.run_comparison(pre, fed, FLAGS.workdir, methods=FLAGS.methods)
  results_md.save_json(os.path.join(FLAGS.workdir, "results.json"),
                       method_comparison.slim_result(result))
  command = common.invocation("launch.results")
  section = method_comparison.markdown_section(title, command, result)
  print(section)
  if FLAGS.update_results_md:
    results_md.update_results_md("RESULTS.md", f"fedface-{FLAGS.dataset}", section)


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
