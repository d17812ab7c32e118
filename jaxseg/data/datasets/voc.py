"""PASCAL VOC 2012 segmentation, and `train_aug` = VOC train + SBD (the 10582-image set).

Layout under `root` (`VOCdevkit/VOC2012`; `VOCdevkit` itself is accepted too)::

  root/JPEGImages/<id>.jpg
  root/SegmentationClass/<id>.png              palette PNG, 0..20, 255 = boundary (ignored)
  root/ImageSets/Segmentation/{train,val,trainval,test}.txt   one <id> per line

`train_aug` adds the Semantic Boundaries Dataset (Hariharan et al. 2011) annotations of 11355
VOC images, from either source (`voc_aug_source`):

* 'png': the commonly distributed pre-converted SBD labels (``SegmentationClassAug``)::

    root/SegmentationClassAug/<id>.png        class ids 0..20 (grayscale or palette)
    root/ImageSets/Segmentation/train_aug.txt  optional list: '<id>' or
                                               '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png'
                                               per line (also found as aug.txt or
                                               root/train_aug.txt)

  Without a list file the split is every id with a SegmentationClassAug label plus VOC train.
* 'sbd': SBD's own release (`sbd_root` = benchmark_RELEASE), read with scipy.io.loadmat::

    sbd_root/dataset/cls/<id>.mat             struct GTcls, field Segmentation (0..20)
    sbd_root/dataset/{train,val}.txt          SBD's splits; both are used
    sbd_root/dataset/img/<id>.jpg             (used when root/JPEGImages lacks the image)

* 'auto' (default): 'png' when root/SegmentationClassAug exists, else 'sbd' when `sbd_root` is
  set.

The split is (VOC train + SBD ids) minus VOC val: every VOC 2012 val image is excluded, so
'val' stays a clean test of 'train_aug' (10582 images for the full data). Ids of VOC train keep
their official SegmentationClass labels (with boundaries); the others use the SBD labels.
Splits: 'train' (1464), 'val' (1449), 'trainval', 'train_aug', 'test' (images only).
"""
from __future__ import annotations

import functools
import logging
import os

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets import base
from jaxseg.data.datasets.image_io import BadInputError

SPLITS = ("train", "val", "trainval", "train_aug", "test")
AUG_SOURCES = ("auto", "png", "sbd")
AUG_LIST_NAMES = (os.path.join("ImageSets", "Segmentation", "train_aug.txt"),
                  os.path.join("ImageSets", "Segmentation", "aug.txt"), "train_aug.txt")
LAYOUT = """\
  <root>/JPEGImages/<id>.jpg
  <root>/SegmentationClass/<id>.png
  <root>/ImageSets/Segmentation/{train,val,trainval}.txt
  train_aug: <root>/SegmentationClassAug/<id>.png (+ ImageSets/Segmentation/train_aug.txt)
         or  <sbd_root>/dataset/cls/<id>.mat + <sbd_root>/dataset/{train,val}.txt
  (<root> = VOCdevkit/VOC2012)"""


def devkit_root(root: str, year_folder: str, what: str, layout: str) -> str:
  """`root` itself, or root/<year_folder> (e.g. VOC2012) when given the VOCdevkit folder."""
  base.require_dir(root, what, layout)
  nested = os.path.join(root, year_folder)
  if not os.path.isdir(os.path.join(root, "JPEGImages")) and os.path.isdir(nested):
    return nested
  return root


