"""Random-access segmentation datasets over (image, label) file pairs.

A dataset is a list of `Record`s plus a `ClassTable`. `ds[i]` reads one pair and returns
`{'image': uint8 (H, W, 3) RGB, 'label': uint8 (H, W) train ids, 255 = ignore, 'name': str}`.
Augmentation, resizing and batching are the loader's job (jaxseg.data.loader).

Bad inputs (unreadable or truncated files, image/label size mismatch, label ids outside the
class table) raise `BadInputError` naming the file(s) when `on_bad_input='error'`; with
`'skip'` the sample comes back as `None`, a warning is logged once per file, and
`bad_input_counts` counts them per kind so the loader can report at the end of an epoch.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
import dataclasses
import logging
import os
import threading
from typing import Any

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.datasets import image_io
from jaxseg.data.datasets.image_io import BadInputError

Sample = dict[str, Any]
ON_BAD_INPUT = ("error", "skip")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Everything jaxseg knows of one dataset, declared once in the dataset's own module (the
  idea of mmseg's METAINFO): how to build a split, its class table, and protocol metadata.
  jaxseg/data/datasets/__init__.py lists the specs; nothing else registers a dataset."""
  name: str  # config.data.name
  build: Callable[[Any, str], "SegmentationDataset"]  # (data_cfg, split) -> the split
  class_table: Callable[[Any], table_lib.ClassTable]  # (data_cfg) -> table; lists no files
  semseg_base_size: int = 0  # hszhao/semseg TEST.base_size (eval preset 'semseg'); 0: none


@dataclasses.dataclass(frozen=True)
class Record:
  """One sample's files.

  Attributes:
    image_path: path of the RGB image.
    label_path: path of the raw-id label map, or None (unlabelled test images; the sample's
      label is then all ignore).
    name: sample name (image file name without extension, as in the original code).
    kind: where the pair comes from: 'fine' (annotated), 'coarse' (Cityscapes gtCoarse) or
      'sdc' (SDCNet-propagated). Class-uniform sampling treats these groups separately.
  """
  image_path: str
  label_path: str | None
  name: str
  kind: str = "fine"


class SegmentationDataset:
  """Random-access dataset over `records`, mapping raw label ids through `table`."""

  def __init__(self, records: Sequence[Record], table: table_lib.ClassTable, split: str, *,
               on_bad_input: str = "error", name: str = ""):
    if on_bad_input not in ON_BAD_INPUT:
      raise ValueError(f"on_bad_input={on_bad_input!r}; expected one of {ON_BAD_INPUT}")
    self.records: tuple[Record, ...] = tuple(records)
    self.table = table
    self.split = split
    self.on_bad_input = on_bad_input
    self.name = name or table.name
    self._bad_counts: collections.Counter[str] = collections.Counter()
    self._warned: set[str] = set()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.records)

  def __repr__(self) -> str:
    kinds = collections.Counter(r.kind for r in self.records)
    return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"size={len(self)}, kinds={dict(kinds)}, classes={self.table.num_classes})")

  # Locks cannot be pickled; grain worker processes get a dataset copy with fresh counters.
  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  @property
  def bad_input_counts(self) -> dict[str, int]:
    """Samples skipped so far (on_bad_input='skip'), per kind of problem."""
    with self._lock:
      return dict(self._bad_counts)

  def reset_bad_input_counts(self) -> None:
    with self._lock:
      self._bad_counts.clear()

  def indices_of_kind(self, kind: str) -> np.ndarray:
    """Indices of the records whose `kind` is `kind` ('fine', 'coarse', 'sdc')."""
    return np.array([i for i, r in enumerate(self.records) if r.kind == kind], np.int64)

  def __getitem__(self, index: int) -> Sample | None:
    """Reads sample `index`; None when it is bad and on_bad_input='skip'."""
    try:
      return self.load(int(index))
    except BadInputError as e:
      if self.on_bad_input == "error":
        raise
      with self._lock:
        self._bad_counts[e.kind] += 1
        first = str(e) not in self._warned
        self._warned.add(str(e))
      if first:
        logging.warning("Skipping bad sample %d of %s/%s: %s", index, self.name, self.split, e)
      return None

  def load(self, index: int) -> Sample:
    """Reads sample `index`, raising BadInputError on bad input whatever on_bad_input says."""
    rec = self.records[index]
    image = image_io.read_image(rec.image_path)
    if rec.label_path is None:
      label = np.full(image.shape[:2], self.table.ignore_index, np.uint8)
    else:
      label = self.read_label(index)
      if label.shape != image.shape[:2]:
        raise BadInputError(
            "size_mismatch", f"image {rec.image_path} is {_hw(image.shape)} but its label "
            f"{rec.label_path} is {_hw(label.shape)}", (rec.image_path, rec.label_path))
    return {"image": image, "label": label, "name": rec.name}

  def read_label(self, index: int) -> np.ndarray:
    """Only the label of sample `index`, as uint8 train ids (e.g. for class centroids)."""
    rec = self.records[index]
    if rec.label_path is None:
      raise ValueError(f"sample {index} ({rec.image_path}) has no label file")
    raw = image_io.read_label(rec.label_path)
    try:
      return self.table.to_train_ids(raw, source=rec.label_path)
    except table_lib.UnknownLabelIdError as e:
      raise BadInputError("unknown_label_id", str(e), (rec.label_path,)) from None


def _hw(shape: Sequence[int]) -> str:
  return f"{shape[1]}x{shape[0]} (WxH)"


