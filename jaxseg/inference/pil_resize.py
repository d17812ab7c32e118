"""PIL's 8-bit bilinear `Image.resize`, bit for bit, on device.

The original eval.py scales every test image with `PIL.Image.resize(size, BILINEAR)`. Pillow
resamples 8-bit images separably, horizontal pass first, each pass rounding to 8 bits, with a
triangle filter widened by the shrink factor (antialiasing) and fixed-point coefficients of
22 fractional bits (libImaging/Resample.c). A float resize differs from it by 1-2 levels on a
few percent of the pixels; this reproduces its integer arithmetic exactly.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_PRECISION_BITS = 32 - 8 - 2


def _triangle(x: float) -> float:
  x = abs(x)
  return 1.0 - x if x < 1.0 else 0.0


def pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(taps, weights): (out_size, ksize) source indices and fixed-point int32 weights.

  Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter (support 1).
  Taps past a pixel's window have weight 0 (and a valid index).
  """
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 1.0 * filterscale
  ksize = int(math.ceil(support)) * 2 + 1
  taps = np.zeros((out_size, ksize), np.int32)
  weights = np.zeros((out_size, ksize), np.int32)
  for xx in range(out_size):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)  # C casts truncate toward zero
    xmax = min(int(center + support + 0.5), in_size) - xmin
    w = np.array([_triangle((x + xmin - center + 0.5) / filterscale) for x in range(xmax)])
    if w.sum() != 0.0:
      w = w / w.sum()
    fixed = np.where(w < 0, -0.5 + w * (1 << _PRECISION_BITS), 0.5 + w * (1 << _PRECISION_BITS))
    weights[xx, :xmax] = np.trunc(fixed).astype(np.int32)
    taps[xx, :] = np.minimum(xmin + np.arange(ksize), in_size - 1)
  return taps, weights


def _resample_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  """One 8-bit pass along `axis` of an int32 image (values 0..255)."""
  taps, weights = pil_coefficients(x.shape[axis], out_size)
  gathered = jnp.take(x, jnp.asarray(taps.reshape(-1)), axis=axis)
  shape = list(x.shape)
  shape[axis:axis + 1] = [out_size, taps.shape[1]]
  gathered = gathered.reshape(shape)
  wshape = [1] * len(shape)
  wshape[axis:axis + 2] = list(weights.shape)
  acc = (gathered * jnp.asarray(weights).reshape(wshape)).sum(axis=axis + 1)
  acc = acc + (1 << (_PRECISION_BITS - 1))
  return jnp.clip(acc >> _PRECISION_BITS, 0, 255)


def pil_bilinear_resize(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """uint8-valued (N, H, W, C) -> int32 (N, h, w, C) equal to PIL's BILINEAR resize."""
  x = images.astype(jnp.int32)
  if x.shape[2] != size[1]:
    x = _resample_axis(x, 2, int(size[1]))
  if x.shape[1] != size[0]:
    x = _resample_axis(x, 1, int(size[0]))
  return x
