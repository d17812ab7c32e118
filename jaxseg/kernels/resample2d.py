"""Resample2d, FlowNet2's layer: backward warping of an image by a flow.

Semantics of `networks/resample2d_package/resample2d_kernel.cu` (forward), in
NHWC: output pixel (x, y) samples the input at (xf, yf) = (x + dx, y + dy),
formed in float32.

* bilinear: x0 = floor(xf), alpha = xf - x0 (likewise y0, beta); the corner
  indices x0, x0 + 1, y0, y0 + 1 are clamped to the image (border replicate)
  but the weights come from the unclamped position; the four terms are added in
  the order (x0,y0), (x0+1,y0), (x0,y0+1), (x0+1,y0+1).
* nearest: index floor(xf + 0.5) (ties go up), then clamped.

Gradients: the XLA path is differentiated by JAX autodiff, and the Pallas path
has a `jax.custom_vjp` whose cotangents equal that autodiff (image: the
transposed gather; flow: d/dalpha and d/dbeta of the bilinear weights; zero for
nearest). The CUDA backward differs in two quirks we do not copy: its image
gradient uses alpha = xf - int(xf) (truncation, wrong for negative positions)
and it applies bilinear gradients even for nearest sampling.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.kernels import pallas_resample
from jaxseg.kernels import pallas_triton
from jaxseg.kernels.resample_math import accumulation_dtype
from jaxseg.kernels.resample_math import bilinear_combine
from jaxseg.kernels.resample_math import bilinear_taps
from jaxseg.kernels.resample_math import nearest_index
from jaxseg.kernels.resample_math import output_dtype
from jaxseg.kernels.resample_math import position_dtype

Mode = Literal["bilinear", "nearest"]
Impl = Literal["auto", "xla", "pallas"]
_MODES = ("bilinear", "nearest")
_IMPLS = ("auto", "xla", "pallas")


def check_args(image: jax.Array, flow: jax.Array, mode: str, impl: str) -> None:
  """Raises ValueError naming the argument when shapes or options are wrong."""
  if mode not in _MODES:
    raise ValueError(f"resample2d: mode={mode!r}; expected one of {_MODES}.")
  if impl not in _IMPLS:
    raise ValueError(f"resample2d: impl={impl!r}; expected one of {_IMPLS}.")
  if image.ndim != 4:
    raise ValueError(f"resample2d: image must be NHWC (4-D), got shape "
                     f"{image.shape}.")
  n, h, w, _ = image.shape
  if flow.shape != (n, h, w, 2):
    raise ValueError(f"resample2d: flow must have shape (N, H, W, 2) = "
                     f"{(n, h, w, 2)} to match image {image.shape}, got "
                     f"{flow.shape}.")
  if not jnp.issubdtype(flow.dtype, jnp.floating):
    raise ValueError(f"resample2d: flow must be a float array, got "
                     f"{flow.dtype}.")
  if jnp.issubdtype(image.dtype, jnp.complexfloating):
    raise ValueError(f"resample2d: complex images are not supported "
                     f"({image.dtype}).")


# ----------------------------------------------------------------------------
# XLA reference path.
# ----------------------------------------------------------------------------
def _positions(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(xf, yf) of shape (N, H, W): pixel coordinates plus flow."""
  _, h, w, _ = flow.shape
  dt = position_dtype(flow.dtype)
  xs = jnp.arange(w, dtype=dt)[None, None, :]
  ys = jnp.arange(h, dtype=dt)[None, :, None]
  return xs + flow[..., 0].astype(dt), ys + flow[..., 1].astype(dt)


def _gather(flat: jax.Array, yi: jax.Array, xi: jax.Array,
            width: int) -> jax.Array:
  """flat (N, H*W, C) at rows yi, cols xi (N, H, W) -> (N, H, W, C)."""
  n, h, w = yi.shape
  idx = (yi * width + xi).reshape(n, h * w, 1)
  out = jnp.take_along_axis(flat, idx, axis=1, mode="promise_in_bounds")
  return out.reshape(n, h, w, flat.shape[-1])


