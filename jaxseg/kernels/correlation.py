"""Correlation (cost volume) layer of FlowNetC, in NHWC.

Semantics of `networks/correlation_package/correlation_cuda_kernel.cu`: both
inputs are zero-padded by `pad_size`; with kr = (kernel_size - 1) // 2,
r = max_displacement // stride2 and D = 2r + 1, the output has D*D channels,
channel (tj + r) * D + (ti + r) holding, at output pixel (oy, ox),

  sum_{j,i in [-kr, kr]} sum_c in1[y1 + j, x1 + i, c]
      * in2[y1 + j + tj*stride2, x1 + i + ti*stride2, c]
  / (kernel_size**2 * C),

with y1 = oy * stride1 + max_displacement, x1 likewise (padded coordinates),
and output size ceil((H + 2*pad - 2*(kr + max_displacement)) / stride1).
FlowNetC uses pad 20, kernel 1, max displacement 20, strides 1 and 2 (441
channels, output size = input size).

For kernel_size > 1 the CUDA kernel centres its window on y1 (not on
y1 + kr), so the top/left taps can fall kr pixels outside the padded buffer,
where it reads unrelated memory; here those taps read zeros.

Implementation: a `lax.scan` over the D vertical displacements; each step
takes the displaced rows of in2 once and forms the D horizontal displacements
as fused multiply-and-reduce over channels, so memory stays at a few input
sizes (no (H, W, D*D, C) intermediate) and no matmul (hence no TF32) is
involved. Differentiable by autodiff; the backward pass recomputes the
displaced rows instead of storing one copy of in2 per vertical displacement.
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def correlation_output_size(size: int, *, pad_size: int, kernel_size: int,
                            max_displacement: int, stride1: int) -> int:
  """Output height/width for an input height/width `size` (CUDA formula)."""
  border = (kernel_size - 1) // 2 + max_displacement
  return -(-(size + 2 * pad_size - 2 * border) // stride1)


def _check(a: jax.Array, b: jax.Array, pad_size: int, kernel_size: int,
           max_displacement: int, stride1: int, stride2: int) -> None:
  if a.ndim != 4 or a.shape != b.shape:
    raise ValueError(f"correlation: inputs must be NHWC arrays of equal shape, "
                     f"got {a.shape} and {b.shape}.")
  if kernel_size < 1 or kernel_size % 2 != 1:
    raise ValueError(f"correlation: kernel_size must be odd and >= 1, got "
                     f"{kernel_size}.")
  if stride1 < 1 or stride2 < 1:
    raise ValueError(f"correlation: stride1 and stride2 must be >= 1, got "
                     f"{stride1}, {stride2}.")
  if pad_size < 0 or max_displacement < 0:
    raise ValueError(f"correlation: pad_size and max_displacement must be >= "
                     f"0, got {pad_size}, {max_displacement}.")


def correlation(a: jax.Array, b: jax.Array, *, pad_size: int,
                kernel_size: int = 1, max_displacement: int, stride1: int = 1,
                stride2: int = 1) -> jax.Array:
  """FlowNet correlation of `a` with `b` (see module doc).

  Args:
    a: (N, H, W, C) first feature map (in1).
    b: (N, H, W, C) second feature map (in2), sampled at displacements.
    pad_size: zero padding of both inputs.
    kernel_size: odd patch size (FlowNetC: 1).
    max_displacement: largest displacement in pixels.
    stride1: output stride over `a`.
    stride2: displacement step.

  Returns:
    (N, H', W', (2r+1)**2), r = max_displacement // stride2, in a's float dtype
    (float32 for integer inputs), accumulated in at least float32.
  """
  _check(a, b, pad_size, kernel_size, max_displacement, stride1, stride2)
  n, h, w, c = a.shape
  kr = (kernel_size - 1) // 2
  r = max_displacement // stride2
  d = 2 * r + 1
  sizes = dict(pad_size=pad_size, kernel_size=kernel_size,
               max_displacement=max_displacement, stride1=stride1)
  ho = correlation_output_size(h, **sizes)
  wo = correlation_output_size(w, **sizes)
  if ho < 1 or wo < 1:
    raise ValueError(f"correlation: input {h}x{w} gives an empty output "
                     f"({ho}x{wo}) for pad_size={pad_size}, kernel_size="
                     f"{kernel_size}, max_displacement={max_displacement}, "
                     f"stride1={stride1}.")
  out_dtype = a.dtype if jnp.issubdtype(a.dtype, jnp.floating) else np.float32
  acc = jnp.promote_types(out_dtype, jnp.float32)
  # Extra margin kr so that every tap (see module doc) is inside the array.
  p = pad_size + kr
  widths = ((0, 0), (p, p), (p, p), (0, 0))
  ap = jnp.pad(a.astype(acc), widths)
  bp = jnp.pad(b.astype(acc), widths)
  y0 = kr + max_displacement  # Row of output 0's window centre in ap.
  span_y = (ho - 1) * stride1 + 1
  span_x = (wo - 1) * stride1 + 1

  def window(x, y, xs):
    return x[:, y:y + span_y:stride1, xs:xs + span_x:stride1, :]

  a_taps = {(j, i): window(ap, y0 + j, y0 + i)
            for j in range(-kr, kr + 1) for i in range(-kr, kr + 1)}

  def row_step(carry, tj):
    # Rows of b displaced by tj*stride2, for every vertical tap j.
    dy = tj * stride2
    outs = []
    rows = {j: lax.dynamic_slice_in_dim(bp, y0 + j + dy, span_y, axis=1)
            [:, ::stride1] for j in range(-kr, kr + 1)}
    for ti in range(-r, r + 1):
      total = None
      for (j, i), a_win in a_taps.items():
        xs = y0 + i + ti * stride2
        b_win = rows[j][:, :, xs:xs + span_x:stride1, :]
        term = jnp.sum(a_win * b_win, axis=-1)
        total = term if total is None else total + term
      outs.append(total)
    return carry, jnp.stack(outs, axis=-1)

  # Rematerialise each step's displaced rows in the backward pass (cheap
  # slices) instead of saving D copies of in2 as scan residuals.
  _, vol = lax.scan(jax.checkpoint(row_step), None, jnp.arange(-r, r + 1))
  # vol: (D_y, N, H', W', D_x) -> channel (tj + r) * D + (ti + r).
  vol = jnp.moveaxis(vol, 0, 3).reshape(n, ho, wo, d * d)
  return (vol / float(kernel_size * kernel_size * c)).astype(out_dtype)
