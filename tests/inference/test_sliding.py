"""--mode eval inference modes: whole, sliding, pooling, multi-scale, flip (as eval.py)."""
import math

import cv2
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.inference import model as inference_model
from jaxseg.inference import pil_resize
from jaxseg.inference import sliding
from jaxseg.models import preprocess
from jaxseg.models import registry
from jaxseg.models.layers import apply_layers
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import variables

K = 5


# ------------------------------------------------------------------- toy models --
def _conv_model(v, x):
  """Depthwise 3x3 conv (zero padding) -> tanh -> 1x1 projection to K classes."""
  x = x.astype(jnp.float32)
  k = jnp.tile(v["kernel"][:, :, None, None], (1, 1, 1, x.shape[-1]))
  y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", feature_group_count=x.shape[-1],
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.tanh(y) @ v["proj"] + x @ v["skip"]


def _toy_vars(seed=0, symmetric=False):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(3, 3)).astype(np.float32)
  if symmetric:  # mirror-symmetric: conv(flip(x)) = flip(conv(x))
    kernel = (kernel + kernel[:, ::-1]) / 2
  return {"kernel": jnp.asarray(kernel),
          "proj": jnp.asarray(rng.normal(size=(3, K)).astype(np.float32)),
          "skip": jnp.asarray(rng.normal(size=(3, K)).astype(np.float32))}


def _pixel_model(v, x):
  """Per-pixel: every tile and every flip sees the same value at a pixel."""
  return jnp.tanh(x.astype(jnp.float32) @ v["proj"]) + x.astype(jnp.float32) @ v["skip"]


