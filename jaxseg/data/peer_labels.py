"""Class tables of the peer datasets: ADE20K-150, PASCAL VOC 2012, PASCAL Context 59/60.

The data (names, palettes) is long; labels.py lists these tables among its built-in ones.
"""
from __future__ import annotations

import functools

import numpy as np

from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable

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

# PASCAL VOC 2012: 20 object classes + background; raw 255 marks object boundaries (ignored).
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_BOUNDARY_ID = 255

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
def ade20k_table() -> ClassTable:
  """ADE20K-150: raw 0 ("other") and 255 -> ignore, raw 1..150 -> train ids 0..149."""
  mapping = {k + 1: k for k in range(len(ADE20K_CLASSES))}
  mapping[0] = IGNORE_INDEX
  mapping[IGNORE_INDEX] = IGNORE_INDEX
  return ClassTable.build("ade20k", ADE20K_CLASSES, ADE20K_PALETTE, mapping)


@functools.cache
def voc_table() -> ClassTable:
  """PASCAL VOC 2012 (21 classes, background = 0); raw 255 (boundaries) -> ignore."""
  mapping = {i: i for i in range(len(VOC_CLASSES))}
  mapping[VOC_BOUNDARY_ID] = IGNORE_INDEX
  return ClassTable.build("voc", VOC_CLASSES, voc_palette(len(VOC_CLASSES)), mapping)


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
