"""KITTI semantic segmentation (2015 benchmark): 200 training images, Cityscapes label ids.

Layout under `root`::

  root/training/image_2/<nnnnnn>_10.png
  root/training/semantic/<nnnnnn>_10.png     (Cityscapes labelIds -> train ids)
  root/testing/image_2/<nnnnnn>_10.png       (split 'test', no labels; `test/` also accepted)

KITTI has no official validation set. The original draws three fixed 90/10 folds over the
200 sorted training images (`cv` 0, 1, 2; `VAL_INDICES`); 'trainval' is all 200 (the fold's
train part, then its val part). Resizing (the original evaluates 'val' at 1242x376 and 'test' at
1280x384, `VAL_SIZE_WH`/`TEST_SIZE_WH`) is the loader's job.
"""
from __future__ import annotations

import os

from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets import base
from jaxseg.data.datasets.cityscapes import cityscapes_table

SPLITS = ("train", "val", "trainval", "test")
NUM_TRAINING_IMAGES = 200
# Indices (into the sorted training images) of each fold's validation images.
VAL_INDICES = (
    (1, 5, 11, 29, 35, 49, 57, 68, 72, 82, 93, 115, 119, 130, 145, 154, 156, 167, 169, 189, 198),
    (0, 12, 24, 31, 42, 50, 63, 71, 84, 96, 101, 112, 121, 133, 141, 155, 164, 171, 187, 191,
     197),
    (3, 6, 13, 21, 41, 54, 61, 73, 88, 91, 110, 121, 126, 131, 142, 149, 150, 163, 173, 183,
     199),
)
VAL_SIZE_WH = (1242, 376)
TEST_SIZE_WH = (1280, 384)
LAYOUT = """\
  <root>/training/image_2/*.png
  <root>/training/semantic/*.png   (Cityscapes labelIds)
  <root>/testing/image_2/*.png     (test split)"""


def cv_split(records: list[base.Record], cv: int) -> tuple[list[base.Record], list[base.Record]]:
  """(train, val) records of fold `cv`; needs exactly the 200 benchmark training images."""
  if not 0 <= cv < len(VAL_INDICES):
    raise ValueError(f"cv={cv}; expected 0..{len(VAL_INDICES) - 1}")
  if len(records) != NUM_TRAINING_IMAGES:
    raise ValueError(f'KITTI cross-validation folds index the {NUM_TRAINING_IMAGES} benchmark '
                     f'training images; found {len(records)} (use split "trainval" for other '
                     f'data)')
  val = set(VAL_INDICES[cv])
  return ([r for i, r in enumerate(records) if i not in val],
          [r for i, r in enumerate(records) if i in val])


def make_records(root: str, split: str, cv: int = 0) -> list[base.Record]:
  if split not in SPLITS:
    raise ValueError(f"unknown KITTI split {split!r}; expected one of {SPLITS}")
  base.require_dir(root, "KITTI root", LAYOUT)
  if split == "test":
    test_dir = base.first_existing_dir(
        [os.path.join(root, "testing", "image_2"), os.path.join(root, "test", "image_2")],
        "KITTI test images", LAYOUT)
    records = [base.Record(os.path.join(test_dir, f), None, base.stem_key(f))
               for f in base.list_files(test_dir)]
  else:
    training = base.require_dir(os.path.join(root, "training"), "KITTI training folder", LAYOUT)
    image_dir = base.require_dir(os.path.join(training, "image_2"), "KITTI image folder", LAYOUT)
    label_dir = base.require_dir(os.path.join(training, "semantic"), "KITTI label folder",
                                 LAYOUT)
    everything = base.pair_files(image_dir, label_dir, image_key=base.stem_key,
                                 label_key=base.stem_key, expected_label=lambda f: f)
    if split == "trainval" and len(everything) != NUM_TRAINING_IMAGES:
      records = everything
    else:
      train, val = cv_split(everything, cv)
      records = {"train": train, "val": val, "trainval": train + val}[split]
  return base.require_records(records, "KITTI", split, root, LAYOUT)


def kitti_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """KITTI dataset from a data config (root, cv)."""
  root = base.config_root(data_cfg, "KITTI folder containing training/")
  records = make_records(root, split, int(base.cfg_get(data_cfg, "cv", 0)))
  return base.SegmentationDataset(records, kitti_table(), split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="kitti")


# ------------------------------------------------------------------ class table --
def kitti_table() -> ClassTable:
  """KITTI semantics uses the Cityscapes label ids and train ids."""
  return cityscapes_table("kitti")


SPEC = base.DatasetSpec("kitti", kitti_dataset, lambda data_cfg: kitti_table())
