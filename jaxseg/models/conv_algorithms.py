"""Convolution algorithms for Conv2d on the CPU backend (NHWC x HWIO, torch padding).

XLA:CPU's convolution is slow for wide inputs (1x1 convs, 3x3 convs with >= 1024 input
channels, e.g. layer4 / ASPP / mod6-7, strided 3x3 convs with >= 256 channels) and for
ResNeXt's grouped convs. Grouped float32 convs run on jaxseg's native CPU kernel
(jaxseg/kernels/grouped_conv.py, 3.5-10x faster than the paths below) when it builds and
the process has one device (a custom call has no SPMD partitioning rule), else as GEMMs or
a fused direct loop (1.5-5x faster than lax.conv). Other shapes run as GEMMs; wide 3x3
convs (dilation <= 4 via space-to-batch) run as Winograd F(2x2, 3x3), 2.25x fewer
multiplications, 1.2-1.8x faster. The results equal lax.conv_general_dilated up to
float rounding (Winograd: ~2e-7 relative, like a change of summation order); for other
platforms Conv2d always uses lax.conv (see `conv_algorithm`). The platform is the one the
program is traced for (jaxseg.runtime.platforms.target_platform), not necessarily this host's.
"""
from __future__ import annotations

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp

from jaxseg.kernels.native import native_kernels_available
from jaxseg.runtime import platforms

CONV_IMPLS = ("auto", "xla")
_GEMM_TAPS_MIN_CHANNELS = 1024
_STRIDED_TAPS_MIN_CHANNELS = 256
_GROUPED_DIRECT_MAX_WIDTH = 8
_WINOGRAD_MIN_CHANNELS = 256
_WINOGRAD_MAX_DILATION = 4
_WINOGRAD_MAX_BYTES = 1 << 30  # transformed input (~4x the input); beyond: other paths


def conv_algorithm(impl: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
                   stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                   groups: int, itemsize: int = 4, backend: str | None = None) -> str:
  """Conv2d's code path for an NHWC input shape and a HWIO kernel shape.

  One of 'xla', 'gemm_1x1', 'winograd', 'gemm_taps', 'gemm_taps_strided',
  'grouped_native', 'grouped_direct', 'grouped_gemm'; the thresholds come from 2-core
  CPU timings against lax.conv. `backend`: the platform the conv is for (default: the one
  being traced for, `platforms.target_platform()`).
  """
  backend = platforms.target_platform() if backend is None else backend
  if impl == "xla" or backend != "cpu":
    return "xla"
  kh, kw, cin_g, cout = kernel_shape
  unit_stride = tuple(stride) == (1, 1)
  if groups == 1 and (kh, kw) == (1, 1) and tuple(padding) == (0, 0):
    return "gemm_1x1"
  if (groups == 1 and unit_stride and (kh, kw) == (3, 3) and tuple(padding) == tuple(dilation)
      and dilation[0] == dilation[1] <= _WINOGRAD_MAX_DILATION
      and min(cin_g, cout) >= _WINOGRAD_MIN_CHANNELS
      and 4 * math.prod(x_shape) * itemsize * dilation[0] ** 2 <= _WINOGRAD_MAX_BYTES):
    return "winograd"
  if groups == 1 and unit_stride and cin_g >= _GEMM_TAPS_MIN_CHANNELS:
    return "gemm_taps"
  if groups == 1 and not unit_stride and cin_g >= _STRIDED_TAPS_MIN_CHANNELS:
    return "gemm_taps_strided"
  if groups > 1 and itemsize == 4 and jax.device_count() == 1 and native_kernels_available():
    return "grouped_native"
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
  """Unpadded 1x1 conv (any stride) as one GEMM over pixels."""
  if tuple(stride) != (1, 1):
    x = x[:, ::stride[0], ::stride[1]]
  n, h, w, cin = x.shape
  y = jnp.dot(x.reshape(-1, cin), kernel[0, 0], precision=precision)
  return y.reshape(n, h, w, kernel.shape[-1])


