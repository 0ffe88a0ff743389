"""PNG figures for verification results: ROC curves (log FAR axis) and metric-vs-x curves.

Why: low-FAR behaviour is the point of face verification, so ROC curves are drawn on a log FAR
axis with the reported operating points marked; TAR-vs-round curves show federated progress.
Uses the non-interactive Agg backend so it works on headless training machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

import numpy as np


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def downsample_roc(fpr: Any, tpr: Any, num: int = 2000) -> tuple[np.ndarray, np.ndarray]:
  """At most ~`num` points of a (possibly millions-point) ROC, log-spaced in FAR.

  For each FAR on a log grid the last curve point with fpr <= that FAR is kept (the staircase's
  upper-left corner), so the drawn curve never overstates TAR.
  """
  fpr = np.asarray(fpr, np.float64)
  tpr = np.asarray(tpr, np.float64)
  if fpr.size <= num:
    return fpr, tpr
  pos = fpr[fpr > 0]
  lo = pos.min() if pos.size else 1e-6
  grid = np.logspace(np.log10(lo), 0.0, num)
  idx = np.searchsorted(fpr, grid, side="right") - 1
  idx = np.unique(np.concatenate([[0], idx[idx >= 0], [fpr.size - 1]]))
  return fpr[idx], tpr[idx]


def save_roc_png(curves: Mapping[str, tuple[Any, Any]], path: str,
                 fars_marked: Sequence[float] = (1e-4, 1e-3, 1e-2), title: str | None = None,
                 min_far: float | None = None) -> str:
  """Draws ROC curves ``{name: (fpr, tpr)}`` with a log FAR axis and writes a PNG.

  Args:
    curves: per name, FAR and TAR arrays (e.g. from `roc_curve_points`).
    path: output file; parent folders are created.
    fars_marked: vertical dotted lines at these FARs.
    title: optional title.
    min_far: left end of the FAR axis; default the smallest positive FAR over all curves.

  Returns:
    `path`.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
  smallest = 1.0
  for name, (fpr, tpr) in curves.items():
    f, t = downsample_roc(fpr, tpr)
    pos = f[f > 0]
    if pos.size:
      smallest = min(smallest, float(pos.min()))
    ax.step(np.maximum(f, 1e-12), t, where="post", label=name, linewidth=1.3)
  if min_far is not None:
    left = min_far
  else:  # show the marked FARs even when a curve reaches TAR=1 at FAR=0 (no positive FAR).
    left = max(min([smallest, 1e-2, *fars_marked]), 1e-8)
  for far in fars_marked:
    if far >= left:
      ax.axvline(far, color="gray", linestyle=":", linewidth=0.8)
  ax.set_xscale("log")
  ax.set_xlim(left, 1.0)
  ax.set_ylim(0.0, 1.01)
  ax.set_xlabel("False accept rate")
  ax.set_ylabel("True accept rate")
  ax.grid(True, which="major", alpha=0.3)
  if title:
    ax.set_title(title)
  if curves:
    ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def save_metric_curve_png(xs: Any, ys_by_name: Mapping[str, Any], path: str, xlabel: str,
                          ylabel: str, title: str | None = None, logy: bool = False) -> str:
  """Line plot of several named series, e.g. TAR@FAR vs federated round.

  Args:
    xs: shared x values, or a mapping name -> x values when series differ in length.
    ys_by_name: name -> y values.
    path: output PNG; parent folders are created.
    xlabel: x axis label.
    ylabel: y axis label.
    title: optional title.
    logy: log-scale y axis.

  Returns:
    `path`.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, ys in ys_by_name.items():
    x = xs[name] if isinstance(xs, Mapping) else xs
    x, y = np.asarray(x), np.asarray(ys)
    if x.shape != y.shape:
      raise ValueError(f"series {name!r}: {x.shape} x values but {y.shape} y values")
    ax.plot(x, y, marker="o" if x.size <= 30 else None, markersize=3, label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  ax.grid(True, alpha=0.3)
  if title:
    ax.set_title(title)
  if ys_by_name:
    ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
