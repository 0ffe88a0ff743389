"""Test setup: 8 fake CPU devices, and the shared real faces when present."""

import os
import pathlib

# Must happen before JAX is imported anywhere, so that multi-device code can be
# tested on a CPU-only machine.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Tests run tiny shapes, where XLA's optimisation passes cost far more time than
# they save (threefry init alone compiles ~5x faster). Numerics stay IEEE float32;
# set FEDFACE_TEST_OPTIMIZE=1 to test with the full pipeline.
if not os.environ.get("FEDFACE_TEST_OPTIMIZE"):
  jax.config.update("jax_disable_most_optimizations", True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CELEBA_ROOT = REPO_ROOT.parent / "shared" / "data" / "celeba_faces_112"


@pytest.fixture
def celeba_root():
  """Path of the shared real faces; skips the test when they are absent."""
  if not CELEBA_ROOT.is_dir():
    pytest.skip(f"shared real faces not found at {CELEBA_ROOT}")
  return CELEBA_ROOT


@pytest.fixture
def celeba_chips(celeba_root):
  """`take(n)`: n real faces, one per identity spread over the folder, at dlib's 150x150.

  Resized, not dlib-aligned: enough for tests that compare two implementations of one network.
  Skips the test when the folder holds fewer than n identities.
  """
  def take(n):
    dirs = sorted(p for p in celeba_root.iterdir() if p.is_dir())
    files = []
    for d in dirs[::max(1, len(dirs) // n)]:
      files.extend(sorted(d.glob("*.jpg"))[:1])
    files = files[:n]
    if len(files) < n:
      pytest.skip(f"only {len(files)} images under {celeba_root}")
    return np.stack([
        np.asarray(Image.open(f).convert("RGB").resize((150, 150), Image.Resampling.BILINEAR))
        for f in files])
  return take
