"""Cityscapes instance-normalised IoU (nIoU / iIoU) against cityscapesscripts, on real frames."""
import json

from _testlib import SHARED
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.data import loader
from jaxseg.data.datasets import cityscapes
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.evaluation import evaluate as evaluate_lib
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.runtime import mesh as mesh_lib

ROOT = SHARED / "data" / "cityscapes"
TRAIN_FRAMES = ("aachen_000000_000019", "aachen_000003_000019")
needs_data = pytest.mark.skipif(
    not (ROOT / "gtFine" / "val").is_dir() or
    not list((ROOT / "gtFine").rglob("*_gtFine_instanceIds.png")),
    reason="../shared/data/cityscapes with gtFine instanceIds is absent")


def _fake_prediction(label: np.ndarray) -> np.ndarray:
  """Deterministic train-id prediction: ground truth with swaps, erosions and false blobs."""
  h, w = label.shape
  pred = label.copy()
  pred[label == 255] = 8  # vegetation where the ground truth is ignored
  rows, cols = np.mgrid[:h, :w]
  pred[(label == 11) & (rows % 5 == 0)] = 12  # person -> rider on every 5th row
  pred[(label == 13) & (cols < w // 3)] = 14  # car -> truck in the left third
  for c in (13, 18, 11):  # erode cars, bicycles, persons: a road rim
    mask = (label == c).astype(np.uint8)
    pred[(mask > 0) & (cv2.erode(mask, np.ones((5, 5), np.uint8)) == 0)] = 0
  pred[h // 2:h // 2 + h // 8, w // 4:w // 4 + w // 8] = 13  # a false car block
  return pred


def _official(tmp_path, pairs, monkeypatch):
  """cityscapesscripts evaluateImgLists on (labelIds gt path, train-id prediction) pairs."""
  from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
  if not hasattr(np, "in1d"):  # the script calls np.in1d, removed in NumPy 2.4
    monkeypatch.setattr(np, "in1d", lambda a, b, invert=False: np.isin(
        np.ravel(a), b, invert=invert), raising=False)
  table = cityscapes_table()
  preds, gts = [], []
  for i, (gt_path, pred) in enumerate(pairs):
    path = tmp_path / f"pred_{i}.png"
    cv2.imwrite(str(path), np.asarray(table.train_to_raw, np.uint8)[pred])
    preds.append(str(path))
    gts.append(str(gt_path))
  ev.args.quiet, ev.args.JSONOutput, ev.args.colorized = True, False, False
  ev.args.evalInstLevelScore, ev.args.evalPixelAccuracy = True, False
  return ev.evaluateImgLists(preds, gts, ev.args)


def _batches():
  """One batch per frame: the val frame through the eval loader, train frames via the dataset."""
  cfg = base_config().data
  cfg.name, cfg.root, cfg.eval_split = "cityscapes", str(ROOT), "val"
  cfg.eval_num_threads = 1
  out = list(loader.build_eval_loader(cfg, batch_size=1, process_index=0, process_count=1))
  assert len(out) == 1 and out[0]["instance"].dtype == np.int32
  table = cityscapes_table()
  records = [r for r in cityscapes.fine_records(str(ROOT), "train") if r.name.startswith(
      TRAIN_FRAMES)]
  ds = cityscapes.CityscapesWithInstances(records, table, "train")
  for i in range(len(ds)):
    s = ds[i]
    out.append({"image": s["image"][None], "label": s["label"][None],
                "instance": s["instance"][None], "valid": np.ones(1, bool),
                "name": np.array([s["name"]]), "_gt": records[i].label_path})
  out[0]["_gt"] = next((ROOT / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
  return out


def _fake_step(model_vars, arrays):
  """An eval step whose 'model' returns the fake prediction carried in the image's place."""
  del model_vars
  preds = arrays["image"][..., 0]
  counts = metrics_lib.confusion_matrix(arrays["label"], preds, 19, valid=arrays["valid"])
  return counts, preds


@needs_data
def test_niou_matches_cityscapesscripts(tmp_path, monkeypatch):
  batches = _batches()
  assert len(batches) == 1 + len(TRAIN_FRAMES)
  pairs = []
  for b in batches:
    pred = _fake_prediction(b["label"][0])
    pairs.append((b["_gt"], pred))
    b["image"] = np.repeat(pred[None, :, :, None], 3, axis=-1)  # what _fake_step predicts
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  summary, confusion = evaluate_lib.evaluate(_fake_step, {}, batches, mesh=mesh,
                                             num_classes=19, progress=False)
  want = _official(tmp_path, pairs, monkeypatch)
  names = cityscapes_table().class_names
  inst = {n: want["classInstScores"][n] for n in names}
  assert sum(not np.isnan(v) for v in inst.values()) >= 4  # the frames have instances
  for name, niou, iou in zip(names, summary["niou"], summary["iou"]):
    np.testing.assert_allclose(niou, inst[name], rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(iou, want["classScores"][name], rtol=0, atol=1e-9,
                               err_msg=name)
  np.testing.assert_allclose(summary["mniou"], want["averageScoreInstClasses"], atol=1e-9)
  np.testing.assert_allclose(summary["miou"], want["averageScoreClasses"], atol=1e-9)
  # ... and the report carries them.
  table = evaluate_lib.write_eval_report(tmp_path / "eval", 1, summary, confusion, names)
  record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert record["mniou"] == pytest.approx(summary["mniou"])
  assert record["per_class"]["car"]["niou"] == pytest.approx(inst["car"])
  assert "niou" not in record["per_class"]["road"]
  assert "nIoU" in table.splitlines()[0]
  assert f"{100 * summary['mniou']:6.2f}" in table.splitlines()[-2]


def test_instance_counts_and_weights_by_hand():
  """Two instances of class 1 (sizes 4 and 2), one of class 2; FP from the confusion."""
  inst = np.full((1, 3, 4), -1, np.int32)
  inst[0, 0, :] = 1000  # class 1, instance 0: 4 pixels
  inst[0, 1, :2] = 1001  # class 1, instance 1: 2 pixels
  inst[0, 2, :3] = 2005  # class 2, instance 5: 3 pixels
  pred = np.zeros((1, 3, 4), np.int32)
  pred[0, 0, :3] = 1  # 3 of 4 hit
  pred[0, 1, 0] = 1  # 1 of 2 hit
  pred[0, 2, 3] = 1  # a class-1 FP (on ground truth 0)
  sizes, tps = metrics_lib.instance_counts(jnp.asarray(pred), jnp.asarray(inst), (1, 2))
  assert int(sizes[0, 0, 0]) == 4 and int(sizes[0, 0, 1]) == 2 and int(sizes[0, 1, 5]) == 3
  assert int(tps[0, 0, 0]) == 3 and int(tps[0, 0, 1]) == 1 and int(tps.sum()) == 4
  acc = metrics_lib.InstanceWeightedCounts({1: 3.0, 2: 6.0})
  acc.add(np.asarray(sizes), np.asarray(tps))
  np.testing.assert_allclose(acc.tp, [3 * 3 / 4 + 1 * 3 / 2, 0.0])
  np.testing.assert_allclose(acc.fn, [1 * 3 / 4 + 1 * 3 / 2, 3 * 6 / 3])
  conf = np.zeros((3, 3), np.int64)
  conf[0, 1] = 1  # the FP
  niou = metrics_lib.instance_iou(conf, acc)
  assert np.isnan(niou[0])
  np.testing.assert_allclose(niou[1], 3.75 / (3.75 + 2.25 + 1))
  assert niou[2] == 0.0
  # Invalid (padding) images contribute nothing.
  sizes, _ = metrics_lib.instance_counts(jnp.asarray(pred), jnp.asarray(inst), (1, 2),
                                         valid=jnp.zeros(1, bool))
  assert int(sizes.sum()) == 0


def test_instance_train_ids():
  raw = np.array([[0, 26, 26000, 26003], [24001, 29000, 33010, 1000]], np.int32)
  out = cityscapes.instance_train_ids(raw, cityscapes_table())
  # car 26 -> train 13; person 24 -> 11; caravan 29 is ignored in eval; bicycle 33 -> 18;
  # crowd / stuff ids (<= 1000) are no instances.
  np.testing.assert_array_equal(out, [[-1, -1, 13000, 13003], [11001, -1, 18010, -1]])


@needs_data
def test_training_eval_engine_reports_niou():
  """The training run's engine returns its predictions, so in-training evals get nIoU too."""
  from jaxseg import data as data_lib
  from jaxseg.train import periodic_eval
  from jaxseg.train import step as step_lib
  c = base_config()
  c.model.name, c.precision = "DeepR18V3PlusD_m1", "fp32"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name, c.data.root = "cityscapes", str(ROOT)
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  fns = step_lib.create_step_functions(c, mesh=mesh, num_classes=19, tx=None, loss_fn=None)
  engine = periodic_eval.build_engine(c, data_lib.dataset_info(c.data), mesh)
  batches = _batches()[:1]  # the val frame, through the eval loader
  summary, _ = evaluate_lib.evaluate(engine.confusion, fns.init().model_vars(), batches,
                                     mesh=mesh, num_classes=19, progress=False)
  assert "mniou" in summary and len(summary["niou"]) == 19
