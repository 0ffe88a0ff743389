"""Privacy vs utility: what each DP-FedAvg noise level costs FedFace and buys against the attack.

Why: the attack sweep (`attack_sweeps`) says how much DP noise blunts the curious client, the
defence cost (`defence_cost`) says what the same noise multipliers cost the face recogniser;
neither alone answers "which setting to deploy". This joins the two committed/run outputs by noise
multiplier z and draws FedFace TAR@FAR (x) against the attack's rank-1 identification (y), one
point per z.

The two sides share z (noise std = z * clip S, so the noise relative to a clipped update), not S:
the attack's S is the median victim update norm of its own (LeNet) round, the defence's S the mean
client update norm of a FedFace round. Their epsilons also differ (the attacked round alone vs all
rounds of the FedFace run); both are recorded and the figure's labels give the FedFace run's.
"""

from __future__ import annotations

import math
import os
from typing import Any

from fedface_jax.evaluation import plots

_OFF = 0.0   # key of the no-DP rows


def _attack_z(row: dict) -> float | None:
  """z of an attack row of the DP sweep (or its DP-off base point); None for other rows."""
  if row["sweep"] != "dp":
    return None
  z = row.get("dp_noise_multiplier")
  return _OFF if z is None else float(z)


def _defence_z(row: dict) -> float:
  no_dp = row["noise_multiplier"] == 0 and math.isinf(row["clip_norm"])
  return _OFF if no_dp else float(row["noise_multiplier"])


def _tar(report: dict | None, far: float) -> float | None:
  if not report:
    return None
  for k, v in report.get("tar_at_far", {}).items():
    if float(k) == far:
      return 100.0 * float(v)
  return None


def join(attack: dict, cost: dict, far: float = 1e-3,
         rank1_key: str = "rank1") -> list[dict[str, Any]]:
  """One point per noise level present on both sides, sorted by z (no DP first).

  `attack` is `results/attack-<suite>.json` (rows with "metrics"), `cost` the defence-cost JSON.
  A z with clipping but no noise (z = 0, finite S) is its own point on the attack side and only
  pairs with a defence row of the same kind, so "clipping only" is never drawn as "no DP".
  Raises if nothing pairs, because an empty figure would read as "no trade-off".
  """
  attack_by_z = {}
  for row in attack["rows"]:
    z = _attack_z(row)
    if z is None or rank1_key not in row["metrics"]:
      continue
    clipped_only = z == 0 and row.get("dp_noise_multiplier") is not None
    attack_by_z[("clip", z) if clipped_only else z] = row
  points = []
  for row in cost["rows"]:
    z = _defence_z(row)
    a = attack_by_z.get(z)
    tar = _tar(row.get("report"), far)
    if a is None or tar is None:
      continue
    m = a["metrics"][rank1_key]
    points.append({
        "noise_multiplier": z, "fedface_tar": tar, "far": far,
        "fedface_epsilon": row["epsilon"], "fedface_delta": row["delta"],
        "fedface_clip_norm": row["clip_norm"], "fedface_rounds": row["rounds"],
        "attack_rank1": m["mean"], "attack_rank1_ci": [m["ci_low"], m["ci_high"]],
        "attack_units": a.get("units"), "attack_clip_norm": a.get("dp_clip_norm"),
        "attack_variant": a.get("variant"), "chance_rank1": a.get("chance_rank1"),
        "rank1_key": rank1_key})
  if not points:
    raise ValueError(
        "no noise multiplier is in both the attack's DP sweep and the defence cost: attack "
        f"z={sorted(str(k) for k in attack_by_z)}, defence "
        f"z={sorted(_defence_z(r) for r in cost['rows'])}")
  return sorted(points, key=lambda p: p["noise_multiplier"])


def _eps_label(eps: float) -> str:
  if eps is None or math.isinf(eps):
    return "ε=∞"
  return f"ε={eps:.3g}"


def save_png(points: list[dict], path: str, title: str) -> str:
  """FedFace TAR@FAR (x) vs attack rank-1 with its 95% CI (y); each point labelled z and ε."""
  plt = plots._pyplot()  # pylint: disable=protected-access
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
  xs = [p["fedface_tar"] for p in points]
  ys = [p["attack_rank1"] for p in points]
  err = [[p["attack_rank1"] - p["attack_rank1_ci"][0] for p in points],
         [p["attack_rank1_ci"][1] - p["attack_rank1"] for p in points]]
  ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=4, color="tab:red")
  for p, x, y in zip(points, xs, ys):
    z = "no DP" if p["noise_multiplier"] == _OFF and math.isinf(p["fedface_clip_norm"]) else (
        f"z={p['noise_multiplier']:g}")
    ax.annotate(f"{z}, {_eps_label(p['fedface_epsilon'])}", (x, y), textcoords="offset points",
                xytext=(6, 6), fontsize=8)
  chance = points[0].get("chance_rank1")
  if chance is not None:
    ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.3f})")
    ax.legend(loc="best", fontsize=8)
  ax.set_xlabel(f"FedFace TAR@FAR={points[0]['far']:g} (%), one run per noise level")
  ax.set_ylabel("attack rank-1 (mean, 95% CI over seed x victim)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _setting(p: dict) -> str:
  if p["noise_multiplier"] == _OFF and math.isinf(p["fedface_clip_norm"]):
    return "no DP"
  return f"z={p['noise_multiplier']:g}"


def results_rows(points: list[dict]) -> list[dict]:
  """Rows in the results-JSON schema; FedFace TAR is one run per level (no CI: null bounds)."""
  return [{"method": "fedface_dp", "variant": _setting(p), "seeds": [0],
           "metrics": {f"tar@{p['far']:g}": {"mean": p["fedface_tar"], "ci_low": None,
                                               "ci_high": None},
                       "attack_rank1": {"mean": p["attack_rank1"],
                                        "ci_low": p["attack_rank1_ci"][0],
                                        "ci_high": p["attack_rank1_ci"][1]}},
           **{k: v for k, v in p.items() if k not in ("fedface_tar", "attack_rank1",
                                                      "attack_rank1_ci")}} for p in points]


def markdown_table(points: list[dict]) -> str:
  far = points[0]["far"]
  lines = [f"| DP setting | FedFace TAR@FAR={far:g} (%) | ε (FedFace run) | attack rank-1 "
           "[95% CI] | attack units | chance |", "|---|---|---|---|---|---|"]
  for p in points:
    lo, hi = p["attack_rank1_ci"]
    ci = "[n/a]" if lo is None else f"[{lo:.2f}, {hi:.2f}]"
    chance = "–" if p["chance_rank1"] is None else f"{p['chance_rank1']:.3f}"
    lines.append(f"| {_setting(p)} | {p['fedface_tar']:.2f} | {_eps_label(p['fedface_epsilon'])} "
                 f"| {p['attack_rank1']:.2f} {ci} | {p['attack_units']} | {chance} |")
  return "\n".join(lines)
