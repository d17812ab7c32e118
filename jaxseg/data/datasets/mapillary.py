"""Mapillary Vistas (v1.2 labels by default: 65 classes, raw 65 'Unlabeled' -> ignore).

Layout under `root` (research edition; the v2.0 release keeps v1.2 labels in `v1.2/labels`)::

  root/config.json                      (or config_v1.2.json; the class table, optional)
  root/{training,validation}/images/<key>.jpg
  root/{training,validation}/labels/<key>.png      (or v1.2/labels/<key>.png, v1.2/<key>.png)
  root/testing/images/<key>.jpg                    (split 'test', no labels)

A flat folder `root/images` + `root/labels` (or `root/v1.2[/labels]`) is accepted as the
data of every split (small crops, samples). With `mapillary_version='v2.0'` labels come from
`v2.0/labels` and the table from `config_v2.0.json` (124 classes).

Label PNGs are palette images whose indices are the raw ids; they are read as indices. The
table comes from the dataset's config file when present (labels with `evaluate: false` are
ignored), else the built-in v1.2 table. Evaluation resizing (the original: height to
`EVAL_SIZE`, then centre crop/pad to EVAL_SIZE x EVAL_SIZE) is the loader's job.
"""
from __future__ import annotations

import os

from jaxseg.data import class_table as table_lib
from jaxseg.data import labels as labels_lib
from jaxseg.data.datasets import base

SPLITS = ("train", "val", "trainval", "test")
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}
VERSIONS = {"v1.2": (("labels", os.path.join("v1.2", "labels"), "v1.2"),
                     ("config.json", "config_v1.2.json")),
            "v2.0": ((os.path.join("v2.0", "labels"), "v2.0"), ("config_v2.0.json",))}
# The original evaluates Mapillary at height 1536, centre-cropped/padded to 1536x1536.
EVAL_SIZE = 1536
LAYOUT = """\
  <root>/config.json
  <root>/training/images/*.jpg     <root>/training/labels/*.png   (or training/v1.2/labels)
  <root>/validation/images/*.jpg   <root>/validation/labels/*.png
  <root>/testing/images/*.jpg      (test split)
  (or a flat sample folder: <root>/images/*.jpg + <root>/labels/*.png or <root>/v1.2/*.png)"""


def _version(version: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  if version not in VERSIONS:
    raise ValueError(f"mapillary_version={version!r}; expected one of {sorted(VERSIONS)}")
  return VERSIONS[version]


def config_path(root: str, version: str = "v1.2") -> str | None:
  """The dataset's class config file, or None when it has none."""
  for name in _version(version)[1]:
    path = os.path.join(root, name)
    if os.path.isfile(path):
      return path
  return None


def class_table(root: str | None, version: str = "v1.2") -> table_lib.ClassTable:
  """Table from root's config file if any, else the built-in v1.2 table."""
  path = config_path(root, version) if root and os.path.isdir(root) else None
  if path is None and version != "v1.2":
    raise FileNotFoundError(f"Mapillary {version} needs its class config "
                            f"{_version(version)[1][0]} in {root}")
  return labels_lib.mapillary_table(path)


def split_records(root: str, split_dir: str | None, version: str = "v1.2",
                  require_labels: bool = True) -> list[base.Record]:
  """Pairs images/ with the label folder of one split folder (`None`: the flat layout)."""
  directory = root if split_dir is None else os.path.join(root, split_dir)
  image_dir = base.require_dir(os.path.join(directory, "images"), "Mapillary image folder",
                               LAYOUT)
  label_dirs = [os.path.join(directory, d) for d in _version(version)[0]]
  label_dir = next((d for d in label_dirs if os.path.isdir(d)), None)
  if label_dir is None:
    if require_labels:
      tried = ", ".join(label_dirs)
      raise FileNotFoundError(f"Mapillary label folder not found; looked for: {tried}\n"
                              f"Expected layout:\n{LAYOUT}")
    label_dir = label_dirs[0]
  return base.pair_files(image_dir, label_dir, image_key=base.stem_key,
                         label_key=base.stem_key,
                         expected_label=lambda f: base.stem_key(f) + ".png",
                         require_labels=require_labels)


def make_records(root: str, split: str, version: str = "v1.2") -> list[base.Record]:
  if split not in SPLITS:
    raise ValueError(f"unknown Mapillary split {split!r}; expected one of {SPLITS}")
  base.require_dir(root, "Mapillary root", LAYOUT)
  names = ["train", "val"] if split == "trainval" else [split]
  flat = (not os.path.isdir(os.path.join(root, SPLIT_DIRS[names[0]]))
          and os.path.isdir(os.path.join(root, "images")))
  if flat:
    records = split_records(root, None, version, require_labels=split != "test")
  else:
    records = [r for n in names
               for r in split_records(root, SPLIT_DIRS[n], version, require_labels=n != "test")]
  return base.require_records(records, "Mapillary", split, root, LAYOUT)


def mapillary_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """Mapillary dataset from a data config (root, mapillary_version)."""
  root = base.config_root(data_cfg, "Mapillary Vistas folder containing training/ and "
                          "validation/")
  version = base.cfg_get(data_cfg, "mapillary_version", "v1.2")
  records = make_records(root, split, version)
  return base.SegmentationDataset(records, class_table(root, version), split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name="mapillary")


SPEC = base.DatasetSpec(
    "mapillary", mapillary_dataset,
    lambda data_cfg: class_table(os.path.expanduser(base.cfg_get(data_cfg, "root") or "") or None,
                                 base.cfg_get(data_cfg, "mapillary_version", "v1.2")))
