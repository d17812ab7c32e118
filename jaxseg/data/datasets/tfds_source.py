"""Optional TFDS source: Cityscapes prepared with `tensorflow_datasets` (ArrayRecord format).

Uses `tfds.data_source(...)`, TFDS's random-access, NumPy-only reader, so TensorFlow is never
imported; `tensorflow_datasets` and `array_record` are imported only when this source is used.
The dataset must have been prepared with `file_format='array_record'` (TFDS's Cityscapes needs
the manually downloaded zips). Config keys: `tfds_name` (default
'cityscapes/semantic_segmentation'), `tfds_data_dir` (default: TFDS's), `on_bad_input`.

TFDS's Cityscapes `segmentation_label` holds raw labelIds, mapped here through the Cityscapes
table like the folder reader does.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.datasets import base
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.data.datasets.image_io import BadInputError

DEFAULT_NAME = "cityscapes/semantic_segmentation"
# jaxseg split -> TFDS split.
SPLITS = {"train": "train", "val": "validation", "test": "test", "extra": "train_extra",
          "trainval": "train+validation"}
IMAGE_KEY, LABEL_KEY, ID_KEY = "image_left", "segmentation_label", "image_id"


def import_tfds() -> Any:
  """`tensorflow_datasets`, or ImportError saying how to install it."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "data.name='tfds' needs the optional packages tensorflow-datasets and array-record "
        "(pip install tensorflow-datasets array-record); TensorFlow itself is not needed. "
        f"Import failed: {e}") from None
  return tfds


class TfdsSegmentationDataset(base.SegmentationDataset):
  """`SegmentationDataset` over a TFDS random-access data source."""

  def __init__(self, source: Any, table: table_lib.ClassTable, split: str, tfds_name: str,
               *, on_bad_input: str = "error"):
    records = [base.Record(f"tfds:{tfds_name}/{split}[{i}]", f"tfds:{tfds_name}/{split}[{i}]",
                           f"{split}_{i:06d}") for i in range(len(source))]
    super().__init__(records, table, split, on_bad_input=on_bad_input, name=tfds_name)
    self.source = source

  def _element(self, index: int) -> dict[str, Any]:
    try:
      return self.source[index]
    except Exception as e:  # TFDS raises assorted errors for corrupt records.
      where = self.records[index].image_path
      raise BadInputError("unreadable", f"cannot read {where}: {e}", (where,)) from None

  def load(self, index: int) -> base.Sample:
    el = self._element(index)
    image = np.asarray(el[IMAGE_KEY], np.uint8)
    label = self.read_label(index, el)
    if label.shape != image.shape[:2]:
      where = self.records[index].image_path
      raise BadInputError("size_mismatch", f"{where}: image is {image.shape[:2]}, label is "
                          f"{label.shape}", (where,))
    name = el.get(ID_KEY, self.records[index].name)
    if isinstance(name, (bytes, np.bytes_)):
      name = name.decode("utf-8")
    return {"image": image, "label": label, "name": str(name)}

  def read_label(self, index: int, element: dict[str, Any] | None = None) -> np.ndarray:
    el = self._element(index) if element is None else element
    raw = np.asarray(el[LABEL_KEY])
    if raw.ndim == 3:
      raw = raw[..., 0]
    where = self.records[index].label_path
    try:
      return self.table.to_train_ids(raw, source=where)
    except table_lib.UnknownLabelIdError as e:
      raise BadInputError("unknown_label_id", str(e), (where,)) from None


def tfds_dataset(data_cfg, split: str) -> TfdsSegmentationDataset:
  """Cityscapes from TFDS (see module docstring)."""
  if split not in SPLITS:
    raise ValueError(f"unknown TFDS split {split!r}; expected one of {sorted(SPLITS)}")
  tfds = import_tfds()
  name = base.cfg_get(data_cfg, "tfds_name", DEFAULT_NAME)
  source = tfds.data_source(name, split=SPLITS[split],
                            data_dir=base.cfg_get(data_cfg, "tfds_data_dir") or None)
  return TfdsSegmentationDataset(source, cityscapes_table(), split, name,
                                 on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"))


SPEC = base.DatasetSpec("tfds", tfds_dataset, lambda data_cfg: cityscapes_table())
