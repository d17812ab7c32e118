"""Cityscapes in its official folder layout (fine, coarse, sequences, SDC-augmented frames).

Layout under `root` (the nesting of the original code, `leftImg8bit_trainvaltest/leftImg8bit`
and `gtFine_trainvaltest/gtFine`, is accepted as well)::

  root/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (or .jpg)
  root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  root/leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png|.jpg

Coarse data (split 'extra', or added to 'train'/'trainval' with `include_coarse`), under
`coarse_root` (default: `root`)::

  coarse_root/leftImg8bit/train_extra/<city>/*_leftImg8bit.png   (or leftImg8bit_trainextra/...)
  coarse_root/gtCoarse/train_extra/<city>/*_gtCoarse_labelIds.png (or gtCoarse/gtCoarse/...)

SDCNet-augmented frames (`sdc_root`; written by jaxseg's SDCNet label propagation) mirror the
fine layout, labels being *raw labelIds* (0-33) like gtFine::

  sdc_root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  sdc_root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

`<split>` is the Cityscapes folder the city lives in ('train' or 'val': cross-validation folds
1 and 2 train on some 'val' cities). The pairs are used when `sdc_root` is set;
`sdc_max_skip` = k > 0 keeps only the frames exactly k before/after each annotated training
frame (the original's `--maxSkip`), 0 keeps every propagated pair of the training cities. A
frame that is also an annotated fine frame (the propagation writer copies those) is never added
twice. SDC pairs join the 'train' and 'trainval' splits only, for the fold's training cities
only, with `Record.kind == 'sdc'`.

Splits: 'train', 'val', 'trainval', 'test' (labels optional) and 'extra' (coarse). `cv` (0, 1,
2) selects the original's cross-validation fold: all cities ordered val cities then train
cities (each sorted), and fold k validates on the len(val) cities starting at k * n // 3. Fold 0
is the official train/val split.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
import logging
import os
from typing import NamedTuple

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets import base
from jaxseg.data.datasets import image_io

NUM_CV_SPLITS = 3
SPLITS = ("train", "val", "trainval", "test", "extra")
IMAGE_SUFFIXES = ("_leftImg8bit.png", "_leftImg8bit.jpg")
FINE_LABEL_SUFFIX = "_gtFine_labelIds.png"
COARSE_LABEL_SUFFIX = "_gtCoarse_labelIds.png"

LAYOUT = """\
  <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  (or <root>/leftImg8bit_trainvaltest/leftImg8bit/... and <root>/gtFine_trainvaltest/gtFine/...)"""
COARSE_LAYOUT = """\
  <coarse_root>/leftImg8bit/train_extra/<city>/*_leftImg8bit.png
  <coarse_root>/gtCoarse/train_extra/<city>/*_gtCoarse_labelIds.png
  (or leftImg8bit_trainextra/leftImg8bit/train_extra and gtCoarse/gtCoarse/train_extra)"""
SDC_LAYOUT = """\
  <sdc_root>/leftImg8bit/<train|val>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <sdc_root>/gtFine/<train|val>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"""


def image_key(name: str) -> str | None:
  """'aachen_000000_000019_leftImg8bit.png' -> 'aachen_000000_000019'."""
  for suffix in IMAGE_SUFFIXES:
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return None


def find_fine_dirs(root: str) -> tuple[str, str]:
  """(leftImg8bit dir, gtFine dir) of a Cityscapes root, official or original nesting."""
  base.require_dir(root, "Cityscapes root", LAYOUT)
  img = base.first_existing_dir(
      [os.path.join(root, "leftImg8bit"),
       os.path.join(root, "leftImg8bit_trainvaltest", "leftImg8bit")],
      "Cityscapes image folder", LAYOUT)
  gt = base.first_existing_dir(
      [os.path.join(root, "gtFine"), os.path.join(root, "gtFine_trainvaltest", "gtFine")],
      "Cityscapes gtFine folder", LAYOUT)
  return img, gt


def cv_city_splits(train_cities: Sequence[str], val_cities: Sequence[str], cv: int,
                   num_splits: int = NUM_CV_SPLITS) -> dict[str, list[str]]:
  """The original's cross-validation folds over 'train/<city>' and 'val/<city>' entries."""
  if not 0 <= cv < num_splits:
    raise ValueError(f"cv={cv}; expected 0..{num_splits - 1}")
  all_cities = sorted(val_cities) + sorted(train_cities)
  num_val = len(val_cities)
  offset = cv * len(all_cities) // num_splits
  fold = {"train": [], "val": []}
  for j, city in enumerate(all_cities):
    fold["val" if offset <= j < offset + num_val else "train"].append(city)
  return fold


def _cities(img_dir: str, split: str) -> list[str]:
  path = base.require_dir(os.path.join(img_dir, split), f"Cityscapes {split!r} split", LAYOUT)
  return [f"{split}/{c}" for c in base.list_subdirs(path)]


def _city_records(img_dir: str, gt_dir: str, city: str, label_suffix: str, kind: str,
                  require_labels: bool = True) -> list[base.Record]:
  image_city = os.path.join(img_dir, city)
  label_city = os.path.join(gt_dir, city)
  if not os.path.isdir(image_city):
    raise FileNotFoundError(f"Cityscapes city folder not found: {image_city}")
  return base.pair_files(
      image_city, label_city, image_key=image_key,
      label_key=base.strip_suffix(label_suffix),
      expected_label=lambda f: image_key(f) + label_suffix,
      require_labels=require_labels, kind=kind)


def _check_orphan_label_cities(img_dir: str, gt_dir: str, split: str) -> None:
  """A gtFine city folder without its leftImg8bit twin means images are missing."""
  gt_split = os.path.join(gt_dir, split)
  if not os.path.isdir(gt_split):
    return
  for city in base.list_subdirs(gt_split):
    if not os.path.isdir(os.path.join(img_dir, split, city)) and base.list_files(
        os.path.join(gt_split, city), (FINE_LABEL_SUFFIX,)):
      raise FileNotFoundError(
          f"labels without images: {os.path.join(gt_split, city)} has no image folder "
          f"{os.path.join(img_dir, split, city)}")


def fine_records(root: str, split: str, cv: int = 0) -> list[base.Record]:
  """Annotated (gtFine) pairs of split 'train', 'val', 'trainval' or 'test'."""
  img_dir, gt_dir = find_fine_dirs(root)
  if split == "test":
    return [r for c in _cities(img_dir, "test")
            for r in _city_records(img_dir, gt_dir, c, FINE_LABEL_SUFFIX, "fine", False)]
  for s in ("train", "val"):
    _check_orphan_label_cities(img_dir, gt_dir, s)
  fold = cv_city_splits(_cities(img_dir, "train"), _cities(img_dir, "val"), cv)
  cities = fold["train"] + fold["val"] if split == "trainval" else fold[split]
  logging.info("Cityscapes %s (cv %d) cities: %s", split, cv, cities)
  return [r for c in cities
          for r in _city_records(img_dir, gt_dir, c, FINE_LABEL_SUFFIX, "fine")]


def coarse_records(coarse_root: str) -> list[base.Record]:
  """gtCoarse pairs of leftImg8bit_trainextra (all cities, as the original's coarse 'train')."""
  base.require_dir(coarse_root, "Cityscapes coarse root", COARSE_LAYOUT)
  img_dir = base.first_existing_dir(
      [os.path.join(coarse_root, "leftImg8bit", "train_extra"),
       os.path.join(coarse_root, "leftImg8bit_trainextra", "leftImg8bit", "train_extra")],
      "Cityscapes train_extra images", COARSE_LAYOUT)
  gt_dir = base.first_existing_dir(
      [os.path.join(coarse_root, "gtCoarse", "train_extra"),
       os.path.join(coarse_root, "gtCoarse", "gtCoarse", "train_extra")],
      "Cityscapes gtCoarse labels", COARSE_LAYOUT)
  return [r for c in base.list_subdirs(img_dir)
          for r in _city_records(img_dir, gt_dir, c, COARSE_LABEL_SUFFIX, "coarse")]


def _neighbour_key(key: str, offset: int) -> str:
  city, seq, frame = key.rsplit("_", 2)
  return f"{city}_{seq}_{int(frame) + offset:06d}"


def sdc_records(sdc_root: str, cities: Sequence[str], fine: Sequence[base.Record],
                max_skip: int = 0) -> list[base.Record]:
  """SDC-propagated pairs for `cities` ('train/<city>', ...); max_skip k > 0: only frames
  at +-k of the annotated frames, 0: all; see the module docstring."""
  base.require_dir(sdc_root, "SDC-augmented Cityscapes root", SDC_LAYOUT)
  img_dir = base.require_dir(os.path.join(sdc_root, "leftImg8bit"),
                             "SDC-augmented image folder", SDC_LAYOUT)
  gt_dir = base.require_dir(os.path.join(sdc_root, "gtFine"),
                            "SDC-augmented label folder", SDC_LAYOUT)
  fine_keys = {image_key(os.path.basename(r.image_path)) for r in fine}
  out = []
  for city in cities:
    if not os.path.isdir(os.path.join(img_dir, city)):
      logging.info("No SDC-augmented frames for %s in %s", city, img_dir)
      continue
    pairs = _city_records(img_dir, gt_dir, city, FINE_LABEL_SUFFIX, "sdc")
    if max_skip > 0:
      by_key = {image_key(os.path.basename(r.image_path)): r for r in pairs}
      city_fine = sorted(k for k in fine_keys if k.startswith(city.split("/")[1] + "_"))
      wanted = [_neighbour_key(k, d) for k in city_fine for d in (-max_skip, max_skip)]
      pairs = [by_key[k] for k in wanted if k in by_key]
    out.extend(r for r in pairs if image_key(os.path.basename(r.image_path)) not in fine_keys)
  if not out:
    logging.warning("No SDC-augmented pairs found under %s for cities %s", sdc_root, cities)
  return out


def make_records(root: str, split: str, *, cv: int = 0, include_coarse: bool = False,
                 coarse_root: str | None = None, sdc_root: str | None = None,
                 sdc_max_skip: int = 0) -> list[base.Record]:
  """All records of a split: fine first, then SDC-augmented, then coarse."""
  if split not in SPLITS:
    raise ValueError(f"unknown Cityscapes split {split!r}; expected one of {SPLITS}")
  if split == "extra":
    return coarse_records(coarse_root or root)
  records = fine_records(root, split, cv)
  if split in ("train", "trainval"):
    if sdc_root:
      img_dir, _ = find_fine_dirs(root)
      train_cities = cv_city_splits(_cities(img_dir, "train"), _cities(img_dir, "val"),
                                    cv)["train"]
      records += sdc_records(sdc_root, train_cities, records, sdc_max_skip)
    elif sdc_max_skip:
      raise ValueError(f"sdc_max_skip={sdc_max_skip} needs data.sdc_root (the SDC-augmented "
                       f"frames)")
    if include_coarse:
      records += coarse_records(coarse_root or root)
  return base.require_records(records, "Cityscapes", split, root, LAYOUT)


def list_sequence_frames(root: str, split: str = "train",
                         city: str | None = None) -> list[str]:
  """Sorted paths of the video frames in root/leftImg8bit_sequence/<split>[/<city>] (.png/.jpg)."""
  seq_dir = base.require_dir(
      os.path.join(root, "leftImg8bit_sequence", split), "Cityscapes sequence folder",
      "  <root>/leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq>_<frame>"
      "_leftImg8bit.png|.jpg")
  cities = [city] if city else base.list_subdirs(seq_dir)
  frames = []
  for c in cities:
    cdir = base.require_dir(os.path.join(seq_dir, c), f"sequence city {c!r}", "")
    frames += [os.path.join(cdir, f) for f in base.list_files(cdir, IMAGE_SUFFIXES)]
  return frames


def sequence_neighbour(frame_path: str, offset: int) -> str | None:
  """Path of the frame `offset` frames from `frame_path` in the same folder (.png or .jpg)."""
  folder, name = os.path.split(frame_path)
  key = image_key(name)
  if key is None:
    raise ValueError(f"not a Cityscapes frame name: {frame_path}")
  target = _neighbour_key(key, offset)
  for suffix in IMAGE_SUFFIXES:
    path = os.path.join(folder, target + suffix)
    if os.path.isfile(path):
      return path
  return None


def cityscapes_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """Cityscapes from a data config (root, cv, include_coarse, coarse_root, sdc_root,
  sdc_max_skip)."""
  root = base.config_root(data_cfg, "Cityscapes folder containing leftImg8bit/ and gtFine/")
  records = make_records(
      root, split, cv=int(base.cfg_get(data_cfg, "cv", 0)),
      include_coarse=bool(base.cfg_get(data_cfg, "include_coarse", False)),
      coarse_root=base.cfg_get(data_cfg, "coarse_root") or None,
      sdc_root=base.cfg_get(data_cfg, "sdc_root") or None,
      sdc_max_skip=int(base.cfg_get(data_cfg, "sdc_max_skip", 0)))
  table = cityscapes_table()
  on_bad = base.cfg_get(data_cfg, "on_bad_input", "error")
  if split == "val" and records and os.path.isfile(instance_path(records[0].label_path or "")):
    return CityscapesWithInstances(records, table, split, on_bad_input=on_bad,
                                   name="cityscapes")
  return base.SegmentationDataset(records, table, split, on_bad_input=on_bad,
                                  name="cityscapes")


# ------------------------------------------------------------- instances (for nIoU) --
INSTANCE_LABEL_SUFFIX = "_gtFine_instanceIds.png"
INSTANCE_SLOTS = 1000  # = evaluation.metrics.INSTANCE_SLOTS


def instance_path(label_path: str) -> str:
  """gtFine labelIds path -> its instanceIds twin ('' when not a gtFine labelIds file)."""
  if not label_path.endswith(FINE_LABEL_SUFFIX):
    return ""
  return label_path[:-len(FINE_LABEL_SUFFIX)] + INSTANCE_LABEL_SUFFIX


def instance_train_ids(raw: np.ndarray, table: table_lib.ClassTable) -> np.ndarray:
  """gtFine instanceIds (labelId * 1000 + k) -> int32 train_id * 1000 + k, -1 elsewhere.

  As cityscapesscripts: only ids > 1000 are instances (smaller ids are a class's crowd or
  stuff pixels) and instances of classes ignored in evaluation (caravan, trailer) drop out.
  """
  raw = np.asarray(raw, np.int64)
  label = np.clip(raw // 1000, 0, 255)
  train = np.asarray(table.raw_to_train, np.int64)[label]
  keep = (raw > 1000) & (train != table.ignore_index)
  return np.where(keep, train * INSTANCE_SLOTS + raw % 1000, -1).astype(np.int32)


class CityscapesWithInstances(base.SegmentationDataset):
  """Cityscapes val samples with an 'instance' map (see `instance_train_ids`) for nIoU."""

  def load(self, index: int) -> base.Sample:
    sample = super().load(index)
    rec = self.records[index]
    path = instance_path(rec.label_path or "")
    if not path or not os.path.isfile(path):
      raise base.BadInputError("unreadable", f"instance ids {path or rec.label_path} not "
                               f"found (the other val frames have theirs)", (path,))
    raw = image_io.read_label(path)
    if raw.shape != sample["label"].shape:
      raise base.BadInputError("size_mismatch", f'{path} is {raw.shape} but its label '
                               f'{rec.label_path} is {sample["label"].shape}', (path,))
    sample["instance"] = instance_train_ids(raw, self.table)
    return sample


# ------------------------------------------------------------------ class table --
class CityscapesLabel(NamedTuple):
  """One row of the official Cityscapes label table (cityscapesscripts' `Label`)."""
  name: str
  id: int
  train_id: int
  category: str
  category_id: int
  has_instances: bool
  ignore_in_eval: bool
  color: tuple[int, int, int]


_L = CityscapesLabel


CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    _L("unlabeled", 0, 255, "void", 0, False, True, (0, 0, 0)),
    _L("ego vehicle", 1, 255, "void", 0, False, True, (0, 0, 0)),
    _L("rectification border", 2, 255, "void", 0, False, True, (0, 0, 0)),
    _L("out of roi", 3, 255, "void", 0, False, True, (0, 0, 0)),
    _L("static", 4, 255, "void", 0, False, True, (0, 0, 0)),
    _L("dynamic", 5, 255, "void", 0, False, True, (111, 74, 0)),
    _L("ground", 6, 255, "void", 0, False, True, (81, 0, 81)),
    _L("road", 7, 0, "flat", 1, False, False, (128, 64, 128)),
    _L("sidewalk", 8, 1, "flat", 1, False, False, (244, 35, 232)),
    _L("parking", 9, 255, "flat", 1, False, True, (250, 170, 160)),
    _L("rail track", 10, 255, "flat", 1, False, True, (230, 150, 140)),
    _L("building", 11, 2, "construction", 2, False, False, (70, 70, 70)),
    _L("wall", 12, 3, "construction", 2, False, False, (102, 102, 156)),
    _L("fence", 13, 4, "construction", 2, False, False, (190, 153, 153)),
    _L("guard rail", 14, 255, "construction", 2, False, True, (180, 165, 180)),
    _L("bridge", 15, 255, "construction", 2, False, True, (150, 100, 100)),
    _L("tunnel", 16, 255, "construction", 2, False, True, (150, 120, 90)),
    _L("pole", 17, 5, "object", 3, False, False, (153, 153, 153)),
    _L("polegroup", 18, 255, "object", 3, False, True, (153, 153, 153)),
    _L("traffic light", 19, 6, "object", 3, False, False, (250, 170, 30)),
    _L("traffic sign", 20, 7, "object", 3, False, False, (220, 220, 0)),
    _L("vegetation", 21, 8, "nature", 4, False, False, (107, 142, 35)),
    _L("terrain", 22, 9, "nature", 4, False, False, (152, 251, 152)),
    _L("sky", 23, 10, "sky", 5, False, False, (70, 130, 180)),
    _L("person", 24, 11, "human", 6, True, False, (220, 20, 60)),
    _L("rider", 25, 12, "human", 6, True, False, (255, 0, 0)),
    _L("car", 26, 13, "vehicle", 7, True, False, (0, 0, 142)),
    _L("truck", 27, 14, "vehicle", 7, True, False, (0, 0, 70)),
    _L("bus", 28, 15, "vehicle", 7, True, False, (0, 60, 100)),
    _L("caravan", 29, 255, "vehicle", 7, True, True, (0, 0, 90)),
    _L("trailer", 30, 255, "vehicle", 7, True, True, (0, 0, 110)),
    _L("train", 31, 16, "vehicle", 7, True, False, (0, 80, 100)),
    _L("motorcycle", 32, 17, "vehicle", 7, True, False, (0, 0, 230)),
    _L("bicycle", 33, 18, "vehicle", 7, True, False, (119, 11, 32)),
    # Never stored in label images (id -1); kept for completeness.
    _L("license plate", -1, -1, "vehicle", 7, False, True, (0, 0, 142)),
)


@functools.cache
def cityscapes_table(name: str = "cityscapes") -> ClassTable:
  """The official Cityscapes table: labelIds 0-33 -> 19 train ids, everything else ignored."""
  trained = sorted((l for l in CITYSCAPES_LABELS if 0 <= l.train_id < 255),
                   key=lambda l: l.train_id)
  mapping = {l.id: l.train_id for l in CITYSCAPES_LABELS if l.id >= 0}
  return ClassTable.build(name, [l.name for l in trained], [l.color for l in trained], mapping)


SPEC = base.DatasetSpec("cityscapes", cityscapes_dataset,
                        lambda data_cfg: cityscapes_table(), semseg_base_size=2048)