def read_id_list(path: str) -> list[str]:
  """Ids of a split list: '<id>' lines, or 'image label' path pairs (the id = image stem)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PASCAL VOC split list not found: {path}\nExpected layout:\n"
                            f"{LAYOUT}")
  ids = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      fields = line.split()
      if fields:
        ids.append(os.path.splitext(os.path.basename(fields[0]))[0])
  return ids


def _voc_list(root: str, name: str) -> list[str]:
  return read_id_list(os.path.join(root, "ImageSets", "Segmentation", f"{name}.txt"))


def _record(root: str, image_id: str, label_path: str | None,
            image_fallback: str | None = None) -> base.Record:
  image = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
  if not os.path.isfile(image) and image_fallback and os.path.isfile(image_fallback):
    image = image_fallback
  if not os.path.isfile(image):
    raise FileNotFoundError(f"PASCAL VOC image of {image_id!r} not found: {image}")
  if label_path is not None and not os.path.isfile(label_path):
    raise FileNotFoundError(f"label of PASCAL VOC image {image_id!r} not found: {label_path}")
  return base.Record(image, label_path, image_id)


def _fine_label(root: str, image_id: str) -> str:
  return os.path.join(root, "SegmentationClass", f"{image_id}.png")


def _aug_source(root: str, source: str, sbd_root: str | None) -> str:
  if source not in AUG_SOURCES:
    raise ValueError(f"voc_aug_source={source!r}; expected one of {AUG_SOURCES}")
  if source != "auto":
    return source
  if os.path.isdir(os.path.join(root, "SegmentationClassAug")):
    return "png"
  if sbd_root:
    return "sbd"
  raise FileNotFoundError(
      f'split train_aug needs the SBD labels: neither {os.path.join(root, "SegmentationClassAug")}'
      f' exists nor is data.sbd_root set.\nExpected layout:\n{LAYOUT}')


def train_aug_records(root: str, source: str = "auto",
                      sbd_root: str | None = None) -> list[base.Record]:
  """VOC train + SBD minus VOC val (see the module docstring)."""
  source = _aug_source(root, source, sbd_root)
  voc_train, voc_val = _voc_list(root, "train"), set(_voc_list(root, "val"))
  fine = set(voc_train)
  if source == "png":
    aug_dir = base.require_dir(os.path.join(root, "SegmentationClassAug"),
                               "SBD label folder (SegmentationClassAug)", LAYOUT)
    lists = [os.path.join(root, n) for n in AUG_LIST_NAMES]
    list_path = next((p for p in lists if os.path.isfile(p)), None)
    if list_path is not None:
      aug_ids = read_id_list(list_path)
    else:
      aug_ids = [base.stem_key(f) for f in base.list_files(aug_dir, (".png",))]
      logging.info("VOC train_aug: no list file (%s); using the %d labels of %s",
                   ", ".join(lists), len(aug_ids), aug_dir)
    label_of = lambda i: os.path.join(aug_dir, f"{i}.png")
    fallback = lambda i: None
  else:
    import_scipy_io()
    if not sbd_root:
      raise ValueError("voc_aug_source='sbd' needs data.sbd_root (SBD's benchmark_RELEASE "
                       "folder)")
    dataset_dir = os.path.join(os.path.expanduser(sbd_root), "dataset")
    base.require_dir(os.path.join(dataset_dir, "cls"), "SBD cls folder", LAYOUT)
    aug_ids = (read_id_list(os.path.join(dataset_dir, "train.txt"))
               + read_id_list(os.path.join(dataset_dir, "val.txt")))
    label_of = lambda i: os.path.join(dataset_dir, "cls", f"{i}.mat")
    fallback = lambda i: os.path.join(dataset_dir, "img", f"{i}.jpg")
  ids = sorted(set(voc_train) | set(aug_ids))
  dropped = [i for i in ids if i in voc_val]
  if dropped:
    logging.info("VOC train_aug: %d ids of VOC val excluded", len(dropped))
  return [_record(root, i, _fine_label(root, i) if i in fine else label_of(i), fallback(i))
          for i in ids if i not in voc_val]


def make_records(root: str, split: str, *, aug_source: str = "auto",
                 sbd_root: str | None = None) -> list[base.Record]:
  if split not in SPLITS:
    raise ValueError(f"unknown PASCAL VOC split {split!r}; expected one of {SPLITS}")
  root = devkit_root(root, "VOC2012", "PASCAL VOC root", LAYOUT)
  if split == "train_aug":
    records = train_aug_records(root, aug_source, sbd_root)
  elif split == "test":
    records = [_record(root, i, None) for i in _voc_list(root, "test")]
  else:
    base.require_dir(os.path.join(root, "SegmentationClass"), "PASCAL VOC label folder",
                     LAYOUT)
    records = [_record(root, i, _fine_label(root, i)) for i in _voc_list(root, split)]
  return base.require_records(records, "PASCAL VOC", split, root, LAYOUT)


def import_scipy_io():
  """scipy.io, or ImportError pointing at the pre-converted PNG route."""
  try:
    import scipy.io  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        "reading SBD's .mat labels (voc_aug_source='sbd') needs scipy (pip install scipy); "
        "or use the pre-converted SBD labels: put SegmentationClassAug/<id>.png under the "
        "VOC2012 folder and set voc_aug_source='png'") from None
  return scipy.io


def read_sbd_mat(path: str) -> np.ndarray:
  """The class map (GTcls.Segmentation) of an SBD `cls/<id>.mat` file, uint8."""
  sio = import_scipy_io()
  try:
    mat = sio.loadmat(path, squeeze_me=True, struct_as_record=False)
  except (OSError, ValueError, TypeError) as e:
    raise BadInputError("unreadable", f"cannot read SBD label {path}: {e}", (path,)) from None
  gt = mat.get("GTcls")
  seg = getattr(gt, "Segmentation", None)
  if seg is None:
    raise BadInputError("unreadable", f"{path} has no GTcls.Segmentation (not an SBD cls/*.mat "
                        f"file?)", (path,))
  seg = np.asarray(seg)
  if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
    raise BadInputError("not_a_label_map", f"{path}: GTcls.Segmentation is {seg.dtype} "
                        f"{seg.shape}; expected a 2-D integer class map", (path,))
  return seg


class VOCDataset(base.SegmentationDataset):
  """VOC pairs whose labels are PNGs or (SBD) .mat files."""

  def read_label(self, index: int) -> np.ndarray:
    rec = self.records[index]
    if rec.label_path is None or not rec.label_path.lower().endswith(".mat"):
      return super().read_label(index)
    raw = read_sbd_mat(rec.label_path)
    try:
      return self.table.to_train_ids(raw, source=rec.label_path)
    except table_lib.UnknownLabelIdError as e:
      raise BadInputError("unknown_label_id", str(e), (rec.label_path,)) from None


def voc_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """PASCAL VOC 2012 from a data config (root, voc_aug_source, sbd_root)."""
  root = base.config_root(data_cfg, "VOCdevkit/VOC2012 folder containing JPEGImages/ and "
                          "SegmentationClass/")
  records = make_records(root, split,
                         aug_source=base.cfg_get(data_cfg, "voc_aug_source", "auto"),
                         sbd_root=base.cfg_get(data_cfg, "sbd_root") or None)
  return VOCDataset(records, voc_table(), split,
                    on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"), name="voc")


# ------------------------------------------------------------------ class table --
# PASCAL VOC 2012: 20 object classes + background; raw 255 marks object boundaries (ignored).
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


VOC_BOUNDARY_ID = 255


def voc_palette(n: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map (VOCdevkit's `labelcolormap`): (n, 3) uint8 RGB."""
  out = np.zeros((n, 3), np.uint8)
  for i in range(n):
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    out[i] = (r, g, b)
  return out


@functools.cache
def voc_table() -> ClassTable:
  """PASCAL VOC 2012 (21 classes, background = 0); raw 255 (boundaries) -> ignore."""
  mapping = {i: i for i in range(len(VOC_CLASSES))}
  mapping[VOC_BOUNDARY_ID] = IGNORE_INDEX
  return ClassTable.build("voc", VOC_CLASSES, voc_palette(len(VOC_CLASSES)), mapping)


SPEC = base.DatasetSpec("voc", voc_dataset, lambda data_cfg: voc_table(),
                        semseg_base_size=512)
