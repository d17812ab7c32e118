"""Datasets in their native folder layouts, behind one random-access API.

`get_dataset(data_cfg, split)` returns a `SegmentationDataset`: `len(ds)`, and `ds[i]` ->
`{'image': uint8 (H, W, 3) RGB, 'label': uint8 (H, W) train ids with 255 = ignore,
'name': str}` (None for a bad sample when `on_bad_input='skip'`). `get_class_table(data_cfg)`
returns its `ClassTable` without listing any files.
"""
from __future__ import annotations

from typing import Any

from jaxseg.data import class_table as table_lib
from jaxseg.data.datasets import ade20k
from jaxseg.data.datasets import base
from jaxseg.data.datasets import camvid
from jaxseg.data.datasets import cityscapes
from jaxseg.data.datasets import folder
from jaxseg.data.datasets import kitti
from jaxseg.data.datasets import mapillary
from jaxseg.data.datasets import multi
from jaxseg.data.datasets import pascal_context
from jaxseg.data.datasets import synthetic_source
from jaxseg.data.datasets import tfds_source
from jaxseg.data.datasets import voc
from jaxseg.data.datasets.base import DatasetSpec
from jaxseg.data.datasets.base import Record
from jaxseg.data.datasets.base import SegmentationDataset
from jaxseg.data.datasets.image_io import BadInputError
from jaxseg.data.datasets.image_io import read_image
from jaxseg.data.datasets.image_io import read_label


def get_dataset(data_cfg: Any, split: str) -> SegmentationDataset:
  """The `split` of the dataset `data_cfg.name` (see the dataset modules for layouts)."""
  return get_spec(data_cfg).build(data_cfg, split)


def get_class_table(data_cfg: Any) -> table_lib.ClassTable:
  """The class table of `data_cfg`'s dataset, listing no files (Mapillary: from
  root/config.json if present; multi: the universal classes of data.multi.taxonomy)."""
  return get_spec(data_cfg).class_table(data_cfg)


# The one list of datasets: each module declares its own spec.
SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    synthetic_source.SPEC, camvid.SPEC, cityscapes.SPEC, mapillary.SPEC, kitti.SPEC,
    folder.SPEC, tfds_source.SPEC, ade20k.SPEC, voc.SPEC, pascal_context.SPEC,
    multi.spec(get_dataset))}
DATASET_NAMES = tuple(SPECS)


def get_spec(data_cfg: Any) -> DatasetSpec:
  """The spec of `data_cfg.name`; a one-line error lists the known names."""
  name = base.cfg_get(data_cfg, "name")
  if name not in SPECS:
    raise ValueError(f"unknown dataset data.name={name!r}; known datasets: "
                     f"{', '.join(DATASET_NAMES)}")
  return SPECS[name]


__all__ = ["BadInputError", "DATASET_NAMES", "DatasetSpec", "Record", "SPECS",
           "SegmentationDataset", "get_class_table", "get_dataset", "get_spec", "read_image",
           "read_label"]
