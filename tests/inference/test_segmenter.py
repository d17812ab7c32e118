"""jaxseg.Segmenter: the 3-line API, its config from a checkpoint, and `--mode predict` parity."""
import json
import subprocess
import sys

import cv2
import flax.nnx as nnx
import jax
import numpy as np
import pytest

import jaxseg
from jaxseg.config.base import base_config
from jaxseg.inference import commands as inference
from jaxseg.inference import segmenter as segmenter_lib
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib

MODEL = "DeepR18V3PlusD_m1"
CITYSCAPES_VAL = "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"


def _config(dataset="cityscapes"):
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = MODEL
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = dataset
  return c


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random tiny 19-class checkpoint with a converted checkpoint's metadata (no dataset)."""
  path = tmp_path_factory.mktemp("ckpt")
  model = registry.from_config(_config(), 19, rngs=nnx.Rngs(0))
  checkpoint_lib.save_model_checkpoint(path, model, metadata={
      "model": MODEL, "num_classes": 19, "model_overrides": {"width_multiplier": 0.0625}})
  return path


@pytest.fixture(scope="module")
def seg(checkpoint):
  # One device: a multi-device program costs ~3x the compile time (padding is tested below).
  return jaxseg.Segmenter.from_checkpoint(checkpoint, precision="fp32",
                                          devices=jax.local_devices()[:1])


def _ids_of(color, palette):
  """Class ids back from a colour picture (palette colours are distinct)."""
  codes = color.astype(np.int64) @ [65536, 256, 1]
  lookup = {int(c): k for k, c in enumerate(palette.astype(np.int64) @ [65536, 256, 1])}
  assert set(np.unique(codes)) <= set(lookup)
  return np.vectorize(lookup.get)(codes).astype(np.uint8)


def _rgb(path):
  return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_api_equals_mode_predict_on_the_real_cityscapes_frame(shared_data, checkpoint, seg,
                                                              tmp_path):
  frame = shared_data / "cityscapes" / CITYSCAPES_VAL
  # A converted checkpoint names no dataset: 19 classes select the Cityscapes table.
  assert seg.class_names[:3] == ("road", "sidewalk", "building") and seg.num_classes == 19
  ids = seg(frame)
  image = _rgb(frame)
  assert ids.shape == image.shape[:2] and ids.dtype == np.uint8
  np.testing.assert_array_equal(seg(image), ids)  # an array and its path agree
  written = inference.predict_paths(_config(), checkpoint=checkpoint, step=None,
                                    input_path=frame, output_dir=tmp_path / "out")
  color, overlay = (_rgb(p) for p in written)
  np.testing.assert_array_equal(_ids_of(color, seg.palette), ids)
  np.testing.assert_array_equal(seg.colorize(ids), color)
  np.testing.assert_array_equal(seg.overlay(frame, ids), overlay)


def test_batches_lists_probabilities_and_pictures(seg, tmp_path):
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (9, 17, 3)).astype(np.uint8)
  images = np.stack([cv2.resize(x, (64, 48), interpolation=cv2.INTER_CUBIC)
                     for x in (small, small[::-1], small[:, ::-1])])
  ids, probs = seg.predict(images, return_probs=True)
  assert ids.shape == (3, 48, 64) and probs.shape == (3, 48, 64, 19)
  assert probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(probs.argmax(-1), ids)
  path = tmp_path / "b.png"
  assert cv2.imwrite(str(path), cv2.cvtColor(images[1], cv2.COLOR_RGB2BGR))
  # A list of any sizes (a path among them): one id map per image, as in a batch. The odd size
  # is the Cityscapes frame's (its program is compiled already when the shared data exists).
  other = cv2.resize(small, (256, 128), interpolation=cv2.INTER_CUBIC)
  out = seg.predict([images[0], path, images[2], other], batch_size=3)
  assert [o.shape for o in out] == [(48, 64)] * 3 + [(128, 256)]
  np.testing.assert_array_equal(np.stack(out[:3]), ids)
  assert seg.colorize(ids).shape == (3, 48, 64, 3)
  picture = seg.overlay(images[0], ids[0], alpha=1.0)
  np.testing.assert_array_equal(picture, seg.palette[ids[0]])


