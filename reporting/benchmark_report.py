"""Writes BENCHMARKS.md from committed benchmark JSONs (benchmarks/*.json), and nothing else.

Why generated: every number in BENCHMARKS.md must come from a committed JSON written by the run
it names (command, date, machine, versions, load average per row). The CPU and GPU sections are
each rendered from one results JSON (`{"meta": ..., "rows": [...]}`, written by
`reporting/benchmark_suite.py`); without a GPU results JSON the GPU section says so and shows the
roofline estimate of `scripts/benchmark_roofline.py` (benchmarks/roofline.json), labelled as an
estimate. Hand-written analysis lives between `<!-- notes -->` and `<!-- /notes -->` in the
existing file and is carried over verbatim; it must cite figures from the tables, not new ones.

Every timed figure is shown as median [q1–q3] over the row's timed repetitions. Peer rows are
published only when their reference check passed (`benchmark_suite.reference_verdict`); the
others are listed as not published, with the reason.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

_NOTES_OPEN, _NOTES_CLOSE = "<!-- notes -->", "<!-- /notes -->"

# What each strategy is, in the tables: only ENGINE_STRATEGIES are what `launch.fedface` runs.
STRATEGY_LABELS = {
    "sequential": "bare loop of jitted whole client updates (benchmark only)",
    "sequential_steps": "bare loop of jitted SGD steps, FedJAX-jit-like (benchmark only)",
    "host_loop": "engine host loop (launch.fedface CPU default)",
    "host_loop-1stream": "engine host loop, 1 stream",
    "vmap": "engine compiled round, the model's own convs",
    "shard": "engine compiled round over devices, the model's own convs",
    "vmap-laxconv": "engine compiled round, the model's own convs",
    "shard-laxconv": "engine compiled round over devices, the model's own convs",
    "vmap-im2col": "engine compiled round, the model's convs as im2col matmuls "
                   "(model.conv_impl=im2col)",
    "shard-im2col": "engine compiled round over devices, the model's convs as im2col matmuls "
                    "(model.conv_impl=im2col)",
    "vmap-benchpatchconv": "compiled round with the benchmark-only PatchConv "
                           "(not in the engine's models, not what launch.fedface runs)",
    "shard-benchpatchconv": "compiled round over devices with the benchmark-only PatchConv "
                            "(not in the engine's models, not what launch.fedface runs)",
}
ENGINE_STRATEGIES = ("host_loop", "host_loop-1stream", "vmap", "shard", "vmap-laxconv",
                     "shard-laxconv", "vmap-im2col", "shard-im2col")


def strategy_label(strategy: str) -> str:
  """What a strategy is, in the tables (host-loop rows with fused steps say how many)."""
  base, sep, fused = strategy.partition("-fused")
  if sep and base in STRATEGY_LABELS:
    return (f"{STRATEGY_LABELS[base]}, {fused} local steps per jitted call "
            "(federated.host_loop_fused_steps)")
  return STRATEGY_LABELS.get(strategy, "?")


def is_engine_strategy(strategy: str) -> bool:
  """Whether `launch.fedface` can run this strategy (fused host loops are an engine option)."""
  return strategy.partition("-fused")[0] in ENGINE_STRATEGIES


def load_rows(path: str) -> list[dict[str, Any]]:
  """Rows of a results.jsonl (one JSON object per line)."""
  with open(path) as f:
    return [json.loads(ln) for ln in f if ln.strip()]


def load_results(path: str | None) -> dict[str, Any] | None:
  """A results JSON `{"meta": {...}, "rows": [...]}`, or None when `path` is unset or absent."""
  if not path or not os.path.isfile(path):
    return None
  with open(path) as f:
    res = json.load(f)
  if not isinstance(res, dict) or "meta" not in res or not isinstance(res.get("rows"), list):
    raise ValueError(f"{path} is not a benchmark results JSON (needs 'meta' and 'rows')")
  return res


def spread(values) -> dict[str, float] | None:
  """n, median, q1, q3 of `values` (linear percentiles); None when empty."""
  v = np.asarray([x for x in (values or []) if x is not None], np.float64)
  if v.size == 0:
    return None
  q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
  return {"n": int(v.size), "median": med, "q1": q1, "q3": q3, "iqr": q3 - q1}


def rate_spread(count: float, times) -> dict[str, float] | None:
  """`spread` of count / t over the repetitions' times."""
  return spread([count / t for t in (times or []) if t and t > 0])


