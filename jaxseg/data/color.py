"""The original's ColorJitter on uint8 RGB numpy images, with PIL's arithmetic.

transforms/transforms.py ColorJitter uses PIL: ImageEnhance.Brightness /
Contrast / Color are `Image.blend(degenerate, image, factor)` (float32 math,
clipped, truncated to uint8), and adjust_hue shifts the hue channel of PIL's
8-bit HSV image. Every function here follows PIL's C code (Blend.c,
Convert.c rgb2hsv/hsv2rgb); the HSV conversions go through small look-up
tables built from direct transcriptions of that code (`rgb_to_hsv_reference`,
`hsv_to_rgb_reference`), ~10x faster on a crop than the transcription.
"""
import functools

import cv2
import numpy as np


def _f32(x) -> np.ndarray:
  """Rounds to float32 (a C `float` variable) and back to float64."""
  return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def _blend(degenerate: np.ndarray, image: np.ndarray,
           factor: float) -> np.ndarray:
  """PIL Image.blend(degenerate, image, factor): float32, clip, truncate."""
  a = np.float32(factor)
  d = degenerate.astype(np.float32)
  out = d + a * (image.astype(np.float32) - d)
  return np.clip(out, 0, 255).astype(np.uint8)


def _blend_table(factor: float) -> np.ndarray:
  """(256, 256) uint8: [degenerate, image] -> _blend of the two values."""
  v = np.arange(256, dtype=np.uint8)
  return _blend(v[:, None], v[None, :], factor)


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
  """PIL convert('L'): (19595 R + 38470 G + 7471 B + 0x8000) >> 16."""
  x = image.astype(np.uint32)
  return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000)
          >> 16).astype(np.uint8)


def _apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
  return cv2.LUT(np.ascontiguousarray(image), lut)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Brightness: blend with black (a 256-entry table)."""
  return _apply_lut(image, _blend_table(factor)[0])


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Contrast: blend with the grey level int(mean(L) + 0.5)."""
  mean = int(float(rgb_to_gray(image).mean(dtype=np.float64)) + 0.5)
  return _apply_lut(image, _blend_table(factor)[mean])


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Color: blend with the image's own L (grey) version."""
  gray = rgb_to_gray(image).astype(np.int32)
  idx = (gray[..., None] << 8) | image
  return _blend_table(factor).ravel().take(idx)


# ----------------------------------------------------------------- HSV ----
def rgb_to_hsv_reference(image: np.ndarray) -> np.ndarray:
  """PIL's RGB->HSV (Convert.c rgb2hsv), uint8; direct transcription.

  C `float` variables are rounded to float32 where PIL stores them; the other
  intermediate expressions are double, as in C.
  """
  rgb = image.astype(np.int32)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  grey = maxc == minc
  cr = np.maximum(maxc - minc, 1).astype(np.float32)
  s = _f32(cr / np.maximum(maxc, 1).astype(np.float32))
  rc, gc, bc = [((maxc - c).astype(np.float32) / cr) for c in (r, g, b)]
  h = np.where(r == maxc, _f32(bc - gc),
               np.where(g == maxc, _f32(2.0 + rc.astype(np.float64) - bc),
                        _f32(4.0 + gc.astype(np.float64) - rc)))
  h = _f32(np.fmod(h / 6.0 + 1.0, 1.0))
  uh = np.where(grey, 0, np.clip(np.trunc(h * 255.0), 0, 255))
  us = np.where(grey, 0, np.clip(np.trunc(s * 255.0), 0, 255))
  return np.stack([uh, us, maxc], -1).astype(np.uint8)


# Output channel sources per hue sector, as indices into (v, p, q, t).
_SECTORS = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0],
                     [0, 1, 2]], np.intp)
_SECTORS32 = _SECTORS.astype(np.int32)


def _hsv_terms(h: np.ndarray, s: np.ndarray):
  """Per (h, s): sector, and the float factors of p, q, t (C's types)."""
  hh = h.astype(np.float64) * 6.0 / 255.0
  i = np.floor(hh).astype(np.int64)
  f = (hh - i).astype(np.float32)
  fs = (s.astype(np.float64) / 255.0).astype(np.float32)
  p_fac = 1.0 - fs.astype(np.float64)
  q_fac = 1.0 - (fs * f).astype(np.float64)  # float * float in C
  t_fac = 1.0 - fs.astype(np.float64) * (1.0 - f.astype(np.float64))
  return i % 6, p_fac, q_fac, t_fac


def _round_clip(x: np.ndarray) -> np.ndarray:
  # C round() (half away from zero) on values >= 0, then CLIP8.
  return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def hsv_to_rgb_reference(hsv: np.ndarray) -> np.ndarray:
  """PIL's HSV->RGB (Convert.c hsv2rgb), uint8; direct transcription."""
  sector, p_fac, q_fac, t_fac = _hsv_terms(hsv[..., 0], hsv[..., 1])
  v = hsv[..., 2].astype(np.float64)
  vpqt = np.stack([hsv[..., 2], _round_clip(v * p_fac), _round_clip(v * q_fac),
                   _round_clip(v * t_fac)], -1)
  out = np.take_along_axis(vpqt, _SECTORS[sector], axis=-1)
  grey = hsv[..., 1] == 0
  out[grey] = hsv[..., 2][grey][:, None]
  return out


