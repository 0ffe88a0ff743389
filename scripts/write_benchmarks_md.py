"""Regenerates BENCHMARKS.md from the committed benchmark JSONs alone, without running anything.

Why: the benchmark suite rewrites BENCHMARKS.md after each run, but a new roofline estimate, a
GPU results JSON copied back from a GPU machine, or a change of the report's layout must be
renderable from what is committed under benchmarks/ (and only from that: every figure in
BENCHMARKS.md comes from one of these files). Missing files are reported as not run.

Usage:
  python scripts/write_benchmarks_md.py            # BENCHMARKS.md from benchmarks/*.json
  python scripts/write_benchmarks_md.py --report /tmp/B.md --cpu runs/benchmark/results.json
"""

import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from reporting import benchmark_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--report", default="BENCHMARKS.md")
  parser.add_argument("--cpu", default="benchmarks/cpu.json")
  parser.add_argument("--gpu", default="benchmarks/gpu.json")
  parser.add_argument("--roofline", default="benchmarks/roofline.json")
  args = parser.parse_args(argv)
  path = benchmark_report.write_report(args.report, args.cpu, args.gpu, args.roofline)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
