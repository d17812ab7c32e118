"""Resample2d's sampling arithmetic, shared by the XLA path (resample2d.py) and the Pallas
kernels (pallas_resample.py); it uses only element-wise ops that the Triton lowering supports."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def floor_frac(v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(floor(v), v - floor(v)); the difference is exact in floating point."""
  f = jnp.floor(v)
  return f, v - f


def clamp_index(f: jax.Array, size: int) -> jax.Array:
  """int32 index of the integral float `f`, clamped to [0, size - 1].

  Clipping in float first keeps the int conversion defined for huge or
  infinite positions (CUDA's int() of those is undefined behaviour).
  """
  f = jnp.clip(f, -2.0, float(size + 1))
  return jnp.clip(f.astype(jnp.int32), 0, size - 1)


def nearest_index(v: jax.Array, size: int) -> jax.Array:
  """CUDA's clamp(floor(v + 0.5)), evaluated without rounding v + 0.5.

  CUDA adds the double 0.5, which is exact; in float32 v + 0.5 can round up
  (v = 0.5 - 2**-25 gives 1.0), so compare the fraction with 0.5 instead.
  """
  f, frac = floor_frac(v)
  return clamp_index(jnp.where(frac >= 0.5, f + 1.0, f), size)


def bilinear_taps(xf: jax.Array, yf: jax.Array, height: int, width: int):
  """Corner indices and weights of bilinear sampling at (xf, yf).

  Returns:
    (xl, xr, yt, yb, alpha, beta): clamped int32 corner columns/rows and the
    fractional offsets of the unclamped position.
  """
  x0, alpha = floor_frac(xf)
  y0, beta = floor_frac(yf)
  return (clamp_index(x0, width), clamp_index(x0 + 1.0, width),
          clamp_index(y0, height), clamp_index(y0 + 1.0, height), alpha, beta)


def bilinear_combine(alpha, beta, v00, v10, v01, v11):
  """Weighted sum of the four corner values, in the CUDA kernel's order."""
  return (((1.0 - alpha) * (1.0 - beta)) * v00 + (alpha * (1.0 - beta)) * v10
          + ((1.0 - alpha) * beta) * v01 + (alpha * beta) * v11)


# ----------------------------------------------------------------------------
# Dtypes and argument checks.
# ----------------------------------------------------------------------------
def position_dtype(flow_dtype) -> np.dtype:
  """dtype of xf = x + dx: float32, or wider if the flow is wider."""
  return jnp.promote_types(flow_dtype, jnp.float32)


def accumulation_dtype(image_dtype) -> np.dtype:
  """dtype of the bilinear sum: float32 or the image's wider float dtype."""
  if jnp.issubdtype(image_dtype, jnp.floating):
    return jnp.promote_types(image_dtype, jnp.float32)
  return np.dtype(np.float32)


def output_dtype(image_dtype, mode: str) -> np.dtype:
  """nearest keeps the image dtype; bilinear gives float (float32 for ints)."""
  if mode == "nearest" or jnp.issubdtype(image_dtype, jnp.floating):
    return np.dtype(image_dtype)
  return np.dtype(np.float32)
