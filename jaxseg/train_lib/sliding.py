"""Whole-image, sliding-window, pooling and multi-scale + flip inference (the original eval.py).

The original `inference_sliding` does, for every scale s of an image (H, W):
  1. resize the uint8 image to (int(H*s), int(W*s)) with PIL bilinear (reproduced exactly by
     pil_resize.py);
  2. optionally add its horizontal mirror as a second variant;
  3. cut square tiles of side int(crop_size * max(s, 1)) with stride
     ceil(tile * (1 - overlap)); the last tile of a row/column is aligned to the image border,
     tiles are clipped to the image (an image smaller than the tile is one tile);
  4. run the model on every tile, sum the logits per pixel and divide by the tile count
     (`tile_average='pixel'`; the original's divisor has an indexing bug, reproduced by
     `tile_average='original'`, see `original_tile_count`);
  5. mirror the flipped variant back and resize the logits to (H, W) (cv2 INTER_LINEAR);
and finally averages the logits over variants and scales before the argmax.

Here the same arithmetic runs on device in fixed shapes: per scale, (variant, tile) work items
go through the model `chunk` items at a time (every call has one shape, so one compilation per
crop shape), `chunk` chosen from a per-device pixel budget. Images are the sharded batch axis:
each device segments its own images.

`whole` is one tile per image (the whole scaled image); `pooling` is `whole` with the ASPP
image-pooling branch replaced by a fixed-size average pool (original `--fixed_aspp_pool`). The
original pooling mode (`inference_pool`) differs in ways not reproduced: it feeds images
without the mean/std normalisation (a bug), resizes them with PIL's default filter, and can
only combine scales 0.5 / 1 / 2 (2x2 average pool / 2x upsampling of the logits, which equal
the bilinear resize used here for those scales).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import metrics as metrics_lib
from jaxseg.train_lib import pil_resize
from jaxseg.train_lib import train_step as step_lib

MODES = ("whole", "sliding", "pooling")
TILE_AVERAGES = ("pixel", "original")
ApplyFn = Callable[[Any, jax.Array], jax.Array]  # (model_vars, normalised NHWC) -> logits


def parse_scales(scales: str | float | Sequence[float]) -> tuple[float, ...]:
  """'0.5,1.0,2.0' (the original --scales), a number or a sequence -> positive floats."""
  if isinstance(scales, str):
    parts = [p for p in scales.replace(" ", "").split(",") if p]
    try:
      values = tuple(float(p) for p in parts)
    except ValueError:
      raise ValueError(f"config.eval.scales={scales!r}: expected comma-separated numbers, "
                       "e.g. '0.5,1.0,2.0'") from None
  elif isinstance(scales, (int, float)):
    values = (float(scales),)
  else:
    values = tuple(float(s) for s in scales)
  if not values or any(not s > 0 for s in values):
    raise ValueError(f"config.eval.scales={scales!r}: expected one or more positive scales")
  return values


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
  """How one image becomes logits (see config.eval in jaxseg/config_base.py)."""
  mode: str = "sliding"
  crop_size: int = 1024
  overlap: float = 1 / 3
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  crop_budget_mpix: float = 8.0
  aspp_pool_size: int = 105
  tile_average: str = "pixel"

  def __post_init__(self):
    if self.tile_average not in TILE_AVERAGES:
      raise ValueError(f"config.eval.tile_average={self.tile_average!r}; expected one of "
                       f"{TILE_AVERAGES}")
    if self.mode not in MODES:
      raise ValueError(f"config.eval.mode={self.mode!r}; expected one of {MODES}")
    if self.crop_size <= 0:
      raise ValueError(f"config.eval.crop_size={self.crop_size}; expected > 0")
    if not 0.0 <= self.overlap < 1.0:
      raise ValueError(f"config.eval.overlap={self.overlap}; expected in [0, 1)")
    if self.crop_budget_mpix <= 0:
      raise ValueError(f"config.eval.crop_budget_mpix={self.crop_budget_mpix}; expected > 0")
    if self.mode == "pooling" and self.aspp_pool_size <= 0:
      raise ValueError(f"config.eval.aspp_pool_size={self.aspp_pool_size}; pooling mode needs "
                       "a positive pool size (the original uses 105)")
    object.__setattr__(self, "scales", parse_scales(self.scales))

  @classmethod
  def from_config(cls, eval_cfg: Any) -> "InferenceSettings":
    return cls(mode=str(eval_cfg.mode), crop_size=int(eval_cfg.crop_size),
               overlap=float(eval_cfg.overlap), scales=parse_scales(eval_cfg.scales),
               flip=bool(eval_cfg.flip), crop_budget_mpix=float(eval_cfg.crop_budget_mpix),
               aspp_pool_size=int(eval_cfg.aspp_pool_size),
               tile_average=str(eval_cfg.get("tile_average", "pixel")))

  @property
  def num_variants(self) -> int:
    return 2 if self.flip else 1


def sliding_boxes(height: int, width: int, tile: int, overlap: float
                  ) -> tuple[tuple[int, int, int, int], ...]:
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


@dataclasses.dataclass(frozen=True)
class ScalePlan:
  """The static layout of one scale: resized size, crop shape, tiles and chunking."""
  scale: float
  scaled_hw: tuple[int, int]
  crop_hw: tuple[int, int]
  boxes: tuple[tuple[int, int, int, int], ...]
  chunk: int  # work items (variant, tile) per model call
  items: np.ndarray  # (num_chunks, chunk, 3) int32 [variant, y1, x1]
  weights: np.ndarray  # (num_chunks, chunk) float32, 0 for padding items


def make_plans(height: int, width: int, settings: InferenceSettings, *,
               images_per_device: int) -> tuple[ScalePlan, ...]:
  """One `ScalePlan` per scale for (height, width) images."""
  plans = []
  budget = settings.crop_budget_mpix * 2**20
  for s in settings.scales:
    hs, ws = int(height * s), int(width * s)
    if hs < 1 or ws < 1:
      raise ValueError(f"config.eval.scales: scale {s} makes the {height}x{width} image "
                       f"{hs}x{ws}")
    if settings.mode == "sliding":
      boxes = sliding_boxes(hs, ws, int(settings.crop_size * max(s, 1.0)), settings.overlap)
    else:
      boxes = ((0, hs, 0, ws),)
    crop_hw = (boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2])
    work = [(v, y1, x1) for v in range(settings.num_variants) for (y1, _, x1, _) in boxes]
    # As many items per call as the budget allows, then evened out so no call is mostly padding.
    most = max(1, int(budget // (images_per_device * crop_hw[0] * crop_hw[1])))
    num_chunks = math.ceil(len(work) / min(most, len(work)))
    chunk = math.ceil(len(work) / num_chunks)
    padded = work + [work[0]] * (num_chunks * chunk - len(work))
    weights = np.zeros(num_chunks * chunk, np.float32)
    weights[:len(work)] = 1.0
    plans.append(ScalePlan(s, (hs, ws), crop_hw, boxes, chunk,
                           np.asarray(padded, np.int32).reshape(num_chunks, chunk, 3),
                           weights.reshape(num_chunks, chunk)))
  return tuple(plans)


def original_tile_count(boxes: Sequence[tuple[int, int, int, int]], height: int,
                        num_classes: int) -> jax.Array:
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


def resize_image(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """uint8-valued (N, H, W, 3) -> float32 (N, h, w, 3): PIL's 8-bit bilinear resize, exactly."""
  if tuple(images.shape[1:3]) == tuple(size):
    return images.astype(jnp.float32)
  return pil_resize.pil_bilinear_resize(images, size).astype(jnp.float32)


