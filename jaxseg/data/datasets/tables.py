"""The built-in class tables by name (`data.class_table`, `Segmenter(dataset=...)`, the
pretrained catalog): each dataset module holds its own table; this is their index."""
from __future__ import annotations

import functools

from jaxseg.data.class_table import ClassTable
from jaxseg.data.datasets.ade20k import ade20k_table
from jaxseg.data.datasets.camvid import camvid_table
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.data.datasets.kitti import kitti_table
from jaxseg.data.datasets.mapillary import mapillary_table
from jaxseg.data.datasets.pascal_context import pascal_context_table
from jaxseg.data.datasets.voc import voc_table

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
