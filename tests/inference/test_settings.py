"""eval.preset: semseg tool/test.py and TF DeepLab multi-scale + flip, against numpy re-runs."""
import dataclasses
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.inference import sliding
from jaxseg.models import preprocess
from jaxseg.runtime import mesh as mesh_lib

K = 5
MEAN = np.array(preprocess.IMAGENET_MEAN) * 255
STD = np.array(preprocess.IMAGENET_STD) * 255


def _model(v, x):
  """3x3 conv with zero padding (tiles and flips see different borders) -> K scores."""
  x = x.astype(jnp.float32)
  y = jax.lax.conv_general_dilated(x, v["kernel"], (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return 3 * jnp.tanh(y) + x @ v["skip"]


def _vars(seed=0):
  rng = np.random.default_rng(seed)
  return {"kernel": jnp.asarray(rng.normal(size=(3, 3, 3, K)).astype(np.float32) / 2),
          "skip": jnp.asarray(rng.normal(size=(3, K)).astype(np.float32))}


def _image(h, w, seed=0):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 5 + 1, w // 5 + 1, 3)).astype(np.uint8)
  return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _net(v, x):
  """The model on one normalised float HWC crop -> HWC logits (numpy)."""
  return np.asarray(_model(v, jnp.asarray(x[None], jnp.float32)))[0].astype(np.float64)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _settings(preset, **eval_fields):
  c = base_config()
  c.eval.preset = preset
  for k, val in eval_fields.items():
    c.eval[k] = val
  return c


def _segment(settings, v, image):
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  seg = sliding.Segmenter(_model, num_classes=K, mesh=mesh, settings=settings)
  x = mesh_lib.shard_batch({"image": image[None]}, mesh)["image"]
  return np.asarray(seg.logits(v, x))[0], np.asarray(seg.predict(v, x))[0]


# ---------------------------------------------------------- semseg tool/test.py in numpy --
def _semseg_net_process(v, image, flip=True):
  x = (image - MEAN) / STD
  out = _softmax(_net(v, x))
  if flip:
    out = (out + _softmax(_net(v, x[:, ::-1]))[:, ::-1]) / 2
  return out


def _semseg_scale_process(v, image, crop, h, w, stride_rate=2 / 3):
  ori_h, ori_w, _ = image.shape
  pad_h, pad_w = max(crop - ori_h, 0), max(crop - ori_w, 0)
  pad_h_half, pad_w_half = int(pad_h / 2), int(pad_w / 2)
  if pad_h > 0 or pad_w > 0:
    image = cv2.copyMakeBorder(image, pad_h_half, pad_h - pad_h_half, pad_w_half,
                               pad_w - pad_w_half, cv2.BORDER_CONSTANT, value=MEAN.tolist())
  new_h, new_w, _ = image.shape
  stride = int(np.ceil(crop * stride_rate))
  grid_h = int(np.ceil(float(new_h - crop) / stride) + 1)
  grid_w = int(np.ceil(float(new_w - crop) / stride) + 1)
  pred = np.zeros((new_h, new_w, K), dtype=float)
  count = np.zeros((new_h, new_w), dtype=float)
  for ih in range(grid_h):
    for iw in range(grid_w):
      e_h = min(ih * stride + crop, new_h)
      e_w = min(iw * stride + crop, new_w)
      s_h, s_w = e_h - crop, e_w - crop
      count[s_h:e_h, s_w:e_w] += 1
      pred[s_h:e_h, s_w:e_w, :] += _semseg_net_process(v, image[s_h:e_h, s_w:e_w].copy())
  pred /= np.expand_dims(count, 2)
  pred = pred[pad_h_half:pad_h_half + ori_h, pad_w_half:pad_w_half + ori_w]
  return cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)


def _semseg_test(v, image_u8, base_size, crop, scales):
  image = np.float32(image_u8)
  h, w, _ = image.shape
  prediction = np.zeros((h, w, K), dtype=float)
  for scale in scales:
    long_size = round(scale * base_size)
    new_h = new_w = long_size
    if h > w:
      new_w = round(long_size / float(h) * w)
    else:
      new_h = round(long_size / float(w) * h)
    image_scale = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    prediction += _semseg_scale_process(v, image_scale, crop, h, w)
  return prediction / len(scales)


def test_semseg_preset_matches_test_py():
  """Padding (scale 0.5 < crop), several tiles, per-tile flips, softmax, 3 scales."""
  v, image = _vars(), _image(46, 70)
  # The 'semseg' preset's protocol fields (checked below) at 3 of its 6 scales.
  settings = sliding.InferenceSettings.of(mode="sliding", resize="long_side", tiling="semseg",
                                       average="softmax", flip=True, overlap=1 / 3,
                                       base_size=64, crop_size=33, scales=(0.5, 1.0, 1.5))
  preset = sliding.InferenceSettings.from_config(_settings("semseg", base_size=64,
                                                           crop_size=33).eval)
  assert preset == dataclasses.replace(settings, scales=preset.scales)
  assert preset.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  probs, pred = _segment(settings, v, image)
  want = _semseg_test(v, image, 64, 33, (0.5, 1.0, 1.5))
  np.testing.assert_allclose(probs, want, atol=2e-5)
  assert np.mean(pred == want.argmax(-1)) >= 0.999
  assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)  # probabilities, not logits


