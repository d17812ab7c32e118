"""Tile geometry of sliding-window inference and the static per-scale work plan.

Two tilings (`config.eval.tiling`) of the image resized to scale s:

  'nvidia'  NVIDIA eval.py `sliding_window_cropping`: square tiles of side
            int(crop_size * max(s, 1)) with stride ceil(tile * (1 - overlap)); the last tile of
            a row/column is aligned to the image border, tiles are clipped to the image (an
            image smaller than the tile is one tile). The flipped variant is the mirrored
            image, tiled the same way.
  'semseg'  hszhao/semseg tool/test.py `scale_process`: an image smaller than the crop is
            padded (centred, half before) with the mean, i.e. with 0 after normalisation;
            tiles are always crop_size square (not grown with the scale) and start at
            i * ceil(crop * 2/3), the last one aligned to the padded border. The flip is per
            tile: the mirrored tile covers the same pixels.

Mode `whole` (and `pooling`) is one tile covering the scaled image. Per-pixel tile averages
divide by the number of tiles covering each pixel (`tile_count`); the original eval.py's
divisor has an indexing bug, reproduced by `tile_average='original'` (`original_tile_count`).

A `ScalePlan` fixes everything static about one scale so that the device work has fixed
shapes: (variant, tile) work items go through the model `chunk` at a time (every call has one
shape, so one compilation per crop shape), `chunk` chosen from a per-device pixel budget.
"""
from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.inference import resize as resize_policy


class TilingSettings(resize_policy.ResizeSettings, Protocol):
  """The fields of settings.InferenceSettings that lay out tiles and batches (a protocol:
  settings.py validates against TILINGS and is not imported back)."""
  mode: str
  crop_size: int
  overlap: float
  scales: tuple[float, ...]
  crop_budget_mpix: float
  tiling: str

  @property
  def num_variants(self) -> int: ...


TILINGS = ("nvidia", "semseg")
TILE_AVERAGES = ("pixel", "original")
Box = tuple[int, int, int, int]  # (y1, y2, x1, x2), end-exclusive


def sliding_boxes(height: int, width: int, tile: int, overlap: float) -> tuple[Box, ...]:
  """(y1, y2, x1, x2) tiles of the original `sliding_window_cropping`, in its order.

  Columns (x) are the outer loop, rows (y) the inner one. Unlike the original, an image much
  smaller than the tile still gets one tile (the original computes zero tiles there and fails).
  """
  stride = math.ceil(tile * (1 - overlap))
  n_x = max(1, math.ceil((width - tile) / stride) + 1)
  n_y = max(1, math.ceil((height - tile) / stride) + 1)
  boxes = []
  for ix in range(n_x):
    for iy in range(n_y):
      x2 = min(ix * stride + tile, width)
      y2 = min(iy * stride + tile, height)
      boxes.append((max(y2 - tile, 0), y2, max(x2 - tile, 0), x2))
  return tuple(boxes)


