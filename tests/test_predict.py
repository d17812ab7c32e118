"""--mode predict: images, folders (recursive), videos, class shares, clear errors."""
import csv

import cv2
import flax.nnx as nnx
import numpy as np
import pytest

from jaxseg.config_base import base_config
from jaxseg.input_pipeline import datasets
from jaxseg.train_lib import checkpoint as checkpoint_lib
from jaxseg.train_lib import class_share
from jaxseg.train_lib import inference
from jaxseg.train_lib import train_step as step_lib


def _config(dataset="camvid"):
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = dataset
  return c


def _checkpoint(config, path, num_classes, seed=0):
  model = step_lib.build_model(config, num_classes, rngs=nnx.Rngs(seed))
  checkpoint_lib.save_model_checkpoint(
      path, model, metadata={"model": config.model.name, "num_classes": num_classes})
  return path


def _write_image(path, h, w, seed):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
  return path


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _class_of(color_mask, colors):
  """Train ids back from a colour mask (every pixel must be a class colour)."""
  codes = color_mask.astype(np.int64) @ [65536, 256, 1]
  table = {int(c @ [65536, 256, 1]): k for k, c in enumerate(colors.astype(np.int64))}
  assert set(np.unique(codes)) <= set(table)
  return np.vectorize(table.get)(codes)


def test_predict_video_round_trip_on_the_real_clip(shared_data, tmp_path):
  clip = shared_data / "video" / "solidWhiteRight.mp4"
  config = _config("camvid")
  _checkpoint(config, tmp_path / "ckpt", 11)
  written = inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                                    input_path=clip, output_dir=tmp_path / "out")
  assert [p.name for p in written] == ["solidWhiteRight_overlay.mp4", "solidWhiteRight_color.mp4"]
  source = cv2.VideoCapture(str(clip))
  for path in written:
    video = cv2.VideoCapture(str(path))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(source.get(cv2.CAP_PROP_FPS))
    frames = 0
    while True:
      ok, frame = video.read()
      if not ok:
        break
      assert frame.shape == (540, 960, 3)
      frames += 1
    assert frames == 221
  rows = _rows(tmp_path / "out" / "solidWhiteRight_class_share.csv")
  frames_rows = [r for r in rows if r["kind"] == "item"]
  assert len(frames_rows) == 221 and rows[-1]["item"] == "ALL"
  assert int(rows[-1]["pixels"]) == 221 * 960 * 540
  names = datasets.get_class_table(config.data).class_names
  for row in (frames_rows[0], rows[-1]):
    assert sum(float(row[n]) for n in names) == pytest.approx(100.0, abs=1e-2)


def test_predict_folder_recursively_with_class_shares(tmp_path):
  config = _config("camvid")
  table = datasets.get_class_table(config.data)
  _checkpoint(config, tmp_path / "ckpt", 11)
  inputs = tmp_path / "in"
  _write_image(inputs / "a.png", 40, 56, 0)
  _write_image(inputs / "city" / "b.jpg", 48, 64, 1)
  _write_image(inputs / "city" / "night" / "c.png", 40, 56, 2)
  (inputs / "notes.txt").write_text("not an image")
  written = inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                                    input_path=inputs, output_dir=tmp_path / "out")
  rel = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
  assert rel == ["a_color.png", "a_overlay.png", "city/b_color.png", "city/b_overlay.png",
                 "city/night/c_color.png", "city/night/c_overlay.png"]
  rows = {r["item"]: r for r in _rows(tmp_path / "out" / "class_share.csv")}
  assert set(rows) == {"a.png", "city/b.jpg", "city/night/c.png", "./*", "city/*",
                       "city/night/*", "ALL"}
  total = np.zeros(11)
  for item, stem in (("a.png", "a"), ("city/b.jpg", "city/b"), ("city/night/c.png",
                                                                 "city/night/c")):
    mask = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / f"{stem}_color.png")),
                        cv2.COLOR_BGR2RGB)
    counts = np.bincount(_class_of(mask, table.colors).ravel(), minlength=11)
    total += counts
    share = [float(rows[item][n]) for n in table.class_names]
    np.testing.assert_allclose(share, 100 * counts / counts.sum(), atol=1e-3)
  share = [float(rows["ALL"][n]) for n in table.class_names]
  np.testing.assert_allclose(share, 100 * total / total.sum(), atol=1e-3)
  # A single image works too.
  one = inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                                input_path=inputs / "a.png", output_dir=tmp_path / "one")
  assert [p.name for p in one] == ["a_color.png", "a_overlay.png"]


