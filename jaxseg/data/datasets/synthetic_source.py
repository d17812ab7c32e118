"""The procedural street-scene dataset (jaxseg.data.synthetic) as a dataset.

No files: every sample is rendered from (seed, index). Config keys `synthetic.num_train`,
`synthetic.num_val`, `synthetic.height`, `synthetic.width`, `synthetic.seed`. The 'val' split
(also used for 'test') is rendered from seed `seed + num_train` so that, whichever way the
renderer derives per-image seeds from (seed, index) (sequential or hashed), it does not repeat
training scenes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets import base
from jaxseg.data.datasets.image_io import BadInputError

SPLITS = ("train", "val", "test")


def _module() -> Any:
  from jaxseg.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic


def class_table() -> table_lib.ClassTable:
  """The synthetic classes; labels already hold train ids and 255."""
  syn = _module()
  return identity_table("synthetic", syn.CLASS_NAMES, syn.CLASS_COLORS)


class SyntheticDataset(base.SegmentationDataset):
  """`SegmentationDataset` over a `SyntheticStreetScenes` source."""

  def __init__(self, source: Any, split: str, *, on_bad_input: str = "error"):
    records = [base.Record(f"synthetic:{split}[{i}]", f"synthetic:{split}[{i}]",
                           f"synthetic_{split}_{i:06d}") for i in range(len(source))]
    super().__init__(records, class_table(), split, on_bad_input=on_bad_input,
                     name="synthetic")
    self.source = source

  def load(self, index: int) -> base.Sample:
    sample = self.source[index]
    image = np.asarray(sample["image"])
    where = self.records[index].image_path
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise BadInputError("unreadable", f"{where}: image {image.dtype}{image.shape}; expected "
                          f"uint8 (H, W, 3)", (where,))
    label = self._to_train_ids(sample["label"], where)
    if label.shape != image.shape[:2]:
      raise BadInputError("size_mismatch", f"{where}: image {image.shape[:2]} vs label "
                          f"{label.shape}", (where,))
    return {"image": image, "label": label, "name": str(sample.get("name", where))}

  def read_label(self, index: int) -> np.ndarray:
    return self._to_train_ids(self.source[index]["label"], self.records[index].label_path)

  def _to_train_ids(self, label: Any, where: str) -> np.ndarray:
    try:
      return self.table.to_train_ids(np.asarray(label), source=where)
    except table_lib.UnknownLabelIdError as e:
      raise BadInputError("unknown_label_id", str(e), (where,)) from None


def synthetic_dataset(data_cfg, split: str) -> SyntheticDataset:
  """The synthetic dataset of `split` ('train', 'val'; 'test' = 'val')."""
  if split not in SPLITS:
    raise ValueError(f"unknown synthetic split {split!r}; expected one of {SPLITS}")
  syn_cfg = base.cfg_get(data_cfg, "synthetic")
  num_train = int(base.cfg_get(syn_cfg, "num_train", 16))
  num_val = int(base.cfg_get(syn_cfg, "num_val", 4))
  seed = int(base.cfg_get(syn_cfg, "seed", 0))
  source_cls = getattr(_module(), "SyntheticStreetScenes", None)
  if source_cls is None:
    raise ImportError("jaxseg.data.synthetic has no SyntheticStreetScenes")
  source = source_cls(num_train if split == "train" else num_val,
                      int(base.cfg_get(syn_cfg, "height", 64)),
                      int(base.cfg_get(syn_cfg, "width", 128)),
                      seed if split == "train" else seed + num_train)
  return SyntheticDataset(source, split,
                          on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"))


SPEC = base.DatasetSpec("synthetic", synthetic_dataset, lambda data_cfg: class_table())
