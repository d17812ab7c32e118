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

import functools
import json
import os

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import ClassTable
from jaxseg.data.class_table import table_from_mapillary_config
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
  return mapillary_table(path)


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


# ------------------------------------------------------------------ class table --
# Mapillary Vistas v1.2 `config.json` labels (readable name, RGB), raw id = position; the last
# one ('Unlabeled', evaluate: false) is the void class. Used when the dataset's config.json is
# absent.
MAPILLARY_V12_LABELS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Bird", (165, 42, 42)), ("Ground Animal", (0, 192, 0)), ("Curb", (196, 196, 196)),
    ("Fence", (190, 153, 153)), ("Guard Rail", (180, 165, 180)), ("Barrier", (90, 120, 150)),
    ("Wall", (102, 102, 156)), ("Bike Lane", (128, 64, 255)),
    ("Crosswalk - Plain", (140, 140, 200)), ("Curb Cut", (170, 170, 170)),
    ("Parking", (250, 170, 160)), ("Pedestrian Area", (96, 96, 96)),
    ("Rail Track", (230, 150, 140)), ("Road", (128, 64, 128)), ("Service Lane", (110, 110, 110)),
    ("Sidewalk", (244, 35, 232)), ("Bridge", (150, 100, 100)), ("Building", (70, 70, 70)),
    ("Tunnel", (150, 120, 90)), ("Person", (220, 20, 60)), ("Bicyclist", (255, 0, 0)),
    ("Motorcyclist", (255, 0, 100)), ("Other Rider", (255, 0, 200)),
    ("Lane Marking - Crosswalk", (200, 128, 128)), ("Lane Marking - General", (255, 255, 255)),
    ("Mountain", (64, 170, 64)), ("Sand", (230, 160, 50)), ("Sky", (70, 130, 180)),
    ("Snow", (190, 255, 255)), ("Terrain", (152, 251, 152)), ("Vegetation", (107, 142, 35)),
    ("Water", (0, 170, 30)), ("Banner", (255, 255, 128)), ("Bench", (250, 0, 30)),
    ("Bike Rack", (100, 140, 180)), ("Billboard", (220, 220, 220)),
    ("Catch Basin", (220, 128, 128)), ("CCTV Camera", (222, 40, 40)),
    ("Fire Hydrant", (100, 170, 30)), ("Junction Box", (40, 40, 40)), ("Mailbox", (33, 33, 33)),
    ("Manhole", (100, 128, 160)), ("Phone Booth", (142, 0, 0)), ("Pothole", (70, 100, 150)),
    ("Street Light", (210, 170, 100)), ("Pole", (153, 153, 153)),
    ("Traffic Sign Frame", (128, 128, 128)), ("Utility Pole", (0, 0, 80)),
    ("Traffic Light", (250, 170, 30)), ("Traffic Sign (Back)", (192, 192, 192)),
    ("Traffic Sign (Front)", (220, 220, 0)), ("Trash Can", (140, 140, 20)),
    ("Bicycle", (119, 11, 32)), ("Boat", (150, 0, 255)), ("Bus", (0, 60, 100)),
    ("Car", (0, 0, 142)), ("Caravan", (0, 0, 90)), ("Motorcycle", (0, 0, 230)),
    ("On Rails", (0, 80, 100)), ("Other Vehicle", (128, 64, 64)), ("Trailer", (0, 0, 110)),
    ("Truck", (0, 0, 70)), ("Wheeled Slow", (0, 0, 192)), ("Car Mount", (32, 32, 32)),
    ("Ego Vehicle", (120, 10, 10)), ("Unlabeled", (0, 0, 0)),
)


def mapillary_table(config_path: str | os.PathLike[str] | None = None) -> ClassTable:
  """Mapillary Vistas table from `config_path` (a config.json) or the built-in v1.2 table."""
  if config_path is not None:
    try:
      with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"cannot read Mapillary config {os.fspath(config_path)}: {e}") from None
    return table_from_mapillary_config(config, source=os.fspath(config_path))
  return _mapillary_v12_table()


@functools.cache
def _mapillary_v12_table() -> ClassTable:
  labels = [{"readable": n, "color": list(c), "evaluate": n != "Unlabeled"}
            for n, c in MAPILLARY_V12_LABELS]
  return table_from_mapillary_config({"labels": labels}, source="built-in v1.2 table")


SPEC = base.DatasetSpec(
    "mapillary", mapillary_dataset,
    lambda data_cfg: class_table(os.path.expanduser(base.cfg_get(data_cfg, "root") or "") or None,
                                 base.cfg_get(data_cfg, "mapillary_version", "v1.2")))
