"""Datasets in their native folder layouts, behind one random-access API.

`get_dataset(data_cfg, split)` returns a `SegmentationDataset`: `len(ds)`, and `ds[i]` ->
`{'image': uint8 (H, W, 3) RGB, 'label': uint8 (H, W) train ids with 255 = ignore,
'name': str}` (None for a bad sample when `on_bad_input='skip'`). `get_class_table(data_cfg)`
returns its `ClassTable` without listing any files.
"""
from __future__ import annotations

from collections.abc import Callable
import os
from typing import Any

from jaxseg.data import class_table as table_lib
from jaxseg.data import labels as labels_lib
from jaxseg.data.datasets import (
  ade20k,
  base,
  camvid,
  cityscapes,
  folder,
  kitti,
  mapillary,
  multi,
  pascal_context,
  synthetic_source,
  tfds_source,
  voc,
)
from jaxseg.data.datasets.base import Record, SegmentationDataset
from jaxseg.data.datasets.image_io import BadInputError, read_image, read_label

_BUILDERS: dict[str, Callable[[Any, str], SegmentationDataset]] = {
    "synthetic": synthetic_source.synthetic_dataset,
    "camvid": camvid.camvid_dataset,
    "cityscapes": cityscapes.cityscapes_dataset,
    "mapillary": mapillary.mapillary_dataset,
    "kitti": kitti.kitti_dataset,
    "folder": folder.folder_dataset,
    "tfds": tfds_source.tfds_dataset,
    "ade20k": ade20k.ade20k_dataset,
    "voc": voc.voc_dataset,
    "pascal_context": pascal_context.pascal_context_dataset,
    "multi": lambda data_cfg, split: multi.multi_dataset(data_cfg, split, get_dataset),
}
DATASET_NAMES = tuple(_BUILDERS)


def _name(data_cfg: Any) -> str:
  name = base.cfg_get(data_cfg, "name")
  if name not in _BUILDERS:
    raise ValueError(f'unknown dataset data.name={name!r}; known datasets: '
                     f'{", ".join(DATASET_NAMES)}')
  return name


def get_dataset(data_cfg: Any, split: str) -> SegmentationDataset:
  """The `split` of the dataset `data_cfg.name` (see the dataset modules for layouts)."""
  return _BUILDERS[_name(data_cfg)](data_cfg, split)


def get_class_table(data_cfg: Any) -> table_lib.ClassTable:
  """The class table of `data_cfg`'s dataset (Mapillary: from root/config.json if present;
  multi: the universal classes of data.multi.taxonomy)."""
  name = _name(data_cfg)
  if name in ("cityscapes", "tfds"):
    return labels_lib.cityscapes_table()
  if name == "kitti":
    return labels_lib.kitti_table()
  if name == "camvid":
    return labels_lib.camvid_table()
  if name == "mapillary":
    root = base.cfg_get(data_cfg, "root")
    return mapillary.class_table(os.path.expanduser(root) if root else None,
                                 base.cfg_get(data_cfg, "mapillary_version", "v1.2"))
  if name == "folder":
    return folder.class_table(base.cfg_get(data_cfg, "class_table"))
  if name == "ade20k":
    return labels_lib.ade20k_table()
  if name == "voc":
    return labels_lib.voc_table()
  if name == "pascal_context":
    return pascal_context.class_table(base.cfg_get(data_cfg, "pascal_context_classes", 59))
  if name == "multi":
    return multi.class_table(data_cfg)
  return synthetic_source.class_table()


__all__ = ["BadInputError", "DATASET_NAMES", "Record", "SegmentationDataset", "get_class_table",
           "get_dataset", "read_image", "read_label"]
