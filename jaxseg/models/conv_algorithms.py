"""Convolution algorithms for Conv2d on the CPU backend (NHWC x HWIO, torch padding).

XLA:CPU's convolution is slow for wide inputs (1x1 convs, 3x3 convs with >= 1024 input
channels, e.g. layer4 / ASPP / mod6-7, strided 3x3 convs with >= 256 channels) and for
ResNeXt's grouped convs, where GEMMs or a fused direct loop are 1.5-5x faster. The
results equal lax.conv_general_dilated up to float summation order; on other backends
Conv2d always uses lax.conv (see `conv_algorithm`).
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "xla")
_GEMM_TAPS_MIN_CHANNELS = 1024
_STRIDED_TAPS_MIN_CHANNELS = 256
_GROUPED_DIRECT_MAX_WIDTH = 8


def conv_algorithm(impl: str, kernel_shape: Sequence[int], stride: Sequence[int],
                   padding: Sequence[int], groups: int, backend: str | None = None) -> str:
  """Conv2d's code path for a HWIO kernel shape.

  One of 'xla', 'gemm_1x1', 'gemm_taps', 'gemm_taps_strided', 'grouped_direct',
  'grouped_gemm'; the thresholds come from 2-core CPU timings against lax.conv.
  """
  backend = jax.default_backend() if backend is None else backend
  if impl == "xla" or backend != "cpu":
    return "xla"
  kh, kw, cin_g, cout = kernel_shape
  unit_stride = tuple(stride) == (1, 1)
  if groups == 1 and (kh, kw) == (1, 1) and tuple(padding) == (0, 0):
    return "gemm_1x1"
  if groups == 1 and unit_stride and cin_g >= _GEMM_TAPS_MIN_CHANNELS:
    return "gemm_taps"
  if groups == 1 and not unit_stride and cin_g >= _STRIDED_TAPS_MIN_CHANNELS:
    return "gemm_taps_strided"
  if groups > 1 and unit_stride:
    narrow = cin_g <= _GROUPED_DIRECT_MAX_WIDTH and cout // groups <= _GROUPED_DIRECT_MAX_WIDTH
    return "grouped_direct" if narrow else "grouped_gemm"
  return "xla"


def _conv_taps(size: tuple[int, int], ksize: tuple[int, int], padding: Sequence[int],
               dilation: Sequence[int]):
  """Output size and the kernel taps that touch the input (others only see zero padding).

  Each tap is (i, j, rows, cols): output rows [r0, r1) read input rows [r0+dy, r1+dy).
  """
  out, ranges = [], []
  for n, k, p, d in zip(size, ksize, padding, dilation):
    o = n + 2 * p - d * (k - 1)
    spans = {}
    for i in range(k):
      off = i * d - p
      lo, hi = max(0, -off), min(o, n - off)
      if lo < hi:
        spans[i] = (lo, hi, off)
    out.append(o)
    ranges.append(spans)
  taps = [(i, j, ranges[0][i], ranges[1][j]) for i in ranges[0] for j in ranges[1]]
  return tuple(out), taps


def _shift(z: jax.Array, out_hw: tuple[int, int], rows, cols) -> jax.Array:
  """Places z[:, r0+dy:r1+dy, c0+dx:c1+dx] at output [r0:r1, c0:c1] (zeros elsewhere)."""
  (r0, r1, dy), (c0, c1, dx) = rows, cols
  part = z[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx]
  pads = [(0, 0), (r0, out_hw[0] - r1), (c0, out_hw[1] - c1)] + [(0, 0)] * (z.ndim - 3)
  return jnp.pad(part, pads)


def conv1x1_gemm(x: jax.Array, kernel: jax.Array, stride: Sequence[int], precision) -> jax.Array:
  if tuple(stride) != (1, 1):
    x = x[:, ::stride[0], ::stride[1]]
  n, h, w, cin = x.shape
  y = jnp.dot(x.reshape(-1, cin), kernel[0, 0], precision=precision)
  return y.reshape(n, h, w, kernel.shape[-1])


def conv_tap_gemms(x: jax.Array, kernel: jax.Array, padding, dilation, precision) -> jax.Array:
  """Stride-1 conv as one GEMM per tap on the whole input, outputs shifted and summed."""
  n, h, w, cin = x.shape
  out_hw, taps = _conv_taps((h, w), kernel.shape[:2], padding, dilation)
  x2 = x.reshape(-1, cin)
  y = None
  for i, j, rows, cols in taps:
    z = jnp.dot(x2, kernel[i, j], precision=precision).reshape(n, h, w, -1)
    part = _shift(z, out_hw, rows, cols)
    y = part if y is None else y + part
  return y


def conv_strided_tap_gemms(x: jax.Array, kernel: jax.Array, stride, padding, dilation,
                            precision) -> jax.Array:
  """Strided conv as one GEMM per tap on strided slices of the padded input."""
  n, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
  ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
  wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  y = None
  for i in range(kh):
    for j in range(kw):
      xs = xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
      z = jnp.dot(xs.reshape(-1, cin), kernel[i, j], precision=precision)
      y = z if y is None else y + z
  return y.reshape(n, ho, wo, cout)


def conv_grouped_gemm(x: jax.Array, kernel: jax.Array, padding, dilation, groups: int,
                       precision) -> jax.Array:
  """Stride-1 grouped conv as one batched GEMM over groups, tap outputs shifted and summed."""
  n, h, w, _ = x.shape
  kh, kw, cg, cout = kernel.shape
  og = cout // groups
  (ho, wo), taps = _conv_taps((h, w), (kh, kw), padding, dilation)
  nt = len(taps)
  xg = x.reshape(n * h * w, groups, cg).transpose(1, 0, 2)  # (G, P, cg)
  kt = jnp.stack([kernel[i, j] for i, j, _, _ in taps], 0).reshape(nt, cg, groups, og)
  kt = kt.transpose(2, 1, 0, 3).reshape(groups, cg, nt * og)
  z = jax.lax.dot_general(xg, kt, (((2,), (1,)), ((0,), (0,))), precision=precision)
  # Shift in the group-major layout and transpose only the (T times smaller) result.
  z = z.reshape(groups * n, h, w, nt, og)
  y = None
  for t, (_, _, rows, cols) in enumerate(taps):
    part = _shift(z[..., t, :], (ho, wo), rows, cols)
    y = part if y is None else y + part
  return y.reshape(groups, n, ho, wo, og).transpose(1, 2, 3, 0, 4).reshape(n, ho, wo, cout)


def conv_grouped_direct(x: jax.Array, kernel: jax.Array, padding, dilation,
                         groups: int) -> jax.Array:
  """Stride-1 grouped conv with few channels per group as fused multiply-adds."""
  n, h, w, _ = x.shape
  kh, kw, cg, cout = kernel.shape
  og = cout // groups
  (ho, wo), taps = _conv_taps((h, w), (kh, kw), padding, dilation)
  k5 = kernel.reshape(kh, kw, cg, groups, og)
  xg = x.reshape(n, h, w, groups, cg)
  y = None
  for i, j, rows, cols in taps:
    xs = _shift(xg, (ho, wo), rows, cols)
    for c in range(cg):
      term = xs[..., c, None] * k5[i, j, c]
      y = term if y is None else y + term
  return y.reshape(n, ho, wo, cout)
