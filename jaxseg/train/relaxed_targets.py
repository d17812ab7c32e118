"""On-device label-relaxation targets (port of RelaxedBoundaryLossToTensor).

The original builds, per image on the host, a multi-hot target of C+1 uint8
channels (the last one is "ignore"): a class is allowed at a pixel when it
occurs anywhere in the (2*border+1)^2 window around it, with pixels outside
the image counting as ignore. Here the same tensor is computed on device from
the integer label batch, so only the uint8 labels cross host->device.

Everything is NHWC: labels (N,H,W) -> targets (N,H,W,C+1).
"""
from typing import Sequence

import jax
import jax.numpy as jnp


def _window_max(x: jax.Array, radius: int, axis: int) -> jax.Array:
  """Max over a centred window of 2*radius+1 along `axis` (x already padded).

  `x` has `2*radius` more entries than the output along `axis`; the window is
  taken as shifted slices, which XLA fuses into a few elementwise maxima.
  """
  out_len = x.shape[axis] - 2 * radius
  out = jax.lax.slice_in_dim(x, 0, out_len, axis=axis)
  for d in range(1, 2 * radius + 1):
    out = jnp.maximum(out, jax.lax.slice_in_dim(x, d, d + out_len, axis=axis))
  return out


def find_boundaries_thick(label_img: jax.Array) -> jax.Array:
  """skimage.segmentation.find_boundaries(mode='thick', connectivity=1).

  A pixel is a boundary when the grey dilation and the grey erosion of the
  label image with the 4-connected cross differ, i.e. when one of its 4
  neighbours carries another label. skimage's morphology uses scipy's
  'reflect' border mode, which for a radius-1 cross repeats the edge pixel, so
  the image border itself is not a boundary (edge replication below).

  Args:
    label_img: (..., H, W) integer labels.

  Returns:
    (..., H, W) bool boundary mask.
  """
  nd = label_img.ndim
  pad = [(0, 0)] * (nd - 2) + [(1, 1), (1, 1)]
  p = jnp.pad(label_img, pad, mode="edge")
  h, w = label_img.shape[-2:]
  centre = p[..., 1:h + 1, 1:w + 1]
  neighbours = (p[..., 0:h, 1:w + 1], p[..., 2:h + 2, 1:w + 1],
                p[..., 1:h + 1, 0:w], p[..., 1:h + 1, 2:w + 2])
  hi = centre
  lo = centre
  for n in neighbours:
    hi = jnp.maximum(hi, n)
    lo = jnp.minimum(lo, n)
  return hi != lo


def relaxed_boundary_targets(
    labels: jax.Array,
    *,
    num_classes: int,
    border_window: int = 1,
    strict_border_classes: Sequence[int] = (),
    relax_off: bool = False,
    ignore_index: int = 255,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
  """Multi-hot relaxed-boundary targets, as RelaxedBoundaryLossToTensor.

  Steps (same as the original, per image):
    1. ignore pixels become class `num_classes` (the extra last channel);
    2. channel c is set where class c occurs in the (2b+1)x(2b+1) window,
       pixels outside the image counting as the ignore class (the original's
       scipy `shift(..., cval=num_classes)`); b = border_window, or
       border_window // 2 in the rlx_off phase;
    3. pixels whose own class is in `strict_border_classes` keep their plain
       one-hot (not relaxed);
    4. rlx_off phase (the original's REDUCE_BORDER_EPOCH passed): every channel
       is doubled on find_boundaries(mode='thick') pixels, giving values 0/1/2.

  Args:
    labels: (N,H,W) or (H,W) integer labels, `ignore_index` = void. Values
      outside [0, num_classes) other than `ignore_index` give an all-zero
      target (the original would raise an IndexError on them).
    num_classes: C, the number of real classes.
    border_window: the original's cfg.BORDER_WINDOW (window radius).
    strict_border_classes: cfg.STRICTBORDERCLASS (None/() = none).
    relax_off: True once the rlx_off epoch is passed.
    ignore_index: label value of void pixels.
    dtype: output dtype (values are small integers, so any dtype is exact).

  Returns:
    (N,H,W,C+1) (or (H,W,C+1)) targets, last channel = ignore.
  """
  if border_window < 0:
    raise ValueError(
        f"relaxed_boundary_targets: border_window must be >= 0, got "
        f"{border_window}")
  labels = jnp.asarray(labels).astype(jnp.int32)
  lab = jnp.where(labels == ignore_index, num_classes, labels)
  border = border_window // 2 if relax_off else border_window

  nd = lab.ndim
  pad = [(0, 0)] * (nd - 2) + [(border, border), (border, border)]
  padded = jnp.pad(lab, pad, constant_values=num_classes)
  one_hot = jax.nn.one_hot(padded, num_classes + 1, dtype=jnp.uint8)
  # (..., H+2b, W+2b, C+1): max over the window = union of the shifted one-hots.
  multi_hot = _window_max(one_hot, border, axis=nd - 2)
  multi_hot = _window_max(multi_hot, border, axis=nd - 1)

  strict = tuple(int(c) for c in (strict_border_classes or ()))
  if strict:
    plain = jax.nn.one_hot(lab, num_classes + 1, dtype=jnp.uint8)
    is_strict = jnp.isin(lab, jnp.asarray(strict, jnp.int32))
    multi_hot = jnp.where(is_strict[..., None], plain, multi_hot)

  if relax_off:
    boundary = find_boundaries_thick(lab)
    multi_hot = jnp.where(boundary[..., None], 2 * multi_hot, multi_hot)
  return multi_hot.astype(dtype)