# ----------------------------------------------------------------------------------------------
# Listing helpers shared by the dataset modules.
# ----------------------------------------------------------------------------------------------


def require_dir(path: str, what: str, layout: str) -> str:
  """Returns `path` if it is a directory, else FileNotFoundError naming it and the layout."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{what} not found: {path}\nExpected layout:\n{layout.rstrip()}")
  return path


def require_records(records: list[Record], dataset: str, split: str, root: str,
                    layout: str) -> list[Record]:
  """Returns `records` if not empty, else FileNotFoundError naming the split, root and layout."""
  if not records:
    raise FileNotFoundError(f"no {dataset} images for split {split!r} under {root}\n"
                            f"Expected layout:\n{layout.rstrip()}")
  return records


def first_existing_dir(candidates: Iterable[str], what: str, layout: str) -> str:
  """The first directory of `candidates` that exists, else FileNotFoundError listing all."""
  candidates = list(candidates)
  for c in candidates:
    if os.path.isdir(c):
      return c
  tried = "\n".join(f"  {c}" for c in candidates)
  raise FileNotFoundError(f"{what} not found; looked for:\n{tried}\n"
                          f"Expected layout:\n{layout.rstrip()}")


def list_files(directory: str, suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
  """Sorted names of the files in `directory` whose lower-cased name ends with a suffix."""
  suffixes = tuple(s.lower() for s in suffixes)
  return sorted(f for f in os.listdir(directory)
                if f.lower().endswith(suffixes) and not f.startswith(".")
                and os.path.isfile(os.path.join(directory, f)))


def list_subdirs(directory: str) -> list[str]:
  return sorted(d for d in os.listdir(directory)
                if not d.startswith(".") and os.path.isdir(os.path.join(directory, d)))


def pair_files(image_dir: str, label_dir: str, *,
               image_key: Callable[[str], str | None],
               label_key: Callable[[str], str | None],
               label_suffixes: Sequence[str] = (".png",),
               expected_label: Callable[[str], str] | None = None,
               require_labels: bool = True,
               kind: str = "fine") -> list[Record]:
  """Pairs the images of `image_dir` with the labels of `label_dir` by a shared key.

  `image_key`/`label_key` map a file name to its key (None: not a sample file, skipped).
  An image whose key has no label (or the reverse) raises FileNotFoundError naming the
  file(s) and, when `expected_label` is given, the label file name that was expected.
  With `require_labels=False`, unlabelled images get `label_path=None` and `label_dir` may
  be missing.
  """
  images: dict[str, str] = {}
  for f in list_files(image_dir):
    key = image_key(f)
    if key is None:
      continue
    if key in images:
      raise ValueError(f"two images for sample {key!r} in {image_dir}: {images[key]} and {f}")
    images[key] = f
  labels: dict[str, str] = {}
  if os.path.isdir(label_dir):
    for f in list_files(label_dir, label_suffixes):
      key = label_key(f)
      if key is None:
        continue
      if key in labels:
        raise ValueError(f"two labels for sample {key!r} in {label_dir}: {labels[key]} and {f}")
      labels[key] = f
  elif require_labels:
    raise FileNotFoundError(f"label folder not found: {label_dir} (for images in {image_dir})")
  no_label = sorted(set(images) - set(labels))
  no_image = sorted(set(labels) - set(images))
  if require_labels and no_label:
    shown = [os.path.join(image_dir, images[k]) for k in no_label[:5]]
    hint = (f"; expected e.g. {os.path.join(label_dir, expected_label(images[no_label[0]]))}"
            if expected_label else "")
    raise FileNotFoundError(f"{len(no_label)} image(s) without a label in {label_dir}: "
                            f"{_join(shown, len(no_label))}{hint}")
  if no_image:
    shown = [os.path.join(label_dir, labels[k]) for k in no_image[:5]]
    raise FileNotFoundError(f"{len(no_image)} label(s) without an image in {image_dir}: "
                            f"{_join(shown, len(no_image))}")
  return [Record(os.path.join(image_dir, images[k]),
                 os.path.join(label_dir, labels[k]) if k in labels else None,
                 image_io.file_stem(images[k]), kind)
          for k in sorted(images)]


def _join(items: Sequence[str], total: int) -> str:
  return ", ".join(items) + (f" ... (+{total - len(items)} more)" if total > len(items) else "")


def strip_suffix(suffix: str) -> Callable[[str], str | None]:
  """Key function: 'x<suffix>' -> 'x' (case-insensitive), other names -> None."""
  low = suffix.lower()

  def key(name: str) -> str | None:
    return name[:-len(suffix)] if name.lower().endswith(low) else None
  return key


def stem_key(name: str) -> str:
  """Key function: file name without its extension."""
  return os.path.splitext(name)[0]


def config_root(data_cfg: Any, expected: str) -> str:
  """`data.root` with `~` expanded; ValueError saying what it should be when it is empty.

  `expected` completes 'set it to the ...', e.g. 'CamVid folder containing train/ and
  trainannot/'.
  """
  root = cfg_get(data_cfg, "root")
  if not root:
    raise ValueError(f"data.root is empty; set it to the {expected}")
  return os.path.expanduser(root)


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
  """`cfg.key` for ConfigDicts, dicts and plain objects; `default` when absent or None."""
  if cfg is None:
    return default
  if isinstance(cfg, dict) or hasattr(cfg, "get"):
    try:
      value = cfg.get(key, default)
    except (KeyError, AttributeError):
      value = default
  else:
    value = getattr(cfg, key, default)
  return default if value is None else value
