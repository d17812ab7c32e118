"""Joint image/label augmentations (numpy + OpenCV), one explicit RNG each.

Mirrors the original training pipeline (datasets/__init__.py setup_loaders,
transforms/joint_transforms.py, transforms/transforms.py):

  RandomSizeAndCrop (scale in [scale_min, scale_max], bicubic image / nearest
  label, pad to the crop, random or centroid-covering crop) -> horizontal flip
  -> [rotation, not in the original recipes] -> ColorJitter -> Gaussian blur.

Images are uint8 HxWx3 RGB, labels uint8 HxW train ids with 255 = ignore.
Normalisation happens on device, so everything here stays uint8.

Resampling: the original used PIL. Labels use OpenCV's INTER_NEAREST_EXACT,
which picks the same source pixel as PIL's NEAREST. Images use INTER_CUBIC
when enlarging and INTER_AREA when shrinking: PIL's BICUBIC resize is
antialiased when shrinking (its kernel widens with the scale), plain cubic
sampling is not. The colour operations reproduce PIL's ImageEnhance/HSV
integer arithmetic; the blur reproduces skimage.filters.gaussian.
"""
import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

IGNORE = 255

Centroid = Optional[Sequence[int]]  # (x, y) in full-image pixels.


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """Training augmentation settings (built from the data config)."""
  crop_hw: tuple[int, int]
  scale_min: float = 0.5
  scale_max: float = 2.0
  pre_size: int = 0
  flip: bool = True
  color_aug: float = 0.0
  gblur: bool = False
  rotate: float = 0.0
  pad_image_value: int = 0

  @classmethod
  def from_config(cls, data_cfg) -> 'AugmentParams':
    return cls(crop_hw=(int(data_cfg.crop_size), int(data_cfg.crop_size)),
               scale_min=float(data_cfg.scale_min),
               scale_max=float(data_cfg.scale_max),
               pre_size=int(data_cfg.pre_size), flip=bool(data_cfg.flip),
               color_aug=float(data_cfg.color_aug),
               gblur=bool(data_cfg.gblur), rotate=float(data_cfg.rotate),
               pad_image_value=int(data_cfg.pad_image_value))


# ---------------------------------------------------------------- geometry --
def resize_pair(image: np.ndarray, label: Optional[np.ndarray],
                size_hw: tuple[int, int]):
  """Resizes image (cubic / area when shrinking) and label (nearest)."""
  h, w = image.shape[:2]
  th, tw = size_hw
  if (th, tw) == (h, w):
    return image, label
  interp = cv2.INTER_AREA if (th < h and tw < w) else cv2.INTER_CUBIC
  image = cv2.resize(image, (tw, th), interpolation=interp)
  if label is not None:
    label = cv2.resize(label, (tw, th), interpolation=cv2.INTER_NEAREST_EXACT)
  return image, label


def random_scale(image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator, scale_min: float, scale_max: float,
                 pre_size: int = 0, centroid: Centroid = None):
  """RandomSizeAndCrop's resize: returns (image, label, scaled centroid)."""
  h, w = image.shape[:2]
  amt = 1.0 if pre_size <= 0 else pre_size / min(h, w)
  amt *= rng.uniform(scale_min, scale_max)
  # int() truncation as the original; never collapse to zero pixels.
  tw, th = max(1, int(w * amt)), max(1, int(h * amt))
  if centroid is not None:
    centroid = (int(centroid[0] * amt), int(centroid[1] * amt))
  image, label = resize_pair(image, label, (th, tw))
  return image, label, centroid


def pad_for_crop(image: np.ndarray, label: np.ndarray, crop_hw: tuple[int, int],
                 pad_value: int = 0):
  """Pads both sides by (crop - size)//2 + 1 where the image is too small.

  The original's RandomCrop(nopad=False) rule: padded side = size + 2*pad,
  always larger than the crop. Label padding is 255 (ignore).
  """
  h, w = image.shape[:2]
  th, tw = crop_hw
  ph = (th - h) // 2 + 1 if th > h else 0
  pw = (tw - w) // 2 + 1 if tw > w else 0
  if ph or pw:
    image = cv2.copyMakeBorder(image, ph, ph, pw, pw, cv2.BORDER_CONSTANT,
                               value=(pad_value,) * 3)
    label = cv2.copyMakeBorder(label, ph, ph, pw, pw, cv2.BORDER_CONSTANT,
                               value=IGNORE)
  return image, label


