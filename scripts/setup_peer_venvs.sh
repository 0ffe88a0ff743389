#!/usr/bin/env bash
# Creates the isolated virtual environments of the peer FL frameworks that the throughput benchmark
# compares against (scripts/peers/*_bench.py).
#
# Why separate venvs: FedJAX 0.0.17 (last release) needs a 2024-era JAX/Haiku stack that cannot
# coexist with the project's JAX, and Flower pulls Ray + PyTorch. Both stay out of .venv.
#
#   .peer_venvs/fedjax : fedjax==0.0.17, jax/jaxlib==0.4.35, dm-haiku==0.0.13, optax 0.2.4, numpy<2
#   .peer_venvs/flower : flwr[simulation] (Ray) + torch CPU
#   .peer_venvs/breaching : breaching 0.1.2 + torch CPU (scripts/peers/requirements-breaching.txt),
#       the peer attack of launch.attack_peer (not a benchmark peer)
#
# Idempotent: an existing venv whose pinned packages import with the pinned versions is left alone
# (set FORCE=1 to rebuild). Prints the versions at the end.
#
# Usage: bash scripts/setup_peer_venvs.sh [fedjax|flower|breaching|all]   (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${ROOT}/.peer_venvs"
PYTHON="${PYTHON:-python3}"
WHICH="${1:-all}"

# --- Pins --------------------------------------------------------------------------------------
# FedJAX's last release (0.0.17) still calls `jax.tree_map`, which JAX 0.6 removed, so it needs an
# old JAX: 0.4.35 (Oct 2024) with dm-haiku 0.0.13. optax/chex/scipy/ml_dtypes are pinned to
# releases of the same period so that the resolver never drags in ones that need a newer JAX or
# NumPy 2. This set is verified: FedJAX FedAvg reproduces our reference round to ~1e-7.
FEDJAX_PINS=(
  "fedjax==0.0.17"
  "jax==0.4.35"
  "jaxlib==0.4.35"
  "dm-haiku==0.0.13"
  "optax==0.2.4"
  "chex==0.1.87"
  "numpy<2"
  "scipy<1.15"
  "ml_dtypes==0.5.0"
)
# Flower: flwr[simulation] brings Ray (flwr 1.41.0 pins ray==2.55.1). 1.41.0 is the newest release
# that resolves here: 1.42.0 requires a certifi release newer than the package index serves.
# torch==2.13.0 resolves to the local CPU wheel; an unpinned `torch` would resolve to a multi-GB
# CUDA build.
FLWR_VERSION="${FLWR_VERSION:-1.41.0}"
FLOWER_PINS=(
  "flwr[simulation]==${FLWR_VERSION}"
  "torch==2.13.0"
  "numpy"
)

BREACHING_REQS="${ROOT}/scripts/peers/requirements-breaching.txt"

log() { echo "[setup_peer_venvs] $*" >&2; }

make_venv() {
  local dir="$1"
  if [[ "${FORCE:-0}" == "1" && -d "${dir}" ]]; then
    log "FORCE=1: removing ${dir}"
    rm -rf "${dir}"
  fi
  if [[ ! -x "${dir}/bin/python" ]]; then
    log "creating ${dir}"
    "${PYTHON}" -m venv "${dir}"
    "${dir}/bin/python" -m pip install --quiet --upgrade pip wheel
  fi
}

fedjax_ok() {
  local py="${VENVS}/fedjax/bin/python"
  [[ -x "${py}" ]] && "${py}" - <<'PY' 2>/dev/null
from importlib.metadata import version
import jax, haiku, fedjax, optax, numpy  # noqa: F401  (all must import)
assert version("jax") == "0.4.35", version("jax")
assert version("jaxlib") == "0.4.35", version("jaxlib")
assert version("dm-haiku") == "0.0.13", version("dm-haiku")
assert version("fedjax") == "0.0.17", version("fedjax")
assert version("optax") == "0.2.4", version("optax")
assert int(version("numpy").split(".")[0]) < 2, version("numpy")
PY
}

