"""ADE20K, PASCAL VOC (+ SBD train_aug) and PASCAL Context in tiny synthetic folder layouts."""
import os

from _testlib import write_palette_png
import cv2
import ml_collections
import numpy as np
import pytest

from jaxseg.data import defaults
from jaxseg.data.datasets import BadInputError
from jaxseg.data.datasets import get_class_table
from jaxseg.data.datasets import get_dataset
from jaxseg.data.datasets.voc import voc_palette


def cfg(**kw) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({"on_bad_input": "error"})
  for k, v in kw.items():
    c[k] = v
  return c


def write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), array)


def image(h=4, w=6):
  return np.full((h, w, 3), 90, np.uint8)


def test_peer_dataset_defaults():
  c = defaults.data_config()
  assert (c.voc_aug_source, c.pascal_context_classes, c.multi.taxonomy) == ("auto", 59,
                                                                            "universal")


# ------------------------------------------------------------------------------------ ADE20K


def make_ade(root, val_label=None):
  lab = np.array([[0, 1, 2, 150, 255, 7]] * 4, np.uint8)
  for split, folder in (("train", "training"), ("val", "validation")):
    for i in range(2 if split == "train" else 1):
      name = f"ADE_{split}_{i:08d}"
      write(root / "images" / folder / f"{name}.jpg", image())
      write(root / "annotations" / folder / f"{name}.png",
            lab if split == "train" or val_label is None else val_label)
  return lab


def test_ade20k_reduce_zero_label(tmp_path):
  make_ade(tmp_path)
  ds = get_dataset(cfg(name="ade20k", root=str(tmp_path)), "train")
  assert len(ds) == 2 and ds[0]["name"] == "ADE_train_00000000"
  np.testing.assert_array_equal(ds[0]["label"][0], [255, 0, 1, 149, 255, 6])
  assert len(get_dataset(cfg(name="ade20k", root=str(tmp_path)), "trainval")) == 3
  table = get_class_table(cfg(name="ade20k"))
  assert table.num_classes == 150 and table.class_names[:3] == ("wall", "building", "sky")
  assert table.class_names[-1] == "flag" and table.class_names[7] == "bed"
  assert tuple(table.colors[0]) == (120, 120, 120)


def test_ade20k_errors(tmp_path):
  make_ade(tmp_path, val_label=np.full((4, 6), 151, np.uint8))
  with pytest.raises(BadInputError, match=r"ADE_val_00000000.png: label ids \[151\]"):
    get_dataset(cfg(name="ade20k", root=str(tmp_path)), "val")[0]
  write(tmp_path / "annotations" / "training" / "ADE_train_00000001.png",
        np.zeros((5, 6), np.uint8))
  with pytest.raises(BadInputError, match="ADE_train_00000001.*is 6x4.*is 6x5"):
    get_dataset(cfg(name="ade20k", root=str(tmp_path)), "train")[1]
  jpg = tmp_path / "images" / "training" / "ADE_train_00000000.jpg"
  jpg.write_bytes(jpg.read_bytes()[:-40])
  with pytest.raises(BadInputError, match="truncated JPEG"):
    get_dataset(cfg(name="ade20k", root=str(tmp_path)), "train")[0]
  with pytest.raises(FileNotFoundError, match="annotations/validation"):
    get_dataset(cfg(name="ade20k", root=str(tmp_path / "nope")), "val")
  os.rename(tmp_path / "annotations", tmp_path / "labels")
  with pytest.raises(FileNotFoundError, match=r"annotations/training[\s\S]*Expected layout"):
    get_dataset(cfg(name="ade20k", root=str(tmp_path)), "train")


# --------------------------------------------------------------------------------------- VOC


def make_voc(root, train=("a", "b"), val=("c",)):
  pal = voc_palette()
  for i in list(train) + list(val) + ["s1", "s2"]:
    write(root / "JPEGImages" / f"{i}.jpg", image())
  lab = np.array([[0, 1, 15, 20, 255, 3]] * 4, np.uint8)
  for i in list(train) + list(val):
    write_palette_png(str(root / "SegmentationClass" / f"{i}.png"), lab, pal)
  sets = root / "ImageSets" / "Segmentation"
  sets.mkdir(parents=True)
  (sets / "train.txt").write_text("".join(f"{i}\n" for i in train))
  (sets / "val.txt").write_text("".join(f"{i}\n" for i in val))
  (sets / "trainval.txt").write_text("".join(f"{i}\n" for i in list(train) + list(val)))
  return lab


def test_voc_splits_palette_labels(tmp_path):
  lab = make_voc(tmp_path / "VOC2012")
  c = cfg(name="voc", root=str(tmp_path))  # the VOCdevkit folder is accepted
  ds = get_dataset(c, "train")
  assert [r.name for r in ds.records] == ["a", "b"]
  np.testing.assert_array_equal(ds[0]["label"], lab)  # palette indices; 255 stays ignore
  assert len(get_dataset(c, "trainval")) == 3 and len(get_dataset(c, "val")) == 1
  table = get_class_table(c)
  assert table.num_classes == 21 and table.class_names[15] == "person"
  assert tuple(table.colors[15]) == (192, 128, 128)
  with pytest.raises(ValueError, match="split 'foo'"):
    get_dataset(c, "foo")


