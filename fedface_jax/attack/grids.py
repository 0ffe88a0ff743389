"""PNG figures of an attack: a labelled row per stage (original / reconstruction / enhanced).

One column per image. Qualitative grids are how the paper argues recognisability (ATTACK.md 7.2),
so every run saves one. Pillow only (no display needed); images are nearest-upsampled to a common
cell size so low-res latents stay visibly blocky.
"""

from collections.abc import Sequence
import os
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from fedface_jax.attack import metrics


def _to_cell(img: np.ndarray, cell: int) -> Image.Image:
  return Image.fromarray(img).resize((cell, cell), Image.NEAREST)


def save_grid(path: str | os.PathLike, rows: Sequence[Any], row_labels: Sequence[str],
              col_labels: Sequence[str] | None = None, cell: int | None = None, pad: int = 2,
              label_width: int = 110) -> np.ndarray:
  """Writes a labelled grid PNG and returns it as a uint8 array [H, W, 3].

  Args:
    path: output file (parent folders are created).
    rows: arrays [N, h, w, 3] (uint8, or float in [0, 1]); all rows need the same N, sizes may
      differ.
    row_labels: one label per row, drawn on the left.
    col_labels: optional label per column (e.g. PSNR), drawn under the last row.
    cell: cell side in pixels (default: the largest image side among the rows, at least 32).
    pad: pixels between cells.
    label_width: width of the left label column.
  """
  imgs = [metrics.to_uint8(r) for r in rows]
  if len(imgs) != len(row_labels):
    raise ValueError(f"{len(imgs)} rows but {len(row_labels)} labels")
  n = {len(r) for r in imgs}
  if len(n) != 1:
    raise ValueError(f"all rows need the same number of images, got {sorted(n)}")
  n = n.pop()
  if col_labels is not None and len(col_labels) != n:
    raise ValueError(f"{len(col_labels)} column labels for {n} columns")
  cell = cell or max(32, max(max(r.shape[1:3]) for r in imgs))
  footer = 14 if col_labels is not None else 0
  width = label_width + n * (cell + pad) + pad
  height = len(imgs) * (cell + pad) + pad + footer
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for i, (row, label) in enumerate(zip(imgs, row_labels)):
    y = pad + i * (cell + pad)
    draw.text((4, y + cell // 2 - 6), str(label), fill=(0, 0, 0), font=font)
    for j, img in enumerate(row):
      canvas.paste(_to_cell(img, cell), (label_width + pad + j * (cell + pad), y))
  if col_labels is not None:
    y = len(imgs) * (cell + pad) + pad
    for j, label in enumerate(col_labels):
      draw.text((label_width + pad + j * (cell + pad), y), str(label), fill=(0, 0, 0), font=font)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)
  return np.asarray(canvas)


def save_attack_grid(path: str | os.PathLike, originals: Any, reconstructions: Any,
                     enhanced: Any | None = None, psnr_values: Sequence[float] | None = None,
                     max_columns: int = 16) -> np.ndarray:
  """Original / reconstruction (/ enhanced) rows for the first ``max_columns`` images.

  Columns get PSNR labels when ``psnr_values`` is given.
  """
  rows = [np.asarray(originals)[:max_columns], np.asarray(reconstructions)[:max_columns]]
  labels = ["original", "reconstruction"]
  if enhanced is not None:
    rows.append(np.asarray(enhanced)[:max_columns])
    labels.append("enhanced")
  cols = None if psnr_values is None else [f"{p:.1f}dB" for p in list(psnr_values)[:max_columns]]
  return save_grid(path, rows, labels, col_labels=cols)
