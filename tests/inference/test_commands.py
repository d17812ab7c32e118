"""--mode predict: images, folders (recursive), videos, class shares, clear errors."""
import csv

import cv2
import flax.nnx as nnx
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.data import datasets
from jaxseg.evaluation import class_share
from jaxseg.inference import commands as inference
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib


def _config(dataset="camvid"):
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = dataset
  return c


def _checkpoint(config, path, num_classes, seed=0):
  model = registry.from_config(config, num_classes, rngs=nnx.Rngs(seed))
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
  with pytest.raises(ValueError, match="broken.png is a truncated PNG"):
    inference.predict_paths(config, input_path=truncated, **kw)
  with pytest.raises(ValueError, match="clip.mp4"):
    inference.predict_paths(config, input_path=fake_video, **kw)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    inference.predict_paths(config, input_path=tmp_path / "nowhere", **kw)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    inference.predict_paths(config, input_path=tmp_path / "empty", **kw)


_TINY_CONFIG = """
from jaxseg.config.base import base_config


def get_config():
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = "camvid"
  return c
"""


def _run_main(tmp_path, *args):
  """`python -m jaxseg.main --mode predict ...` in-process: (exit status, stderr message).

  absl's app.run passes main's SystemExit to the interpreter unchanged; skipping it here
  keeps its process-wide set-up (logging handlers) out of the other tests.
  """
  from absl import flags

  from jaxseg import main
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(_TINY_CONFIG)
  argv = ["jaxseg.main", "--config", str(config_file), "--workdir", str(tmp_path / "work"),
          "--mode", "predict", "--checkpoint", str(tmp_path / "ckpt"), *args]
  try:
    flags.FLAGS(argv)
    with pytest.raises(SystemExit) as exit_info:
      main.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
  code = exit_info.value.code
  return (0, "") if code is None else (1, code) if isinstance(code, str) else (code, "")


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # loading --config
def test_folder_predict_writes_every_good_image_then_fails_listing_the_bad(tmp_path, capsys):
  config = _config("camvid")
  _checkpoint(config, tmp_path / "ckpt", 11)
  inputs = tmp_path / "in"
  good = _write_image(inputs / "a.png", 24, 24, 0)
  _write_image(inputs / "sub" / "c.png", 24, 24, 1)
  (inputs / "b_broken.png").write_bytes(good.read_bytes()[:70])
  (inputs / "sub" / "empty.jpg").write_bytes(b"")
  status, message = _run_main(tmp_path, f"--input={inputs}", f"--output={tmp_path / 'out'}")
  assert status == 1
  lines = message.splitlines()
  assert lines[0].startswith("error: predict: 2 of 4 inputs unreadable or incomplete; everything "
                             f"readable was written to {tmp_path / 'out'}")
  assert "on_bad_input=skip" in lines[0]
  assert lines[1:] == [f"  {inputs / 'b_broken.png'} is a truncated PNG (no IEND chunk at its "
                       "end; 70 bytes)", f"  {inputs / 'sub' / 'empty.jpg'} is empty (0 bytes)"]
  written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
  assert written == ["a_color.png", "a_overlay.png", "class_share.csv", "sub", "sub/c_color.png",
                     "sub/c_overlay.png"]
  assert {r["item"] for r in _rows(tmp_path / "out" / "class_share.csv")} == {
      "a.png", "sub/c.png", "./*", "sub/*", "ALL"}
  # data.on_bad_input=skip: the same outputs, the same list (on stderr), and success.
  capsys.readouterr()
  config.data.on_bad_input = "skip"
  out = inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                                input_path=inputs, output_dir=tmp_path / "skip")
  assert sorted(p.name for p in out) == ["a_color.png", "a_overlay.png", "c_color.png",
                                         "c_overlay.png"]
  err = capsys.readouterr().err
  assert "warning: 2 of 4 inputs unreadable or incomplete, skipped (data.on_bad_input=skip)" in err
  assert "b_broken.png is a truncated PNG" in err and "empty.jpg is empty" in err
  # Nothing readable at all is a failure whatever on_bad_input says.
  with pytest.raises(inference.PartialInputError, match="1 of 1 input .*nothing was written"):
    inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                            input_path=inputs / "b_broken.png", output_dir=tmp_path / "none")
  config.data.on_bad_input = "ignore"
  with pytest.raises(ValueError, match="config.data.on_bad_input='ignore': expected one of"):
    inference.predict_paths(config, checkpoint=tmp_path / "ckpt", step=None,
                            input_path=inputs, output_dir=tmp_path / "none")


def _truncated_video(path, frames=12, size=24):
  """An MJPG .avi cut in half: its header still declares `frames` frames, 3 decode."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size, size))
  assert writer.isOpened()
  rng = np.random.default_rng(0)
  for _ in range(frames):
    writer.write(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))
  writer.release()
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  capture = cv2.VideoCapture(str(path))
  declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  decoded = 0
  while capture.read()[0]:
    decoded += 1
  capture.release()
  assert 0 < decoded < declared == frames, (decoded, declared)
  return path, decoded


def _frame_count(path):
  capture = cv2.VideoCapture(str(path))
  count = 0
  while capture.read()[0]:
    count += 1
  return count


def test_video_ending_before_its_declared_frame_count(tmp_path, capsys):
  config = _config("camvid")
  config.eval.video_fourcc = "MJPG"
  _checkpoint(config, tmp_path / "ckpt", 11)
  clip, decoded = _truncated_video(tmp_path / "clip.avi")
  kw = dict(checkpoint=tmp_path / "ckpt", step=None, input_path=clip)
  with pytest.raises(inference.PartialInputError) as error:
    inference.predict_paths(config, output_dir=tmp_path / "out", **kw)
  assert (f"{clip}: video ended after {decoded} of the 12 frames its container declares "
          "(truncated or corrupt file)") in str(error.value)
  assert [p.name for p in error.value.written] == ["clip_overlay.avi", "clip_color.avi"]
  assert [_frame_count(p) for p in error.value.written] == [decoded, decoded]
  rows = _rows(tmp_path / "out" / "clip_class_share.csv")
  assert len([r for r in rows if r["kind"] == "item"]) == decoded
  capsys.readouterr()
  config.data.on_bad_input = "skip"
  written = inference.predict_paths(config, output_dir=tmp_path / "skip", **kw)
  assert [_frame_count(p) for p in written] == [decoded, decoded]
  assert f"video ended after {decoded} of the 12 frames" in capsys.readouterr().err


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
