"""Joint image/label augmentations (numpy + OpenCV), one explicit RNG each.

Mirrors the original training pipeline (datasets/__init__.py setup_loaders,
transforms/joint_transforms.py, transforms/transforms.py):

  RandomSizeAndCrop's scale (scale in [scale_min, scale_max], bicubic image /
  nearest label) -> [rotation] -> RandomSizeAndCrop's crop (pad to the crop,
  random or centroid-covering crop) -> horizontal flip -> ColorJitter ->
  Gaussian blur.

The optional rotation is not in the NVIDIA recipes; it is hszhao/semseg's and
MSeg's RandRotate (util/transform.py), applied where they apply it: to the
scaled image before the crop, with probability `rotate_prob`, an angle drawn
uniformly from [-rotate, rotate], cv2.warpAffine about (w/2, h/2), bilinear
image padded with the ImageNet mean, nearest label padded with 255. semseg
rotates float32 images; here they stay uint8 (OpenCV rounds: within one grey
level of semseg's values).

Images are uint8 HxWx3 RGB, labels uint8 HxW train ids with 255 = ignore.
Normalisation happens on device, so everything here stays uint8.

Resampling: the original used PIL. Labels use OpenCV's INTER_NEAREST_EXACT,
which picks the same source pixel as PIL's NEAREST. Images use INTER_CUBIC
when enlarging and INTER_AREA when shrinking: PIL's BICUBIC resize is
antialiased when shrinking (its kernel widens with the scale), plain cubic
sampling is not. The colour jitter (color.py) reproduces PIL's ImageEnhance
and HSV arithmetic; the blur reproduces skimage.filters.gaussian.
"""
import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

from jaxseg.data.color import color_jitter

IGNORE = 255
# semseg / MSeg pad rotated images with the ImageNet mean (RGB, 0..255 scale).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)

Centroid = Optional[Sequence[int]]  # (x, y) in full-image pixels.
Pair = tuple[np.ndarray, np.ndarray]  # (image, label)


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
  rotate_prob: float = 0.5
  rotate_pad_value: tuple[float, float, float] = IMAGENET_MEAN_RGB
  pad_image_value: int = 0

  @classmethod
  def from_config(cls, data_cfg) -> "AugmentParams":
    return cls(crop_hw=(int(data_cfg.crop_size), int(data_cfg.crop_size)),
               scale_min=float(data_cfg.scale_min),
               scale_max=float(data_cfg.scale_max),
               pre_size=int(data_cfg.pre_size), flip=bool(data_cfg.flip),
               color_aug=float(data_cfg.color_aug),
               gblur=bool(data_cfg.gblur), rotate=float(data_cfg.rotate),
               rotate_prob=float(data_cfg.rotate_prob),
               rotate_pad_value=tuple(float(v) for v in
                                      data_cfg.rotate_pad_value),
               pad_image_value=int(data_cfg.pad_image_value))


# ---------------------------------------------------------------- geometry --
def resize_pair(image: np.ndarray, label: Optional[np.ndarray],
                size_hw: tuple[int, int]) -> Pair:
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
                 pre_size: int = 0, centroid: Centroid = None
                 ) -> tuple[np.ndarray, np.ndarray, Centroid]:
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
                 pad_value: int = 0) -> Pair:
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
         pad_value: int = 0) -> Pair:
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
                 rng: np.random.Generator) -> Pair:
  """Flips image and label left-right together with probability 0.5."""
  if rng.random() < 0.5:
    return image[:, ::-1], label[:, ::-1]
  return image, label


def rotation_matrix(hw: tuple[int, int], angle: float) -> np.ndarray:
  """2x3 affine of a counter-clockwise rotation by `angle` degrees.

  About (w/2, h/2) in OpenCV pixel coordinates, exactly as semseg's
  RandRotate calls cv2.getRotationMatrix2D (half a pixel from the true
  centre; kept so that results match semseg / MSeg bit for bit).
  """
  h, w = hw
  return cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)


def draw_rotation(rng: np.random.Generator, degrees: float,
                  prob: float = 1.0) -> Optional[float]:
  """RandRotate's draws: None with probability 1 - prob, else the angle.

  prob >= 1 draws no coin (one RNG draw per call, as NVIDIA's RandomRotate).
  """
  if prob < 1.0 and not rng.random() < prob:
    return None
  return -degrees + 2 * degrees * rng.random()