def test_voc_train_aug_png_route(tmp_path):
  root = tmp_path / "VOC2012"
  make_voc(root)
  aug = np.full((4, 6), 7, np.uint8)
  for i in ("a", "c", "s1", "s2"):
    write(root / "SegmentationClassAug" / f"{i}.png", aug)
  c = cfg(name="voc", root=str(root))
  ds = get_dataset(c, "train_aug")  # no list: every aug label + VOC train, minus VOC val
  assert [r.name for r in ds.records] == ["a", "b", "s1", "s2"]
  assert ds.records[0].label_path.endswith(os.path.join("SegmentationClass", "a.png"))
  np.testing.assert_array_equal(ds[2]["label"], aug)
  # A semseg-style list of path pairs; its VOC val id 'c' is dropped.
  (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
      "/JPEGImages/s2.jpg /SegmentationClassAug/s2.png\n/JPEGImages/c.jpg x\n")
  assert [r.name for r in get_dataset(c, "train_aug").records] == ["a", "b", "s2"]
  (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("s3\n")
  with pytest.raises(FileNotFoundError, match=r"JPEGImages/s3\.jpg"):
    get_dataset(c, "train_aug")


def test_voc_train_aug_sbd_mat(tmp_path):
  sio = pytest.importorskip("scipy.io")
  root = tmp_path / "VOC2012"
  make_voc(root)
  sbd = tmp_path / "benchmark_RELEASE" / "dataset"
  (sbd / "cls").mkdir(parents=True)
  seg = np.array([[0, 5, 5, 9, 20, 1]] * 4, np.uint8)
  for i in ("c", "s1"):
    sio.savemat(str(sbd / "cls" / f"{i}.mat"),
                {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1),
                           "CategoriesPresent": np.array([5, 9, 20])}})
  (sbd / "train.txt").write_text("s1\n")
  (sbd / "val.txt").write_text("c\n")
  c = cfg(name="voc", root=str(root), sbd_root=str(tmp_path / "benchmark_RELEASE"))
  ds = get_dataset(c, "train_aug")
  assert [r.name for r in ds.records] == ["a", "b", "s1"]
  np.testing.assert_array_equal(ds[2]["label"], seg)
  bad = np.full((4, 6), 33, np.uint8)
  sio.savemat(str(sbd / "cls" / "s1.mat"), {"GTcls": {"Segmentation": bad}})
  with pytest.raises(BadInputError, match=r"s1\.mat: label ids \[33\]"):
    ds[2]
  sio.savemat(str(sbd / "cls" / "s1.mat"), {"other": bad})
  with pytest.raises(BadInputError, match="no GTcls.Segmentation"):
    ds[2]


def test_voc_sbd_without_scipy_points_to_png(tmp_path, monkeypatch):
  root = tmp_path / "VOC2012"
  make_voc(root)
  monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)
  c = cfg(name="voc", root=str(root), sbd_root=str(tmp_path), voc_aug_source="sbd")
  with pytest.raises(ImportError, match="SegmentationClassAug"):
    get_dataset(c, "train_aug")
  with pytest.raises(FileNotFoundError, match="SegmentationClassAug.*data.sbd_root"):
    get_dataset(cfg(name="voc", root=str(root)), "train_aug")


# ---------------------------------------------------------------------------- PASCAL Context


def make_context(root, label):
  for split, ids in (("train", ("2008_000002",)), ("val", ("2008_000003",))):
    for i in ids:
      write(root / "JPEGImages" / f"{i}.jpg", image())
      write(root / "SegmentationClassContext" / f"{i}.png", label)
    lst = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    lst.parent.mkdir(parents=True, exist_ok=True)
    lst.write_text("".join(f"{i}\n" for i in ids))


def test_pascal_context_59_and_60(tmp_path):
  lab = np.array([[0, 1, 59, 255, 15, 30]] * 4, np.uint8)
  make_context(tmp_path / "VOC2010", lab)
  c = cfg(name="pascal_context", root=str(tmp_path))
  np.testing.assert_array_equal(get_dataset(c, "train")[0]["label"][0],
                                [255, 0, 58, 255, 14, 29])
  t59 = get_class_table(c)
  assert t59.num_classes == 59 and t59.class_names[14] == "person"
  c.pascal_context_classes = 60
  np.testing.assert_array_equal(get_dataset(c, "val")[0]["label"][0], [0, 1, 59, 255, 15, 30])
  t60 = get_class_table(c)
  assert t60.num_classes == 60 and t60.class_names[0] == "background"
  assert len(get_dataset(c, "trainval")) == 2
  c.pascal_context_classes = 33
  with pytest.raises(ValueError, match="59 or 60"):
    get_class_table(c)


def test_pascal_context_errors(tmp_path):
  make_context(tmp_path, np.full((4, 6), 60, np.uint8))
  c = cfg(name="pascal_context", root=str(tmp_path))
  with pytest.raises(BadInputError, match=r"label ids \[60\]"):
    get_dataset(c, "train")[0]
  os.remove(tmp_path / "SegmentationClassContext" / "2008_000003.png")
  with pytest.raises(FileNotFoundError, match=r"label of .2008_000003.*val\.txt"):
    get_dataset(c, "val")
  with pytest.raises(FileNotFoundError, match="SegmentationClassContext"):
    get_dataset(cfg(name="pascal_context", root=str(tmp_path / "JPEGImages")), "val")
