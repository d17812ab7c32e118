"""Whole-image, sliding-window, pooling and multi-scale + flip inference: the `Segmenter`.

Three published protocols are covered (named presets in settings.py): NVIDIA's eval.py
(described first), hszhao/semseg `tool/test.py` and TensorFlow DeepLab's multi-scale eval.
Their pieces live by concept: `InferenceSettings` (the validated config.eval fields) in
inference_settings.py, how scale s sizes and resizes an image in resize_policy.py, tiles and
the static per-scale plan in tiling.py. This module runs them on device.

The original `inference_sliding` does, for every scale s of an image (H, W):
  1. resize the uint8 image to (int(H*s), int(W*s)) with PIL bilinear (reproduced exactly by
     pil_resize.py);
  2. optionally add its horizontal mirror as a second variant;
  3. cut square tiles of side int(crop_size * max(s, 1)) with stride
     ceil(tile * (1 - overlap)) (tiling.sliding_boxes);
  4. run the model on every tile, sum the logits per pixel and divide by the tile count
     (`tile_average='pixel'`; the original's divisor has an indexing bug, reproduced by
     `tile_average='original'`, see `tiling.original_tile_count`);
  5. mirror the flipped variant back and resize the logits to (H, W) (cv2 INTER_LINEAR);
and finally averages the logits over variants and scales before the argmax.

Here the same arithmetic runs on device in fixed shapes: per scale, (variant, tile) work items
go through the model `chunk` items at a time (every call has one shape, so one compilation per
crop shape), `chunk` chosen from a per-device pixel budget (tiling.make_plans). Images are the
sharded batch axis: each device segments its own images.

hszhao/semseg (`resize='long_side'`, `tiling='semseg'`, `average='softmax'`) differs in:
  1. the scaled size and resize (resize_policy.py);
  2. mean padding of images smaller than the crop and fixed-size crops (tiling.py);
  3. the flip is per tile (the mirrored tile covers the same pixels);
  4. softmax probabilities (not logits) are averaged over flips and tiles, cropped back from
     the padding, resized with cv2 INTER_LINEAR and averaged over scales.
TensorFlow DeepLab (`resize='align_corners'`, `average='softmax_resized'`, mode `whole`)
scales to int((H - 1) * s + 1) with align-corners bilinear resizes both ways and averages the
softmax of the logits resized to the image size (flipped logits mirrored back first).

`whole` is one tile per image (the whole scaled image); `pooling` is `whole` with the ASPP
image-pooling branch replaced by a fixed-size average pool (original `--fixed_aspp_pool`). The
original pooling mode (`inference_pool`) differs in ways not reproduced: it feeds images
without the mean/std normalisation (a bug), resizes them with PIL's default filter, and can
only combine scales 0.5 / 1 / 2 (2x2 average pool / 2x upsampling of the logits, which equal
the bilinear resize used here for those scales).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.inference.resize import RESIZES
from jaxseg.inference.resize import resize_back
from jaxseg.inference.resize import resize_image
from jaxseg.inference.resize import resize_logits
from jaxseg.inference.resize import scaled_size

# Re-exported: callers (inference.py, tests, benchmarks) use them as `sliding.<name>`.
from jaxseg.inference.settings import AVERAGES
from jaxseg.inference.settings import MODES
from jaxseg.inference.settings import InferenceSettings
from jaxseg.inference.settings import parse_scales
from jaxseg.inference.tiling import TILE_AVERAGES
from jaxseg.inference.tiling import TILINGS
from jaxseg.inference.tiling import ScalePlan
from jaxseg.inference.tiling import make_plans
from jaxseg.inference.tiling import original_tile_count
from jaxseg.inference.tiling import semseg_boxes
from jaxseg.inference.tiling import sliding_boxes
from jaxseg.inference.tiling import tile_count
from jaxseg.models import preprocess
from jaxseg.runtime import mesh as mesh_lib

__all__ = [
    "AVERAGES", "MODES", "RESIZES", "TILE_AVERAGES", "TILINGS", "ApplyFn",
    "InferenceSettings", "ScalePlan", "Segmenter", "make_plans", "original_tile_count",
    "parse_scales", "resize_back", "resize_image", "resize_logits", "scaled_size",
    "semseg_boxes", "sliding_boxes", "tile_count",
]

ApplyFn = Callable[[Any, jax.Array], jax.Array]  # (model_vars, normalised NHWC) -> logits


class Segmenter:
  """Logits / predictions / confusion counts of image batches under `settings`.

  `apply_fn(model_vars, x)` maps normalised NHWC images (compute dtype) to float32 logits of
  the same size. Image batches are global arrays split over the mesh's data axis; without a
  mesh nothing is sharded (one traceable pipeline, see jaxseg/export.py).
  """

  def __init__(self, apply_fn: ApplyFn, *, num_classes: int, mesh: Mesh | None,
               settings: InferenceSettings, dtype: Any = jnp.float32,
               ignore_index: int = 255):
    self.apply_fn = apply_fn
    self.num_classes = int(num_classes)
    self.mesh = mesh
    self.settings = settings
    self.dtype = dtype
    self.ignore_index = ignore_index
    # mesh=None: no sharding at all, one device's worth of work per call, so that the whole
    # pipeline can be traced into one exportable program (jaxseg/export.py).
    self.data_parallel = 1 if mesh is None else mesh_lib.data_parallel_size(mesh)
    rep = None if mesh is None else mesh_lib.replicated(mesh)
    bat = None if mesh is None else mesh_lib.batch_sharding(mesh)

    def pin(sharding: Any) -> dict[str, Any]:
      return {} if mesh is None else {"out_shardings": sharding}

    self._batched = bat
    # Inputs keep the shardings they come with (model variables may be replicated or FSDP
    # slices); outputs are pinned to the batch sharding.
    self._prepare = jax.jit(self._prepare_impl, static_argnums=(1, 2, 3), **pin(bat))
    self._chunk = jax.jit(self._chunk_impl, static_argnums=(5,), donate_argnums=(2,),
                          **pin(bat))
    self._finish = jax.jit(self._finish_impl, static_argnums=(2, 3, 4, 5),
                           donate_argnums=(0,), **pin(bat))
    self._softmax = jax.jit(lambda t: jax.nn.softmax(t, axis=-1), **pin(bat))
    self._zeros = functools.lru_cache(maxsize=None)(
        lambda shape: jax.jit(lambda: jnp.zeros(shape, jnp.float32), **pin(bat)))
    self._argmax = jax.jit(lambda t: jnp.argmax(t, axis=-1).astype(jnp.uint8), **pin(bat))
    self._probs = jax.jit(self._probs_impl, **pin(bat))
    self._counts = jax.jit(self._counts_impl, **pin((rep, bat)))
    self._plans: dict[tuple[int, int, int], tuple[ScalePlan, ...]] = {}
    # One scale 1.0 tile covering the image, no flip: the plain model call of the training
    # eval step (same program, so `--mode eval` reproduces the in-training numbers exactly).
    self._direct = jax.jit(self._direct_impl, **pin(bat))
    self._direct_counts = jax.jit(self._direct_counts_impl, **pin((rep, bat)))
    # Image groups: each device's rows j..j+g (a local slice of the batch sharding).
    self._take = jax.jit(self._take_impl, static_argnums=(1, 2, 3), **pin(bat))
    self._merge = jax.jit(self._merge_impl, static_argnums=(1,), **pin(bat))

  # ---------------------------------------------------------------- jitted pieces --
  def _prepare_impl(self, images: jax.Array, size: tuple[int, int],
                    padded_hw: tuple[int, int], pad_tl: tuple[int, int]) -> jax.Array:
    x = preprocess.normalize_images(resize_image(images, size, self.settings.resize), self.dtype)
    if tuple(padded_hw) != tuple(size):  # semseg pads with the mean: 0 once normalised
      (t, l), (ph, pw) = pad_tl, padded_hw
      x = jnp.pad(x, ((0, 0), (t, ph - size[0] - t), (l, pw - size[1] - l), (0, 0)))
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
    if self.settings.average == "softmax":
      logits = jax.nn.softmax(logits, axis=-1)
    logits = logits.reshape(n, chunk, th, tw, logits.shape[-1])
    for c, st in enumerate(starts):
      current = jax.lax.dynamic_slice(canvas, st, (n, 1, th, tw, canvas.shape[-1]))
      added = jnp.where(weights[c] > 0, current + logits[:, c:c + 1], current)
      canvas = jax.lax.dynamic_update_slice(canvas, added, st)
    return canvas

  def _finish_impl(self, total: jax.Array, canvas: jax.Array,
                   boxes: tuple[tuple[int, int, int, int], ...],
                   out_hw: tuple[int, int], scaled_hw: tuple[int, int],
                   pad_tl: tuple[int, int]) -> jax.Array:
    if self.settings.flip and self.settings.tiling == "semseg":
      # Mirrored tiles at mirrored boxes: back to image orientation, then one tile count.
      canvas = jnp.concatenate([canvas[:, :1], canvas[:, 1:, :, ::-1]], axis=1)
    if self.settings.tile_average == "original":
      mean = canvas / original_tile_count(boxes, canvas.shape[2], canvas.shape[4])[:, None, :]
    else:
      count = tile_count(boxes, canvas.shape[2], canvas.shape[3])
      mean = canvas / count[None, None, :, :, None]
    if self.settings.flip and self.settings.tiling != "semseg":  # mirrored image back
      mean = jnp.concatenate([mean[:, :1], mean[:, 1:, :, ::-1]], axis=1)
    (t, l), (hs, ws) = pad_tl, scaled_hw
    mean = mean[:, :, t:t + hs, l:l + ws]
    scores = resize_back(mean, out_hw, self.settings.resize)
    if self.settings.average == "softmax_resized":  # TF DeepLab: softmax at image size
      scores = jax.nn.softmax(scores, axis=-1)
    return total + scores.sum(axis=1)

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
    return self.apply_fn(model_vars, preprocess.normalize_images(images, self.dtype))

  def _direct_counts_impl(self, model_vars, images: jax.Array, labels: jax.Array,
                          valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self._counts_impl(self._direct_impl(model_vars, images), labels, valid)

  def _probs_impl(self, scores: jax.Array) -> jax.Array:
    # Averaged softmax scores already are probabilities; averaged logits are not.
    return jax.nn.softmax(scores, axis=-1) if self.settings.average == "logits" else scores

  def _counts_impl(self, logits: jax.Array, labels: jax.Array, valid: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    preds = jnp.argmax(logits, axis=-1)
    counts = metrics_lib.confusion_matrix(labels, preds, self.num_classes,
                                          ignore_index=self.ignore_index, valid=valid)
    return counts, preds.astype(jnp.uint8)

  # ----------------------------------------------------------------------- public --
  def plans(self, height: int, width: int, batch: int) -> tuple[ScalePlan, ...]:
    data = self.data_parallel
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
    return (len(plans) == 1 and plans[0].scaled_hw == (height, width) and
            plans[0].padded_hw == (height, width) and not self.settings.flip and
            plans[0].boxes == ((0, height, 0, width),))

  def group_size(self, height: int, width: int, per_device: int) -> int:
    """Images per device segmented together: as many as the crop budget allows (>= 1)."""
    largest = max(p.crop_hw[0] * p.crop_hw[1]
                  for p in self.plans(height, width, self.data_parallel))
    group = max(1, min(per_device, int(self.settings.crop_budget_mpix * 2**20 // largest)))
    while per_device % group:
      group -= 1
    return group

  def logits(self, model_vars: Any, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) uint8 -> (N, H, W, K) float32 scores averaged over tiles, flips, scales.

    The scores are logits, or softmax probabilities with `average='softmax'` (per tile, as
    semseg) or `'softmax_resized'` (after the resize to the image size, as TF DeepLab).

    When one crop of each of a device's images would pass the crop budget, the images go
    through in groups (canvases and model calls of one group at a time).
    """
    n, h, w = images.shape[:3]
    if self.is_direct(h, w, n):
      out = self._direct(model_vars, images)
      return self._softmax(out) if self.settings.average != "logits" else out
    data = self.data_parallel
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
      xs = self._prepare(images, plan.scaled_hw, plan.padded_hw, plan.pad_tl)
      canvas = self._zeros((n, variants, *plan.padded_hw, self.num_classes))()
      for items, weights in zip(plan.items, plan.weights):
        canvas = self._chunk(model_vars, xs, canvas, items, weights, plan.crop_hw)
      total = self._finish(total, canvas, plan.boxes, (h, w), plan.scaled_hw, plan.pad_tl)
    return total / float(variants * len(plans))

  def predict(self, model_vars: Any, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) uint8 -> (N, H, W) uint8 train ids."""
    return self._argmax(self.logits(model_vars, images))

  def predict_with_probs(self, model_vars: Any, images: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """(N, H, W) uint8 train ids (as `predict`) and (N, H, W, K) float32 class probabilities:
    the softmax of the averaged logits, or the averaged probabilities themselves."""
    scores = self.logits(model_vars, images)
    return self._argmax(scores), self._probs(scores)

  def confusion(self, model_vars: Any, batch: dict[str, jax.Array]
                ) -> tuple[jax.Array, jax.Array]:
    """(K, K) int32 counts of a sharded {'image', 'label', 'valid'} batch, plus predictions."""
    images = batch["image"]
    valid = batch.get("valid")
    if valid is None:
      valid = np.ones(images.shape[0], bool)
      valid = jax.device_put(valid, self._batched) if self._batched else jnp.asarray(valid)
    if self.is_direct(images.shape[1], images.shape[2], images.shape[0]):
      return self._direct_counts(model_vars, images, batch["label"], valid)
    return self._counts(self.logits(model_vars, images), batch["label"], valid)