def _f(x, fmt="{:.3g}"):
  return "–" if x is None else fmt.format(x)


def _iqr(sp, fmt="{:.1f}"):
  """'median [q1–q3]' of a spread dict, '–' if None."""
  if not sp:
    return "–"
  return f"{fmt.format(sp['median'])} [{fmt.format(sp['q1'])}–{fmt.format(sp['q3'])}]"


def _gib(b):
  return "–" if b is None else f"{b / 2**30:.2f}"


def _load(row):
  la = row.get("load_avg")
  return "–" if not la else f"{la[0]:.1f}"


def _wl(w):
  model = w["model"].replace("bench_cnn_", "bench CNN ")
  h, wd = w["image_size"]
  size = f"{h}²" if h == wd else f"{h}×{wd}"
  return (f"{w['num_clients']} cl × {w['images_per_client']} img {size}, "
          f"{w['local_steps']} step, {model}")


def _key(w):
  return (w["num_clients"], w["images_per_client"], tuple(w["image_size"]), w["local_steps"],
          w["model"])


def _per_update_images(w):
  return w["local_steps"] * w.get("batch_size", w["images_per_client"])


def row_spreads(r: dict[str, Any]) -> dict[str, Any]:
  """(updates/s, images/s, round s) spreads of a round row, from its round_s."""
  times = r.get("round_s") or []
  w = r["workload"]
  out = {"round_s": spread(times)}
  if r.get("strategy") == "centralised":
    out["images_per_s"] = rate_spread(r.get("images_per_call") or 0, times) if r.get(
        "images_per_call") else None
    out["client_updates_per_s"] = None
  else:
    clients = r.get("clients_timed") or w["num_clients"]
    out["client_updates_per_s"] = rate_spread(clients, times)
    out["images_per_s"] = rate_spread(clients * _per_update_images(w), times)
  return out


def _streams_of(r):
  if str(r.get("strategy", "")).startswith("host_loop"):
    return int(r.get("streams", 1))
  return 1


def pick_ceiling(rows: list[dict[str, Any]], key=None, streams: int | None = None):
  """The centralised ceiling among `rows`: the best images/s over batch sizes.

  Only centralised rows of workload `key` (any if None) run with `streams` concurrent streams
  (any if None) compete, so a ceiling is never taken at another thread count than the row it
  bounds. Returns the winning row (its `batch` says which batch size won) or None.
  """
  cands = [r for r in rows if r.get("kind") == "round" and r.get("strategy") == "centralised"
           and (key is None or _key(r["workload"]) == key)
           and (streams is None or int(r.get("streams", 1)) == int(streams))
           and r.get("images_per_s")]
  return max(cands, key=lambda r: r["images_per_s"]) if cands else None


def malloc_mode(r: dict[str, Any]) -> str:
  """The row's `host_malloc` (fedface_jax/host_memory.py); rows from before it: "system"."""
  return str(r.get("host_malloc") or "system")


def _malloc_note(r: dict[str, Any]) -> str:
  return ", malloc keep" if malloc_mode(r) == "keep" else ""


def _centralised_settings(r: dict[str, Any], im2col: str = "im2col") -> str:
  """What a ceiling row ran with beyond its batch size: convolutions, steps per call, malloc."""
  fused = int(r.get("fused_steps") or 1)
  return ((f", {im2col}" if r.get("conv_impl") == "im2col" else "")
          + (f", {fused} steps per call" if fused > 1 else "") + _malloc_note(r))


def _ceiling_label(cen):
  if not cen:
    return ""
  batch = "all " + str(cen["batch"]) if cen.get("batch_is_all") else str(cen.get("batch"))
  s = cen.get("streams", 1)
  return f" (batch {batch}, {s} stream{'s' if s > 1 else ''}{_centralised_settings(cen)})"