flower_ok() {
  local py="${VENVS}/flower/bin/python"
  [[ -x "${py}" ]] && FLWR_VERSION="${FLWR_VERSION}" "${py}" - <<'PY' 2>/dev/null
import os
from importlib.metadata import version
import flwr, ray, torch  # noqa: F401  (all must import)
import flwr.simulation  # noqa: F401
assert version("flwr") == os.environ["FLWR_VERSION"], version("flwr")
assert version("torch").startswith("2.13.0"), version("torch")
PY
}

breaching_ok() {
  local py="${VENVS}/breaching/bin/python"
  [[ -x "${py}" ]] && "${py}" - <<'PY' 2>/dev/null
import sys, types
from importlib.metadata import version
# The stand-in breaching_attack.py uses for torchvision's fake-kernel module (see its comment).
sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))
import torch, breaching  # noqa: F401  (both must import)
assert version("breaching") == "0.1.2", version("breaching")
assert version("torch").startswith("2.13.0"), version("torch")
PY
}

setup_breaching() {
  if breaching_ok; then
    log "breaching venv already up to date"
    return
  fi
  make_venv "${VENVS}/breaching"
  log "installing -r ${BREACHING_REQS}"
  "${VENVS}/breaching/bin/python" -m pip install --quiet -r "${BREACHING_REQS}"
  breaching_ok || { log "breaching venv failed its import check"; exit 1; }
}

setup_fedjax() {
  if fedjax_ok; then
    log "fedjax venv already up to date"
    return
  fi
  make_venv "${VENVS}/fedjax"
  log "installing ${FEDJAX_PINS[*]}"
  "${VENVS}/fedjax/bin/python" -m pip install --quiet "${FEDJAX_PINS[@]}"
  fedjax_ok || { log "fedjax venv failed its import check"; "${VENVS}/fedjax/bin/python" -c \
    "import jax, haiku, fedjax, optax, numpy"; exit 1; }
}

setup_flower() {
  if flower_ok; then
    log "flower venv already up to date"
    return
  fi
  make_venv "${VENVS}/flower"
  log "installing ${FLOWER_PINS[*]}"
  "${VENVS}/flower/bin/python" -m pip install --quiet "${FLOWER_PINS[@]}"
  flower_ok || { log "flower venv failed its import check"; "${VENVS}/flower/bin/python" -c \
    "import flwr, ray, torch, flwr.simulation"; exit 1; }
}

mkdir -p "${VENVS}"
case "${WHICH}" in
  fedjax) setup_fedjax ;;
  flower) setup_flower ;;
  breaching) setup_breaching ;;
  all) setup_fedjax; setup_flower; setup_breaching ;;
  *) echo "usage: $0 [fedjax|flower|breaching|all]" >&2; exit 2 ;;
esac

echo "== peer venv versions"
if [[ -x "${VENVS}/fedjax/bin/python" ]]; then
  "${VENVS}/fedjax/bin/python" -c "
import sys
from importlib.metadata import version
pkgs = ['fedjax', 'jax', 'jaxlib', 'dm-haiku', 'optax', 'chex', 'numpy', 'scipy', 'ml_dtypes']
vers = ' | '.join(p + ' ' + version(p) for p in pkgs)
print('fedjax venv: python', sys.version.split()[0], '|', vers)"
fi
if [[ -x "${VENVS}/flower/bin/python" ]]; then
  "${VENVS}/flower/bin/python" -c "
import sys
from importlib.metadata import version
pkgs = ['flwr', 'ray', 'torch', 'numpy']
vers = ' | '.join(p + ' ' + version(p) for p in pkgs)
print('flower venv: python', sys.version.split()[0], '|', vers)"
fi
if [[ -x "${VENVS}/breaching/bin/python" ]]; then
  "${VENVS}/breaching/bin/python" -c "
import sys
from importlib.metadata import version
pkgs = ['breaching', 'torch', 'torchvision', 'numpy', 'hydra-core', 'omegaconf']
vers = ' | '.join(p + ' ' + version(p) for p in pkgs)
print('breaching venv: python', sys.version.split()[0], '|', vers)"
fi