def _fill(value) -> tuple[float, float, float]:
  if np.ndim(value) == 0:
    return (float(value),) * 3
  return tuple(float(v) for v in value)


def rotate_pair(image: np.ndarray, label: np.ndarray, matrix: np.ndarray,
                pad_value=IMAGENET_MEAN_RGB) -> Pair:
  """Warps image (bilinear, `pad_value` fill) and label (nearest, 255 fill).

  `pad_value` is one number or an RGB triple; OpenCV rounds it to uint8.
  """
  h, w = label.shape
  image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT,
                         borderValue=_fill(pad_value))
  label = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
  return image, label


def random_rotate(image: np.ndarray, label: np.ndarray,
                  rng: np.random.Generator, degrees: float,
                  pad_value=IMAGENET_MEAN_RGB, prob: float = 1.0) -> Pair:
  """semseg's RandRotate([-degrees, degrees], padding=pad_value, p=prob)."""
  angle = draw_rotation(rng, degrees, prob)
  if angle is None:
    return image, label
  m = rotation_matrix(label.shape, angle)
  return rotate_pair(np.ascontiguousarray(image), np.ascontiguousarray(label),
                     m, pad_value)


def _rotate_point(matrix: np.ndarray, point: Centroid,
                  hw: tuple[int, int]) -> Centroid:
  """Maps a centroid through the rotation (clamped into the image)."""
  if point is None:
    return None
  x, y = matrix @ np.array([point[0], point[1], 1.0])
  return (int(np.clip(round(x), 0, hw[1] - 1)),
          int(np.clip(round(y), 0, hw[0] - 1)))


# -------------------------------------------------------------------- blur --
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
                    centroid: Centroid = None) -> Pair:
  """The full training augmentation; returns contiguous uint8 (crop, label)."""
  image, label, centroid = random_scale(image, label, rng, params.scale_min,
                                        params.scale_max, params.pre_size,
                                        centroid)
  if params.rotate > 0:
    angle = draw_rotation(rng, params.rotate, params.rotate_prob)
    if angle is not None:
      m = rotation_matrix(label.shape, angle)
      image, label = rotate_pair(np.ascontiguousarray(image),
                                 np.ascontiguousarray(label), m,
                                 params.rotate_pad_value)
      centroid = _rotate_point(m, centroid, label.shape)
  image, label = crop(image, label, params.crop_hw, rng, centroid,
                      params.pad_image_value)
  if params.flip:
    image, label = random_hflip(image, label, rng)
  if params.color_aug > 0:
    a = params.color_aug
    image = color_jitter(image, rng, a, a, a, a)
  if params.gblur:
    image = random_gaussian_blur(np.ascontiguousarray(image), rng)
  return np.ascontiguousarray(image), np.ascontiguousarray(label)


def eval_resize(image: np.ndarray, label: np.ndarray, policy: str,
                size: int = 0, height: int = 0, width: int = 0,
                pad_hw: tuple[int, int] = (0, 0), pad_value: int = 0) -> Pair:
  """Brings an eval sample to the eval size (see defaults.eval_resize)."""
  if policy == "height_crop_pad":
    # ResizeHeight(size) then a centre crop/pad to size x size.
    h, w = image.shape[:2]
    image, label = resize_pair(image, label, (size, int(w / h * size)))
    image, label = center_crop_pad(image, label, (size, size), pad_value)
  elif policy == "fixed":
    image, label = resize_pair(image, label, (height, width))
  elif policy != "none":
    raise ValueError(f"eval_resize={policy!r}; expected 'none', "
                     "'height_crop_pad' or 'fixed'.")
  if pad_hw[0] > 0 and pad_hw[1] > 0:
    h, w = image.shape[:2]
    if h > pad_hw[0] or w > pad_hw[1]:
      raise ValueError(f"eval image of size {h}x{w} is larger than "
                       f"eval_pad_height x eval_pad_width = {pad_hw}.")
    image = cv2.copyMakeBorder(image, 0, pad_hw[0] - h, 0, pad_hw[1] - w,
                               cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    label = cv2.copyMakeBorder(label, 0, pad_hw[0] - h, 0, pad_hw[1] - w,
                               cv2.BORDER_CONSTANT, value=IGNORE)
  return image, label


def center_crop_pad(image: np.ndarray, label: np.ndarray,
                    size_hw: tuple[int, int], pad_value: int = 0) -> Pair:
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

