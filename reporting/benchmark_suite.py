"""The benchmark suite: sweep workers, class-table worker and peers, then BENCHMARKS.md.

Why this module exists: every figure in BENCHMARKS.md must come from one command on one machine
state. `run_suite` is that command's body (`launch.benchmark`). It runs each device count in its
own subprocess (a fake-device count is fixed when JAX starts), whose rows come from
`fedface_jax/benchmark/worker.py`, runs the peer frameworks in their own venvs, and writes
`results.jsonl` plus BENCHMARKS.md (`reporting/benchmark_report.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import ml_collections as mlc

from fedface_jax import host_memory
from fedface_jax.benchmark import worker
from reporting import benchmark_report
from reporting import results_md

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_reference(workdir: str, name: str, w, log_path: str, timeout_s: float) -> str:
  """Writes the reference round of workload `w` (`workload.write_reference`) in a subprocess.

  A subprocess because the parent runs no JAX. Returns the .npz path every peer block is checked
  against (`--reference`): the peer's own init must equal it bit for bit and its round-1 params
  must agree to `peer_reference_rtol`.
  """
  wpath = os.path.join(workdir, f"workload_{name}.json")
  w.save(wpath)
  ref = wpath[:-len(".json")] + "_ref.npz"
  code = ("import sys; from fedface_jax.benchmark import workload as wl; "
          "wl.write_reference(sys.argv[2], wl.Workload.load(sys.argv[1]))")
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  with open(log_path, "w") as log:
    proc = subprocess.run([sys.executable, "-c", code, wpath, ref], cwd=REPO_ROOT, env=env,
                          stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
  if proc.returncode or not os.path.isfile(ref):
    raise RuntimeError(f"reference round failed (rc={proc.returncode}); see {log_path}")
  return ref


def reference_verdict(result: dict[str, Any] | None, rtol: float) -> tuple[bool, str]:
  """(publishable, why) for one peer result: the reference check is mandatory.

  Publishable only if the result carries a `check` whose init matched bit for bit and whose
  round-1 params agree with our reference round to a relative difference <= `rtol` (relative
  to the largest absolute parameter). A result without a check is not published.
  """
  check = (result or {}).get("check")
  if not isinstance(check, dict):
    return False, "no reference check (peer not run with --reference)"
  rel = check.get("round1_max_rel_diff")
  init = check.get("init_max_abs_diff")
  if rel is None or init is None:
    return False, f"incomplete reference check {check}"
  if init != 0.0:
    return False, f"initial params differ from the reference (max abs diff {init:.3g})"
  if not rel <= rtol:
    return False, f"round-1 params differ from the reference: max rel diff {rel:.3g} > {rtol:g}"
  return True, f"round-1 params match the reference: max rel diff {rel:.2g} <= {rtol:g}"


def run_peers(cfg: mlc.ConfigDict, workdir: str, out_path: str,
              config_args: list[str] | None = None) -> None:
  """Runs each configured peer, interleaved with ours, with the mandatory reference check.

  For each peer: `peer_blocks` blocks, each one worker process of ours (`paired_strategies` on
  the peer's run, rows tagged `paired_block`) then one process of the peer (its rounds tagged
  with the same block), so load drift over the run hits both sides alike. Every peer process
  gets `--reference`; its row records `reference_ok` / `reference_why` (`reference_verdict`),
  and the report publishes only rows whose check passed. Failures become error rows.
  """
  config_args = list(config_args or [])
  rtol = float(cfg.peer_reference_rtol)
  refs: dict[str, str] = {}
  for peer in cfg.peers:
    peer = dict(peer)
    run = next((dict(r) for r in cfg.runs if r["name"] == peer["run"]
                and int(r.get("devices", 1)) == 1), None)
    if run is None:
      raise ValueError(f"peer {peer} names no 1-device run {peer['run']!r}")
    w = worker.make_workload(cfg, run)
    label = peer_label(peer)
    base = {"kind": "peer", "name": run["name"], "peer": label, "venv": peer["venv"],
            "workload": w.to_dict(), "host_malloc": cfg.host_malloc}
    # What ours runs next to this peer: the config's paired_strategies, or the peer entry's own
    # (e.g. the fused host loop against FedJAX on a multi-step workload).
    paired_args = []
    if peer.get("paired_strategies"):
      base["paired_strategies"] = [str(x) for x in peer["paired_strategies"]]
      paired_args = [f"--config.paired_strategies={tuple(base['paired_strategies'])!r}"]
    py = peer_python(peer["venv"])
    script = os.path.join(REPO_ROOT, "scripts", "peers",
                          f"{peer.get('script', peer['venv'])}_bench.py")
    if w.model not in wl_bench_models():
      worker.emit(out_path, {**base, "kind": "error", "error": f"peers run only the benchmark "
                             f"CNNs, not {w.model!r}"})
      continue
    if not os.path.isfile(py):
      worker.emit(out_path, {**base, "kind": "error", "error": f"{py} missing: run "
                             "scripts/setup_peer_venvs.sh"})
      continue
    try:
      if run["name"] not in refs:
        refs[run["name"]] = write_reference(
            workdir, run["name"], w, os.path.join(workdir, f"reference_{run['name']}.log"),
            float(cfg.worker_timeout_s))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
      worker.emit(out_path, {**base, "kind": "error", "error": repr(e)[:500]})
      continue
    wpath = refs[run["name"]][:-len("_ref.npz")] + ".json"
    rounds = int(peer.get("rounds", cfg.peer_rounds_per_block))
    for block in range(int(cfg.peer_blocks)):
      tag = f"{label}_{run['name']}_b{block}".replace("@", "_")
      rc = _subprocess(config_args + ["--worker_devices=1", f"--worker_out={out_path}",
                                      f"--config.paired_run={run['name']}",
                                      f"--config.paired_block={block}",
                                      f"--config.paired_peer={label}"] + paired_args, 1,
                       os.path.join(workdir, f"paired_{tag}.log"), cfg.worker_timeout_s)
      if rc:
        worker.emit(out_path, {"kind": "error", "name": run["name"], "paired_block": block,
                               "error": f"paired worker exited with {rc}; see paired_{tag}.log"})
      cmd = [py, script, "--workload", wpath, "--rounds", str(rounds),
             "--reference", refs[run["name"]]]
      cmd += list(peer.get("args", ()))
      env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
      if cfg.host_malloc == "keep":
        env.update(host_memory.malloc_env())
      t0 = time.perf_counter()
      try:
        with open(os.path.join(workdir, f"peer_{tag}.log"), "w") as log:
          proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                                timeout=float(peer.get("timeout_s", 900)), check=False)
      except subprocess.TimeoutExpired as e:
        worker.emit(out_path, {**base, "kind": "error", "paired_block": block,
                               "error": repr(e)[:500], "cmd": " ".join(cmd)})
        continue
      lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
      if proc.returncode or not lines:
        worker.emit(out_path, {**base, "kind": "error", "paired_block": block,
                               "error": f"rc={proc.returncode}; see peer_{tag}.log",
                               "cmd": " ".join(cmd)})
        continue
      res = json.loads(lines[-1])
      ok, why = reference_verdict(res, rtol)
      worker.emit(out_path, {**base, "result": res, "wall_s": time.perf_counter() - t0,
                             "paired_block": block, "round_s": res.get("round_s"),
                             "client_updates_per_s": res["client_updates_per_s"],
                             "images_per_s": res["images_per_s"], "reference_ok": ok,
                             "reference_why": why, "reference_rtol": rtol,
                             "cmd": " ".join(cmd)})


def peer_label(peer: dict[str, Any]) -> str:
  """The peer's name in rows and tables: `label`, else the script and venv it runs in.

  FedJAX in its venv is "fedjax"; the plain-JAX bare loop is "bare_loop@fedjax" in the FedJAX
  venv (JAX 0.4.35) and "bare_loop@ours" in the project's venv.
  """
  if peer.get("label"):
    return str(peer["label"])
  script = peer.get("script", peer["venv"])
  return script if script == peer["venv"] else f"{script}@{peer['venv']}"


def peer_python(venv: str) -> str:
  """The interpreter of a peer venv: `.peer_venvs/<venv>`, or this process's for "ours"."""
  if venv == "ours":
    return sys.executable
  return os.path.join(REPO_ROOT, ".peer_venvs", venv, "bin", "python")


