"""TensorBoard output (runtime/tensorboard.py, the hook of periodic_eval.PeriodicEval), read back
with TensorBoard's own reader."""
import types

from _testlib import tiny_demo_config
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.data import pictures
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.evaluation import report as eval_outputs
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import tensorboard
from jaxseg.train import loop as trainer
from jaxseg.train import periodic_eval

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def _accumulator(logdir):
  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"images": 0})
  acc.Reload()
  return acc


def _decode(image_event) -> np.ndarray:
  data = np.frombuffer(image_event.encoded_image_string, np.uint8)
  return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_writer_scalars_and_images_read_by_tensorboard(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path)
  writer.scalars({"train/loss": 0.5, "eval/miou": 0.25}, 3)
  writer.scalars({"train/loss": 0.25}, 4)
  picture = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
  writer.images({"eval/images": picture}, 4)
  writer.close()
  second = tensorboard.SummaryWriter(tmp_path)  # same second, same process: its own file
  second.close()
  files = sorted(tmp_path.glob("events.out.tfevents.*"))
  assert len(files) == 2
  acc = _accumulator(tmp_path)
  assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(3, 0.5), (4, 0.25)]
  assert acc.Scalars("eval/miou")[0].value == 0.25
  (event,) = acc.Images("eval/images")
  assert (event.step, event.width, event.height) == (4, 9, 7)
  np.testing.assert_array_equal(_decode(event), picture)  # PNG: lossless
  assert tensorboard.read_scalars(files[0]) == {"train/loss": [(3, 0.5), (4, 0.25)],
                                                "eval/miou": [(3, 0.25)]}


def test_read_scalars_rejects_a_corrupt_file(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path)
  writer.scalars({"a": 1.0}, 1)
  writer.close()
  (path,) = tmp_path.glob("events.*")
  data = bytearray(path.read_bytes())
  data[-6] ^= 0xFF  # inside the last record's payload
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt TFRecord"):
    tensorboard.read_scalars(path)


def test_overlay_grid_rows_and_panels():
  colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
  image = np.full((10, 12, 3), 100, np.uint8)
  label = np.zeros((10, 12), np.uint8)
  label[:, 6:] = 255
  pred = np.ones((10, 12), np.uint8)
  grid = eval_outputs.overlay_grid([image, image], [label, label], [pred, pred], colors, gap=4)
  assert grid.shape == (22 + 2 * (10 + 4), 3 * 12 + 2 * 4, 3)
  row = grid[22:32]
  np.testing.assert_array_equal(row[:, :12], image)
  np.testing.assert_array_equal(row[:, 16:22],
                                pictures.blend(image[:, :6], colors[label[:, :6]]))
  np.testing.assert_array_equal(row[:, 22:28], image[:, 6:] // 2)  # ignore: black, half weight
  np.testing.assert_array_equal(row[:, 32:44], pictures.blend(image, colors[pred]))
  wide = eval_outputs.overlay_grid([np.zeros((20, 800, 3), np.uint8)], [np.zeros((20, 800))],
                                   [np.zeros((20, 800))], colors, panel_width=200)
  assert wide.shape[1] == 3 * 200 + 2 * 4  # shrunk to the panel width


def _fake_engine(num_classes: int):
  """An inference engine without a model: predicts the label (ignore -> class 0), and class 0
  where the image's red channel is odd, so the IoUs are not all 1."""

  def eval_step(model_vars, batch):
    del model_vars
    label = batch["label"].astype(jnp.int32)
    preds = jnp.where((label == 255) | (batch["image"][..., 0] % 2 == 1), 0, label)
    counts = metrics_lib.confusion_matrix(batch["label"], preds, num_classes,
                                          valid=batch.get("valid"))
    return counts, preds.astype(jnp.uint8)

  return types.SimpleNamespace(confusion=jax.jit(eval_step))


def test_periodic_eval_writes_scalars_grid_and_charts(tmp_path):
  config = tiny_demo_config()
  config.eval.batch_size = 2  # the 3 pictured images come from two batches
  config.eval.num_tensorboard_images = 3
  num_classes, info = trainer.resolve_num_classes(config)
  mesh = mesh_lib.create_mesh({"data": 1})
  writer = tensorboard.SummaryWriter(tmp_path / "tb")
  evaluator = periodic_eval.PeriodicEval(config, mesh, info, tmp_path,
                                         engine=_fake_engine(num_classes))
  summary = evaluator.evaluate({}, 7, writer)
  writer.close()
  acc = _accumulator(tmp_path / "tb")
  tags = acc.Tags()
  assert {"eval/images", "eval/confusion", "eval/iou_per_class"} <= set(tags["images"])
  assert 0 < summary["miou"] < 1
  for name in ("miou", "macc", "aacc"):
    (event,) = acc.Scalars(f"eval/{name}")
    assert event.step == 7 and event.value == pytest.approx(summary[name], rel=1e-6)
  present = [n for n, v in zip(info.class_names, summary["iou"]) if not np.isnan(v)]
  assert {f"eval_iou/{n}" for n in present} <= set(tags["scalars"])

  # The grid holds the first 3 eval images, their ground truth and the engine's prediction.
  from jaxseg import data as data_lib
  batch = next(iter(data_lib.build_eval_loader(config.data, batch_size=3)))
  image, label = batch["image"], batch["label"]
  pred = np.where((label == 255) | (image[..., 0] % 2 == 1), 0, label)
  (event,) = acc.Images("eval/images")
  grid = _decode(event)
  h, w = image.shape[1:3]
  assert grid.shape == (22 + 3 * (h + 4), 3 * w + 8, 3)
  palette = pictures.palette_of(info.colors)
  for i in range(3):
    y = 22 + i * (h + 4)
    np.testing.assert_array_equal(grid[y:y + h, :w], image[i])
    np.testing.assert_array_equal(grid[y:y + h, w + 4:2 * w + 4],
                                  pictures.blend(image[i], palette[label[i]]))
    np.testing.assert_array_equal(grid[y:y + h, 2 * w + 8:],
                                  pictures.blend(image[i], palette[pred[i]]))
  (chart,) = acc.Images("eval/confusion")
  np.testing.assert_array_equal(
      _decode(chart), eval_outputs.confusion_chart(
          np.load(tmp_path / "eval" / "confusion.npy"), info.class_names))
