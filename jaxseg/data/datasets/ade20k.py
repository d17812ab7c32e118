"""ADE20K scene parsing (ADEChallengeData2016, the 150-class SceneParsing benchmark).

Layout under `root` (the extracted ADEChallengeData2016.zip)::

  root/images/training/ADE_train_<n>.jpg        root/annotations/training/ADE_train_<n>.png
  root/images/validation/ADE_val_<n>.jpg        root/annotations/validation/ADE_val_<n>.png
  root/images/testing/ADE_test_<n>.jpg          (split 'test', release_test images; no labels)

Labels hold raw ids 0..150: 0 is "other" (not one of the 150 classes) and is ignored, raw k is
train id k - 1 (mmsegmentation's / semseg's `reduce_zero_label`). Splits: 'train' (20210
images), 'val' (2000), 'trainval', 'test'.
"""
from __future__ import annotations

import os

from jaxseg.data import labels as labels_lib
from jaxseg.data.datasets import base

SPLITS = ("train", "val", "trainval", "test")
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}
LAYOUT = """\
  <root>/images/training/*.jpg      <root>/annotations/training/*.png
  <root>/images/validation/*.jpg    <root>/annotations/validation/*.png
  <root>/images/testing/*.jpg       (test split, no labels)
  (<root> = ADEChallengeData2016)"""


def split_records(root: str, split: str) -> list[base.Record]:
  """Image/label pairs of one split folder ('train', 'val' or 'test')."""
  folder = SPLIT_DIRS[split]
  image_dir = base.require_dir(os.path.join(root, "images", folder),
                               f"ADE20K {split!r} image folder", LAYOUT)
  label_dir = os.path.join(root, "annotations", folder)
  if split != "test":
    base.require_dir(label_dir, f"ADE20K {split!r} annotation folder", LAYOUT)
  return base.pair_files(image_dir, label_dir, image_key=base.stem_key,
                         label_key=base.stem_key,
                         expected_label=lambda f: base.stem_key(f) + ".png",
                         require_labels=split != "test")


def make_records(root: str, split: str) -> list[base.Record]:
  if split not in SPLITS:
    raise ValueError(f"unknown ADE20K split {split!r}; expected one of {SPLITS}")
  base.require_dir(root, "ADE20K root", LAYOUT)
  names = ["train", "val"] if split == "trainval" else [split]
  records = [r for n in names for r in split_records(root, n)]
  return base.require_records(records, "ADE20K", split, root, LAYOUT)


def ade20k_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """ADE20K-150 dataset from a data config (root = the ADEChallengeData2016 folder)."""
  root = base.config_root(data_cfg, "ADEChallengeData2016 folder containing images/ and "
                          "annotations/")
  records = make_records(root, split)
  return base.SegmentationDataset(records, labels_lib.ade20k_table(), split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="ade20k")


SPEC = base.DatasetSpec("ade20k", ade20k_dataset, lambda data_cfg: labels_lib.ade20k_table(),
                        semseg_base_size=512)