def paired_partners(rows: list[dict[str, Any]]) -> list[int | None]:
  """For each row, the index of the peer row its interleaved block of ours was run next to.

  The suite writes each block as our paired worker's rows, then the peer's row (or an error
  row) with the same run name and block, so the paired rows pending when that row arrives
  belong to it. Rows that record `paired_peer` must also match its label. None: not paired.
  """
  partners: list[int | None] = [None] * len(rows)
  pending: list[int] = []
  for i, r in enumerate(rows):
    if r.get("kind") == "round" and r.get("paired_block") is not None:
      pending.append(i)
    elif r.get("kind") in ("peer", "error") and r.get("paired_block") is not None:
      for j in pending:
        o = rows[j]
        if ((o["name"], o["paired_block"]) == (r.get("name"), r["paired_block"])
            and o.get("paired_peer", r.get("peer")) == r.get("peer")):
          partners[j] = i
      pending = [j for j in pending if partners[j] is None]
  return partners


def _pool_rounds(rs: list[dict[str, Any]]) -> dict[str, Any]:
  times = [t for r in rs for t in r.get("round_s") or []]
  return {"rows": rs, "round_s": times, "blocks": sorted({r["paired_block"] for r in rs}),
          "updates": rate_spread(rs[0]["workload"]["num_clients"], times)}


