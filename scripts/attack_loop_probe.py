"""Times one attack iteration of the reference setting with the attack loop rolled and unrolled.

Why: XLA:CPU compiles a `while` body without its fast convolution path, so the attack's loops
(`attack/optimise.py`: iterations; `attack/unroll.py`: the victims' local steps) are unrolled on
the CPU backend. This script is the measurement behind that default, on the reference LeNet at
128 px (ATTACK.md 3: tau = 3, eta = 0.003, second order through the steps, remat):

  PYTHONPATH=. JAX_PLATFORMS=cpu python scripts/attack_loop_probe.py --photos=16 \
      --out=benchmarks/attack_loop_probe.json

Each variant runs `iterations` iterations of `optimise.Runner` (chunk 1); the first pays the
compile, the rest are timed. The variants start from the same latent and must agree on the loss
there, and variants with the same convolution must end at the same loss (checked; a mismatch
beyond float rounding fails the script). The last variant writes the LeNet's convolutions as
im2col (`models/im2col.py`, `attack.lenet_conv`).
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedface_jax.attack import inversion
from fedface_jax.attack import lenet
from fedface_jax.attack import objectives
from fedface_jax.attack import optimise
from fedface_jax.attack import unroll
from reporting import results_md

_PHOTOS = flags.DEFINE_integer("photos", 16, "Victim photos in the dummy batch.")
_SIZE = flags.DEFINE_integer("size", 128, "Image size (the reference: 128).")
_ITERATIONS = flags.DEFINE_integer("iterations", 3, "Iterations per variant (first = compile).")
_OUT = flags.DEFINE_string("out", "", "Write the rows to this JSON.")

_VARIANTS = flags.DEFINE_list("variants", None, "Run only these variant numbers (0-based; "
                               "default all).")

# (name, Runner loop, unroll the local steps, the LeNet's convolution)
VARIANTS = (("scan loop, rolled steps (before)", "scan", False, "xla"),
            ("scan loop, unrolled steps", "scan", True, "xla"),
            ("host loop, unrolled steps (CPU default)", "host", True, "xla"),
            ("host loop, unrolled steps, im2col convolutions", "host", True, "im2col"))


def main(argv):
  del argv
  m, size, tau, eta, sf = _PHOTOS.value, _SIZE.value, 3, 0.003, 4
  model, params = lenet.init_lenet(jax.random.key(0), size, 1000)
  labels = jax.nn.one_hot(jnp.arange(m) % 1000, 1000)

  def loss_with(conv):
    net = lenet.LeNet5(num_classes=1000, conv_impl=conv)
    return lambda p, b: inversion.cross_entropy_onehot(net.apply({"params": p}, b[0]), b[1])

  victims = jax.random.uniform(jax.random.key(1), (m, size, size, 3))
  target = jax.jit(lambda p, x: unroll.unrolled_pseudograd(loss_with("xla"), p, (x, labels), eta,
                                                           tau))(params, victims)
  z0 = jax.random.uniform(jax.random.key(2), (m, size // sf, size // sf, 3))
  rows = []
  chosen = ([VARIANTS[int(i)] for i in _VARIANTS.value] if _VARIANTS.value else VARIANTS)
  for name, loop, unrolled, conv in chosen:
    loss = loss_with(conv)

    def objective(z, aux, unrolled=unrolled, loss=loss):
      x = inversion.upsample(z, sf)
      g = unroll.unrolled_pseudograd(loss, aux["params"], (x, labels), eta, tau, unroll=unrolled)
      match = objectives.l2_matching(g, aux["target"])
      return match, {"matching": match}
    runner = optimise.Runner(objective, optax.adam(0.1), loop=loop)
    out = runner.run(z0, {"params": params, "target": target}, _ITERATIONS.value, chunk=1,
                     progress=False)
    row = dict(variant=name, loop=loop, unrolled_steps=unrolled, conv=conv,
               first_iteration_s=out.timing["first_chunk_s"],
               per_iteration_s=out.timing["per_iteration_s"],
               first_matching=float(out.matching_history[0]), final_matching=out.final_matching)
    print(json.dumps(row), flush=True)
    rows.append(row)
  # Every variant computes the same loss at the shared start; the same convolution must also end
  # at the same loss (the loops only reorder work). Another convolution rounds differently, and
  # Adam's first steps (~lr * sign(g)) turn rounding into visible differences, so its end is not
  # compared.
  firsts = np.array([r["first_matching"] for r in rows])
  if np.max(np.abs(firsts - firsts[0])) > 1e-4 * abs(firsts[0]):
    raise SystemExit(f"variants disagree on the loss at the start: {firsts}")
  for conv in {r["conv"] for r in rows}:
    finals = np.array([r["final_matching"] for r in rows if r["conv"] == conv])
    if np.max(np.abs(finals - finals[-1])) > 1e-3 * abs(finals[-1]):
      raise SystemExit(f"{conv} variants disagree on the final matching loss: {finals}")
  base = rows[0]["per_iteration_s"]
  for r in rows:
    r["speedup_vs_before"] = base / r["per_iteration_s"]
  result = dict(
      command=f"PYTHONPATH=. JAX_PLATFORMS=cpu python scripts/attack_loop_probe.py "
              f"--photos={m} --size={size} --iterations={_ITERATIONS.value}"
              + (f" --variants={','.join(_VARIANTS.value)}" if _VARIANTS.value else ""),
      date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      machine=results_md.machine_line(),
      setting=dict(photos=m, image_size=size, latent=size // sf, tau=tau, eta=eta, remat=True,
                   model="reference LeNet (34M parameters at 128 px)"),
      rows=rows)
  if _OUT.value:
    results_md.save_json(_OUT.value, result)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