@functools.lru_cache(maxsize=1)
def _luts():
  """Look-up tables equivalent to the reference conversions.

  Hue depends only on which channel is the maximum (PIL's tie order r, g, b)
  and the two other channels' distances to it; saturation on (max, min);
  p on (v, s); the q and t factors on (h, s).
  """
  d1, d2 = [a.ravel() for a in np.meshgrid(np.arange(256), np.arange(256),
                                           indexing="ij")]
  top = np.full_like(d1, 255)
  hue = []
  for case in range(3):  # the maximum is r, g or b
    px = np.stack([top, top, top], -1)
    others = [c for c in range(3) if c != case]
    px[:, others[0]] -= d1
    px[:, others[1]] -= d2
    hue.append(rgb_to_hsv_reference(px.astype(np.uint8))[:, 0])
  hue = np.stack(hue).reshape(3, 256, 256)
  mx, mn = d1.reshape(256, 256), d2.reshape(256, 256)
  valid = mn <= mx
  sat = rgb_to_hsv_reference(np.stack([mx, mn, mn], -1).astype(np.uint8))[..., 1]
  sat = np.where(valid, sat, 0).astype(np.uint8)
  sector, p_fac, q_fac, t_fac = _hsv_terms(d1.reshape(256, 256),
                                           d2.reshape(256, 256))
  p_lut = _round_clip(np.arange(256, dtype=np.float64)[:, None] *
                      p_fac[0][None, :])  # [v, s]
  return hue, sat, p_lut, sector.astype(np.uint8), q_fac, t_fac


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """PIL's RGB->HSV via look-up tables (identical to the reference)."""
  hue, sat, _, _, _, _ = _luts()
  r, g, b = cv2.split(np.ascontiguousarray(image))
  maxc = cv2.max(cv2.max(r, g), b)
  minc = cv2.min(cv2.min(r, g), b)
  d_r, d_g, d_b = maxc - r, maxc - g, maxc - b
  is_r = r == maxc
  is_g = ~is_r & (g == maxc)
  # LUT index: (case, first other channel's distance, second one's).
  first = np.where(is_r, d_g, d_r).astype(np.int32)
  second = np.where(is_r | is_g, d_b, d_g).astype(np.int32)
  case = np.where(is_r, 0, np.where(is_g, 1, 2)).astype(np.int32)
  h = hue.ravel().take((case << 16) | (first << 8) | second)
  s = sat.ravel().take((maxc.astype(np.int32) << 8) | minc)
  return cv2.merge([h, s, maxc])


def _scaled_round(v: np.ndarray, fac: np.ndarray) -> np.ndarray:
  # floor(v * fac + 0.5) for fac in [0, 1]: C round() of v * fac, in [0, 255].
  x = np.multiply(v, fac)
  x += 0.5
  return np.floor(x, out=x).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """PIL's HSV->RGB via look-up tables (identical to the reference)."""
  _, _, p_lut, sector_lut, q_fac, t_fac = _luts()
  h, s, v = cv2.split(np.ascontiguousarray(hsv))
  hs = (h.astype(np.int32) << 8) | s
  vf = v.astype(np.float64)
  n = v.size
  planes = np.stack([v.ravel(), p_lut.ravel().take((v.astype(np.int32) << 8) | s).ravel(),
                     _scaled_round(vf, q_fac.ravel().take(hs)).ravel(),
                     _scaled_round(vf, t_fac.ravel().take(hs)).ravel()]).ravel()
  sector = sector_lut[:, 0].take(h.ravel())
  pixel = np.arange(n, dtype=np.int32)
  # Channel c of a pixel in sector k comes from plane _SECTORS[k, c].
  out = [planes.take(_SECTORS32[:, c].take(sector) * np.int32(n) + pixel).reshape(v.shape)
         for c in range(3)]
  return cv2.merge(out)


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
  """Cyclic uint8 shift of PIL's HSV hue by int(factor * 255)."""
  if not -0.5 <= factor <= 0.5:
    raise ValueError(f"hue factor {factor} not in [-0.5, 0.5].")
  # np.uint8(hue_factor * 255) in the original: truncation, then wrap.
  shift = int(factor * 255) % 256
  if shift == 0:
    return image
  hsv = rgb_to_hsv(image)
  hsv[..., 0] += np.uint8(shift)  # uint8 wrap-around, as the original
  return hsv_to_rgb(hsv)


def color_jitter(image: np.ndarray, rng: np.random.Generator,
                 brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> np.ndarray:
  """The original ColorJitter: factors drawn, then applied in random order."""
  ops = []
  if brightness > 0:
    f = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    ops.append((adjust_brightness, f))
  if contrast > 0:
    f = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    ops.append((adjust_contrast, f))
  if saturation > 0:
    f = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    ops.append((adjust_saturation, f))
  if hue > 0:
    ops.append((adjust_hue, rng.uniform(-hue, hue)))
  for k in rng.permutation(len(ops)):
    fn, f = ops[k]
    image = fn(image, f)
  return image