def pool_peers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Peer rows pooled per (peer, workload, our paired strategies) over the interleaved blocks.

  Returns entries with the pooled round times, the updates/s spread, the blocks, `published`
  (every block's reference check passed) with the reasons of those that did not, and `ours`:
  per strategy, our rows from the blocks run next to these peer rows, pooled. A ratio to a
  peer compares it with those blocks only, never with blocks of ours run at another time.
  """
  groups: dict[tuple, list] = {}
  for i, r in enumerate(rows):
    if r.get("kind") == "peer":
      paired = tuple(r.get("paired_strategies") or ())
      groups.setdefault((r["peer"], _key(r["workload"]), paired, malloc_mode(r)), []).append(i)
  partners = paired_partners(rows)
  out = []
  for (peer, key, paired, malloc), idx in groups.items():
    rs = [rows[i] for i in idx]
    times = [t for r in rs for t in (r.get("round_s") or (r.get("result") or {}).get("round_s")
                                     or [])]
    w = rs[0]["workload"]
    failed = [r.get("reference_why") or "no reference check" for r in rs
              if not r.get("reference_ok")]
    by_strategy: dict[str, list] = {}
    for j, pj in enumerate(partners):
      if pj in idx:
        by_strategy.setdefault(rows[j]["strategy"], []).append(rows[j])
    out.append({"peer": peer, "key": key, "workload": w, "rows": rs, "round_s": times,
                "paired_strategies": paired, "host_malloc": malloc,
                "blocks": sorted({r.get("paired_block", -1) for r in rs}),
                "updates": rate_spread(w["num_clients"], times),
                "ours": {k: _pool_rounds(v) for k, v in by_strategy.items()},
                "published": not failed, "why_not": sorted(set(failed)),
                "why": rs[0].get("reference_why", "")})
  return out


def _engine_vs_ceiling(e, rr, k):
  """One row of the engine-vs-ceiling table: engine row `e` against the ceiling at its streams."""
  cen = pick_ceiling(rr, k, _streams_of(e))
  esp, csp = row_spreads(e), (row_spreads(cen) if cen else {})
  chunk = f", chunk {e['chunk']}" if e.get("chunk") else ""
  return (f"| {_wl(e['workload'])} | {e['strategy']}{chunk}, {e['devices']} dev, "
          f"{_streams_of(e)} stream(s){_malloc_note(e)} | {_iqr(esp['images_per_s'], '{:.0f}')} "
          f"| {_ceiling_label(cen).strip(' ()') or '–'} "
          f"| {_iqr(csp.get('images_per_s'), '{:.0f}')} "
          f"| {_ratio(e['images_per_s'], cen['images_per_s'] if cen else None)} |")


def _ratio(a, b):
  return _f(a / b if a and b else None, "{:.2f}×")


def _meta_lines(meta: dict[str, Any], source: str) -> list[str]:
  m = meta.get("machine", {})
  cmds = " then ".join(f"`{c.strip()}`" for c in meta["command"].strip("`").split("` then `"))
  return [f"- **Source:** `{source}`",
          f"- **Date:** {meta['started']} (wall {meta['wall_s'] / 60:.1f} min)",
          f"- **Command(s):** {cmds}",
          f"- **Machine:** {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, "
          f"{m.get('mem_total_gib', '?')} GiB, {m.get('platform', '?')}, Python "
          f"{m.get('python', '?')}; load average at the end "
          f"{_f((m.get('load_avg_end') or [None])[0], '{:.1f}')}. Every row carries the 1-min "
          "load average when it was written (`load`).",
          "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
          ""]


def render_results(res: dict[str, Any], source: str) -> list[str]:
  """The tables of one results JSON (CPU or GPU run)."""
  rows = res["rows"]
  out = _meta_lines(res["meta"], source)
  peaks = [r for r in rows if r["kind"] == "peak" and r.get("paired_block") is None]
  if peaks:
    out += ["Measured peak (best-of-5 jitted f32 matmul, in the process of the rows it "
            "normalises): " + "; ".join(
                _peak_text(p) for p in peaks), ""]
  sources = sorted({str(r.get("flops_source")) for r in rows
                    if r["kind"] == "round" and r.get("flops_source")})
  if sources:
    out += ["FLOPs counted: " + "; ".join(f"`{s}`" for s in sources) + (
        f" ({res['meta']['flops_recount']})" if res["meta"].get("flops_recount") else "") +
            ". On a GPU, XLA's cost analysis of the GPU-compiled step counts cuDNN/cuBLAS calls "
            "as zero, so the step is compiled for a CPU and counted there.", ""]
  rr = [r for r in rows if r["kind"] == "round" and r.get("paired_block") is None]
  sweep = [r for r in rr if r["strategy"] != "centralised"]
  out += ["### Rounds by strategy", "",
          "Each timed figure is the median [interquartile range] over the row's timed "
          "repetitions (`reps`), after compile and one awaited untimed run. FLOPs/update = XLA "
          "cost analysis of one compiled client SGD step × local steps; MFU = FLOPs/update × "
          "median updates/s ÷ the measured matmul peak. Peak RSS = the process's VmHWM, reset "
          "before each row. Data share = host data step ÷ (that + median round). Sequential "
          "rows are timed on their first `sequential_max_clients` clients.", "",
          "| row | workload | dev | strategy | what it is | chunk | reps | updates/s | images/s "
          "| GFLOP/update | MFU | compile s | round s | data share | peak RSS GiB | load |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in sweep:
    sp = row_spreads(r)
    label = strategy_label(r["strategy"])
    if r["strategy"].startswith("host_loop") and r.get("streams"):
      label += f", {r['streams']} streams"
    label += _malloc_note(r)
    timed = r.get("clients_timed")
    wl_cell = _wl(r["workload"]) + (
        f" (timed on {timed})" if timed and timed < r["workload"]["num_clients"] else "")
    out.append(
        f"| {r['name']} | {wl_cell} | {r['devices']} | {r['strategy']} | {label} "
        f"| {_f(r.get('chunk'), '{}')} | {len(r.get('round_s') or [])} "
        f"| {_iqr(sp['client_updates_per_s'])} | {_iqr(sp['images_per_s'], '{:.0f}')} "
        f"| {_f(r['flops_per_update'] / 1e9, '{:.3f}')} | {_f(100 * r['mfu'], '{:.1f}%')} "
        f"| {_f(r.get('compile_s'), '{:.1f}')} | {_iqr(sp['round_s'], '{:.3g}')} "
        f"| {_f(100 * r['data_share'], '{:.1f}%') if r.get('data_share') is not None else '–'} "
        f"| {_gib(r.get('peak_rss_bytes'))} | {_load(r)} |")
  cen_rows = [r for r in rr if r["strategy"] == "centralised"]
  if cen_rows:
    out += ["", "### Centralised ceiling: every batch size", "",
            "Plain SGD with the same model on the same images (the round's images, at most "
            "`centralised_max_images`) at each batch size (all = the whole pool), in 1 stream "
            "and in as many streams (threads, each with its own params) as the host loop. "
            "Rows marked im2col run the model's im2col convolutions (`model.conv_impl`); rows "
            "marked \"steps per call\" run that many consecutive batches in one jitted call "
            "(`centralised_fused`, the counterpart of the host loop's fused steps). The best "
            "images/s at a stream count, of any kind, is the ceiling at that count (**bold**).",
            "",
            "| workload | batch | streams (active) | reps | images/s | MFU | load |",
            "|---|---|---|---|---|---|---|"]
    for r in cen_rows:
      best = pick_ceiling(rr, _key(r["workload"]), r.get("streams", 1))
      sp = row_spreads(r)
      cell = _iqr(sp["images_per_s"], "{:.0f}")
      if best is r:
        cell = f"**{cell}**"
      batch = f"all ({r['batch']})" if r.get("batch_is_all") else str(r.get("batch"))
      batch += _centralised_settings(r, im2col="im2col convs")
      out.append(f"| {_wl(r['workload'])} | {batch} | {r.get('streams', 1)} "
                 f"({r.get('active_streams', r.get('streams', 1))}) | "
                 f"{len(r.get('round_s') or [])} | {cell} | {_f(100 * r['mfu'], '{:.1f}%')} "
                 f"| {_load(r)} |")
  # The engine (what launch.fedface runs) against the ceiling at the same stream count.
  keys = sorted({_key(r["workload"]) for r in sweep}, key=str)
  out += ["", "### Engine vs the centralised ceiling (same stream count)", "",
          "One line per strategy `launch.fedface` runs (host loop with its streams or 1 "
          "stream, compiled round with the model's own convolutions or their im2col option: "
          "its best chunk); the "
          "ceiling is the best centralised batch size at that row's stream count. Ratio of "
          "medians.", "",
          "| workload | engine row | engine images/s | ceiling (batch, streams) | ceiling "
          "images/s | engine ÷ ceiling |", "|---|---|---|---|---|---|"]
  for k in keys:
    strats = sorted({r["strategy"] for r in sweep if is_engine_strategy(r["strategy"])})
    for strat in strats:
      for malloc in ("system", "keep"):
        eng = [r for r in sweep if _key(r["workload"]) == k and r["strategy"] == strat
               and r.get("images_per_s") and malloc_mode(r) == malloc]
        if eng:   # the ceiling is the best of every malloc setting (the baseline at its best)
          out.append(_engine_vs_ceiling(max(eng, key=lambda r: r["images_per_s"]), rr, k))

  # Peers, interleaved with ours.
  peers = pool_peers(rows)
  out += ["", "### Ours vs peers (interleaved: ours, peer, ours, peer, ...)", "",
          "Each block is one process of ours (the engine's host loop on the peer's workload) "
          "then one of the peer, on the identical workload JSON (same CNN, data bytes, init, "
          "loss, SGD steps, FedAvg weights); times are pooled over the blocks. A peer row is "
          "published only if every block's reference check passed: the peer's initial params "
          "equal ours bit for bit and its round-1 params equal our reference round to the "
          "stated relative tolerance.", ""]
  if not peers:
    out += ["No peer rows in this run.", ""]
  else:
    out += ["| workload | peer | blocks | ours updates/s | peer updates/s | ours ÷ peer | "
            "reference check |", "|---|---|---|---|---|---|---|"]
    for p in sorted(peers, key=lambda p: (str(p["key"]), p["peer"], p["paired_strategies"],
                                          p["host_malloc"])):
      for strategy, ours in sorted(p["ours"].items()) or [("host_loop", None)]:
        o = ours["updates"] if ours else None
        # The peer is compared with what ours ran next to it (the host loop unless the peer
        # entry named other paired strategies, e.g. the fused host loop).
        label = p["peer"] if strategy == "host_loop" else f"{p['peer']} (ours: {strategy})"
        if p["host_malloc"] == "keep":
          label += ", both with malloc keep"
        if p["published"]:
          pu = p["updates"]
          ratio = _ratio(o["median"] if o else None, pu["median"] if pu else None)
          out.append(f"| {_wl(p['workload'])} | {label} | {len(p['blocks'])} | {_iqr(o)} | "
                     f"{_iqr(pu)} | {ratio} | passed: {p['why']} |")
        else:
          out.append(f"| {_wl(p['workload'])} | {label} | {len(p['blocks'])} | {_iqr(o)} | "
                     f"**not published** | – | failed: {'; '.join(p['why_not'])} |")
    out += ["", "Peer details:", ""]
    for p in peers:
      res0 = p["rows"][0].get("result", {})
      extra = {k: res0.get(k) for k in ("version", "backend", "engine", "concurrent_clientapps",
                                         "jax", "torch", "ray") if k in res0}
      out.append(f"- {p['peer']} on {_wl(p['workload'])}: {json.dumps(extra)}; loads "
                 f"{', '.join(_load(r) for r in p['rows'])}. Command: `{p['rows'][0]['cmd']}`")
    out += [""]
    out += render_decomposition(rows, peers)
  ct = [r for r in rows if r["kind"] == "class_table"]
  out += ["### Class-embedding table at scale", ""]
  for r in ct:
    out += [f"CosFace logits (batch {r['batch']}) + spreadout of {r['queries']} query rows "
            f"against all rows (blocks of {r['block_size']}), grad w.r.t. the table and SGD, "
            f"table [{r['rows']:,} × {r['dim']}] f32 ({r['table_bytes'] / 2**30:.2f} GiB, "
            f"{r['per_device_table_bytes'] / 2**20:.0f} MiB per device) sharded over "
            f"{r['devices']} devices on \"classes\", table donated (load {_load(r)}):", "",
            f"- step time: {_iqr(spread(r['step_s']), '{:.2f}')} s over {len(r['step_s'])} "
            f"steps (compile {r['compile_s']:.1f} s); peak host RSS "
            f"{_gib(r['peak_rss_bytes'])} GiB",
            f"- compiled HLO: shapes with two dims ≥ rows/devices (a C×C matrix): "
            f"**{r['cxc_shapes']}**; full-table shapes: **{r['full_table_shapes']}**; "
            f"all-gathers of the table: **{r['all_gather_table']}** (of {r['all_gathers']}); "
            f"largest cross-device all-reduce: "
            f"{r.get('largest_cross_device_all_reduce_elems', 0):,} elements", ""]
  if not ct:
    out += ["The class-table step was not part of this run.", ""]
  errs = [r for r in rows if r["kind"] == "error"]
  if errs:
    out += ["### Errors (rows that did not run)", ""]
    out += [f"- {r.get('name')} {r.get('peer', r.get('strategy', ''))}: "
            f"`{r['error'].splitlines()[0][:240]}`" for r in errs]
    out += [""]
  return out


def decomposition(rows: list[dict[str, Any]], peers: list[dict[str, Any]]) -> list[dict]:
  """Per workload, ours ÷ FedJAX split into three ratios that multiply back to it exactly.

  Each peer p is first measured against the blocks of ours interleaved with it:
  r_p = median(p) ÷ median(ours paired with p), so drift between the peers' runs (other load,
  another part of the run) cancels. Then ours ÷ FedJAX = 1 / r_fedjax =
  [1 / r_bare@ours] × [r_bare@ours ÷ r_bare@fedjax] × [r_bare@fedjax ÷ r_fedjax]: the engine's
  own advantage at equal JAX, the JAX/XLA version share (the same bare loop in both venvs),
  FedJAX's framework overhead over that bare loop. Also the host loop's stream share (default
  streams ÷ 1 stream, sweep rows). Only published (reference-checked) peer rows enter; a
  workload lacking one of the three is skipped.
  """
  by = {(p["key"], p["host_malloc"], p["peer"]): p for p in peers
        if p["published"] and p["updates"] and "host_loop" in p["ours"]}
  out = []
  for key, malloc in sorted({(k, m) for k, m, _ in by}, key=str):
    fj, bo, bf = (by.get((key, malloc, n))
                  for n in ("fedjax", "bare_loop@ours", "bare_loop@fedjax"))
    if not (fj and bo and bf):
      continue
    rel = {}
    for name, p in (("fedjax", fj), ("bo", bo), ("bf", bf)):
      ours = p["ours"]["host_loop"]
      if not ours["updates"]:
        break
      rel[name] = p["updates"]["median"] / ours["updates"]["median"]
    if len(rel) < 3:
      continue
    sweep = {r["strategy"]: r for r in rows if r.get("kind") == "round"
             and r.get("paired_block") is None and _key(r["workload"]) == key
             and malloc_mode(r) == malloc}
    streams = None
    if "host_loop" in sweep and "host_loop-1stream" in sweep:
      streams = (sweep["host_loop"]["client_updates_per_s"]
                 / sweep["host_loop-1stream"]["client_updates_per_s"])
    out.append({"workload": fj["workload"], "host_malloc": malloc,
                "ours_vs_fedjax": 1.0 / rel["fedjax"],
                "engine_vs_bare_ours": 1.0 / rel["bo"], "jax_version": rel["bo"] / rel["bf"],
                "fedjax_overhead": rel["bf"] / rel["fedjax"], "streams_share": streams,
                "jax_ours": bo["rows"][0].get("result", {}).get("jax"),
                "jax_fedjax": bf["rows"][0].get("result", {}).get("jax")})
  return out


def render_decomposition(rows: list[dict[str, Any]], peers: list[dict[str, Any]]) -> list[str]:
  """The fairness decomposition table (`decomposition`), or nothing without the bare loops."""
  dec = decomposition(rows, peers)
  if not dec:
    return []
  out = ["### Where ours ÷ FedJAX comes from", "",
         "The same plain-JAX bare loop of jitted SGD steps (`scripts/peers/bare_loop_bench.py`, "
         "reference-checked like every peer) run in our venv and in FedJAX's splits the headline "
         "ratio into a product of three ratios: the engine's own advantage at equal JAX, the "
         "JAX/XLA version share, and FedJAX's framework overhead. Each peer enters as its median "
         "÷ the median of the blocks of ours interleaved with it, so the factors multiply back "
         "to the table above's ours ÷ FedJAX exactly, and load drift between the peers' runs "
         "cancels. The host loop's "
         "stream share (its default streams ÷ 1 stream, sweep rows) is part of the engine's "
         "own advantage.", "",
         "| workload | ours ÷ FedJAX | = engine ÷ bare loop (our JAX) | × bare loop: our JAX ÷ "
         "FedJAX's JAX | × bare loop ÷ FedJAX (framework) | host loop streams ÷ 1 stream |",
         "|---|---|---|---|---|---|"]
  for d in dec:
    malloc = " (malloc keep)" if d["host_malloc"] == "keep" else ""
    out.append(f"| {_wl(d['workload'])}{malloc} | {_ratio(d['ours_vs_fedjax'], 1)} "
               f"| {_ratio(d['engine_vs_bare_ours'], 1)} "
               f"| {_ratio(d['jax_version'], 1)} (jax {d['jax_ours']} ÷ {d['jax_fedjax']}) "
               f"| {_ratio(d['fedjax_overhead'], 1)} | {_ratio(d['streams_share'], 1)} |")
  return out + [""]


def _peak_text(p: dict[str, Any]) -> str:
  """One measured peak: device count and kind, f32 (and, on a GPU, bf16) matmul rate, load."""
  kind = f" {p['device_kind']}" if p.get("device_kind") and p.get("backend") != "cpu" else ""
  text = f"{p['devices']} dev{kind}: {p['peak_flops'] / 1e9:.1f} GFLOP/s"
  if p.get("peak_flops_bf16"):
    text += f" (bf16: {p['peak_flops_bf16'] / 1e9:.1f})"
  return text + f" (load {_load(p)})"


def render_roofline(roof: dict[str, Any], source: str) -> list[str]:
  """The roofline estimate of `scripts/benchmark_roofline.py`, labelled as an estimate."""
  out = ["**Estimate, not a measurement.** Roofline of the compiled vmapped round from XLA's "
         "cost analysis (FLOPs and bytes accessed of one vmapped client SGD step, compiled for "
         f"{roof.get('compiled_on', '?')}) against published GPU peaks; time per step = "
         "max(FLOPs ÷ peak compute, bytes ÷ peak bandwidth). Source: "
         f"`{source}` (command `{roof.get('command', '?')}`, {roof.get('date', '?')}, "
         f"jax {roof.get('versions', {}).get('jax', '?')}). Bytes follow the fusion of the "
         "backend it was compiled for, not XLA:GPU's; the data transfer, the server step and "
         "dispatch are ignored, so est. updates/s is an upper bound, not a prediction.", ""]
  for name, g in roof.get("gpus", {}).items():
    out.append(f"- {name}: " + ", ".join(f"{k} {v:g} TFLOP/s" for k, v in g["tflops"].items())
               + f", {g['bandwidth_tb_s']:g} TB/s; source: {g['source']}")
  out += ["", "| workload | chunk | GFLOP / client step | MB accessed / client step | FLOP/byte "
          "| GPU | peak used | bound | est. client updates/s | est. MFU bound |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for e in roof.get("entries", []):
    for est in e["estimates"]:
      w = e["workload"]
      h, wd = w["image_size"]
      label = (f"{w['model']} {h}×{wd}, {w.get('batch_size', w['images_per_client'])} img/step,"
               f" {w['local_steps']} steps")
      out.append(f"| {label} | {e['chunk']} | "
                 f"{e['flops_per_client_step'] / 1e9:.3f} | "
                 f"{e['bytes_per_client_step'] / 1e6:.1f} | "
                 f"{e['flops_per_client_step'] / max(e['bytes_per_client_step'], 1):.1f} | "
                 f"{est['gpu']} | {est['peak']} | {est['bound']} | "
                 f"{est['client_updates_per_s']:.3g} | {100 * est['mfu_bound']:.0f}% |")
  return out + [""]


def write_report(report_path: str, cpu_json: str | None = None, gpu_json: str | None = None,
                 roofline_json: str | None = None, withdrawn: str | None = None) -> str:
  """Writes BENCHMARKS.md at `report_path` from the given JSONs (missing ones are said so)."""
  notes = ""
  if os.path.isfile(report_path):
    text = open(report_path).read()
    if _NOTES_OPEN in text and _NOTES_CLOSE in text:
      notes = text[text.index(_NOTES_OPEN):text.index(_NOTES_CLOSE) + len(_NOTES_CLOSE)]
  if not notes:
    notes = f"{_NOTES_OPEN}\n(no analysis yet)\n{_NOTES_CLOSE}"
  out = ["# Benchmarks", "",
         "Generated by `reporting/benchmark_report.py` from committed JSONs under `benchmarks/` "
         "only; the analysis between the notes markers is hand-written and kept across "
         "regenerations.", "", notes, ""]
  if withdrawn:
    out += [withdrawn, ""]
  cpu = load_results(cpu_json)
  out += ["## CPU", ""]
  out += render_results(cpu, cpu_json) if cpu else [
      f"Not run: no CPU results JSON (`{cpu_json}`).", ""]
  out += ["## GPU", ""]
  gpu = load_results(gpu_json)
  if gpu:
    out += render_results(gpu, gpu_json)
  else:
    out += [f"**Not run**: there is no GPU results JSON (`{gpu_json}`); no figure below is a "
            "GPU measurement. On a GPU machine run:", "", "```bash",
            "JAX_PLATFORMS=cuda .venv/bin/python -m launch.benchmark \\",
            "    --config experiments/benchmark_gpu.py:devices=1 --workdir runs/benchmark_gpu",
            "```", ""]
    roof = load_results_roofline(roofline_json)
    out += render_roofline(roof, roofline_json) if roof else [
        f"No roofline estimate either (`{roofline_json}` absent; "
        "`scripts/benchmark_roofline.py` writes it).", ""]
  os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
  with open(report_path, "w") as f:
    f.write("\n".join(out))
  return report_path


def load_results_roofline(path: str | None) -> dict[str, Any] | None:
  if not path or not os.path.isfile(path):
    return None
  with open(path) as f:
    roof = json.load(f)
  if not isinstance(roof, dict) or "entries" not in roof or "gpus" not in roof:
    raise ValueError(f"{path} is not a roofline JSON (needs 'entries' and 'gpus')")
  return roof
