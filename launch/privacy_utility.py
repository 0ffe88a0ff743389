"""FedFace utility against attack success under DP-FedAvg: one PNG, one JSON, one RESULTS.md block.

Joins the attack's DP sweep (`results/attack-<suite>.json`, from launch.attack_results) with the
defence cost (FedFace under the same noise multipliers, launch.attack_results --defence_cost):
  python -m launch.privacy_utility --suite=synthetic
writes docs/privacy_utility_<suite>.png, results/privacy-utility-<suite>.json and, with
--update_results_md, the RESULTS.md block `privacy-utility-<suite>`.
"""

import json
import os

from absl import flags

flags.DEFINE_enum("suite", "synthetic", ["synthetic", "celeba"], "Which attack suite.")
flags.DEFINE_string("attack_json", None, "Default results/attack-<suite>.json.")
flags.DEFINE_string("defence_json", None,
                    "Default runs/attack_results/<suite>/defence_cost.json.")
flags.DEFINE_enum("rank1_judge", "model", ["model", "dlib"], "Whose rank-1 is the y axis.")
flags.DEFINE_string("png", None, "Default docs/privacy_utility_<suite>.png.")
flags.DEFINE_string("results_dir", "results", "Where privacy-utility-<suite>.json goes.")
flags.DEFINE_bool("update_results_md", True, "Write the RESULTS.md block.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from launch import common  # pylint: disable=g-import-not-at-top
  from reporting import privacy_utility as pu  # pylint: disable=g-import-not-at-top
  from reporting import results_md  # pylint: disable=g-import-not-at-top
  suite = FLAGS.suite
  attack_path = FLAGS.attack_json or f"results/attack-{suite}.json"
  defence_path = FLAGS.defence_json or os.path.join("runs", "attack_results", suite,
                                                    "defence_cost.json")
  with open(attack_path) as f:
    attack = json.load(f)
  with open(defence_path) as f:
    cost = json.load(f)
  key = "rank1" if FLAGS.rank1_judge == "model" else "rank1_dlib"
  points = pu.join(attack, cost, rank1_key=key)
  png = FLAGS.png or f"docs/privacy_utility_{suite}.png"
  pu.save_png(points, png, f"DP-FedAvg on {suite} faces: FedFace utility vs attack "
              f"({FLAGS.rank1_judge} judge)")
  command = common.invocation("launch.privacy_utility")
  block = f"privacy-utility-{suite}"
  path = results_md.write_results_json(
      FLAGS.results_dir, block, command, pu.results_rows(points),
      note=pu.__doc__.split("\n\n")[-1].replace("\n", " "),
      extra={"attack_json": attack_path, "attack_command": attack.get("command"),
             "defence_command": cost.get("command"), "png": png})
  body = (pu.markdown_table(points) + f"\n\nFigure: `{png}`. Sources: `{attack_path}` (attack "
          f"DP sweep) and the defence cost of `{cost.get('command')}`. FedFace TAR is one run per "
          "noise level; the attack's rank-1 is a mean over (seed, victim) units with a 95% CI.")
  section = results_md.section(f"Privacy-utility ({suite})", command, body)
  print(section)
  print(f"wrote {path} and {png}")
  if FLAGS.update_results_md:
    results_md.update_results_md("RESULTS.md", block, section)


if __name__ == "__main__":
  from launch import common  # pylint: disable=g-import-not-at-top
  common.run(main)
