"""How inference at scale s sizes an image and resizes it there and back (`config.eval.resize`).

Each published protocol scales test images its own way, and the resulting sizes and pixel
values differ enough to move mIoU, so each is reproduced exactly:

  'scale'          NVIDIA eval.py: (int(H*s), int(W*s)); the uint8 image is resized with PIL
                   bilinear (8-bit, antialiased; reproduced bit for bit by pil_resize.py), the
                   logits back to (H, W) with cv2 INTER_LINEAR.
  'long_side'      hszhao/semseg tool/test.py: longer side round(base_size * s), the other
                   side round(long / L * S) (Python rounding, half to even); the image is
                   resized as float32 with cv2 INTER_LINEAR (no uint8 rounding), and so are
                   the scores back.
  'align_corners'  TensorFlow DeepLab: int((H - 1) * s + 1) (its `scale_dimension`), with
                   align-corners bilinear resizes both ways.
"""
from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp

from jaxseg.inference import pil_resize
from jaxseg.models import interpolate


class ResizeSettings(Protocol):
  """What sizes an image at a scale: these fields of settings.InferenceSettings (a protocol,
  so that settings.py, which validates against RESIZES, is not imported back)."""
  resize: str
  base_size: int


RESIZES = ("scale", "long_side", "align_corners")


def scaled_size(height: int, width: int, scale: float, settings: ResizeSettings
                ) -> tuple[int, int]:
  """The size an (height, width) image is resized to at `scale` under `settings.resize`."""
  if settings.resize == "long_side":  # semseg test.py (Python 3 round: half to even)
    long = round(scale * settings.base_size)
    if height > width:
      return long, round(long / float(height) * width)
    return round(long / float(width) * height), long
  if settings.resize == "align_corners":  # TF DeepLab scale_dimension
    return int((height - 1.0) * scale + 1.0), int((width - 1.0) * scale + 1.0)
  return int(height * scale), int(width * scale)


def resize_image(images: jax.Array, size: tuple[int, int], resize: str = "scale"
                 ) -> jax.Array:
  """uint8-valued (N, H, W, 3) -> float32 (N, h, w, 3).

  'scale': PIL's 8-bit bilinear resize, exactly (NVIDIA); 'long_side': cv2 INTER_LINEAR on
  the float image (semseg); 'align_corners': align-corners bilinear (TF DeepLab).
  """
  if tuple(images.shape[1:3]) == tuple(size):
    return images.astype(jnp.float32)
  if resize == "long_side":
    return resize_logits(images.astype(jnp.float32), size)
  if resize == "align_corners":
    return interpolate.resize_bilinear_align_corners(images.astype(jnp.float32), size)
  return pil_resize.pil_bilinear_resize(images, size).astype(jnp.float32)


def resize_logits(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(..., h, w, K) -> (..., H, W, K) as cv2.resize INTER_LINEAR (half-pixel, no antialias)."""
  if tuple(x.shape[-3:-1]) == tuple(size):
    return x
  shape = (*x.shape[:-3], *size, x.shape[-1])
  return jax.image.resize(x, shape, "linear", antialias=False)


def resize_back(x: jax.Array, size: tuple[int, int], resize: str) -> jax.Array:
  """(N, V, h, w, K) scores -> (N, V, H, W, K) with the resize policy's output resize."""
  if resize != "align_corners" or tuple(x.shape[2:4]) == tuple(size):
    return resize_logits(x, size)
  flat = x.reshape(-1, *x.shape[2:])
  out = interpolate.resize_bilinear_align_corners(flat, size)
  return out.reshape(*x.shape[:2], *size, x.shape[-1])