def resample2d_xla(image: jax.Array, flow: jax.Array, *,
                   mode: Mode = "bilinear") -> jax.Array:
  """Resample2d with XLA gathers (any backend; differentiable by autodiff)."""
  check_args(image, flow, mode, "xla")
  n, h, w, c = image.shape
  xf, yf = _positions(flow)
  flat = image.reshape(n, h * w, c)
  if mode == "nearest":
    return _gather(flat, nearest_index(yf, h), nearest_index(xf, w), w)
  acc = accumulation_dtype(image.dtype)
  xl, xr, yt, yb, alpha, beta = bilinear_taps(xf, yf, h, w)
  alpha = alpha.astype(acc)[..., None]
  beta = beta.astype(acc)[..., None]
  corners = [_gather(flat, yi, xi, w).astype(acc)
             for yi, xi in ((yt, xl), (yt, xr), (yb, xl), (yb, xr))]
  out = bilinear_combine(alpha, beta, *corners)
  return out.astype(output_dtype(image.dtype, mode))


# ----------------------------------------------------------------------------
# Pallas path with custom_vjp.
# ----------------------------------------------------------------------------
def _cotangent_zeros(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros(x.shape, x.dtype)
  return np.zeros(x.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _resample2d_pallas(image: jax.Array, flow: jax.Array, mode: str,
                       interpret: bool) -> jax.Array:
  return pallas_resample.forward(image, flow, mode=mode, interpret=interpret)


def _resample2d_pallas_fwd(image, flow, mode, interpret):
  out = _resample2d_pallas(image, flow, mode, interpret)
  return out, (image, flow)


def _resample2d_pallas_bwd(mode, interpret, residuals, g):
  image, flow = residuals
  if jnp.issubdtype(image.dtype, jnp.inexact):
    # The image cotangent is the transposed gather (a scatter-add), which XLA
    # already does well (atomics on GPU); reuse its exact autodiff.
    _, vjp = jax.vjp(lambda im: resample2d_xla(im, flow, mode=mode), image)
    (d_image,) = vjp(g)
  else:
    d_image = _cotangent_zeros(image)
  if mode == "nearest":
    d_flow = jnp.zeros_like(flow)
  else:
    d_flow = pallas_resample.flow_grad(image, flow, g, interpret=interpret)
  return d_image, d_flow


_resample2d_pallas.defvjp(_resample2d_pallas_fwd, _resample2d_pallas_bwd)


def resample2d_pallas(image: jax.Array, flow: jax.Array, *,
                      mode: Mode = "bilinear",
                      interpret: bool | None = None) -> jax.Array:
  """Resample2d as a Pallas Triton kernel (custom_vjp; see module doc).

  Args:
    image: (N, H, W, C) of any real dtype.
    flow: (N, H, W, 2) float32, [dx, dy] in pixels.
    mode: 'bilinear' or 'nearest'.
    interpret: run the kernel as plain JAX ops; None = only in programs not for a GPU.
  """
  check_args(image, flow, mode, "pallas")
  reason = pallas_resample.unsupported_reason(image, flow, mode)
  if reason:
    raise ValueError(f"resample2d(impl='pallas'): {reason}")
  if interpret is None:
    interpret = not pallas_triton.gpu_backend()
  return _resample2d_pallas(image, flow, mode, bool(interpret))


def resample2d(image: jax.Array, flow: jax.Array, *,
               mode: Mode = "bilinear", impl: Impl = "auto",
               interpret: bool | None = None) -> jax.Array:
  """Warps `image` by `flow` with the CUDA Resample2d semantics (NHWC).

  Args:
    image: (N, H, W, C), any real dtype (labels: uint8/int with 'nearest').
    flow: (N, H, W, 2) float, [dx, dy] in pixels: output (x, y) samples
      image at (x + dx, y + dy).
    mode: 'bilinear' (Resample2d(bilinear=True)) or 'nearest'.
    impl: 'xla', 'pallas' (Triton kernel; interpreted off GPU), or 'auto'
      (Pallas on GPU when the kernel supports the inputs and compiles, XLA
      otherwise).
    interpret: only for impl='pallas': force/disable interpret mode.

  Returns:
    (N, H, W, C) warped image; dtype = image dtype for 'nearest' and float
    images, float32 for bilinear sampling of integer images.
  """
  check_args(image, flow, mode, impl)
  if impl == "xla":
    return resample2d_xla(image, flow, mode=mode)
  if impl == "pallas":
    return resample2d_pallas(image, flow, mode=mode, interpret=interpret)
  if pallas_triton.gpu_backend() and pallas_resample.usable(image, flow,
                                                             mode):
    return _resample2d_pallas(image, flow, mode, False)
  return resample2d_xla(image, flow, mode=mode)
