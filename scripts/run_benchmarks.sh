#!/usr/bin/env bash
# The whole benchmark in one command (what `make benchmark` runs): peer venvs, then the sweep
# (1 and 8 fake CPU devices, each in its own process; toy CNN rows and the real FedFace
# workload rows), the 1M-row class-table step and the peers (interleaved with ours, reference
# check on every call), the fairness supplement, then benchmarks/cpu.json and BENCHMARKS.md. Run
# it on a QUIET machine (nothing else on the cores: every row records the load average): roughly
# 2 h on 2 cores (1.5-3 h; the real FedFace rows are about half of it), plus the one-off peer venv
# setup (several minutes). Then commit
# benchmarks/cpu.json and BENCHMARKS.md together: BENCHMARKS.md cites only benchmarks/*.json.
#
# Usage: bash scripts/run_benchmarks.sh [extra launch.benchmark flags]
#   CONFIG=experiments/benchmark_cpu.py:variant=smoke bash scripts/run_benchmarks.sh
#   SKIP_PEER_SETUP=1 ...   (use the peer venvs as they are; missing ones become error rows)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
CONFIG="${CONFIG:-experiments/benchmark_cpu.py}"
WORKDIR="${WORKDIR:-runs/benchmark}"
PY="${PY:-.venv/bin/python}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

if [[ "${SKIP_PEER_SETUP:-0}" != "1" ]]; then
  # A failed peer setup must not stop our own figures: the peer rows then report the error.
  bash scripts/setup_peer_venvs.sh all || echo "[run_benchmarks] peer venv setup failed" >&2
fi
echo "[run_benchmarks] load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ "${CONFIG}" != "experiments/benchmark_cpu.py" ]]; then
  "${PY}" -m launch.benchmark --config="${CONFIG}" --workdir="${WORKDIR}" "$@"
else
  # The published CPU run in three invocations into one workdir, each of which writes
  # benchmarks/cpu.json and BENCHMARKS.md when it ends, so a kill loses at most the part it was
  # in: the toy rows with the class table and the peers; the fairness supplement (the bare loop
  # in both venvs, the fused-steps A/B; it appends); the real FedFace rows (appended).
  "${PY}" -m launch.benchmark --config="${CONFIG}:rows=toy" --workdir="${WORKDIR}" "$@"
  "${PY}" -m launch.benchmark --config="${CONFIG}:variant=fairness" --workdir="${WORKDIR}" "$@"
  "${PY}" -m launch.benchmark --config="${CONFIG}:rows=fedface" --workdir="${WORKDIR}" \
      --parts=sweep --config.append=True "$@"
fi
echo "[run_benchmarks] load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