def wl_bench_models() -> tuple[str, ...]:
  from fedface_jax.benchmark import workload as wl  # pylint: disable=g-import-not-at-top
  return tuple(wl.BENCH_MODELS)


def worker_platforms(cfg: mlc.ConfigDict) -> str:
  """JAX_PLATFORMS for the workers when the caller set none.

  The CPU backend (fake CPU devices) for a CPU run; for a GPU run "", which lets JAX start
  every backend: the accelerator, and the CPU that FLOPs are counted on.
  """
  return "" if cfg.results_role == "gpu" else "cpu"


def _subprocess(args: list[str], devices: int, log_path: str, timeout_s: float,
                platforms: str = "cpu") -> int:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env.setdefault("JAX_PLATFORMS", platforms)
  with open(log_path, "w") as log:
    try:
      proc = subprocess.run([sys.executable, "-m", "launch.benchmark"] + args, cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                            check=False)
    except subprocess.TimeoutExpired:
      # Its rows so far are in results.jsonl; the caller records the timeout as an error row.
      log.write(f"\n[benchmark_suite] killed after worker_timeout_s={timeout_s}\n")
      return 124
  return proc.returncode


def config_args(config_file: str, overrides: dict[str, Any]) -> list[str]:
  """`--config=<file[:arg]>` and one `--config.<key>=<value>` per override, as the workers need.

  `config_file` and `overrides` are what the parent's config flag parsed
  (`config_flags.get_config_filename` / `get_override_values`); each value is written back in the
  flag syntax (tuples as Python literals), so a worker rebuilds the parent's config exactly.
  """
  return [f"--config={config_file}"] + [f"--config.{k}={v}" for k, v in overrides.items()]