def crop(image: np.ndarray, label: np.ndarray, crop_hw: tuple[int, int],
         rng: np.random.Generator, centroid: Centroid = None,
         pad_value: int = 0):
  """Random crop after padding; with a centroid the crop covers it.

  As the original, the centroid is in scaled-image coordinates and is not
  shifted by the padding.
  """
  h, w = image.shape[:2]
  th, tw = crop_hw
  if (h, w) == (th, tw):
    return image, label
  image, label = pad_for_crop(image, label, crop_hw, pad_value)
  h, w = image.shape[:2]
  if centroid is not None:
    cx, cy = int(centroid[0]), int(centroid[1])
    x1 = min(w - tw, max(0, int(rng.integers(cx - tw, cx + 1))))
    y1 = min(h - th, max(0, int(rng.integers(cy - th, cy + 1))))
  else:
    x1 = 0 if w == tw else int(rng.integers(0, w - tw + 1))
    y1 = 0 if h == th else int(rng.integers(0, h - th + 1))
  return (image[y1:y1 + th, x1:x1 + tw], label[y1:y1 + th, x1:x1 + tw])


def random_hflip(image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator):
  """Flips image and label left-right together with probability 0.5."""
  if rng.random() < 0.5:
    return image[:, ::-1], label[:, ::-1]
  return image, label


def random_rotate(image: np.ndarray, label: np.ndarray,
                  rng: np.random.Generator, degrees: float,
                  pad_value: int = 0):
  """Rotates by U(-degrees, degrees) counter-clockwise about the centre.

  Same size out (PIL rotate(expand=False)); the image is bicubic with
  `pad_value` fill, the label nearest with 255 fill.
  """
  angle = rng.random() * 2 * degrees - degrees
  h, w = image.shape[:2]
  # PIL rotates about (w/2, h/2) in corner coordinates = pixel (w-1)/2.
  m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
  image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(pad_value,) * 3)
  label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
  return image, label


# ------------------------------------------------------------------ colour --
def _blend(degenerate: np.ndarray, image: np.ndarray,
           factor: float) -> np.ndarray:
  """PIL Image.blend(degenerate, image, factor): float32, clip, truncate."""
  a = np.float32(factor)
  d = degenerate.astype(np.float32)
  out = d + a * (image.astype(np.float32) - d)
  return np.clip(out, 0, 255).astype(np.uint8)


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
  """PIL convert('L'): (19595 R + 38470 G + 7471 B + 0x8000) >> 16."""
  x = image.astype(np.uint32)
  return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000)
          >> 16).astype(np.uint8)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(np.zeros_like(image), image, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  # ImageEnhance.Contrast: grey level = int(mean of the L image + 0.5).
  mean = int(float(rgb_to_gray(image).mean(dtype=np.float64)) + 0.5)
  return _blend(np.full_like(image, mean), image, factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  gray = np.repeat(rgb_to_gray(image)[..., None], 3, axis=-1)
  return _blend(gray, image, factor)


def _rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """PIL's RGB->HSV (Convert.c rgb2hsv), uint8 channels.

  C float variables are rounded to float32 where PIL stores them; the other
  intermediate expressions are double, as in C.
  """
  f32 = lambda x: np.asarray(x, np.float64).astype(np.float32).astype(
      np.float64)
  rgb = image.astype(np.int32)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  grey = maxc == minc
  cr = np.maximum(maxc - minc, 1).astype(np.float32)
  s = f32(cr / np.maximum(maxc, 1).astype(np.float32))
  rc, gc, bc = [((maxc - c).astype(np.float32) / cr) for c in (r, g, b)]
  h = np.where(r == maxc, f32(bc - gc),
               np.where(g == maxc, f32(2.0 + rc.astype(np.float64) - bc),
                        f32(4.0 + gc.astype(np.float64) - rc)))
  h = f32(np.fmod(h / 6.0 + 1.0, 1.0))
  uh = np.where(grey, 0, np.clip(np.trunc(h * 255.0), 0, 255))
  us = np.where(grey, 0, np.clip(np.trunc(s * 255.0), 0, 255))
  return np.stack([uh, us, maxc], -1).astype(np.uint8)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """PIL's HSV->RGB (Convert.c hsv2rgb), uint8 channels."""
  f32 = lambda x: np.asarray(x, np.float64).astype(np.float32)
  h, s, vv = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  v = vv.astype(np.float64)
  hh = h.astype(np.float64) * 6.0 / 255.0
  i = np.floor(hh).astype(np.int32)
  f = f32(hh - i)
  fs = f32(s.astype(np.float64) / 255.0)

  def rnd(x):  # C round(): half away from zero; values are >= 0 here.
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)

  p = rnd(v * (1.0 - fs.astype(np.float64)))
  q = rnd(v * (1.0 - (fs * f).astype(np.float64)))  # float * float in C.
  t = rnd(v * (1.0 - fs.astype(np.float64) * (1.0 - f.astype(np.float64))))
  table = ((vv, t, p), (q, vv, p), (p, vv, t), (p, q, vv), (t, p, vv),
           (vv, p, q))
  sector = i % 6
  out = np.empty(hsv.shape, np.uint8)
  for k, chans in enumerate(table):
    sel = sector == k
    for c in range(3):
      out[..., c][sel] = chans[c][sel]
  grey = s == 0
  out[grey] = vv[grey][:, None]
  return out


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
  """Cyclic uint8 shift of PIL's HSV hue by int(factor * 255)."""
  if not -0.5 <= factor <= 0.5:
    raise ValueError(f'hue factor {factor} not in [-0.5, 0.5].')
  shift = int(factor * 255) % 256
  if shift == 0:
    return image
  hsv = _rgb_to_hsv(image)
  hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift).astype(np.uint8)
  return _hsv_to_rgb(hsv)


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


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """skimage.filters.gaussian(image, sigma, multichannel=True) * 255 -> uint8.

  float64 on image/255, kernel radius int(4 sigma + 0.5), edge replicate
  ('nearest'); the final cast truncates, as the original.
  """
  radius = int(4.0 * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * x * x / (sigma * sigma))
  k /= k.sum()
  f = np.multiply(image, 1.0 / 255, dtype=np.float64)
  f = cv2.sepFilter2D(f, cv2.CV_64F, k, k, borderType=cv2.BORDER_REPLICATE)
  f *= 255
  return f.astype(np.uint8)


