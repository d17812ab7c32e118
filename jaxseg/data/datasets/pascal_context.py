"""PASCAL Context (59 classes + ignored background, as mmsegmentation and semseg use it).

PASCAL Context ships its labels as `trainval_merged.json` (Detail API) or per-image .mat files
over 459 classes; the segmentation benchmarks use the 59 most frequent ones. jaxseg reads the
usual pre-converted layout (mmsegmentation's `tools/dataset_converters/pascal_context.py`,
semseg's lists): one PNG per image holding 0 for background (every pixel of a class outside the
59) and k = 1..59 for the classes of `PASCAL_CONTEXT_59_CLASSES` (below). Under `root`
(`VOCdevkit/VOC2010`; `VOCdevkit` is accepted too)::

  root/JPEGImages/<id>.jpg
  root/SegmentationClassContext/<id>.png
  root/ImageSets/SegmentationContext/{train,val}.txt      one <id> per line (4996 / 5104)

`pascal_context_classes`: 59 (default; background -> ignore, raw k -> train id k - 1, mmseg's
PascalContextDataset59) or 60 (background is class 0, mmseg's PascalContextDataset). Raw 255 is
ignored in both. Splits: 'train', 'val', 'trainval'.
"""
from __future__ import annotations

import functools
import os

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets import base
from jaxseg.data.datasets import voc
from jaxseg.data.datasets.ade20k import ADE20K_PALETTE

SPLITS = ("train", "val", "trainval")
LABEL_DIR = "SegmentationClassContext"
LAYOUT = """\
  <root>/JPEGImages/<id>.jpg
  <root>/SegmentationClassContext/<id>.png     (0 = background, 1..59 = classes)
  <root>/ImageSets/SegmentationContext/{train,val}.txt
  (<root> = VOCdevkit/VOC2010, labels converted as mmsegmentation's pascal_context.py does)"""


def class_table(num_classes: int = 59) -> table_lib.ClassTable:
  return pascal_context_table(int(num_classes))


def make_records(root: str, split: str) -> list[base.Record]:
  if split not in SPLITS:
    raise ValueError(f"unknown PASCAL Context split {split!r}; expected one of {SPLITS}")
  root = voc.devkit_root(root, "VOC2010", "PASCAL Context root", LAYOUT)
  label_dir = base.require_dir(os.path.join(root, LABEL_DIR), "PASCAL Context label folder",
                               LAYOUT)
  list_dir = os.path.join(root, "ImageSets", "SegmentationContext")
  names = ["train", "val"] if split == "trainval" else [split]
  records = []
  for name in names:
    path = os.path.join(list_dir, f"{name}.txt")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"PASCAL Context split list not found: {path}\n"
                              f"Expected layout:\n{LAYOUT}")
    for image_id in voc.read_id_list(path):
      image = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
      label = os.path.join(label_dir, f"{image_id}.png")
      for what, p in (("image", image), ("label", label)):
        if not os.path.isfile(p):
          raise FileNotFoundError(f"PASCAL Context {what} of {image_id!r} (listed in {path}) "
                                  f"not found: {p}")
      records.append(base.Record(image, label, image_id))
  return base.require_records(records, "PASCAL Context", split, root, LAYOUT)


def pascal_context_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """PASCAL Context from a data config (root, pascal_context_classes)."""
  root = base.config_root(data_cfg, "VOCdevkit/VOC2010 folder containing JPEGImages/ and "
                          "SegmentationClassContext/")
  table = class_table(base.cfg_get(data_cfg, "pascal_context_classes", 59))
  return base.SegmentationDataset(make_records(root, split), table, split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="pascal_context")


# ------------------------------------------------------------------ class table --
# PASCAL Context, the 59 most frequent classes of the Detail API in its label order (raw
# 1..59 of the converted `SegmentationClassContext` PNGs; raw 0 = every other pixel).
PASCAL_CONTEXT_59_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "cloth",
    "computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road",
    "rock", "shelves", "sidewalk", "sky", "snow", "bedclothes", "track", "tree", "truck",
    "wall", "water", "window", "wood")


@functools.cache
def pascal_context_table(num_classes: int = 59) -> ClassTable:
  """PASCAL Context: 59 classes (raw 0 'background' ignored, raw k -> k - 1, mmseg's
  PascalContextDataset59) or 60 (background is class 0, mmseg's PascalContextDataset).

  Raw 255 is ignored in both (mmseg's reduce_zero_label keeps 255 as ignore).
  """
  # The ADE palette's first 60 colours, as mmseg colours PASCAL Context.
  if num_classes == 59:
    mapping = {k + 1: k for k in range(59)}
    mapping[0] = IGNORE_INDEX
    names, colors, name = PASCAL_CONTEXT_59_CLASSES, ADE20K_PALETTE[1:60], "pascal_context"
  elif num_classes == 60:
    mapping = {k: k for k in range(60)}
    names = ("background",) + PASCAL_CONTEXT_59_CLASSES
    colors, name = ADE20K_PALETTE[:60], "pascal_context60"
  else:
    raise ValueError(f"PASCAL Context has 59 or 60 classes (pascal_context_classes); got "
                     f"{num_classes}")
  mapping[IGNORE_INDEX] = IGNORE_INDEX
  return ClassTable.build(name, names, colors, mapping)


SPEC = base.DatasetSpec(
    "pascal_context", pascal_context_dataset,
    lambda data_cfg: class_table(base.cfg_get(data_cfg, "pascal_context_classes", 59)))
