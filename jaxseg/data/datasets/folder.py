"""User data: an image folder and a label folder matched by file stem, plus a class table.

Config keys: `image_dir`, `label_dir` (both may contain `{split}`, e.g. 'data/{split}/images';
relative paths are taken relative to `root` when it is set), `class_table` (path of a JSON table
in `ClassTable.from_json`'s format, or a built-in name: 'cityscapes', 'camvid', 'mapillary',
'kitti') and optionally `label_suffix` (label file = image stem + label_suffix + '.png'; default:
same stem). Without `label_dir` the images are unlabelled (inference, e.g. demo folders) and
their labels are all ignore.
"""
from __future__ import annotations

import os

from jaxseg.data import class_table as table_lib
from jaxseg.data.datasets import base
from jaxseg.data.datasets.tables import BUILTIN_TABLES
from jaxseg.data.datasets.tables import get_builtin_table

LAYOUT = """\
  <image_dir>/<name>.jpg|.png|...
  <label_dir>/<name>[<label_suffix>].png   (one class id per pixel, raw ids of the class table)"""


def class_table(spec: str | None) -> table_lib.ClassTable:
  """A table from a JSON path or a built-in table name."""
  if not spec:
    raise ValueError("data.class_table is empty; set it to a class table JSON file "
                     "(see ClassTable.from_json) or a built-in name "
                     f"{sorted(BUILTIN_TABLES)}")
  if spec in BUILTIN_TABLES:
    return get_builtin_table(spec)
  return table_lib.ClassTable.from_json(os.path.expanduser(spec))


def _resolve(root: str | None, path: str, split: str) -> str:
  path = os.path.expanduser(path.replace("{split}", split))
  return os.path.join(os.path.expanduser(root), path) if root and not os.path.isabs(path) else path


def make_records(image_dir: str, label_dir: str | None,
                 label_suffix: str = "") -> list[base.Record]:
  base.require_dir(image_dir, "image folder", LAYOUT)
  if not label_dir:
    records = [base.Record(os.path.join(image_dir, f), None, base.stem_key(f))
               for f in base.list_files(image_dir)]
  else:
    base.require_dir(label_dir, "label folder", LAYOUT)

    def label_key(name: str) -> str | None:
      stem = base.stem_key(name)
      if not label_suffix:
        return stem
      return stem[:-len(label_suffix)] if stem.endswith(label_suffix) else None

    records = base.pair_files(image_dir, label_dir, image_key=base.stem_key,
                              label_key=label_key, label_suffixes=(".png",),
                              expected_label=lambda f: base.stem_key(f) + label_suffix + ".png")
  if not records:
    raise FileNotFoundError(f"no images found in {image_dir}\nExpected layout:\n{LAYOUT}")
  return records


def folder_dataset(data_cfg, split: str) -> base.SegmentationDataset:
  """Folder dataset from a data config (root, image_dir, label_dir, class_table)."""
  root = base.cfg_get(data_cfg, "root") or None
  image_dir = base.cfg_get(data_cfg, "image_dir")
  if not image_dir:
    raise ValueError("data.image_dir is empty; the 'folder' dataset needs an image folder")
  label_dir = base.cfg_get(data_cfg, "label_dir") or None
  records = make_records(_resolve(root, image_dir, split),
                         _resolve(root, label_dir, split) if label_dir else None,
                         base.cfg_get(data_cfg, "label_suffix", ""))
  table = class_table(base.cfg_get(data_cfg, "class_table"))
  return base.SegmentationDataset(records, table, split,
                                  on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"),
                                  name=table.name)


SPEC = base.DatasetSpec("folder", folder_dataset,
                        lambda data_cfg: class_table(base.cfg_get(data_cfg, "class_table")))