def _images(n=1, h=40, w=56, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (n, h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
  smooth = np.stack([cv2.resize(b, (w, h), interpolation=cv2.INTER_CUBIC) for b in base])
  noise = rng.integers(-20, 21, smooth.shape)
  return np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)


def _segmenter(apply_fn, devices=1, **settings):
  mesh = mesh_lib.create_mesh({"data": devices}, devices=jax.devices()[:devices])
  return sliding.Segmenter(apply_fn, num_classes=K, mesh=mesh,
                           settings=sliding.InferenceSettings.of(**settings)), mesh


def _logits(seg, mesh, v, images):
  x = mesh_lib.shard_batch({"image": images}, mesh)["image"]
  return np.asarray(seg.logits(v, x))


# -------------------------------------------------------------- the original rule --
def _original_boxes(h, w, tile, overlap):
  """eval.py sliding_window_cropping, loop for loop (with its x1/y1 clamp)."""
  stride = math.ceil(tile * (1 - overlap))
  rows = int(math.ceil((w - tile) / stride) + 1)
  cols = int(math.ceil((h - tile) / stride) + 1)
  out = []
  for row in range(rows):
    for col in range(cols):
      y1, x1 = int(col * stride), int(row * stride)
      x2, y2 = min(x1 + tile, w), min(y1 + tile, h)
      x1, y1 = max(int(x2 - tile), 0), max(int(y2 - tile), 0)
      out.append((y1, y2, x1, x2))
  return tuple(out)


@pytest.mark.parametrize("h,w,tile", [(1024, 2048, 1024), (2048, 4096, 2048), (512, 1024, 1024),
                                      (1536, 3072, 1536), (700, 500, 256), (1025, 2049, 1024),
                                      (40, 56, 24), (60, 84, 36)])
def test_sliding_boxes_follow_the_original(h, w, tile):
  boxes = sliding.sliding_boxes(h, w, tile, 1 / 3)
  assert boxes == _original_boxes(h, w, tile, 1 / 3)
  covered = np.zeros((h, w), bool)
  for y1, y2, x1, x2 in boxes:
    assert (y2 - y1, x2 - x1) == (min(tile, h), min(tile, w))
    covered[y1:y2, x1:x2] = True
  assert covered.all()


def test_cityscapes_tiles_and_memory_budget():
  assert sliding.sliding_boxes(1024, 2048, 1024, 1 / 3) == (
      (0, 1024, 0, 1024), (0, 1024, 683, 1707), (0, 1024, 1024, 2048))
  assert sliding.sliding_boxes(100, 300, 1024, 1 / 3) == ((0, 100, 0, 300),)  # original: none
  settings = sliding.InferenceSettings.of(scales="0.5,1.0,2.0", flip=True, crop_budget_mpix=8)
  p05, p1, p2 = sliding.make_plans(1024, 2048, settings, images_per_device=1)
  assert (p05.scaled_hw, p05.crop_hw, len(p05.boxes), p05.chunk, len(p05.items)) == (
      (512, 1024), (512, 1024), 1, 2, 1)
  assert (p1.crop_hw, len(p1.boxes), p1.chunk, len(p1.items)) == ((1024, 1024), 3, 6, 1)
  # 6 crops of 4 Mpix under an 8 Mpix budget: 3 calls of 2 crops.
  assert (p2.crop_hw, len(p2.boxes), p2.chunk, len(p2.items)) == ((2048, 2048), 3, 2, 3)
  small = sliding.InferenceSettings.of(scales="1.0", flip=True, crop_budget_mpix=2.5)
  (plan,) = sliding.make_plans(1024, 2048, small, images_per_device=1)
  assert plan.chunk == 2 and len(plan.items) == 3 and plan.weights.sum() == 6
  (plan,) = sliding.make_plans(1024, 2048, small, images_per_device=2)
  assert plan.chunk == 1 and len(plan.items) == 6


@pytest.mark.parametrize("bad", [dict(mode="tiles"), dict(scales="0.5,x"), dict(scales="0"),
                                 dict(overlap=1.0), dict(tile_average="mean")])
def test_bad_settings_name_the_option(bad):
  with pytest.raises(ValueError, match="config.eval"):
    sliding.InferenceSettings.of(**bad)


def test_image_resize_is_pil_bilinear(shared_data):
  Image = pytest.importorskip("PIL.Image")
  (path,) = sorted((shared_data / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))[:1]
  image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
  h, w = image.shape[:2]
  for s in (0.5, 0.75, 1.25, 1.5, 1.75, 2.0, 0.3):
    size = (int(h * s), int(w * s))
    ours = np.asarray(pil_resize.pil_bilinear_resize(image[None], size))[0]
    theirs = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
    np.testing.assert_array_equal(ours, theirs, err_msg=f"scale {s}")


# ------------------------------------------------------------------- equivalences --
def test_sliding_with_crop_at_least_image_equals_whole():
  config = base_config()
  config.model.name = "DeepR18V3PlusD_m1"
  config.model.overrides.width_multiplier = 0.0625
  config.precision = "fp32"
  model = registry.from_config(config, K, rngs=nnx.Rngs(1))
  params, stats = variables.model_variables(model)
  v = {"params": params, "batch_stats": stats}
  _, apply_fn = inference_model.build_apply_fn(config, K)
  images = _images(2, 40, 56)
  whole, mesh = _segmenter(apply_fn, devices=2, mode="whole")
  slide, _ = _segmenter(apply_fn, devices=2, mode="sliding", crop_size=56)
  a, b = _logits(whole, mesh, v, images), _logits(slide, mesh, v, images)
  np.testing.assert_array_equal(a, b)
  direct = np.asarray(model(preprocess.normalize_images(jnp.asarray(images), jnp.float32)))
  np.testing.assert_allclose(a, direct, rtol=1e-5, atol=1e-5)
  # Smaller tiles really tile: different numbers, same shape.
  tiled, _ = _segmenter(apply_fn, devices=2, mode="sliding", crop_size=24)
  c = _logits(tiled, mesh, v, images)
  assert c.shape == a.shape and np.abs(c - a).max() > 1e-3


def _reference(apply_fn, v, image, scales, crop, flip, tile_average):
  """The original inference_sliding in numpy + cv2 (float64 canvases), one crop at a time."""
  h, w = image.shape[:2]
  per_scale = []
  for s in scales:
    hs, ws = int(h * s), int(w * s)
    scaled = np.asarray(pil_resize.pil_bilinear_resize(image[None], (hs, ws)))[0]
    variants = [scaled, scaled[:, ::-1]] if flip else [scaled]
    tile = int(crop * max(s, 1.0))
    outs = []
    for v_idx, img in enumerate(variants):
      full, count = np.zeros((K, hs, ws)), np.zeros((K, hs, ws))
      for y1, y2, x1, x2 in _original_boxes(hs, ws, tile, 1 / 3):
        x = preprocess.normalize_images(jnp.asarray(img[None, y1:y2, x1:x2]), jnp.float32)
        full[:, y1:y2, x1:x2] += np.asarray(apply_fn(v, x))[0].transpose(2, 0, 1)
        if tile_average == "original":
          count[y1:y2, x1:x2] += 1  # sic: eval.py indexes (classes, rows)
        else:
          count[:, y1:y2, x1:x2] += 1
      full /= count
      outs.append(np.stack([cv2.resize(np.fliplr(p) if v_idx else p, (w, h),
                                       interpolation=cv2.INTER_LINEAR) for p in full]))
    per_scale.append(np.mean(outs, axis=0))
  return np.mean(per_scale, axis=0).transpose(1, 2, 0)


@pytest.mark.parametrize("tile_average", ["pixel", "original"])
def test_multiscale_flip_sliding_equals_the_original_algorithm(tile_average):
  v, apply_fn = _toy_vars(3), _conv_model
  images = _images(1, 40, 56, seed=1)
  scales = (0.5, 1.0, 1.5)
  seg, mesh = _segmenter(apply_fn, mode="sliding", crop_size=24, scales=scales, flip=True,
                         crop_budget_mpix=0.002, tile_average=tile_average)
  ours = _logits(seg, mesh, v, images)[0]
  ref = _reference(apply_fn, v, images[0], scales, 24, True, tile_average)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  # One compilation per crop shape, reused by the next batch.
  _logits(seg, mesh, v, _images(1, 40, 56, seed=2))
  assert seg._chunk._cache_size() == len({p.crop_hw for p in seg.plans(40, 56, 1)}) == 3


def test_flip_tta_of_a_flip_equivariant_model_is_exact():
  v = _toy_vars(4, symmetric=True)
  images = _images(2, 36, 52, seed=3)
  for mode, extra in (("whole", {}), ("whole", {"scales": "0.5,1.0,2.0"}),
                      ("pooling", {"aspp_pool_size": 4})):
    plain, mesh = _segmenter(_conv_model, mode=mode, **extra)
    flipped, _ = _segmenter(_conv_model, mode=mode, flip=True, **extra)
    a, b = _logits(plain, mesh, v, images), _logits(flipped, mesh, v, images)
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-6, err_msg=f"{mode} {extra}")
  # Tiles of a per-pixel model agree everywhere: sliding + flip = the plain model call.
  seg, mesh = _segmenter(_pixel_model, mode="sliding", crop_size=20, flip=True)
  direct = _pixel_model(v, preprocess.normalize_images(jnp.asarray(images), jnp.float32))
  np.testing.assert_allclose(_logits(seg, mesh, v, images), np.asarray(direct), atol=2e-6)