def test_semseg_portrait_and_single_scale():
  """h > w takes the other branch of the long-side rule; semseg_ss is scale 1 only."""
  v, image = _vars(1), _image(60, 38, seed=1)
  cfg = _settings("semseg_ss", base_size=50, crop_size=29)
  settings = sliding.InferenceSettings.from_config(cfg.eval)
  assert settings.scales == (1.0,)
  probs, _ = _segment(settings, v, image)
  np.testing.assert_allclose(probs, _semseg_test(v, image, 50, 29, (1.0,)), atol=2e-5)


def test_semseg_boxes_exact_stride():
  """crop 480: semseg's stride is ceil(480 * 2/3) = 320 (float 1 - 1/3 would give 321)."""
  assert math.ceil(480 * (1 - 1 / 3)) == 321  # the trap
  boxes = sliding.semseg_boxes(800, 1100, 480, 1 / 3)
  assert sorted({b[0] for b in boxes}) == [0, 320]
  assert sorted({b[2] for b in boxes}) == [0, 320, 620]
  assert all(b[1] - b[0] == 480 and b[3] - b[2] == 480 for b in boxes)


# ------------------------------------------------- TF DeepLab predict_labels_multi_scale --
def _align_corners(x, size):
  """Bilinear, align_corners=True, numpy float64 (HWC)."""
  out = x.astype(np.float64)
  for axis, n_out in ((0, size[0]), (1, size[1])):
    n_in = out.shape[axis]
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (pos - i0).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    out = np.take(out, i0, axis) * (1 - lam) + np.take(out, i1, axis) * lam
  return out


def _deeplab_multi_scale(v, image_u8, scales):
  h, w, _ = image_u8.shape
  preds = []
  for s in scales:
    size = (int((h - 1.0) * s + 1.0), int((w - 1.0) * s + 1.0))
    x = (_align_corners(image_u8, size) - MEAN) / STD
    preds.append(_softmax(_align_corners(_net(v, x), (h, w))))
    preds.append(_softmax(_align_corners(_net(v, x[:, ::-1])[:, ::-1], (h, w))))
  return np.mean(preds, axis=0)


def test_deeplab_tutorial_preset_matches_tf_procedure():
  v, image = _vars(2), _image(33, 49, seed=2)
  settings = sliding.InferenceSettings.from_config(_settings("deeplab_tutorial").eval)
  assert settings.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and settings.flip
  assert settings.mode == "whole"
  probs, pred = _segment(settings, v, image)
  want = _deeplab_multi_scale(v, image, settings.scales)
  np.testing.assert_allclose(probs, want, atol=2e-5)
  assert np.mean(pred == want.argmax(-1)) >= 0.999


# ------------------------------------------------------------------- preset resolution --
def test_original_preset_is_nvidia_eval_defaults():
  s = sliding.InferenceSettings.from_config(_settings("original").eval)
  assert (s.mode, s.scales, s.flip, s.crop_size, s.tile_average, s.average) == (
      "sliding", (0.5, 1.0, 2.0), True, 1024, "original", "logits")
  manual = sliding.InferenceSettings.from_config(base_config().eval)  # preset '': as set
  assert manual == sliding.InferenceSettings.of(crop_size=1024, scales=(1.0,), flip=False)


def test_preset_conflicts_and_dataset_values():
  with pytest.raises(ValueError, match=r"preset='semseg' sets eval.scales"):
    sliding.InferenceSettings.from_config(_settings("semseg", scales="0.5,1.0").eval)
  with pytest.raises(ValueError, match=r"eval.average"):
    sliding.InferenceSettings.from_config(_settings("deeplab_tutorial", average="softmax").eval)
  with pytest.raises(ValueError, match=r"expected '' or one of"):
    sliding.InferenceSettings.from_config(_settings("mmseg").eval)
  # Values equal to the preset's are not conflicts.
  sliding.InferenceSettings.from_config(_settings("semseg", flip=True, base_size=512,
                                                  crop_size=473).eval)
  # semseg's base size and crop come from the dataset unless set.
  c = _settings("semseg")
  c.data.name, c.data.crop_size = "cityscapes", 713
  s = sliding.InferenceSettings.from_config(c.eval, c.data)
  assert (s.base_size, s.crop_size) == (2048, 713)
  with pytest.raises(ValueError, match=r"needs eval.base_size"):
    sliding.InferenceSettings.from_config(_settings("semseg").eval)
  with pytest.raises(ValueError, match=r"set eval.crop_size"):
    sliding.InferenceSettings.from_config(_settings("semseg", base_size=512).eval)
