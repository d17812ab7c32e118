"""`ClassTable`: raw dataset label ids -> train ids, names, colours, as a 256-entry look-up.

Inside jaxseg a label is always a uint8 map of *train ids* 0..K-1 with 255 = ignore. Raw ids
that a table does not know map to the sentinel `UNKNOWN` (254) so that readers can reject them
with a clear error instead of silently training on garbage (the original code passed unknown
ids through unchanged). `ClassTable.from_json(path)` reads a user's table.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
import os
from typing import Any

import cv2
import numpy as np

IGNORE_INDEX = 255
# Value of `raw_to_train` for raw ids that are not in the table. Train ids must stay below it.
UNKNOWN = 254
MAX_CLASSES = UNKNOWN


class UnknownLabelIdError(ValueError):
  """A label map holds raw ids that its class table does not define."""

  def __init__(self, message: str, bad_ids: Sequence[int]):
    super().__init__(message)
    self.bad_ids = tuple(int(i) for i in bad_ids)


def _id_ranges(ids: np.ndarray) -> str:
  """Formats sorted ints compactly: [0,1,2,5,7,8] -> '0-2, 5, 7-8'."""
  ids = np.unique(np.asarray(ids, np.int64))
  if ids.size == 0:
    return "(none)"
  parts, start, prev = [], int(ids[0]), int(ids[0])
  for v in ids[1:].tolist() + [None]:
    if v is not None and v == prev + 1:
      prev = v
      continue
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    if v is not None:
      start = prev = v
  return ", ".join(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassTable:
  """Mapping of one dataset's raw label ids to train ids, plus class names and colours.

  Attributes:
    name: table name, e.g. 'cityscapes'.
    class_names: the K train-class names, index = train id.
    colors: (K, 3) uint8 RGB colour of each train class.
    raw_to_train: (256,) uint8 look-up table raw id -> train id, `ignore_index` for void ids,
      `UNKNOWN` for ids the dataset never uses.
    train_to_raw: (256,) uint8 look-up table train id -> raw id (for writing benchmark
      submissions); `ignore_index` maps to the dataset's first void raw id.
    ignore_index: train id of ignored pixels (255 everywhere in jaxseg).
  """
  name: str
  class_names: tuple[str, ...]
  colors: np.ndarray
  raw_to_train: np.ndarray
  train_to_raw: np.ndarray
  ignore_index: int = IGNORE_INDEX

  def __post_init__(self):
    k = len(self.class_names)
    if not 0 < k <= MAX_CLASSES:
      raise ValueError(f"class table {self.name!r}: {k} classes; expected 1..{MAX_CLASSES}")
    if not (k <= self.ignore_index <= 255 and self.ignore_index != UNKNOWN):
      raise ValueError(f"class table {self.name!r}: ignore_index {self.ignore_index} must be in "
                       f"[{k}, 255] and not {UNKNOWN}")
    colors = np.asarray(self.colors)
    if colors.shape != (k, 3):
      raise ValueError(f"class table {self.name!r}: colors has shape {colors.shape}; "
                       f"expected ({k}, 3)")
    for field in ("raw_to_train", "train_to_raw"):
      lut = np.asarray(getattr(self, field))
      if lut.shape != (256,):
        raise ValueError(f"class table {self.name!r}: {field} has shape {lut.shape}; "
                         f"expected (256,)")
    r2t = np.asarray(self.raw_to_train, np.int64)
    ok = (r2t < k) | (r2t == self.ignore_index) | (r2t == UNKNOWN)
    if not ok.all():
      raise ValueError(f"class table {self.name!r}: raw_to_train holds train ids "
                       f"{_id_ranges(r2t[~ok])}; expected 0..{k - 1}, {self.ignore_index} "
                       f"or {UNKNOWN} (unknown)")
    object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
    for field, value in (("colors", colors), ("raw_to_train", self.raw_to_train),
                         ("train_to_raw", self.train_to_raw)):
      arr = np.array(value, dtype=np.uint8)  # Own, read-only copies: tables are shared.
      arr.setflags(write=False)
      object.__setattr__(self, field, arr)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def known_raw_ids(self) -> np.ndarray:
    """Raw ids the table defines (classes and void), sorted."""
    return np.flatnonzero(self.raw_to_train != UNKNOWN)

  def to_train_ids(self, raw: np.ndarray, source: str = "label") -> np.ndarray:
    """Maps a raw id map (uint8 or wider ints) to uint8 train ids.

    Raises:
      UnknownLabelIdError: naming `source`, the offending ids and the valid raw ids.
    """
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
      if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{source}: label dtype {raw.dtype}; expected integer class ids")
      out_of_range = (raw < 0) | (raw > 255)
      if out_of_range.any():
        self._raise_unknown(np.unique(raw[out_of_range]), source)
      raw = raw.astype(np.uint8)
    if raw.size:  # cv2.LUT is ~5x faster than numpy indexing on large maps.
      flat = np.ascontiguousarray(raw).reshape(1, -1)
      train = cv2.LUT(flat, self.raw_to_train).reshape(raw.shape)
    else:
      train = raw.copy()
    unknown = train == UNKNOWN
    if np.count_nonzero(unknown):
      self._raise_unknown(np.unique(raw[unknown]), source)
    return train

  def _raise_unknown(self, bad: np.ndarray, source: str):
    shown = ", ".join(str(int(b)) for b in bad[:16]) + (" ..." if len(bad) > 16 else "")
    raise UnknownLabelIdError(
        f"{source}: label ids [{shown}] are not in the {self.name!r} class table; valid raw "
        f"ids are {_id_ranges(self.known_raw_ids)} (wrong dataset, or a colour/train-id "
        f"label file where raw ids were expected?)", bad)

  def to_raw_ids(self, train: np.ndarray) -> np.ndarray:
    """Maps train ids (e.g. predictions) back to the dataset's raw ids."""
    return self.train_to_raw[np.asarray(train, np.uint8)]

  def palette(self) -> np.ndarray:
    """(256, 3) uint8 RGB palette indexed by train id; ignore and unused ids are black."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:self.num_classes] = self.colors
    return pal

  def colorize(self, label: np.ndarray) -> np.ndarray:
    """Train-id map (H, W) -> RGB image (H, W, 3) uint8; ignored pixels are black."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
      raise ValueError(f"colorize expects integer train ids, got dtype {label.dtype}")
    return self.palette()[np.clip(label, 0, 255).astype(np.uint8)]

  def to_json_dict(self) -> dict[str, Any]:
    """The table in `from_json`'s format."""
    classes = []
    for t, (n, c) in enumerate(zip(self.class_names, self.colors.tolist())):
      classes.append({"name": n, "color": c,
                      "ids": np.flatnonzero(self.raw_to_train == t).tolist()})
    return {"name": self.name, "ignore_index": self.ignore_index, "classes": classes,
            "ignore_ids": np.flatnonzero(self.raw_to_train == self.ignore_index).tolist()}

  @classmethod
  def build(cls, name: str, class_names: Sequence[str], colors: Any,
            raw_to_train: Mapping[int, int], ignore_index: int = IGNORE_INDEX) -> ClassTable:
    """Builds a table from {raw id: train id or ignore_index}; other raw ids are unknown.

    `train_to_raw` takes, for each train id, the first raw id (in mapping order) that maps
    to it, as the Cityscapes scripts do.
    """
    r2t = np.full(256, UNKNOWN, np.int64)
    t2r = np.full(256, -1, np.int64)
    for raw, train in raw_to_train.items():
      if not 0 <= int(raw) <= 255:
        raise ValueError(f"class table {name!r}: raw id {raw} outside 0..255")
      r2t[int(raw)] = int(train)
      if 0 <= int(train) <= 255 and t2r[int(train)] < 0:
        t2r[int(train)] = int(raw)
    void = t2r[ignore_index] if t2r[ignore_index] >= 0 else ignore_index
    t2r[t2r < 0] = void
    return cls(name=name, class_names=tuple(class_names),
               colors=np.asarray(colors, np.int64).reshape(-1, 3),
               raw_to_train=r2t, train_to_raw=t2r, ignore_index=ignore_index)

  @classmethod
  def from_json(cls, path: str | os.PathLike[str]) -> ClassTable:
    """Reads a user class table (or a Mapillary `config.json`).

    Format::

      {"name": "my_data",                 # optional, default: file stem
       "ignore_index": 255,               # optional
       "classes": [{"name": "road", "color": [128, 64, 128], "ids": [7]},   # train id 0
                   {"name": "car",  "color": [0, 0, 142]}],                 # ids default [1]
       "ignore_ids": [0, 255]}            # raw ids mapped to ignore; default [ignore_index]

    A class's `ids` (or a single `id`) are the raw label values that map to it; by default
    the raw value is the class's position. Raw ids listed nowhere are rejected when read.
    """
    path = os.fspath(path)
    try:
      with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"class table JSON not found: {path}") from None
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"cannot parse class table JSON {path}: {e}") from None
    if isinstance(spec, dict) and "labels" in spec and "classes" not in spec:
      return table_from_mapillary_config(spec, source=path)
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
      raise ValueError(f'class table JSON {path}: expected an object with a "classes" list '
                       f'(see jaxseg.data.class_table.ClassTable.from_json)')
    ignore_index = int(spec.get("ignore_index", IGNORE_INDEX))
    mapping: dict[int, int] = {}
    names, colors = [], []
    for t, entry in enumerate(spec["classes"]):
      if not isinstance(entry, dict) or "name" not in entry or "color" not in entry:
        raise ValueError(f'class table JSON {path}: classes[{t}] needs "name" and "color"')
      names.append(entry["name"])
      colors.append(entry["color"])
      ids = entry.get("ids", [entry.get("id", t)])
      for raw in ids:
        if int(raw) in mapping:
          raise ValueError(f"class table JSON {path}: raw id {raw} is listed twice")
        mapping[int(raw)] = t
    for raw in spec.get("ignore_ids", [ignore_index]):
      if int(raw) in mapping:
        raise ValueError(f"class table JSON {path}: ignore id {raw} is also a class id")
      mapping[int(raw)] = ignore_index
    name = spec.get("name", os.path.splitext(os.path.basename(path))[0])
    try:
      return cls.build(name, names, colors, mapping, ignore_index)
    except ValueError as e:
      raise ValueError(f"class table JSON {path}: {e}") from None