def test_confusion_over_eight_devices_equals_numpy():
  n = len(jax.devices())
  v = _toy_vars(5)
  seg, mesh = _segmenter(_conv_model, devices=n, mode="sliding", crop_size=24,
                         scales="0.75,1.25", flip=True)
  images = _images(n, 40, 56, seed=5)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, K, images.shape[:3]).astype(np.uint8)
  labels[:, :4] = 255
  valid = np.arange(n) < n - 1  # the last image is loader padding
  batch = mesh_lib.shard_batch({"image": images, "label": labels, "valid": valid}, mesh)
  counts, preds = seg.confusion(v, batch)
  preds = np.asarray(preds)
  np.testing.assert_array_equal(preds, np.asarray(seg.predict(v, batch["image"])))
  keep = (labels != 255) & valid[:, None, None]
  expected = np.bincount(labels[keep].astype(int) * K + preds[keep], minlength=K * K)
  np.testing.assert_array_equal(np.asarray(counts), expected.reshape(K, K))


def test_images_past_the_crop_budget_go_in_groups():
  v = _toy_vars(6)
  images = _images(6, 40, 56, seed=6)  # 3 images per device
  roomy, mesh = _segmenter(_conv_model, devices=2, mode="sliding", crop_size=24, flip=True,
                           scales="0.5,1.0")
  tight, _ = _segmenter(_conv_model, devices=2, mode="sliding", crop_size=24, flip=True,
                        scales="0.5,1.0", crop_budget_mpix=600 / 2**20)
  assert roomy.group_size(40, 56, 3) == 3 and tight.group_size(40, 56, 3) == 1
  np.testing.assert_allclose(_logits(tight, mesh, v, images), _logits(roomy, mesh, v, images),
                             rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ pooling --
def test_fixed_aspp_pool_averages_fixed_windows():
  config = base_config()
  config.model.name = "DeepR18V3PlusD_m1"
  config.model.overrides.width_multiplier = 0.0625
  config.precision = "fp32"
  model = registry.from_config(config, K, rngs=nnx.Rngs(2))
  params, stats = variables.model_variables(model)
  v = {"params": params, "batch_stats": stats}
  layout, apply_fixed = inference_model.build_apply_fn(config, K, aspp_pool_size=3)
  global_layout, apply_global = inference_model.build_apply_fn(config, K)
  assert [k for k, _, _ in layout.param_paths] == [k for k, _, _ in global_layout.param_paths]
  # ASPP level: the image branch at the corners is img_conv(mean of the corner window).
  aspp = model.aspp
  fixed = nnx.clone(aspp)  # the same weights, pooling 3 x 3 windows
  fixed.image_pool_window = 3
  channels = aspp.img_conv[0].kernel.shape[2]
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 7, 8, channels)), jnp.float32)
  out = np.asarray(fixed(x))
  red = out.shape[-1] // 5
  branch = lambda win: np.asarray(apply_layers(aspp.img_conv, win.mean((1, 2), keepdims=True),
                                               train=False, rngs=None))[0, 0, 0]
  np.testing.assert_allclose(out[0, 0, 0, :red], branch(x[:, :3, :3]), rtol=1e-5, atol=1e-6)
  # 8 columns, window 3: windows start at 0 and 3 (floor); the last column is the 2nd window.
  np.testing.assert_allclose(out[0, -1, -1, :red], branch(x[:, 3:6, 3:6]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[..., red:], np.asarray(aspp(x))[..., red:], rtol=1e-6)
  # A window as large as the feature map is the model's global pooling.
  images = _images(1, 32, 48)
  big, mesh = _segmenter(inference_model.build_apply_fn(config, K, aspp_pool_size=105)[1],
                         mode="pooling", aspp_pool_size=105)
  whole, _ = _segmenter(apply_global, mode="whole")
  np.testing.assert_allclose(_logits(big, mesh, v, images), _logits(whole, mesh, v, images),
                             rtol=1e-5, atol=1e-5)
  small, _ = _segmenter(apply_fixed, mode="pooling", aspp_pool_size=3)
  assert np.abs(_logits(small, mesh, v, images) - _logits(whole, mesh, v, images)).max() > 1e-4