def resize_logits(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(..., h, w, K) -> (..., H, W, K) as cv2.resize INTER_LINEAR (half-pixel, no antialias)."""
  if tuple(x.shape[-3:-1]) == tuple(size):
    return x
  shape = (*x.shape[:-3], *size, x.shape[-1])
  return jax.image.resize(x, shape, "linear", antialias=False)


class Segmenter:
  """Logits / predictions / confusion counts of image batches under `settings`.

  `apply_fn(model_vars, x)` maps normalised NHWC images (compute dtype) to float32 logits of
  the same size. Image batches are global arrays split over the mesh's data axis.
  """

  def __init__(self, apply_fn: ApplyFn, *, num_classes: int, mesh: Mesh,
               settings: InferenceSettings, dtype: Any = jnp.float32,
               ignore_index: int = 255):
    self.apply_fn = apply_fn
    self.num_classes = int(num_classes)
    self.mesh = mesh
    self.settings = settings
    self.dtype = dtype
    self.ignore_index = ignore_index
    rep, bat = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    self._batched = bat
    # Inputs keep the shardings they come with (model variables may be replicated or FSDP
    # slices); outputs are pinned to the batch sharding.
    self._prepare = jax.jit(self._prepare_impl, static_argnums=(1,), out_shardings=bat)
    self._chunk = jax.jit(self._chunk_impl, static_argnums=(5,), out_shardings=bat,
                          donate_argnums=(2,))
    self._finish = jax.jit(self._finish_impl, static_argnums=(2, 3), out_shardings=bat,
                           donate_argnums=(0,))
    self._zeros = functools.lru_cache(maxsize=None)(
        lambda shape: jax.jit(lambda: jnp.zeros(shape, jnp.float32), out_shardings=bat))
    self._argmax = jax.jit(lambda t: jnp.argmax(t, axis=-1).astype(jnp.uint8),
                           out_shardings=bat)
    self._counts = jax.jit(self._counts_impl, out_shardings=(rep, bat))
    self._plans: dict[tuple[int, int, int], tuple[ScalePlan, ...]] = {}
    # One scale 1.0 tile covering the image, no flip: the plain model call of the training
    # eval step (same program, so `--mode eval` reproduces the in-training numbers exactly).
    self._direct = jax.jit(self._direct_impl, out_shardings=bat)
    self._direct_counts = jax.jit(self._direct_counts_impl, out_shardings=(rep, bat))
    # Image groups: each device's rows j..j+g (a local slice of the batch sharding).
    self._take = jax.jit(self._take_impl, static_argnums=(1, 2, 3), out_shardings=bat)
    self._merge = jax.jit(self._merge_impl, static_argnums=(1,), out_shardings=bat)

  # ---------------------------------------------------------------- jitted pieces --
  def _prepare_impl(self, images: jax.Array, size: tuple[int, int]) -> jax.Array:
    x = step_lib.normalize_images(resize_image(images, size), self.dtype)
    variants = [x, x[:, :, ::-1]] if self.settings.flip else [x]
    return jnp.stack(variants, axis=1)  # (N, V, h, w, 3)

  def _chunk_impl(self, model_vars, xs: jax.Array, canvas: jax.Array, items: jax.Array,
                  weights: jax.Array, crop_hw: tuple[int, int]) -> jax.Array:
    n, chunk = xs.shape[0], items.shape[0]
    th, tw = crop_hw
    starts = [(0, items[c, 0], items[c, 1], items[c, 2], 0) for c in range(chunk)]
    crops = [jax.lax.dynamic_slice(xs, st, (n, 1, th, tw, xs.shape[-1]))[:, 0] for st in starts]
    batch = jnp.stack(crops, axis=1).reshape(n * chunk, th, tw, xs.shape[-1])
    logits = self.apply_fn(model_vars, batch).astype(jnp.float32)
    logits = logits.reshape(n, chunk, th, tw, logits.shape[-1])
    for c, st in enumerate(starts):
      current = jax.lax.dynamic_slice(canvas, st, (n, 1, th, tw, canvas.shape[-1]))
      added = jnp.where(weights[c] > 0, current + logits[:, c:c + 1], current)
      canvas = jax.lax.dynamic_update_slice(canvas, added, st)
    return canvas

  def _finish_impl(self, total: jax.Array, canvas: jax.Array,
                   boxes: tuple[tuple[int, int, int, int], ...],
                   out_hw: tuple[int, int]) -> jax.Array:
    if self.settings.tile_average == "original":
      mean = canvas / original_tile_count(boxes, canvas.shape[2], canvas.shape[4])[:, None, :]
    else:
      count = jnp.zeros(canvas.shape[2:4], jnp.float32)
      for y1, y2, x1, x2 in boxes:
        count = count.at[y1:y2, x1:x2].add(1.0)
      mean = canvas / count[None, None, :, :, None]
    if self.settings.flip:  # the mirrored variant back to image orientation
      mean = jnp.concatenate([mean[:, :1], mean[:, 1:, :, ::-1]], axis=1)
    return total + resize_logits(mean, out_hw).sum(axis=1)

  @staticmethod
  def _take_impl(images: jax.Array, data: int, start: int, size: int) -> jax.Array:
    rows = images.reshape(data, images.shape[0] // data, *images.shape[1:])
    return rows[:, start:start + size].reshape(data * size, *images.shape[1:])

  @staticmethod
  def _merge_impl(parts: list[jax.Array], data: int) -> jax.Array:
    grouped = [p.reshape(data, p.shape[0] // data, *p.shape[1:]) for p in parts]
    merged = jnp.concatenate(grouped, axis=1)
    return merged.reshape(-1, *merged.shape[2:])

  def _direct_impl(self, model_vars, images: jax.Array) -> jax.Array:
    return self.apply_fn(model_vars, step_lib.normalize_images(images, self.dtype))

  def _direct_counts_impl(self, model_vars, images: jax.Array, labels: jax.Array,
                          valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self._counts_impl(self._direct_impl(model_vars, images), labels, valid)

  def _counts_impl(self, logits: jax.Array, labels: jax.Array, valid: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    preds = jnp.argmax(logits, axis=-1)
    counts = metrics_lib.confusion_matrix(labels, preds, self.num_classes,
                                          ignore_index=self.ignore_index, valid=valid)
    return counts, preds.astype(jnp.uint8)

  # ----------------------------------------------------------------------- public --
  def plans(self, height: int, width: int, batch: int) -> tuple[ScalePlan, ...]:
    data = mesh_lib.data_parallel_size(self.mesh)
    if batch % data:
      raise ValueError(f"an inference batch of {batch} images does not split over the {data} "
                       "devices of the data axis: use a multiple (config.eval.batch_size)")
    key = (height, width, batch // data)
    if key not in self._plans:
      self._plans[key] = make_plans(height, width, self.settings, images_per_device=key[2])
    return self._plans[key]

  def is_direct(self, height: int, width: int, batch: int) -> bool:
    """Whether inference on (height, width) images is a single plain model call."""
    plans = self.plans(height, width, batch)
    return (len(plans) == 1 and plans[0].scale == 1.0 and not self.settings.flip and
            plans[0].boxes == ((0, height, 0, width),))

  def group_size(self, height: int, width: int, per_device: int) -> int:
    """Images per device segmented together: as many as the crop budget allows (>= 1)."""
    largest = max(p.crop_hw[0] * p.crop_hw[1]
                  for p in self.plans(height, width, mesh_lib.data_parallel_size(self.mesh)))
    group = max(1, min(per_device, int(self.settings.crop_budget_mpix * 2**20 // largest)))
    while per_device % group:
      group -= 1
    return group

  def logits(self, model_vars: Any, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) uint8 -> (N, H, W, K) float32 logits averaged over tiles, flips, scales.

    When one crop of each of a device's images would pass the crop budget, the images go
    through in groups (canvases and model calls of one group at a time).
    """
    n, h, w = images.shape[:3]
    if self.is_direct(h, w, n):
      return self._direct(model_vars, images)
    data = mesh_lib.data_parallel_size(self.mesh)
    group = self.group_size(h, w, n // data)
    if group == n // data:
      return self._tiled_logits(model_vars, images)
    parts = [self._tiled_logits(model_vars, self._take(images, data, start, group))
             for start in range(0, n // data, group)]
    return self._merge(parts, data)

  def _tiled_logits(self, model_vars: Any, images: jax.Array) -> jax.Array:
    n, h, w = images.shape[:3]
    plans = self.plans(h, w, n)
    variants = self.settings.num_variants
    total = self._zeros((n, h, w, self.num_classes))()
    for plan in plans:
      xs = self._prepare(images, plan.scaled_hw)
      canvas = self._zeros((n, variants, *plan.scaled_hw, self.num_classes))()
      for items, weights in zip(plan.items, plan.weights):
        canvas = self._chunk(model_vars, xs, canvas, items, weights, plan.crop_hw)
      total = self._finish(total, canvas, plan.boxes, (h, w))
    return total / float(variants * len(plans))

  def predict(self, model_vars: Any, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) uint8 -> (N, H, W) uint8 train ids."""
    return self._argmax(self.logits(model_vars, images))

  def confusion(self, model_vars: Any, batch: dict[str, jax.Array]
                ) -> tuple[jax.Array, jax.Array]:
    """(K, K) int32 counts of a sharded {'image', 'label', 'valid'} batch, plus predictions."""
    images = batch["image"]
    valid = batch.get("valid")
    if valid is None:
      valid = jax.device_put(np.ones(images.shape[0], bool), self._batched)
    if self.is_direct(images.shape[1], images.shape[2], images.shape[0]):
      return self._direct_counts(model_vars, images, batch["label"], valid)
    return self._counts(self.logits(model_vars, images), batch["label"], valid)
