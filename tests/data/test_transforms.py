"""Tests of jaxseg.data.transforms (numpy/OpenCV augmentations)."""
import colorsys

import numpy as np
import pytest
import scipy.ndimage

from jaxseg.data import color as C
from jaxseg.data import transforms as T


def _pair(h=30, w=40, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  label = rng.choice(np.array([0, 3, 7, 255], np.uint8), (h, w))
  return image, label


def _coded_pair(h=30, w=40):
  """Image channel 0 = label * 10, channels 1/2 = row/column: geometry probe."""
  yy, xx = np.mgrid[:h, :w]
  label = ((yy // 5 + xx // 7) % 4).astype(np.uint8)
  image = np.stack([label * 10, yy, xx], -1).astype(np.uint8)
  return image, label


def test_resize_label_is_pil_nearest():
  # PIL NEAREST (and INTER_NEAREST_EXACT) samples floor((i + 0.5) * in / out).
  _, label = _pair(17, 23)
  for th, tw in ((40, 31), (9, 11), (17, 46)):
    _, out = T.resize_pair(np.zeros((17, 23, 3), np.uint8), label, (th, tw))
    ys = np.floor((np.arange(th) + 0.5) * 17 / th).astype(int)
    xs = np.floor((np.arange(tw) + 0.5) * 23 / tw).astype(int)
    np.testing.assert_array_equal(out, label[ys][:, xs])


def test_random_scale_shapes_and_label_values():
  image, label = _pair(30, 40)
  rng = np.random.default_rng(3)
  for _ in range(5):
    replay = np.random.default_rng()
    replay.bit_generator.state = rng.bit_generator.state
    scale = replay.uniform(0.5, 2.0)  # the draw random_scale is about to make
    img2, lab2, c = T.random_scale(image, label, rng, 0.5, 2.0, centroid=(10, 20))
    assert img2.shape == (int(30 * scale), int(40 * scale), 3)
    assert lab2.shape == img2.shape[:2]
    assert img2.dtype == np.uint8 and lab2.dtype == np.uint8
    assert c == (int(10 * scale), int(20 * scale))
    assert set(np.unique(lab2)) <= {0, 3, 7, 255}


def test_pre_size_scales_shorter_edge():
  image, label = _pair(30, 60)
  img2, _, _ = T.random_scale(image, label, np.random.default_rng(0), 1.0, 1.0,
                              pre_size=15)
  assert img2.shape[:2] == (15, 30)


def test_pad_rule_and_fill_values():
  image, label = _pair(10, 50)
  img2, lab2 = T.pad_for_crop(image, label, (24, 24), pad_value=7)
  ph = (24 - 10) // 2 + 1  # the original: (crop - size) // 2 + 1 on each side
  assert img2.shape == (10 + 2 * ph, 50, 3)
  assert np.all(lab2[:ph] == 255) and np.all(lab2[-ph:] == 255)
  assert np.all(img2[:ph] == 7) and np.all(img2[-ph:] == 7)
  np.testing.assert_array_equal(lab2[ph:-ph], label)
  np.testing.assert_array_equal(img2[ph:-ph], image)


def test_crop_pads_small_images_with_ignore():
  image = np.full((10, 12, 3), 100, np.uint8)
  label = np.zeros((10, 12), np.uint8)
  img2, lab2 = T.crop(image, label, (20, 16), np.random.default_rng(0), pad_value=0)
  assert img2.shape == (20, 16, 3) and lab2.shape == (20, 16)
  # The image is padded to (22, 16) then cropped: >= 10 padded rows remain.
  assert np.sum(np.all(lab2 == 255, axis=1)) >= 8
  assert np.array_equal(lab2 == 255, np.all(img2 == 0, axis=-1))
  assert np.sum(lab2 == 0) == 10 * 12


def test_centroid_crop_covers_centroid():
  image, label = _coded_pair(100, 120)
  for seed in range(20):
    rng = np.random.default_rng(seed)
    cx, cy = rng.integers(0, 120), rng.integers(0, 100)
    img2, _ = T.crop(image, label, (30, 40), rng, centroid=(cx, cy))
    rows, cols = img2[:, 0, 1].astype(int), img2[0, :, 2].astype(int)
    # The original draws x1 in [cx - 40, cx]: the crop [x1, x1 + 40) may end
    # just before the centroid (off by one), never further away.
    assert rows[0] <= cy <= rows[-1] + 1 and cols[0] <= cx <= cols[-1] + 1


def test_flip_keeps_image_and_label_aligned():
  image, label = _coded_pair(40, 50)
  params = T.AugmentParams(crop_hw=(32, 32), scale_min=1.0, scale_max=1.0, flip=True)
  flipped = 0
  for seed in range(12):
    img2, lab2 = T.train_transform(image, label, np.random.default_rng(seed), params)
    np.testing.assert_array_equal(img2[..., 0], lab2 * 10)
    flipped += int(img2[0, 0, 2] > img2[0, -1, 2])
  assert 0 < flipped < 12  # both outcomes occur


def test_train_transform_deterministic_by_seed():
  image, label = _pair(60, 80)
  params = T.AugmentParams(crop_hw=(48, 48), color_aug=0.25, gblur=True, rotate=5.0)
  a = T.train_transform(image, label, np.random.default_rng(5), params, centroid=(30, 20))
  b = T.train_transform(image, label, np.random.default_rng(5), params, centroid=(30, 20))
  c = T.train_transform(image, label, np.random.default_rng(6), params, centroid=(30, 20))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  assert a[0].shape == (48, 48, 3) and a[1].shape == (48, 48)
  assert a[0].dtype == np.uint8 and a[1].dtype == np.uint8
  assert a[0].flags["C_CONTIGUOUS"] and a[1].flags["C_CONTIGUOUS"]


def test_rotation_fills_label_with_ignore():
  image = np.full((41, 41, 3), 200, np.uint8)
  label = np.full((41, 41), 3, np.uint8)
  for seed in range(50):
    angle = np.random.default_rng(seed).random() * 60 - 30
    if abs(angle) > 10:
      break
  img2, lab2 = T.random_rotate(image, label, np.random.default_rng(seed), 30.0, pad_value=9)
  assert lab2[0, 0] == 255 and lab2[-1, -1] == 255 and lab2[20, 20] == 3
  assert set(np.unique(lab2)) == {3, 255}
  np.testing.assert_array_equal(img2[0, 0], [9, 9, 9])
  np.testing.assert_array_equal(img2[20, 20], [200, 200, 200])


def test_brightness_contrast_saturation_follow_pil_blend():
  image, _ = _pair(8, 9)
  x = image.astype(np.float32)
  np.testing.assert_array_equal(C.adjust_brightness(image, 1.3),
                                np.clip(np.float32(1.3) * x, 0, 255).astype(np.uint8))
  np.testing.assert_array_equal(C.adjust_brightness(image, 1.0), image)
  gray = C.rgb_to_gray(image)
  r, g, b = (image[..., i].astype(np.int64) for i in range(3))
  expect_gray = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
  np.testing.assert_array_equal(gray, expect_gray)
  mean = int(gray.mean() + 0.5)
  expect = np.clip(mean + np.float32(0.8) * (x - mean), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(C.adjust_contrast(image, 0.8), expect)
  grey_image = np.repeat(gray[..., None], 3, -1)
  np.testing.assert_array_equal(C.adjust_saturation(grey_image, 1.7), grey_image)


@pytest.mark.parametrize("factor", [0.0, 0.75, 1.0, 1.13, 1.25, 2.5])
def test_enhance_tables_equal_elementwise_blend(factor):
  image, _ = _pair(20, 30, seed=4)
  image = image[:, ::-1]  # views (a flip) are accepted
  blend = C._blend  # pylint: disable=protected-access
  gray = C.rgb_to_gray(image)
  mean = int(gray.mean() + 0.5)
  np.testing.assert_array_equal(C.adjust_brightness(image, factor),
                                blend(np.zeros_like(image), image, factor))
  np.testing.assert_array_equal(C.adjust_contrast(image, factor),
                                blend(np.full_like(image, mean), image, factor))
  np.testing.assert_array_equal(C.adjust_saturation(image, factor),
                                blend(np.repeat(gray[..., None], 3, -1), image, factor))


def _hsv_test_image():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  image[:4] = rng.integers(0, 256, (4, 64, 1), dtype=np.uint8)  # greys
  image[4:8, :, 1] = image[4:8, :, 0]  # ties decide PIL's hue formula
  image[8:12, :, 2] = image[8:12, :, 1]
  image[12:16, :, 2] = image[12:16, :, 0]
  return image


def test_hsv_reference_matches_colorsys():
  image = _hsv_test_image()
  hsv = C.rgb_to_hsv_reference(image)
  flat = image.reshape(-1, 3) / 255.0
  ref = np.array([colorsys.rgb_to_hsv(*p) for p in flat])
  np.testing.assert_array_equal(hsv[..., 2].ravel(), image.max(-1).ravel())
  agree_h = np.mean(hsv[..., 0].ravel() == np.clip((ref[:, 0] * 255).astype(int), 0, 255))
  agree_s = np.mean(hsv[..., 1].ravel() == np.clip((ref[:, 1] * 255).astype(int), 0, 255))
  assert agree_h > 0.99 and agree_s > 0.99
  back = C.hsv_to_rgb_reference(hsv)
  err = np.abs(back.astype(int) - image)
  # 8-bit hue (truncated, 256 steps over 6 sectors): up to 6/255 * v * s.
  assert err.max() <= 6 and err.mean() < 1.0


def test_hsv_lookup_tables_equal_reference():
  image = _hsv_test_image()
  np.testing.assert_array_equal(C.rgb_to_hsv(image), C.rgb_to_hsv_reference(image))
  rng = np.random.default_rng(1)
  hsv = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
  hsv[:8, :, 1] = 0
  hsv[8:16, :, 0] = np.arange(128)[None, :] * 2  # every hue
  np.testing.assert_array_equal(C.hsv_to_rgb(hsv), C.hsv_to_rgb_reference(hsv))


def test_adjust_hue():
  image = _hsv_test_image()
  # Hue shifts rotate the colour wheel: +1/3 turns pure red into green.
  red = np.zeros((1, 1, 3), np.uint8)
  red[..., 0] = 255
  assert C.adjust_hue(red, 1 / 3).ravel().argmax() == 1
  np.testing.assert_array_equal(C.adjust_hue(image, 0.0), image)
  shifted = C.adjust_hue(image, -0.1)
  hsv = C.rgb_to_hsv_reference(image)
  hsv[..., 0] += np.uint8(256 - 25)  # int(-0.1 * 255) = -25, uint8 wrap
  np.testing.assert_array_equal(shifted, C.hsv_to_rgb_reference(hsv))
  with pytest.raises(ValueError, match="hue factor"):
    C.adjust_hue(image, 0.6)


def test_color_jitter_is_identity_at_zero_and_seeded():
  image, _ = _pair(16, 16)
  np.testing.assert_array_equal(C.color_jitter(image, np.random.default_rng(0)), image)
  a = C.color_jitter(image, np.random.default_rng(1), 0.25, 0.25, 0.25, 0.25)
  b = C.color_jitter(image, np.random.default_rng(1), 0.25, 0.25, 0.25, 0.25)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, image)


@pytest.mark.parametrize("sigma", [0.15, 0.7, 1.3])
def test_gaussian_blur_matches_skimage_recipe(sigma):
  # skimage.filters.gaussian(img, sigma, multichannel=True) = scipy's
  # gaussian_filter on img/255 (mode 'nearest', truncate 4) per channel.
  image, _ = _pair(33, 47, seed=2)
  f = np.multiply(image, 1.0 / 255, dtype=np.float64)
  ref = scipy.ndimage.gaussian_filter(f, sigma=(sigma, sigma, 0), mode="nearest",
                                      truncate=4.0)
  ref = (ref * 255).astype(np.uint8)
  out = T.gaussian_blur(image, sigma)
  assert out.dtype == np.uint8 and out.shape == image.shape
  assert np.mean(out == ref) > 0.999
  assert np.abs(out.astype(int) - ref).max() <= 1


def test_eval_resize_policies():
  image, label = _pair(30, 40)
  img, lab = T.eval_resize(image, label, "none")
  assert img is image and lab is label
  img, lab = T.eval_resize(image, label, "fixed", height=15, width=20)
  assert img.shape == (15, 20, 3) and lab.shape == (15, 20)
  img, lab = T.eval_resize(image, label, "height_crop_pad", size=24)
  assert img.shape == (24, 24, 3) and lab.shape == (24, 24)  # 24x32 centre-cropped
  tall_img, tall_lab = _pair(40, 20)
  img, lab = T.eval_resize(tall_img, tall_lab, "height_crop_pad", size=20)
  assert img.shape == (20, 20, 3)
  assert np.all(lab[:, :5] == 255) and np.all(lab[:, -5:] == 255)  # 10 wide, padded
  img, lab = T.eval_resize(image, label, "none", pad_hw=(32, 48), pad_value=1)
  assert img.shape == (32, 48, 3) and np.all(lab[30:] == 255) and np.all(lab[:, 40:] == 255)
  np.testing.assert_array_equal(lab[:30, :40], label)
  with pytest.raises(ValueError, match="eval_resize"):
    T.eval_resize(image, label, "bogus")
  with pytest.raises(ValueError, match="larger than"):
    T.eval_resize(image, label, "none", pad_hw=(20, 48))