def random_gaussian_blur(image: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
  """RandomGaussianBlur: sigma = 0.15 + U(0, 1) * 1.15."""
  return gaussian_blur(image, 0.15 + rng.random() * 1.15)


# ---------------------------------------------------------------- pipeline --
def train_transform(image: np.ndarray, label: np.ndarray,
                    rng: np.random.Generator, params: AugmentParams,
                    centroid: Centroid = None):
  """The full training augmentation; returns contiguous uint8 (crop, label)."""
  image, label, centroid = random_scale(image, label, rng, params.scale_min,
                                        params.scale_max, params.pre_size,
                                        centroid)
  image, label = crop(image, label, params.crop_hw, rng, centroid,
                      params.pad_image_value)
  if params.flip:
    image, label = random_hflip(image, label, rng)
  if params.rotate > 0:
    image, label = random_rotate(np.ascontiguousarray(image),
                                 np.ascontiguousarray(label), rng,
                                 params.rotate, params.pad_image_value)
  if params.color_aug > 0:
    a = params.color_aug
    image = color_jitter(image, rng, a, a, a, a)
  if params.gblur:
    image = random_gaussian_blur(np.ascontiguousarray(image), rng)
  return np.ascontiguousarray(image), np.ascontiguousarray(label)


def eval_resize(image: np.ndarray, label: np.ndarray, policy: str,
                size: int = 0, height: int = 0, width: int = 0,
                pad_hw: tuple[int, int] = (0, 0), pad_value: int = 0):
  """Brings an eval sample to the eval size (see defaults.eval_resize)."""
  if policy == 'height_crop_pad':
    # ResizeHeight(size) then a centre crop/pad to size x size.
    h, w = image.shape[:2]
    image, label = resize_pair(image, label, (size, int(w / h * size)))
    image, label = center_crop_pad(image, label, (size, size), pad_value)
  elif policy == 'fixed':
    image, label = resize_pair(image, label, (height, width))
  elif policy != 'none':
    raise ValueError(f"eval_resize={policy!r}; expected 'none', "
                     "'height_crop_pad' or 'fixed'.")
  if pad_hw[0] > 0 and pad_hw[1] > 0:
    h, w = image.shape[:2]
    if h > pad_hw[0] or w > pad_hw[1]:
      raise ValueError(f'eval image of size {h}x{w} is larger than '
                       f'eval_pad_height x eval_pad_width = {pad_hw}.')
    image = cv2.copyMakeBorder(image, 0, pad_hw[0] - h, 0, pad_hw[1] - w,
                               cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    label = cv2.copyMakeBorder(label, 0, pad_hw[0] - h, 0, pad_hw[1] - w,
                               cv2.BORDER_CONSTANT, value=IGNORE)
  return image, label


def center_crop_pad(image: np.ndarray, label: np.ndarray,
                    size_hw: tuple[int, int], pad_value: int = 0):
  """Centre crop to size_hw, padding (image pad_value, label 255) if smaller.

  The original CenterCropPad crops with the pre-padding offsets, which for
  images narrower than the target fills part of the label with class 0; here
  the padding is centred and ignored instead.
  """
  th, tw = size_hw
  h, w = image.shape[:2]
  ph, pw = max(th - h, 0), max(tw - w, 0)
  if ph or pw:
    image = cv2.copyMakeBorder(image, ph // 2, ph - ph // 2, pw // 2,
                               pw - pw // 2, cv2.BORDER_CONSTANT,
                               value=(pad_value,) * 3)
    label = cv2.copyMakeBorder(label, ph // 2, ph - ph // 2, pw // 2,
                               pw - pw // 2, cv2.BORDER_CONSTANT, value=IGNORE)
    h, w = image.shape[:2]
  x1 = int(round((w - tw) / 2.0))
  y1 = int(round((h - th) / 2.0))
  return image[y1:y1 + th, x1:x1 + tw], label[y1:y1 + th, x1:x1 + tw]