@pytest.mark.parametrize("dataset,num_classes", [("cityscapes", 19), ("mapillary", 65),
                                                 ("camvid", 11)])
def test_predict_with_any_class_table(tmp_path, dataset, num_classes):
  config = _config(dataset)
  config.eval.mode = "sliding"
  config.eval.crop_size = 32
  config.eval.flip = True
  table = datasets.get_class_table(config.data)
  assert table.num_classes == num_classes
  _checkpoint(config, tmp_path / "ckpt", num_classes, seed=3)
  image = _write_image(tmp_path / "in" / "x.png", 40, 72, 4)
  written = inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                                    input_path=image, output_dir=tmp_path / "out")
  mask = cv2.cvtColor(cv2.imread(str(written[0])), cv2.COLOR_BGR2RGB)
  assert mask.shape == (40, 72, 3)
  _class_of(mask, table.colors)  # every pixel has a class colour of this table
  header = next(csv.reader(open(tmp_path / "out" / "class_share.csv")))
  assert header[3:] == list(table.class_names)


def test_unreadable_inputs_are_clear_errors(tmp_path):
  config = _config("camvid")
  _checkpoint(config, tmp_path / "ckpt", 11)
  good = _write_image(tmp_path / "in" / "good.png", 24, 24, 0)
  truncated = tmp_path / "in" / "broken.png"
  truncated.write_bytes(good.read_bytes()[:60])
  fake_video = tmp_path / "clip.mp4"
  fake_video.write_bytes(b"this is no video" * 10)
  kw = dict(checkpoint=tmp_path / "ckpt", step=None, output_dir=tmp_path / "out")
  with pytest.raises(ValueError, match="broken.png"):
    inference.predict_paths(config, input_path=truncated, **kw)
  with pytest.raises(ValueError, match="broken.png"):  # inside a folder, too
    inference.predict_paths(config, input_path=tmp_path / "in", **kw)
  with pytest.raises(ValueError, match="clip.mp4"):
    inference.predict_paths(config, input_path=fake_video, **kw)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    inference.predict_paths(config, input_path=tmp_path / "nowhere", **kw)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    inference.predict_paths(config, input_path=tmp_path / "empty", **kw)


def test_checkpoint_of_another_model_or_class_count_is_refused(tmp_path):
  camvid = _config("camvid")
  _checkpoint(camvid, tmp_path / "ckpt", 11)
  image = _write_image(tmp_path / "x.png", 24, 24, 0)
  kw = dict(checkpoint=tmp_path / "ckpt", step=None, input_path=image,
            output_dir=tmp_path / "out")
  with pytest.raises(ValueError, match="11 classes.*'cityscapes' has 19"):
    inference.predict_paths(_config("cityscapes"), **kw)
  other = _config("camvid")
  other.model.name = "DeepR50V3PlusD_m1"
  with pytest.raises(ValueError, match="holds model 'DeepR18V3PlusD_m1'"):
    inference.predict_paths(other, **kw)
  # Without metadata the variable shapes give it away.
  wider = _config("camvid")
  wider.model.overrides.width_multiplier = 0.125
  with pytest.raises(ValueError, match="does not fit this model"):
    inference.predict_paths(wider, **kw)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    inference.predict_paths(camvid, **{**kw, "checkpoint": tmp_path / "nothing"})


def test_class_share_table():
  share = class_share.ClassShare(["road", "sky"])
  share.add("a", np.array([[0, 0, 1, 255]]), group="x")
  share.add("b", np.array([[1, 1]]), group="y")
  np.testing.assert_array_equal(share.total(), [2, 3])
  np.testing.assert_array_equal(share.total("x"), [2, 1])
  text = share.format_table()
  assert "road" in text and "40.00%" in text and "66.67%" in text
