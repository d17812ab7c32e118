"""Several datasets trained as one, relabelled into a universal taxonomy (MSeg-style).

`data.name='multi'` concatenates the datasets of `data.multi.sources`, each with its own root
and options, and maps every label into the universal classes of `data.multi.taxonomy` when it
is read (a uint8 look-up table per dataset, from `<taxonomy>/<mapping>.tsv`, see
jaxseg/data/taxonomy.py). The result is an ordinary `SegmentationDataset`, so the
loader, the class-uniform sampler and the evaluator work unchanged::

  c.data.name = 'multi'
  c.data.multi.taxonomy = 'universal'          # built-in name or a folder path
  c.data.multi.sources = ml_collections.ConfigDict({
      'cityscapes': {'root': '/data/cityscapes'},
      'mapillary': {'root': '/data/mapillary', 'repeat': 0.5},
      'camvid': {'root': '/data/CamVid', 'repeat': 4.0},
  })

A source's fields override the parent data config for that dataset (any data field: root,
cv, camvid_layout, mapillary_version, voc_aug_source, ...), plus:

* `name`: the dataset (default: the source's key);
* `mapping`: the taxonomy mapping file (default: the dataset's class table name, e.g.
  'cityscapes', 'pascal_context60');
* `train_split` / `eval_split`: the source's splits used for the multi dataset's
  `data.train_split` / `data.eval_split` (defaults 'train' / 'val'; VOC e.g. 'train_aug');
* `repeat` (default 1.0): copies of the source per training epoch; a fractional part takes an
  evenly spaced subset (0.5 = every other image);
* `weight` (default 0 = unused): when every source sets one, source k fills the share
  weight_k / sum(weights) of a training epoch whose size is the total of the sources (MSeg
  samples its datasets in equal shares: equal weights).

Repeats and weights apply to the training split only; other splits hold each image once.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import logging
import math
from typing import Any, Callable

import cv2
import ml_collections
import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data import taxonomy as taxonomy_lib
from jaxseg.data.datasets import base

SOURCE_FIELDS = ("name", "mapping", "train_split", "eval_split", "repeat", "weight")


@dataclasses.dataclass(frozen=True)
class Part:
  """One source of a multi dataset."""
  key: str
  dataset: base.SegmentationDataset
  mapping: taxonomy_lib.DatasetMapping
  lut: np.ndarray  # (256,) uint8 dataset train id -> universal id
  indices: np.ndarray  # dataset indices in this split, repeats included


def repeat_indices(n: int, repeat: float) -> np.ndarray:
  """`floor(repeat)` copies of range(n) plus an evenly spaced subset for the fraction."""
  if repeat < 0 or not math.isfinite(repeat):
    raise ValueError(f"repeat={repeat}; expected a finite value >= 0")
  whole, frac = int(repeat), repeat - int(repeat)
  extra = int(round(frac * n))
  subset = (np.arange(extra, dtype=np.int64) * n) // max(extra, 1)
  return np.concatenate([np.tile(np.arange(n, dtype=np.int64), whole), subset])


def _source_cfgs(data_cfg: Any) -> dict[str, dict[str, Any]]:
  multi = base.cfg_get(data_cfg, "multi")
  sources = base.cfg_get(multi, "sources")
  if not sources:
    raise ValueError("data.name='multi' needs data.multi.sources: {key: {'root': ..., ...}}, "
                     "one entry per dataset")
  sources = sources.to_dict() if hasattr(sources, "to_dict") else dict(sources)
  parent = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
  allowed = (set(parent) - {"multi"}) | set(SOURCE_FIELDS)
  out = {}
  for key, src in sources.items():
    src = dict(src or {})
    unknown = sorted(set(src) - allowed)
    if unknown:
      raise ValueError(f"data.multi.sources.{key}: unknown field(s) {unknown}; expected data "
                       f"config fields or {SOURCE_FIELDS}")
    name = src.get("name") or key
    if name == "multi":
      raise ValueError(f"data.multi.sources.{key}: a multi dataset cannot contain another")
    cfg = {k: v for k, v in parent.items() if k != "multi"}
    cfg.update({k: v for k, v in src.items() if k not in SOURCE_FIELDS})
    cfg.update(name=name, train_split=src.get("train_split") or "train",
               eval_split=src.get("eval_split") or "val")
    out[key] = {"cfg": cfg, "mapping": src.get("mapping"),
                "repeat": float(src.get("repeat", 1.0) if src.get("repeat") is not None
                                else 1.0),
                "weight": float(src.get("weight") or 0.0)}
  return out


def _repeats(sizes: dict[str, int], specs: dict[str, dict[str, Any]]) -> dict[str, float]:
  weights = {k: s["weight"] for k, s in specs.items()}
  if not any(w > 0 for w in weights.values()):
    return {k: s["repeat"] for k, s in specs.items()}
  missing = [k for k, w in weights.items() if w <= 0]
  if missing:
    raise ValueError(f"data.multi.sources: weight is set for some sources but not for "
                     f"{missing}; give every source a weight > 0 (or use repeat)")
  total_w, total_n = sum(weights.values()), sum(sizes.values())
  return {k: weights[k] / total_w * total_n / max(sizes[k], 1) for k in specs}


def taxonomy_name(data_cfg: Any) -> str:
  return base.cfg_get(base.cfg_get(data_cfg, "multi"), "taxonomy", "universal")


def class_table(data_cfg: Any) -> table_lib.ClassTable:
  """The universal class table of data.multi.taxonomy."""
  return taxonomy_lib.load_taxonomy(taxonomy_name(data_cfg)).class_table()


class MultiDataset(base.SegmentationDataset):
  """Concatenated sources whose labels come back as universal ids."""

  def __init__(self, parts: Sequence[Part], table: table_lib.ClassTable, split: str, *,
               on_bad_input: str = "error"):
    self.parts = tuple(parts)
    owner = [np.full(len(p.indices), k, np.int64) for k, p in enumerate(self.parts)]
    self._owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    self._local = np.concatenate([p.indices for p in self.parts]).astype(np.int64)
    records = [p.dataset.records[int(i)] for p in self.parts for i in p.indices]
    super().__init__(records, table, split, on_bad_input=on_bad_input, name="multi")

  def source_of(self, index: int) -> tuple[str, int]:
    """(source key, index in that source's dataset) of sample `index`."""
    return self.parts[int(self._owner[index])].key, int(self._local[index])

  def read_label(self, index: int) -> np.ndarray:
    part = self.parts[int(self._owner[index])]
    label = part.dataset.read_label(int(self._local[index]))
    if label.size == 0:
      return label.copy()
    return cv2.LUT(np.ascontiguousarray(label), part.lut).reshape(label.shape)


def multi_dataset(data_cfg: Any, split: str,
                  get_dataset: Callable[[Any, str], Any]) -> MultiDataset:
  """The `split` of every source (built by `get_dataset`, the dataset registry's),
  relabelled into the universal taxonomy."""
  tax = taxonomy_lib.load_taxonomy(taxonomy_name(data_cfg))
  specs = _source_cfgs(data_cfg)
  training = split == base.cfg_get(data_cfg, "train_split", "train")
  evaluating = split == base.cfg_get(data_cfg, "eval_split", "val")
  built = {}
  for key, spec in specs.items():
    cfg = ml_collections.ConfigDict(spec["cfg"])
    sub_split = cfg.train_split if training else cfg.eval_split if evaluating else split
    try:
      ds = get_dataset(cfg, sub_split)
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(f"data.multi.sources.{key} ({cfg.name}, split {sub_split!r}): {e}") from e
    mapping = taxonomy_lib.load_mapping(tax, spec["mapping"] or ds.table.name,
                                        ds.table.class_names)
    if mapping.unrepresented:
      logging.info("multi: %s classes without a universal class (ignored): %s", key,
                   list(mapping.unrepresented))
    built[key] = (ds, mapping)
  repeats = (_repeats({k: len(d) for k, (d, _) in built.items()}, specs) if training
             else {k: 1.0 for k in built})
  parts = []
  for key, (ds, mapping) in built.items():
    indices = repeat_indices(len(ds), repeats[key])
    logging.info("multi/%s: %s %d images x %.3f = %d samples", split, key, len(ds),
                 repeats[key], len(indices))
    parts.append(Part(key, ds, mapping, mapping.train_lut(), indices))
  return MultiDataset(parts, tax.class_table(), split,
                      on_bad_input=base.cfg_get(data_cfg, "on_bad_input", "error"))


def spec(get_dataset: Callable[[Any, str], Any]) -> base.DatasetSpec:
  """The multi dataset's spec; its sources are built by the registry's `get_dataset`."""
  return base.DatasetSpec("multi", lambda data_cfg, split: multi_dataset(data_cfg, split,
                                                                         get_dataset),
                          class_table)
