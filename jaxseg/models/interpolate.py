"""torch `F.interpolate(mode='bilinear')` on NHWC arrays, both corner rules.

The 2019 networks (DeepLabV3+, WRN38), semseg's PSPNet / PSANet and the final resize of HRNet use
`align_corners=True`; torchvision's segmentation models and HRNet's inner resizes use the
half-pixel rule (`align_corners=False`, no antialiasing). Both are separable two-tap gathers
whose source indices and weights are computed in numpy with torch's float32 arithmetic; only the
tap rule differs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Taps = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i0, i1, weight of i1) per output index


def align_corners_taps(in_size: int, out_size: int) -> Taps:
  """torch align_corners=True: src = dst * (in - 1) / (out - 1)."""
  scale = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
  src = np.float32(scale) * np.arange(out_size, dtype=np.float32)
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  lam = (src - i0.astype(np.float32)).astype(np.float32)
  return i0, i1, lam


def half_pixel_taps(in_size: int, out_size: int) -> Taps:
  """torch align_corners=False (upsample_bilinear2d with `size=` given).

  scale = in / out, src = scale * (dst + 0.5) - 0.5 clamped at 0, i0 = floor(src) (at most
  in - 1), i1 = i0 + 1 except at the last row, lambda1 = src - i0.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  return i0, i1, lam


def resize_bilinear(x: jax.Array, size: Sequence[int], taps: Callable[[int, int], Taps], *,
                    broadcast_single: bool = False) -> jax.Array:
  """Bilinear resize of NHWC `x` to `size` = (H, W) with the tap rule `taps`.

  Computed in float32 (the originals run their resizes in float32, under apex amp too); the
  result keeps `x.dtype`. No antialiasing: downsampling reads two taps per output as torch does.
  `broadcast_single`: a one-pixel source axis is broadcast instead of gathered (the same
  values; the gradient sums in another order).
  """
  out_h, out_w = int(size[0]), int(size[1])
  if (x.shape[1], x.shape[2]) == (out_h, out_w):
    return x
  y = x.astype(jnp.float32)
  for axis, out in ((1, out_h), (2, out_w)):
    in_size = y.shape[axis]
    if in_size == out:
      continue
    if in_size == 1 and broadcast_single:  # Every tap reads the one source row.
      shape = list(y.shape)
      shape[axis] = out
      y = jnp.broadcast_to(y, tuple(shape))
      continue
    i0, i1, lam = taps(in_size, out)
    shape = [1, 1, 1, 1]
    shape[axis] = out
    w1 = jnp.asarray(lam).reshape(shape)
    a = jnp.take(y, jnp.asarray(i0), axis=axis)
    b = jnp.take(y, jnp.asarray(i1), axis=axis)
    y = a * (1 - w1) + b * w1
  return y.astype(x.dtype)


def resize_bilinear_align_corners(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """torch `F.interpolate(x, size, mode='bilinear', align_corners=True)` (NHWC)."""
  return resize_bilinear(x, size, align_corners_taps)


def resize_bilinear_half_pixel(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """torch `F.interpolate(x, size, mode='bilinear', align_corners=False)` (NHWC).

  A 1x1 map (ASPP image pooling) becomes a constant image by broadcasting.
  """
  if int(size[0]) < 1 or int(size[1]) < 1:
    raise ValueError(f"resize_bilinear_half_pixel: output size must be positive, got {size}")
  return resize_bilinear(x, size, half_pixel_taps, broadcast_single=True)
