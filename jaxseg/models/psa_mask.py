"""The point-wise spatial attention mask op of PSANet (hszhao/semseg `lib/psa`), in JAX.

semseg's `psa_mask(input, psa_type, mask_H, mask_W)` (C++/CUDA kernels) turns, for every
feature position p = (h, w), the mask_H x mask_W attention logits centred on p into a full
over-the-map row:

    input  (N, mask_H * mask_W, H, W)     logits of relative offsets, centre = (half_H, half_W)
    output (N, H * W, H, W)               zero where the offset falls outside the mask window
    collect    (psa_type 0): output[n, q, p] = input[n, m(q - p), p]
    distribute (psa_type 1): output[n, p, q] = input[n, m(q - p), p]

with m(dh, dw) = (dh + half_H) * mask_W + (dw + half_W), defined when |dh| <= half_H and
|dw| <= half_W (the kernels' clipped [hstart, hend) x [wstart, wend) loops). Every output
entry is written at most once, so the op is a masked gather; its gradient (the kernels'
backward) is the matching scatter, which JAX derives from `take_along_axis`.

Here everything is NHWC: `input` is (N, H, W, mask_H * mask_W) and the result is the
original output transposed to (N, H, W, H * W), i.e. `result[n, h, w, c] =
output[n, c, h, w]`. The gather indices depend only on static shapes and are built with
numpy at trace time, so the op is jit-able for any feature size.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

PSA_TYPES = (0, 1)  # 0 = collect, 1 = distribute (2, bi-direction, is both, in PSANet).


def default_mask_size(feature_size: int) -> int:
  """semseg's mask side when none is given: 2 * feature - 1 (every offset on the map)."""
  return 2 * feature_size - 1


@functools.lru_cache(maxsize=32)
def _collect_indices(height: int, width: int, mask_h: int, mask_w: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(HW, HW) mask-channel index m(q - p) for row p, column q, and its validity."""
  hh, hw = (mask_h - 1) // 2, (mask_w - 1) // 2
  ph, pw = np.divmod(np.arange(height * width), width)
  dh = ph[None, :] - ph[:, None] + hh  # [p, q]: offset of q relative to p, mask-indexed
  dw = pw[None, :] - pw[:, None] + hw
  valid = (dh >= 0) & (dh < mask_h) & (dw >= 0) & (dw < mask_w)
  index = np.where(valid, dh * mask_w + dw, 0).astype(np.int32)
  return index, valid


def psa_mask(x: jax.Array, psa_type: int, mask_size: tuple[int, int] | None = None
             ) -> jax.Array:
  """semseg's `PF.psa_mask` on NHWC inputs.

  Args:
    x: (N, H, W, mask_h * mask_w) attention logits per position (row-major mask offsets).
    psa_type: 0 (collect) or 1 (distribute).
    mask_size: (mask_h, mask_w), both odd; None = (2H - 1, 2W - 1) as in semseg.

  Returns:
    (N, H, W, H * W): the original's (N, H*W, H, W) output in NHWC, in x's dtype; entries
    whose offset lies outside the mask window are 0 (the original's zero-initialised buffer).
  """
  if psa_type not in PSA_TYPES:
    raise ValueError(f"psa_mask: psa_type must be 0 (collect) or 1 (distribute), got {psa_type}")
  n, height, width, channels = x.shape
  if mask_size is None:
    mask_size = (default_mask_size(height), default_mask_size(width))
  mask_h, mask_w = (int(v) for v in mask_size)
  if mask_h % 2 == 0 or mask_w % 2 == 0:
    raise ValueError(f"psa_mask: mask size must be odd, got {mask_h}x{mask_w}")
  if channels != mask_h * mask_w:
    raise ValueError(f"psa_mask: input has {channels} channels; a {mask_h}x{mask_w} mask needs "
                     f"{mask_h * mask_w}")
  index, valid = _collect_indices(height, width, mask_h, mask_w)
  rows = x.reshape(n, height * width, channels)  # [n, p, offset]
  # gathered[n, p, q] = x[n, p, m(q - p)]: the collect output with p spatial, q channel.
  gathered = jnp.take_along_axis(rows, jnp.asarray(index)[None], axis=2)
  gathered = jnp.where(jnp.asarray(valid)[None], gathered, jnp.zeros((), x.dtype))
  if psa_type == 1:
    # distribute: output[n, p, q] (p channel, q spatial) -> NHWC [n, q, p].
    gathered = jnp.swapaxes(gathered, 1, 2)
  return gathered.reshape(n, height, width, height * width)