def conv_tap_gemms(x: jax.Array, kernel: jax.Array, padding, dilation, precision) -> jax.Array:
  """Stride-1 conv as one GEMM per tap, outputs shifted and summed.

  Each GEMM reads only the input rows its tap reaches (rows are contiguous in NHWC, so
  the slice is cheap): with ASPP's dilations 12/24/36 on a 64-row map that skips 12-38%
  of the multiply-adds; columns are cropped on the (narrower) output instead.
  """
  n, h, w, cin = x.shape
  (ho, wo), taps = _conv_taps((h, w), kernel.shape[:2], padding, dilation)
  y = None
  for i, j, (r0, r1, dy), (c0, c1, dx) in taps:
    rows = x[:, r0 + dy:r1 + dy].reshape(-1, cin)
    z = jnp.dot(rows, kernel[i, j], precision=precision).reshape(n, r1 - r0, w, -1)
    part = jnp.pad(z[:, :, c0 + dx:c1 + dx], ((0, 0), (r0, ho - r1), (c0, wo - c1), (0, 0)))
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


def _space_to_batch(x: jax.Array, d: int) -> jax.Array:
  """(n, h, w, c) -> (d*d*n, ceil(h/d), ceil(w/d), c): the d x d phases of a dilated conv."""
  n, h, w, c = x.shape
  hp, wp = -(-h // d) * d, -(-w // d) * d
  x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
  x = x.reshape(n, hp // d, d, wp // d, d, c).transpose(2, 4, 0, 1, 3, 5)
  return x.reshape(d * d * n, hp // d, wp // d, c)


def _batch_to_space(y: jax.Array, d: int, n: int, h: int, w: int) -> jax.Array:
  _, hq, wq, c = y.shape
  y = y.reshape(d, d, n, hq, wq, c).transpose(2, 3, 0, 4, 1, 5).reshape(n, hq * d, wq * d, c)
  return y[:, :h, :w]


def _winograd_bt(r):
  """B^T of F(2x2, 3x3) applied along a length-4 list."""
  return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]


def _winograd_at(r):
  """A^T of F(2x2, 3x3) applied along a length-4 list."""
  return [r[0] + r[1] + r[2], r[1] - r[2] - r[3]]


def conv_winograd(x: jax.Array, kernel: jax.Array, dilation: int, precision) -> jax.Array:
  """3x3 'same' conv (padding = dilation, stride 1) as Winograd F(2x2, 3x3).

  Dilation d is handled exactly by space-to-batch: each of the d*d phase images is
  an undilated conv with padding 1 (zeros past the border stay zeros).
  """
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  if dilation > 1:
    y = conv_winograd(_space_to_batch(x, dilation), kernel, 1, precision)
    return _batch_to_space(y, dilation, n, h, w)
  th, tw = -(-h // 2), -(-w // 2)
  xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
  tiles = [[xp[:, a:a + 2 * th:2, b:b + 2 * tw:2] for b in range(4)] for a in range(4)]
  cols = [_winograd_bt([tiles[a][b] for a in range(4)]) for b in range(4)]
  v = [_winograd_bt([cols[b][i] for b in range(4)]) for i in range(4)]
  v = jnp.stack([v[i][j] for i in range(4) for j in range(4)], 0).reshape(16, -1, cin)
  g = jnp.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], jnp.float32)
  u = jnp.einsum("ai,ijco,bj->abco", g, kernel.astype(jnp.float32), g,
                 precision=jax.lax.Precision.HIGHEST).astype(x.dtype).reshape(16, cin, cout)
  m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), precision=precision)
  m = m.reshape(4, 4, n, th, tw, cout)
  rows = [_winograd_at([m[i, j] for i in range(4)]) for j in range(4)]
  out = [[_winograd_at([rows[j][p] for j in range(4)])[q] for q in range(2)] for p in range(2)]
  y = jnp.stack([jnp.stack(out[p], axis=3) for p in range(2)], axis=2)  # (n, th, 2, tw, 2, c)
  return y.reshape(n, 2 * th, 2 * tw, cout)[:, :h, :w]