def run_suite(cfg: mlc.ConfigDict, workdir: str, config_args: list[str], command: str,
              parts: tuple[str, ...]) -> str:
  """Runs the selected parts (sweep, class_table, peers) and writes BENCHMARKS.md.

  `config_args` (`--config=<file[:arg]>` and every `--config.<key>=<value>` override) are passed
  on to each worker, so the workers measure the config the parent was given.
  """
  # Every worker (ours) runs with the config's host malloc setting; the peers get the same
  # through glibc's environment variables (`run_peers`), so no side has an allocator the other
  # lacks.
  config_args = list(config_args) + [f"--host_malloc={cfg.host_malloc}"]
  # Workers run from the repository root: a relative --workdir would land elsewhere for them.
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  out_path = os.path.join(workdir, "results.jsonl")
  if not cfg.append and os.path.exists(out_path):
    os.remove(out_path)
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  t0 = time.perf_counter()
  if "sweep" in parts:
    for devices in sorted({int(dict(r).get("devices", 1)) for r in cfg.runs}):
      rc = _subprocess(config_args + [f"--worker_devices={devices}",
                        f"--worker_out={out_path}"], devices,
                       os.path.join(workdir, f"worker_{devices}dev.log"), cfg.worker_timeout_s,
                       platforms=worker_platforms(cfg))
      if rc:
        worker.emit(out_path, {"kind": "error", "name": f"worker_{devices}dev",
                               "error": f"worker exited with {rc}; see worker_{devices}dev.log"})
  if "class_table" in parts and cfg.class_table.enabled:
    rc = _subprocess(config_args + ["--worker_class_table",
                      f"--worker_out={out_path}"], int(cfg.class_table.devices),
                     os.path.join(workdir, "class_table.log"), cfg.worker_timeout_s,
                     platforms=worker_platforms(cfg))
    if rc:
      worker.emit(out_path, {"kind": "error", "name": "class_table",
                             "error": f"class-table worker exited with {rc}; see class_table.log"})
  if "peers" in parts:
    run_peers(cfg, workdir, out_path, config_args)
  meta = {"started": started, "wall_s": time.perf_counter() - t0, "command": command,
          "config": " ".join(config_args), "parts": list(parts),
          "machine": results_md.machine_info(), "versions": versions()}
  meta_path = os.path.join(workdir, "meta.json")
  if cfg.append and os.path.isfile(meta_path):
    # Appended invocations: keep the first start time and list every command.
    with open(meta_path) as f:
      old = json.load(f)
    meta["started"] = old["started"]
    meta["wall_s"] += old["wall_s"]
    meta["command"] = old["command"] + "` then `" + command
  with open(meta_path, "w") as f:
    json.dump(meta, f, indent=1)
  return write_results_and_report(cfg, workdir, meta)


def write_results_and_report(cfg: mlc.ConfigDict, workdir: str, meta: dict[str, Any]) -> str:
  """Writes the run's results JSON (`{"meta", "rows"}`) and regenerates the report from JSONs.

  `results_json` (default `<workdir>/results.json`) is where this run's figures go; the
  published configs point it under `benchmarks/`, which is committed, and BENCHMARKS.md is
  rendered from those files only (`results_role` says whether this run is the CPU or the GPU
  section; the other section comes from its committed JSON, if any).
  """
  rows = benchmark_report.load_rows(os.path.join(workdir, "results.jsonl"))
  res_path = cfg.results_json or os.path.join(workdir, "results.json")
  os.makedirs(os.path.dirname(os.path.abspath(res_path)), exist_ok=True)
  with open(res_path, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=0)
    f.write("\n")
  paths = {"cpu": cfg.cpu_results_json, "gpu": cfg.gpu_results_json}
  role = cfg.results_role
  if role not in paths:
    raise ValueError(f"results_role must be 'cpu' or 'gpu', got {role!r}")
  paths[role] = res_path
  report = cfg.report_path or os.path.join(workdir, "BENCHMARKS.md")
  return benchmark_report.write_report(report, paths["cpu"] or None, paths["gpu"] or None,
                                       cfg.roofline_json or None)


def versions() -> dict[str, str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for p in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections"):
    try:
      out[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      out[p] = "missing"
  return out