def test_a_batch_is_padded_to_the_devices_and_cut_back():
  images = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
  padded = segmenter_lib.pad_batch(images, 2)
  assert padded.shape == (4, 2, 2, 3)
  np.testing.assert_array_equal(padded[3], images[2])
  assert segmenter_lib.pad_batch(images, 3) is images
  pending = segmenter_lib.Pending(jax.numpy.asarray(padded[..., 0]), None, count=3)
  ids, probs = pending.result()
  assert probs is None
  np.testing.assert_array_equal(ids, images[..., 0])


@pytest.mark.parametrize("bad,message", [
    (np.zeros((8, 8, 3), np.float32), "image is a float32 array; expected uint8 RGB"),
    (np.zeros((8, 8), np.uint8), r"an array of shape \(8, 8\); expected \(H, W, 3\) or"),
    ("nowhere/frame.png", "image file nowhere/frame.png does not exist"),
    ([np.zeros((8, 8, 4), np.uint8)], r"image #0 has shape \(8, 8, 4\)"),
    (42, "got a 'int' object; expected an image path"),
])
def test_a_bad_input_is_one_clear_line(seg, bad, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
    seg(bad)
  assert "\n" not in str(error.value)


def test_settings_are_keyword_arguments_and_checked(checkpoint):
  with pytest.raises(TypeError, match=r"unknown inference setting\(s\) \['scale'\]"):
    jaxseg.Segmenter.from_checkpoint(checkpoint, scale=2.0)
  with pytest.raises(ValueError, match="preset='original' sets eval.mode='sliding'"):
    jaxseg.Segmenter.from_checkpoint(checkpoint, preset="original", mode="whole")
  with pytest.raises(ValueError, match="predicts 19 classes .* 'camvid' has 11"):
    jaxseg.Segmenter.from_checkpoint(checkpoint, dataset="camvid")


def test_config_from_a_run_or_a_converted_checkpoint():
  run = _config("camvid")
  run.eval.preset = "semseg_ss"
  run.eval.crop_size = 360
  with run.unlocked():
    run.model.overrides.output_stride = 16  # a family keyword base_config does not have
  meta = {"model": MODEL, "num_classes": 11, "config": json.loads(run.to_json_best_effort())}
  meta["config"]["removed_section"] = {"old": 1}  # fields of older versions are skipped
  config = segmenter_lib.config_for_checkpoint(meta)
  assert (config.data.name, config.precision, config.eval.preset) == ("camvid", "fp32",
                                                                      "semseg_ss")
  assert config.model.overrides.to_dict() == run.model.overrides.to_dict()
  # An explicit preset resets the fields it fixes; other settings are written as given.
  segmenter_lib._set_settings(config, {"preset": "original", "scales": [0.5, 1.0]})
  assert (config.eval.preset, config.eval.resize, config.eval.scales) == ("original", "scale",
                                                                          "0.5,1.0")
  assert config.eval.crop_size == 1024
  converted = {"model": MODEL, "num_classes": 150, "model_overrides": {"width_multiplier": 0.5}}
  config = segmenter_lib.config_for_checkpoint(converted)
  assert config.data.name == "ade20k" and config.model.overrides.width_multiplier == 0.5
  config = segmenter_lib.config_for_checkpoint({**converted, "num_classes": 7})
  info = segmenter_lib._info(config, {"num_classes": 7})
  assert info.class_names[-1] == "class 6" and info.colors.shape == (7, 3)
  config = segmenter_lib.config_for_checkpoint(converted, dataset="pascal_context60")
  assert (config.data.name, config.data.class_table) == ("folder", "pascal_context60")
  with pytest.raises(ValueError, match="dataset='nope'; expected a dataset name"):
    segmenter_lib.config_for_checkpoint(converted, dataset="nope")


def test_import_jaxseg_stays_cheap():
  code = ("import sys, jaxseg; heavy = [m for m in ('jax', 'flax', 'orbax', 'cv2', 'numpy') "
          "if m in sys.modules]; print(heavy)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
  assert jaxseg.Segmenter is segmenter_lib.Segmenter
