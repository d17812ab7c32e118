"""Class tables: raw dataset label ids -> train ids, names, colours.

Every dataset stores labels in its own id space (Cityscapes `labelIds` 0-33, CamVid 0-11,
Mapillary 0-65, ...). Inside jaxseg a label is always a uint8 map of *train ids* 0..K-1 with
255 = ignore. A `ClassTable` holds that mapping as a 256-entry look-up table. Raw ids that the
table does not know map to the sentinel `UNKNOWN` (254) so that readers can reject them with a
clear error instead of silently training on garbage (the original code passed unknown ids
through unchanged).

Built-in tables: `cityscapes_table()` (the official label table, 19 train classes),
`camvid_table()` (SegNet's 11 classes, raw 11 -> ignore), `mapillary_table()` (Vistas v1.2,
65 classes, raw 65 'Unlabeled' -> ignore), `kitti_table()` (= Cityscapes), `ade20k_table()`
(150 classes, raw 0 -> ignore), `voc_table()` (21 classes, raw 255 boundaries -> ignore),
`pascal_context_table(59 | 60)`, and
`ClassTable.from_json(path)` for user data.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
import json
import os
from typing import Any, NamedTuple

from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import ClassTable
from jaxseg.data.class_table import table_from_mapillary_config
from jaxseg.data.peer_labels import ade20k_table
from jaxseg.data.peer_labels import pascal_context_table
from jaxseg.data.peer_labels import voc_table


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
del _L

CAMVID_CLASSES = ("Sky", "Building", "Column-Pole", "Road", "Sidewalk", "Tree", "Sign-Symbol",
                  "Fence", "Car", "Pedestrian", "Bicyclist")
CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
                 (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                 (0, 128, 192))
CAMVID_VOID_ID = 11

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


@functools.cache
def cityscapes_table(name: str = "cityscapes") -> ClassTable:
  """The official Cityscapes table: labelIds 0-33 -> 19 train ids, everything else ignored."""
  trained = sorted((l for l in CITYSCAPES_LABELS if 0 <= l.train_id < 255),
                   key=lambda l: l.train_id)
  mapping = {l.id: l.train_id for l in CITYSCAPES_LABELS if l.id >= 0}
  return ClassTable.build(name, [l.name for l in trained], [l.color for l in trained], mapping)


@functools.cache
def camvid_table() -> ClassTable:
  """CamVid (SegNet version): raw 0..10 are the classes, raw 11 (void) is ignored."""
  mapping = {i: i for i in range(len(CAMVID_CLASSES))}
  mapping[CAMVID_VOID_ID] = IGNORE_INDEX
  return ClassTable.build("camvid", CAMVID_CLASSES, CAMVID_COLORS, mapping)


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


def kitti_table() -> ClassTable:
  """KITTI semantics uses the Cityscapes label ids and train ids."""
  return cityscapes_table("kitti")


def identity_table(name: str, class_names: Sequence[str], colors: Any) -> ClassTable:
  """Table for labels that already hold train ids 0..K-1 and 255 (e.g. synthetic data)."""
  mapping = {i: i for i in range(len(class_names))}
  mapping[IGNORE_INDEX] = IGNORE_INDEX
  return ClassTable.build(name, class_names, colors, mapping)




BUILTIN_TABLES = {"cityscapes": cityscapes_table, "camvid": camvid_table,
                  "mapillary": mapillary_table, "kitti": kitti_table,
                  "ade20k": ade20k_table, "voc": voc_table,
                  "pascal_context": pascal_context_table,
                  "pascal_context60": functools.partial(pascal_context_table, 60)}


def get_builtin_table(name: str) -> ClassTable:
  """A built-in table by name (see BUILTIN_TABLES)."""
  if name not in BUILTIN_TABLES:
    raise ValueError(f"unknown class table {name!r}; built-in tables: "
                     f"{sorted(BUILTIN_TABLES)} (or pass a path to a JSON table)")
  return BUILTIN_TABLES[name]()