def semseg_boxes(height: int, width: int, crop: int, overlap: float) -> tuple[Box, ...]:
  """(y1, y2, x1, x2) tiles of semseg's `scale_process` on a (padded) image >= crop.

  The stride is ceil(crop * (1 - overlap)) computed exactly (semseg: ceil(crop * 2/3); the
  float 1 - 1/3 rounds up and would give crop 480 a stride of 321 instead of 320).
  """
  rate = 1 - fractions.Fraction(overlap).limit_denominator(10**6)
  stride = math.ceil(crop * rate)
  grid_h = -(-(height - crop) // stride) + 1
  grid_w = -(-(width - crop) // stride) + 1
  boxes = []
  for ih in range(grid_h):
    for iw in range(grid_w):
      y2 = min(ih * stride + crop, height)
      x2 = min(iw * stride + crop, width)
      boxes.append((y2 - crop, y2, x2 - crop, x2))
  return tuple(boxes)


def tile_count(boxes: Sequence[Box], height: int, width: int) -> jax.Array:
  """(height, width) float32: how many of `boxes` cover each pixel (`tile_average='pixel'`)."""
  count = jnp.zeros((height, width), jnp.float32)
  for y1, y2, x1, x2 in boxes:
    count = count.at[y1:y2, x1:x2].add(1.0)
  return count


def original_tile_count(boxes: Sequence[Box], height: int, num_classes: int) -> jax.Array:
  """The divisor of the original `reverse_mapping`, bug included: (height, K) per row/class.

  It counts with `count[y1:y2, x1:x2] += 1` on a (K, h, w) array, i.e. classes y1:y2 and rows
  x1:x2: a per-row (and for y1 < K per-class) count, constant along each row. Where it is 0
  the original divides by zero. Single-scale argmax without flip is unaffected (one positive
  factor per pixel); flip and multi-scale averages are weighted by it.
  """
  count = jnp.zeros((height, num_classes), jnp.float32)
  for y1, y2, x1, x2 in boxes:
    count = count.at[x1:x2, y1:y2].add(1.0)
  return count


@dataclasses.dataclass(frozen=True)
class ScalePlan:
  """The static layout of one scale: resized size, crop shape, tiles and chunking."""
  scale: float
  scaled_hw: tuple[int, int]
  crop_hw: tuple[int, int]
  boxes: tuple[Box, ...]
  chunk: int  # work items (variant, tile) per model call
  items: np.ndarray  # (num_chunks, chunk, 3) int32 [variant, y1, x1]
  weights: np.ndarray  # (num_chunks, chunk) float32, 0 for padding items
  padded_hw: tuple[int, int] = (0, 0)  # canvas size: scaled_hw plus semseg's mean padding
  pad_tl: tuple[int, int] = (0, 0)  # (top, left) padding


def make_plans(height: int, width: int, settings: TilingSettings, *,
               images_per_device: int) -> tuple[ScalePlan, ...]:
  """One `ScalePlan` per scale for (height, width) images."""
  plans = []
  budget = settings.crop_budget_mpix * 2**20
  for s in settings.scales:
    hs, ws = resize_policy.scaled_size(height, width, s, settings)
    if hs < 1 or ws < 1:
      raise ValueError(f"config.eval.scales: scale {s} makes the {height}x{width} image "
                       f"{hs}x{ws}")
    (ph, pw), pad_tl = (hs, ws), (0, 0)
    if settings.mode == "sliding" and settings.tiling == "semseg":
      crop = settings.crop_size
      ph, pw = max(hs, crop), max(ws, crop)
      pad_tl = ((ph - hs) // 2, (pw - ws) // 2)
      boxes = semseg_boxes(ph, pw, crop, settings.overlap)
    elif settings.mode == "sliding":
      boxes = sliding_boxes(hs, ws, int(settings.crop_size * max(s, 1.0)), settings.overlap)
    else:
      boxes = ((0, hs, 0, ws),)
    crop_hw = (boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2])
    # semseg flips each tile: its mirrored twin sits at the mirrored x in the flipped image.
    mirror = settings.tiling == "semseg"
    work = [(v, y1, pw - x2 if (v and mirror) else x1) for v in range(settings.num_variants)
            for (y1, _, x1, x2) in boxes]
    # As many items per call as the budget allows, then evened out so no call is mostly padding.
    most = max(1, int(budget // (images_per_device * crop_hw[0] * crop_hw[1])))
    num_chunks = math.ceil(len(work) / min(most, len(work)))
    chunk = math.ceil(len(work) / num_chunks)
    padded = work + [work[0]] * (num_chunks * chunk - len(work))
    weights = np.zeros(num_chunks * chunk, np.float32)
    weights[:len(work)] = 1.0
    plans.append(ScalePlan(s, (hs, ws), crop_hw, boxes, chunk,
                           np.asarray(padded, np.int32).reshape(num_chunks, chunk, 3),
                           weights.reshape(num_chunks, chunk), (ph, pw), pad_tl))
  return tuple(plans)
