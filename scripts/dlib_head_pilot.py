"""Pilot of the dlib frozen-trunk study: the clients' positive-only margin and lr, on validation.

Why: dlib's descriptors of a person's chips already lie within cos 0.9 of their mean (median cos
to the own mean ~0.98 on the federated identities), so at FedFace's margin 0.9 the clients'
positive-only hinge is almost zero and nothing trains. The margin, the client lr and spreadout's
margin (the class rows of dlib lie in a narrow cone: mean pairwise cos ~0.88) of
experiments/fedface_study_celeba_dlib.py are therefore chosen here, with FedFace (frozen
mean-feature rows, row_sum spreadout, plain server step, seed 0), scored on the 20 validation
identities only, with the study's bootstrap CIs. The evaluation identities are not touched.
Finished runs are reused (their `seconds_this_call_per_run` is then about 0).

  PYTHONPATH=. python scripts/dlib_head_pilot.py --workroot runs/study_celeba_dlib \
      --margins 0.95,0.97,0.99 --client_lrs 0.01,0.03,0.1 --update_results_md
"""

from __future__ import annotations

import argparse
import time

from reporting import fedface_study

CONFIG = "experiments/fedface_study_celeba_dlib.py"
BLOCK = "fedface-study-celeba-dlib-pilot"
DEFAULT_METHOD = "method=fedface,class_embedding=frozen,reduction=row_sum"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workroot", default="runs/study_celeba_dlib")
  parser.add_argument("--margins", default="0.95,0.97,0.99")
  parser.add_argument("--client_lrs", default="0.01,0.03,0.1")
  parser.add_argument("--spread_margins", default="0.3")
  parser.add_argument("--block", default=BLOCK)
  parser.add_argument("--method_arg", default=DEFAULT_METHOD)
  parser.add_argument("--num_resamples", type=int, default=1000)
  parser.add_argument("--results_dir", default="results")
  parser.add_argument("--update_results_md", action="store_true",
                      help="also write the block into RESULTS.md")
  args = parser.parse_args()
  study = fedface_study.Study(CONFIG, args.workroot)
  theta0 = study.theta0()
  runs, names, seconds = {"pretrained": [theta0]}, {"pretrained": ("pretrained", "theta_0")}, {}
  grid = [(m, lr, sm) for m in args.margins.split(",") for lr in args.client_lrs.split(",")
          for sm in args.spread_margins.split(",")]
  for margin, lr, spread in grid:
    method = "" if args.method_arg == DEFAULT_METHOD else args.method_arg.replace(",", "+") + "+"
    key = f"{method}margin{margin}+lr{lr}" + (f"+sm{spread}" if spread != "0.3" else "")
    t0 = time.time()
    runs[key] = [study.federated(f"pilot/{key}", f"{args.method_arg},margin={margin},"
                                 f"client_lr={lr},spread_margin={spread}", 0)]
    seconds[key] = round(time.time() - t0, 1)
    names[key] = ("fedface", key)
  scores = fedface_study.bootstrap_runs(study, runs, "validation", baseline="pretrained",
                                        num_resamples=args.num_resamples)
  rows = fedface_study.table_rows(scores, names)
  best = max((k for k in runs if k != "pretrained"), key=lambda k: (
      scores[k]["metrics"]["tar@1e-3"]["mean"], scores[k]["metrics"]["auc"]["mean"]))
  fedface_study.write_block(
      args.block, command="PYTHONPATH=. python scripts/dlib_head_pilot.py " + " ".join(
          f"--{k}={v}" for k, v in vars(args).items() if not isinstance(v, bool))
      + (" --update_results_md" if args.update_results_md else ""),
      rows=rows, results_dir=args.results_dir, num_resamples=args.num_resamples,
      update_results_md=args.update_results_md,
      note=f"Pilot on the {study.splits['validation'].num_identities} validation identities, "
           f"seed 0, `{args.method_arg}`: best by TAR@1e-3 then AUC: `{best}`.",
      extra={"chosen": best, "seconds_this_call_per_run": seconds})


if __name__ == "__main__":
  main()
