#!/usr/bin/env bash
# The GPU benchmark cut to one short lease of one GPU (~8 min): the 1M x 512 class table, then
# experiments/benchmark_gpu.py:variant=lease (the real FedFace rows first, then the toy CNN),
# each part writing benchmarks/gpu.json and BENCHMARKS.md when it ends (the sweep appends), so a
# stop at the limit keeps what finished. On a machine with the full budget run the whole sweep
# instead: python -m launch.benchmark --config experiments/benchmark_gpu.py:devices=1.
#
# Usage (repository root, on the GPU machine):
#   OUT=/some/dir SWEEP_TIMEOUT_S=330 bash scripts/gpu_lease.sh
#   SEED_WORKDIR=<first lease's workdir> CONFIG=...:variant=lease,skip=<rows it ran> ...
#   SEED_JSON=benchmarks/gpu.json CONFIG=...:variant=lease,skip=<rows it has> ...  (next session)
# PY (default python3) must have jax with a CUDA backend, flax, optax and ml_collections.
# Everything it prints also goes to $OUT/lease.log; $OUT gets gpu.json, BENCHMARKS.md and the
# workdir (logs, HLO) as workdir.tgz.
set -uo pipefail
OUT="${OUT:-runs/gpu_lease}"
WORKDIR="${WORKDIR:-/tmp/benchmark_gpu}"
PY="${PY:-python3}"
SWEEP_TIMEOUT_S="${SWEEP_TIMEOUT_S:-330}"
CONFIG="${CONFIG:-experiments/benchmark_gpu.py:variant=lease}"
mkdir -p "${OUT}"
exec > >(tee -a "${OUT}/lease.log") 2>&1
# The suite defaults its workers to the CPU backend; on the GPU machine they must see the GPU.
# The CPU backend too: FLOPs are counted on the host (measure.step_flops says why).
export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda,cpu}" PYTHONUNBUFFERED=1
echo "[gpu_lease] $(date -u '+%F %T UTC') start"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw \
    --format=csv || true
"${PY}" - <<'EOF' || { echo "[gpu_lease] environment check failed"; exit 3; }
import importlib.metadata as md
import jax, jax.numpy as jnp, flax, optax, ml_collections  # noqa: F401
print({p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "ml_collections", "numpy")})
print(jax.devices())
x = jax.random.normal(jax.random.key(0), (256, 256))
assert float(jnp.abs(x @ x).sum()) > 0
from fedface_jax.benchmark import worker  # noqa: F401  (the project imports under this JAX)
from fedface_jax import models  # noqa: F401
EOF
rm -rf "${WORKDIR}"
if [[ -n "${SEED_WORKDIR:-}" ]]; then
  # A second lease continues the first one's workdir (results.jsonl, meta.json): its rows are
  # appended, and the config's `skip` leaves out the rows the first already measured.
  mkdir -p "${WORKDIR}" && cp -r "${SEED_WORKDIR}"/. "${WORKDIR}/"
elif [[ -n "${SEED_JSON:-}" ]]; then
  # A later session continues a committed results JSON (e.g. benchmarks/gpu.json) the same way.
  mkdir -p "${WORKDIR}" && "${PY}" - "${SEED_JSON}" "${WORKDIR}" <<'EOF2'
import json, os, sys
res = json.load(open(sys.argv[1]))
with open(os.path.join(sys.argv[2], "results.jsonl"), "w") as f:
  f.writelines(json.dumps(r) + "\n" for r in res["rows"])
json.dump(res["meta"], open(os.path.join(sys.argv[2], "meta.json"), "w"), indent=1)
EOF2
else
  timeout 150 "${PY}" -m launch.benchmark --config="${CONFIG}" --workdir="${WORKDIR}" \
      --parts=class_table
  echo "[gpu_lease] class table rc=$? $(date -u '+%T')"
fi
timeout $((SWEEP_TIMEOUT_S + 40)) "${PY}" -m launch.benchmark \
    --config="${CONFIG},worker_timeout_s=${SWEEP_TIMEOUT_S}" --workdir="${WORKDIR}" \
    --parts=sweep --config.append=True
echo "[gpu_lease] sweep rc=$? $(date -u '+%T')"
cp benchmarks/gpu.json BENCHMARKS.md "${OUT}/" 2>/dev/null
tar czf "${OUT}/workdir.tgz" -C "${WORKDIR}" . 2>/dev/null
nvidia-smi --query-gpu=name,memory.used,clocks.sm,power.draw --format=csv || true
echo "[gpu_lease] $(date -u '+%F %T UTC') end"
