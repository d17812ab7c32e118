"""--mode eval outputs: metrics equal cityscapesscripts', dump folders, charts, report."""
import json

import cv2
import flax.nnx as nnx
import jax
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.data import datasets
from jaxseg.data import pictures
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.evaluation import evaluate as evaluate_lib
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.evaluation import report as eval_outputs
from jaxseg.inference import commands as inference
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib

TABLE = cityscapes_table()


def _cityscapes_evaluator():
  pytest.importorskip("PIL")
  cs = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
  cs.args.evalInstLevelScore = False
  cs.args.JSONOutput = False
  cs.args.quiet = True
  return cs


def _read(path):
  image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
  assert image is not None, path
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def _assert_scores_equal(ours_iou, ours_miou, result):
  for name, iou in zip(TABLE.class_names, ours_iou):
    theirs = result["classScores"][name]
    if np.isnan(theirs):
      assert iou is None or np.isnan(iou), name
    else:
      assert iou == pytest.approx(theirs, abs=1e-12), name
  assert ours_miou == pytest.approx(result["averageScoreClasses"], abs=1e-12)


def test_metrics_equal_cityscapesscripts_on_real_labels(shared_data, tmp_path):
  cs = _cityscapes_evaluator()
  data = base_config().data
  data.name, data.root = "cityscapes", str(shared_data / "cityscapes")
  rng = np.random.default_rng(0)
  confusion = np.zeros((19, 19), np.int64)
  preds, gts = [], []
  writer = eval_outputs.DumpWriter(tmp_path, TABLE.colors, TABLE.train_to_raw)
  for split, count in (("train", 3), ("val", 1)):
    ds = datasets.get_dataset(data, split)
    for i in range(count):
      sample = ds[i]
      label = sample["label"]
      # A plausible prediction: the truth with blocks of wrong classes and ignore filled in.
      pred = np.where(label == 255, rng.integers(0, 19, label.shape), label).astype(np.uint8)
      h, w = label.shape
      for _ in range(40):
        y, x = rng.integers(0, h - h // 8), rng.integers(0, w - w // 8)
        pred[y:y + h // 8, x:x + w // 10] = rng.integers(0, 19)
      confusion += np.asarray(metrics_lib.confusion_matrix(label, pred, 19))
      writer.write(sample["name"], sample["image"], pred, label)
      preds.append(str(tmp_path / "pred" / f"{sample['name']}.png"))
      gts.append(ds.records[i].label_path)
  summary = metrics_lib.summarize(confusion)
  assert np.sum(~np.isnan(summary["iou"])) >= 15  # most classes take part
  result = cs.evaluateImgLists(preds, gts, cs.args)
  _assert_scores_equal(summary["iou"], summary["miou"], result)


def _tiny_checkpoint(config, path, num_classes):
  model = registry.from_config(config, num_classes, rngs=nnx.Rngs(7))
  return checkpoint_lib.save_model_checkpoint(
      path, model, metadata={"model": config.model.name, "num_classes": num_classes})


def _cityscapes_config(shared_data):
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = "cityscapes"
  c.data.root = str(shared_data / "cityscapes")
  c.data.eval_split = "val"
  c.data.eval_num_threads = 1
  c.mesh.shape = {"data": 1}
  c.eval.batch_size = 1
  return c


def test_eval_checkpoint_on_cityscapes_equals_cityscapesscripts(shared_data, tmp_path):
  cs = _cityscapes_evaluator()
  config = _cityscapes_config(shared_data)
  config.eval.mode = "sliding"
  config.eval.crop_size = 96
  config.eval.scales = "0.75,1.0"
  config.eval.flip = True
  config.eval.dump_images = True
  _tiny_checkpoint(config, tmp_path / "ckpt", 19)
  summary = inference.evaluate_checkpoint(config, tmp_path, checkpoint=tmp_path / "ckpt")
  out = tmp_path / "eval_restored"
  record = json.loads((out / "metrics.json").read_text())
  assert record["miou"] == pytest.approx(summary["miou"])
  assert record["inference"]["scales"] == [0.75, 1.0] and record["inference"]["flip"]
  name = "frankfurt_000000_000294_leftImg8bit"
  gt = (shared_data / "cityscapes" / "gtFine" / "val" / "frankfurt" /
        "frankfurt_000000_000294_gtFine_labelIds.png")
  result = cs.evaluateImgLists([str(out / "pred" / f"{name}.png")], [str(gt)], cs.args)
  iou = [v["iou"] for v in record["per_class"].values()]
  _assert_scores_equal([np.nan if v is None else v for v in iou], record["miou"], result)
  # The folders of the original --dump_images, ids and colours consistent with each other.
  pred_ids = _read(out / "pred" / f"{name}.png")
  assert pred_ids.shape == (128, 256) and set(np.unique(pred_ids)) <= set(TABLE.train_to_raw[:19])
  assert len(np.unique(pred_ids)) >= 3  # a comparison with some substance
  train_ids = TABLE.to_train_ids(pred_ids)
  np.testing.assert_array_equal(_read(out / "rgb" / f"{name}_color.png"), TABLE.colorize(train_ids))
  image = _read(shared_data / "cityscapes" / "leftImg8bit" / "val" / "frankfurt" / f"{name}.png")
  composed = _read(out / "compose" / f"{name}_compose.png")
  np.testing.assert_array_equal(composed, pictures.blend(image, TABLE.colorize(train_ids)))
  label = TABLE.to_train_ids(_read(gt))
  np.testing.assert_array_equal(_read(out / "diff" / f"{name}_diff.png"),
                                eval_outputs.error_image(composed, train_ids, label))
  for chart in ("iou_per_class.png", "confusion.png"):
    assert _read(out / chart).shape[0] > 200
  assert "mean" in (out / "iou_table.txt").read_text()


def test_dump_writer_ids_colours_and_diff(tmp_path):
  writer = eval_outputs.DumpWriter(tmp_path, TABLE.colors, TABLE.train_to_raw)
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
  pred = rng.integers(0, 19, (6, 8)).astype(np.uint8)
  label = pred.copy()
  label[0, :4] = (pred[0, :4] + 1) % 19  # wrong
  label[1, :4] = 255  # ignored
  files = writer.write("a_leftImg8bit", image, pred, label)
  assert [f.parent.name for f in files] == ["rgb", "pred", "compose", "diff"]
  np.testing.assert_array_equal(_read(tmp_path / "pred" / "a_leftImg8bit.png"),
                                TABLE.train_to_raw[pred])
  assert _read(tmp_path / "pred" / "a_leftImg8bit.png")[pred == 0].tolist() == [7] * int(
      (pred == 0).sum())  # road = labelId 7
  color = _read(tmp_path / "rgb" / "a_leftImg8bit_color.png")
  np.testing.assert_array_equal(color, TABLE.colors[pred])
  composed = _read(tmp_path / "compose" / "a_leftImg8bit_compose.png")
  expected = (image.astype(int) + 0.5 * (TABLE.colors[pred].astype(int) - image)).astype(np.uint8)
  np.testing.assert_array_equal(composed, expected)
  diff = _read(tmp_path / "diff" / "a_leftImg8bit_diff.png")
  np.testing.assert_array_equal(diff[0, :4], composed[0, :4])
  assert (diff[1:] == 255).all() and (diff[0, 4:] == 255).all()
  # Test split (no labels, or all ignore): no diff picture.
  assert len(writer.write("b", image, pred, None)) == 3
  assert len(writer.write("c", image, pred, np.full_like(pred, 255))) == 3
  assert not (tmp_path / "diff" / "b_diff.png").exists()


def test_charts_show_the_numbers():
  names = ["road", "sky", "car"]
  colors = np.array([[128, 64, 128], [70, 130, 180], [0, 0, 142]], np.uint8)
  bars = eval_outputs.iou_bar_chart([1.0, np.nan, 0.5], names, colors)
  for color, expect in zip(colors, (True, False, True)):
    assert bool(np.all(bars == color, axis=-1).any()) == expect
  # Bar lengths are proportional to IoU.
  lengths = [int(np.all(bars == c, axis=-1).sum(axis=1).max()) for c in colors[[0, 2]]]
  assert lengths[0] == pytest.approx(2 * lengths[1], abs=2)
  chart = eval_outputs.confusion_chart(np.diag([10, 20, 30]), names)
  viridis_top, viridis_bottom = np.array([253, 231, 37]), np.array([68, 1, 84])
  close = lambda a, b: np.abs(a.astype(int) - b).max() <= 2
  assert np.sum(np.all(np.abs(chart.astype(int) - viridis_top) <= 2, axis=-1)) > 500
  assert np.sum(np.all(np.abs(chart.astype(int) - viridis_bottom) <= 2, axis=-1)) > 1000
  assert close(eval_outputs.normalized_confusion(np.array([[1, 3], [0, 0]])),
               np.array([[0.25, 0.75], [0, 0]]))


def test_evaluate_accumulates_exactly_past_int32(monkeypatch):
  monkeypatch.setattr(evaluate_lib, "_INT32_SAFE_PIXELS", 50)
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  rng = np.random.default_rng(2)
  batches = [{"image": np.zeros((2, 4, 4, 3), np.uint8),
              "label": rng.integers(0, 3, (2, 4, 4)).astype(np.uint8),
              "valid": np.ones(2, bool)} for _ in range(5)]
  step = lambda v, b: metrics_lib.confusion_matrix(b["label"], b["label"], 3)
  summary, confusion = evaluate_lib.evaluate(step, {}, batches, mesh=mesh, num_classes=3,
                                             progress=False)
  assert confusion.dtype == np.int64 and confusion.sum() == 5 * 32
  assert summary["miou"] == 1.0
  np.testing.assert_array_equal(np.diag(confusion),
                                np.bincount(np.concatenate([b["label"].ravel() for b in batches]),
                                            minlength=3))


def test_report_files(tmp_path):
  confusion = np.array([[5, 1, 0], [0, 3, 0], [0, 0, 0]])
  summary = metrics_lib.summarize(confusion)
  table = evaluate_lib.write_eval_report(tmp_path, 7, summary, confusion, ["a", "b", "c"],
                                         extra={"split": "val"})
  record = json.loads((tmp_path / "metrics.json").read_text())
  assert record["step"] == 7 and record["split"] == "val" and record["pixels"] == 9
  assert record["per_class"]["c"]["iou"] is None
  assert record["miou"] == pytest.approx((5 / 6 + 3 / 4) / 2)
  assert record["fwiou"] == pytest.approx(6 / 9 * 5 / 6 + 3 / 9 * 3 / 4)
  assert "n/a" in table
  np.testing.assert_array_equal(np.load(tmp_path / "confusion.npy"), confusion)
  for chart in ("iou_per_class.png", "confusion.png"):
    assert cv2.imread(str(tmp_path / chart)) is not None
