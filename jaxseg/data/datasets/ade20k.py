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

import functools
import os

from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable
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
  return base.SegmentationDataset(records, ade20k_table(), split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="ade20k")


# ------------------------------------------------------------------ class table --
# ADE20K (SceneParsing / ADEChallengeData2016): the 150 classes of the official objectInfo150
# table, named by the first synonym of its Name column (as mmsegmentation does; the full entry
# of e.g. 'person' is 'person;individual;someone;somebody;mortal;soul'). Raw label 0 ("other")
# is ignored and raw k = 1..150 is train id k - 1 (mmseg/semseg `reduce_zero_label`).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")


# The scene-parsing benchmark's colour of each class (the palette mmseg and semseg use).
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255))


@functools.cache
def ade20k_table() -> ClassTable:
  """ADE20K-150: raw 0 ("other") and 255 -> ignore, raw 1..150 -> train ids 0..149."""
  mapping = {k + 1: k for k in range(len(ADE20K_CLASSES))}
  mapping[0] = IGNORE_INDEX
  mapping[IGNORE_INDEX] = IGNORE_INDEX
  return ClassTable.build("ade20k", ADE20K_CLASSES, ADE20K_PALETTE, mapping)


SPEC = base.DatasetSpec("ade20k", ade20k_dataset, lambda data_cfg: ade20k_table(),
                        semseg_base_size=512)
