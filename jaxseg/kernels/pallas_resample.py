"""Pallas Triton kernels for Resample2d (forward and flow gradient).

Layout: every operand is flattened to 1-D and indexed with int32 offsets
computed in the kernel. One program handles `block` consecutive pixels of one
batch item and all channels, as a (block, cp) tile with cp = next power of two
>= C (Triton arrays must have power-of-two sizes). Padded channel lanes are
clamped onto channel C-1, and pixels past the end onto the last pixel, so they
re-write identical values instead of needing masks: the same kernel therefore
runs unchanged in interpret mode (CPU tests), where masked scatters are not
supported.

The arithmetic is `resample2d`'s (`bilinear_taps`, `nearest_index`,
`bilinear_combine`), so the kernel and the XLA reference agree by construction
up to the compiler's floating-point contraction.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxseg.kernels import pallas_triton as ptr
from jaxseg.kernels.resample_math import accumulation_dtype
from jaxseg.kernels.resample_math import bilinear_combine
from jaxseg.kernels.resample_math import bilinear_taps
from jaxseg.kernels.resample_math import nearest_index
from jaxseg.kernels.resample_math import output_dtype

# Elements per (block, cp) tile; tuned by benchmarks/warp.py on GPU.
DEFAULT_TILE_ELEMENTS = 4096
MAX_CHANNELS = 1024


def _block_pixels(cp: int, tile_elements: int) -> int:
  return max(1, ptr.next_power_of_2(tile_elements) // cp)


def unsupported_reason(image: jax.Array, flow: jax.Array, mode: str) -> str:
  """Why the kernel cannot take these inputs ('' when it can)."""
  n, h, w, c = image.shape
  if flow.dtype != jnp.float32:
    return f"flow must be float32 for the kernel, got {flow.dtype}"
  if image.dtype.itemsize > 4 or image.dtype == jnp.bool_:
    return f"image dtype {image.dtype} is not supported by the kernel"
  if mode == "bilinear" and accumulation_dtype(image.dtype) != jnp.float32:
    return f"bilinear accumulation must be float32, got {image.dtype}"
  if c > MAX_CHANNELS:
    return f"at most {MAX_CHANNELS} channels, got {c}"
  if n * h * w * max(c, 2) > ptr.MAX_ELEMENTS:
    return f"arrays beyond {ptr.MAX_ELEMENTS} elements (int32 offsets)"
  if not ptr.available():
    return "jax.experimental.pallas.triton is unavailable"
  return ""


def _pixel_coords(flow_ref, n, block: int, height: int, width: int):
  """Pixel indices of this program and their float32 sample positions."""
  hw = height * width
  pix = ptr.program_id(1) * block + lax.broadcasted_iota(jnp.int32, (block,), 0)
  pix = jnp.minimum(pix, hw - 1)
  fbase = n * (2 * hw)
  dx = ptr.gather(flow_ref, fbase + 2 * pix)
  dy = ptr.gather(flow_ref, fbase + 2 * pix + 1)
  x = lax.rem(pix, width)
  y = lax.div(pix, width)
  return pix, fbase, x.astype(jnp.float32) + dx, y.astype(jnp.float32) + dy


def _channel_lanes(channels: int, cp: int):
  """(1, cp) lane ids and the same clamped to real channels."""
  lane = lax.broadcasted_iota(jnp.int32, (1, cp), 1)
  return lane, jnp.minimum(lane, channels - 1)


def _forward_kernel(flow_ref, image_ref, out_ref, *, mode: str, height: int,
                    width: int, channels: int, cp: int, block: int):
  n = ptr.program_id(0)
  pix, _, xf, yf = _pixel_coords(flow_ref, n, block, height, width)
  _, ch = _channel_lanes(channels, cp)
  base = n * (height * width * channels)

  def tap(yi, xi):
    return ptr.gather(image_ref, base + ((yi * width + xi) * channels)[:, None]
                      + ch)

  if mode == "nearest":
    val = tap(nearest_index(yf, height), nearest_index(xf, width))
  else:
    xl, xr, yt, yb, alpha, beta = bilinear_taps(xf, yf, height, width)
    corners = [tap(yi, xi).astype(jnp.float32)
               for yi, xi in ((yt, xl), (yt, xr), (yb, xl), (yb, xr))]
    val = bilinear_combine(alpha[:, None], beta[:, None], *corners)
  ptr.scatter(out_ref, base + (pix * channels)[:, None] + ch,
              val.astype(out_ref.dtype))


def _flow_grad_kernel(flow_ref, image_ref, g_ref, dflow_ref, *, height: int,
                      width: int, channels: int, cp: int, block: int):
  n = ptr.program_id(0)
  pix, fbase, xf, yf = _pixel_coords(flow_ref, n, block, height, width)
  lane, ch = _channel_lanes(channels, cp)
  base = n * (height * width * channels)
  xl, xr, yt, yb, alpha, beta = bilinear_taps(xf, yf, height, width)

  def tap(yi, xi):
    v = ptr.gather(image_ref, base + ((yi * width + xi) * channels)[:, None]
                   + ch)
    return v.astype(jnp.float32)

  v00, v10, v01, v11 = tap(yt, xl), tap(yt, xr), tap(yb, xl), tap(yb, xr)
  g = ptr.gather(g_ref, base + (pix * channels)[:, None] + ch)
  # Padded lanes repeat channel C-1: zero them so the channel sum counts it
  # once.
  g = jnp.where(lane < channels, g.astype(jnp.float32), 0.0)
  a, b = alpha[:, None], beta[:, None]
  # d out / d alpha and d out / d beta of bilinear_combine; d xf / d dx = 1.
  d_alpha = jnp.sum(g * ((1.0 - b) * (v10 - v00) + b * (v11 - v01)), axis=1)
  d_beta = jnp.sum(g * ((1.0 - a) * (v01 - v00) + a * (v11 - v10)), axis=1)
  ptr.scatter(dflow_ref, fbase + 2 * pix, d_alpha.astype(dflow_ref.dtype))
  ptr.scatter(dflow_ref, fbase + 2 * pix + 1, d_beta.astype(dflow_ref.dtype))


def _launch_params(image_shape, tile_elements: int):
  n, h, w, c = image_shape
  cp = ptr.next_power_of_2(c)
  block = _block_pixels(cp, tile_elements)
  grid = (n, -(-(h * w) // block))
  return dict(height=h, width=w, channels=c, cp=cp, block=block), grid


@functools.partial(jax.jit, static_argnames=("mode", "interpret",
                                             "tile_elements", "num_warps"))
def forward(image: jax.Array, flow: jax.Array, *, mode: str,
            interpret: bool = False,
            tile_elements: int = DEFAULT_TILE_ELEMENTS,
            num_warps: int = 4) -> jax.Array:
  """Resample2d forward as a Pallas Triton kernel (no argument checks).

  Args:
    image: (N, H, W, C), dtype accepted by `unsupported_reason`.
    flow: (N, H, W, 2) float32.
    mode: 'bilinear' or 'nearest'.
    interpret: run as plain JAX ops (CPU tests).
    tile_elements: pixels x padded channels per program (power of two).
    num_warps: Triton warps per program.
  """
  params, grid = _launch_params(image.shape, tile_elements)
  out_dtype = output_dtype(image.dtype, mode)
  kernel = functools.partial(_forward_kernel, mode=mode, **params)
  out = ptr.call(kernel, jax.ShapeDtypeStruct((image.size,), out_dtype),
                 grid=grid, interpret=interpret, num_warps=num_warps,
                 name=f"resample2d_{mode}")(flow.reshape(-1),
                                              image.reshape(-1))
  return out.reshape(image.shape)


@functools.partial(jax.jit, static_argnames=("interpret", "tile_elements",
                                             "num_warps"))
def flow_grad(image: jax.Array, flow: jax.Array, g: jax.Array, *,
              interpret: bool = False,
              tile_elements: int = DEFAULT_TILE_ELEMENTS,
              num_warps: int = 4) -> jax.Array:
  """Cotangent of bilinear Resample2d w.r.t. the flow, (N, H, W, 2)."""
  params, grid = _launch_params(image.shape, tile_elements)
  kernel = functools.partial(_flow_grad_kernel, **params)
  out = ptr.call(kernel, jax.ShapeDtypeStruct((flow.size,), flow.dtype),
                 grid=grid, interpret=interpret, num_warps=num_warps,
                 name="resample2d_flow_grad")(
                     flow.reshape(-1), image.reshape(-1), g.reshape(-1))
  return out.reshape(flow.shape)


def usable(image: jax.Array, flow: jax.Array, mode: str) -> bool:
  """For impl='auto': the kernel takes these inputs and compiles on this GPU.

  The compile probe runs once per (mode, dtype, channel count) on an 8x8 image.
  """
  if unsupported_reason(image, flow, mode):
    return False
  c = image.shape[-1]
  img = jax.ShapeDtypeStruct((1, 8, 8, c), image.dtype)
  flo = jax.ShapeDtypeStruct((1, 8, 8, 2), jnp.float32)
  ok = ptr.lowers(("resample2d", mode, np.dtype(image.dtype).name, c),
                  functools.partial(forward, mode=mode), (img, flo))
  if ok and mode == "bilinear" and jnp.issubdtype(image.dtype, jnp.floating):
    g = jax.ShapeDtypeStruct((1, 8, 8, c), image.dtype)
    ok = ptr.lowers(("resample2d_flow_grad", np.dtype(image.dtype).name, c),
                    flow_grad, (img, flo, g))
  return ok