def table_from_mapillary_config(config: Mapping[str, Any], source: str = "config.json",
                                name: str = "mapillary") -> ClassTable:
  """Mapillary Vistas `config.json` -> table: evaluated labels are classes, in file order.

  For v1.2 this gives the original's mapping: raw 0..64 -> train 0..64, raw 65 'Unlabeled'
  (evaluate: false) -> ignore.
  """
  labels = config.get("labels")
  if not isinstance(labels, list) or not labels:
    raise ValueError(f'{source}: expected a non-empty "labels" list')
  names, colors, mapping = [], [], {}
  for raw, lab in enumerate(labels):
    if lab.get("evaluate", True):
      mapping[raw] = len(names)
      names.append(lab.get("readable", lab.get("name", str(raw))))
      colors.append(lab["color"])
    else:
      mapping[raw] = IGNORE_INDEX
  return ClassTable.build(name, names, colors, mapping)


def identity_table(name: str, class_names: Sequence[str], colors: Any) -> ClassTable:
  """Table for labels that already hold train ids 0..K-1 and 255 (e.g. synthetic data)."""
  mapping = {i: i for i in range(len(class_names))}
  mapping[IGNORE_INDEX] = IGNORE_INDEX
  return ClassTable.build(name, class_names, colors, mapping)
