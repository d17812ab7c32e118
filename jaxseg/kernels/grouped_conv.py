"""Grouped 2-D convolution through the native CPU kernel (`kernels/cpu/grouped_conv.cc`).

Same contract as `lax.conv_general_dilated` with NHWC x HWIO, symmetric zero padding and
`feature_group_count=groups`, float32 only. The forward pass runs the FFI kernel; the backward
pass is XLA's (the VJP of lax.conv), so training works unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.kernels.native import native_kernels_available

_LANES = 8  # output channels per vector register in the kernel (AVX2 float32)


def grouped_conv_reference(x: jax.Array, kernel: jax.Array, stride: Sequence[int],
                           padding: Sequence[int], dilation: Sequence[int], groups: int,
                           precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """The same convolution through lax.conv (full float32 precision unless told otherwise)."""
  (ph, pw) = padding
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=tuple(stride), padding=((ph, ph), (pw, pw)),
      rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=precision)


def pack_grouped_kernel(kernel: jax.Array, groups: int) -> tuple[jax.Array, int]:
  """HWIO kernel -> the kernel's (groups', chunks, KH, KW, cin/groups', lanes) layout and
  out/groups'.

  Groups with fewer than 8 outputs are merged (block-diagonal, zeros off the diagonal) so a
  vector register holds whole groups: ResNeXt's 4-wide groups then cost 2x the multiply-adds
  but no partial vectors. Outputs are zero-padded to whole chunks of 16 lanes (8 when that
  wastes less), each chunk's taps contiguous.
  """
  kh, kw, cg, cout = kernel.shape
  og = cout // groups
  merge = _LANES // og if og < _LANES and _LANES % og == 0 and groups % (_LANES // og) == 0 else 1
  g2 = groups // merge
  k = kernel.reshape(kh, kw, cg, g2, merge, og).transpose(3, 0, 1, 4, 2, 5)  # g2 kh kw a cg og
  if merge > 1:
    eye = jnp.eye(merge, dtype=kernel.dtype)[None, None, None, :, None, :, None]
    k = k[:, :, :, :, :, None, :] * eye  # g2 kh kw a cg b og: zero unless a == b
  k = k.reshape(g2, kh, kw, merge * cg, merge * og)
  out = merge * og
  lanes = 2 * _LANES if out % (2 * _LANES) == 0 or out > 2 * _LANES else _LANES
  padded = -(-out // lanes) * lanes
  k = jnp.pad(k, ((0, 0),) * 4 + ((0, padded - out),))
  k = k.reshape(g2, kh, kw, merge * cg, padded // lanes, lanes).transpose(0, 4, 1, 2, 3, 5)
  return k, out


def _output_size(n: int, k: int, s: int, p: int, d: int) -> int:
  return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _native_forward(x, kernel, stride, padding, dilation, groups):
  packed, out_per_group = pack_grouped_kernel(kernel, groups)
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  ho = _output_size(h, kh, stride[0], padding[0], dilation[0])
  wo = _output_size(w, kw, stride[1], padding[1], dilation[1])
  call = jax.ffi.ffi_call("jaxseg_grouped_conv", jax.ShapeDtypeStruct((n, ho, wo, cout), x.dtype),
                          vmap_method="sequential")
  return call(x, packed, stride_h=np.int64(stride[0]), stride_w=np.int64(stride[1]),
              pad_h=np.int64(padding[0]), pad_w=np.int64(padding[1]),
              dilation_h=np.int64(dilation[0]), dilation_w=np.int64(dilation[1]),
              out_per_group=np.int64(out_per_group))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _grouped_conv(x, kernel, stride, padding, dilation, groups):
  return _native_forward(x, kernel, stride, padding, dilation, groups)


def _grouped_conv_fwd(x, kernel, stride, padding, dilation, groups):
  return _native_forward(x, kernel, stride, padding, dilation, groups), (x, kernel)


def _grouped_conv_bwd(stride, padding, dilation, groups, residuals, g):
  x, kernel = residuals
  _, vjp = jax.vjp(lambda a, b: grouped_conv_reference(a, b, stride, padding, dilation, groups,
                                                       precision=None), x, kernel)
  return vjp(g)


_grouped_conv.defvjp(_grouped_conv_fwd, _grouped_conv_bwd)


def grouped_conv_native(x: jax.Array, kernel: jax.Array, stride: Sequence[int],
                        padding: Sequence[int], dilation: Sequence[int],
                        groups: int) -> jax.Array:
  """Grouped conv on the native CPU kernel (float32 NHWC x HWIO, torch-style padding)."""
  if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
    raise TypeError(f"grouped_conv_native: float32 only, got {x.dtype} x {kernel.dtype}")
  if x.shape[-1] != kernel.shape[2] * groups or kernel.shape[-1] % groups:
    raise ValueError(f"grouped_conv_native: input {x.shape} / kernel {kernel.shape} do not "
                     f"match groups={groups}")
  if not native_kernels_available():
    raise RuntimeError("grouped_conv_native: the native CPU kernels could not be built")
  return _grouped_conv(x, kernel, tuple(stride), tuple(padding), tuple(dilation), groups)
