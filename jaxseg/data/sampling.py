"""Which samples each training epoch holds, as a pure function of (seed, epoch).

Plain training: every epoch is a permutation of the annotated samples.
Class-uniform training (`class_uniform_pct` > 0) follows the original
CityScapesUniform / CAMVID / Mapillary / KITTI datasets:

* the plain part draws from the fine samples, plus (Cityscapes only) the
  SDC-propagated ones; after `max_cu_epoch` the SDC samples leave the plain
  part (build_epoch(cut=True));
* the class-centred part draws from the centroids of the fine, SDC and
  boosted-coarse samples (coarse centroids only for `coarse_boost_classes`);
* the composed list is shuffled (the DataLoader's shuffle=True).

SDC-propagated samples are used only by class-uniform sampling, as in the
original (its plain datasets are built with maxSkip=0).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional, Sequence

import numpy as np

from jaxseg.data import uniform

_COARSE_SPLIT = "extra"  # Cityscapes split of the gtCoarse pairs.


class ConcatSource:
  """Random access over several datasets (the train split + boost coarse)."""

  def __init__(self, datasets: Sequence[Any]):
    self.datasets = tuple(datasets)
    self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
    self.records = tuple(r for d in self.datasets for r in d.records)
    self.table = self.datasets[0].table

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def _locate(self, i: int):
    k = int(np.searchsorted(self.offsets, i, side="right")) - 1
    return self.datasets[k], i - int(self.offsets[k])

  def __getitem__(self, i: int):
    d, j = self._locate(int(i))
    return d[j]

  def read_label(self, i: int) -> np.ndarray:
    d, j = self._locate(int(i))
    return d.read_label(j)


class _GroupReader:
  """Picklable read_label over a subset of a source's indices."""

  def __init__(self, source: Any, indices: np.ndarray):
    self.source = source
    self.indices = indices

  def __call__(self, i: int) -> np.ndarray:
    return self.source.read_label(int(self.indices[i]))


@dataclasses.dataclass
class SamplingPlan:
  """Epoch composition and step bookkeeping (see module docstring)."""
  source: Any
  seed: int
  global_batch: int
  num_classes: int
  class_uniform_pct: float
  max_cu_epoch: int
  plain: np.ndarray
  plain_cut: np.ndarray
  pools: dict[int, uniform.CentroidPool]
  pools_cut: dict[int, uniform.CentroidPool]
  _memo: dict[int, uniform.Epoch] = dataclasses.field(default_factory=dict,
                                                       repr=False)

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_memo"] = {}
    return state

  def is_cut(self, epoch: int) -> bool:
    # The original rebuilds with cut=True after finishing an epoch >=
    # max_cu_epoch, i.e. epochs > max_cu_epoch (0-based) are cut.
    return self.class_uniform_pct > 0 and epoch > self.max_cu_epoch

  def _parts(self, epoch: int):
    if self.is_cut(epoch):
      return self.plain_cut, self.pools_cut
    return self.plain, self.pools

  def epoch_size(self, epoch: int) -> int:
    plain, pools = self._parts(epoch)
    n = len(plain)
    if self.class_uniform_pct <= 0:
      return n
    per_class = int((n * self.class_uniform_pct) / self.num_classes)
    with_centroids = sum(1 for c in range(self.num_classes)
                         if c in pools and len(pools[c]) > 0)
    return n - per_class * self.num_classes + per_class * with_centroids

  def steps(self, epoch: int) -> int:
    return self.epoch_size(epoch) // self.global_batch

  def locate(self, step: int) -> tuple[int, int]:
    """Global step count since the start -> (epoch, step within the epoch)."""
    s0 = self.steps(0)
    if self.class_uniform_pct <= 0 or step < s0 * (self.max_cu_epoch + 1):
      return step // s0, step % s0
    step -= s0 * (self.max_cu_epoch + 1)
    s1 = self.steps(self.max_cu_epoch + 1)
    return self.max_cu_epoch + 1 + step // s1, step % s1

  def epoch(self, epoch: int) -> uniform.Epoch:
    """The shuffled sample list of `epoch` (memoised per process)."""
    ep = self._memo.get(epoch)
    if ep is None:
      rng = np.random.default_rng([self.seed, 0, epoch])
      plain, pools = self._parts(epoch)
      if self.class_uniform_pct > 0:
        ep = uniform.build_epoch(rng, plain, pools, self.num_classes,
                                 self.class_uniform_pct)
      else:
        ep = uniform.Epoch(np.asarray(plain, np.int64),
                           np.full((len(plain), 2), -1, np.int64),
                           np.full((len(plain),), -1, np.int64))
      order = rng.permutation(len(ep))
      ep = uniform.Epoch(ep.index[order], ep.centroid[order],
                         ep.class_id[order])
      if len(self._memo) >= 4:
        self._memo.pop(next(iter(self._memo)))
      self._memo[epoch] = ep
    return ep


def _cache_dir(data_cfg) -> str:
  if data_cfg.uniform_cache_dir:
    return os.path.expanduser(data_cfg.uniform_cache_dir)
  root = os.path.expanduser(data_cfg.root) if data_cfg.root else None
  if root and os.path.isdir(root) and os.access(root, os.W_OK):
    return root
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxseg", "uniform")


def _item_key(record, root: Optional[str]) -> tuple[str, str]:
  """(image, label) path as written in the cache: relative to root if below."""
  def rel(path):
    if root:
      r = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
      if not r.startswith(".."):
        return r
    return path
  return rel(record.image_path), rel(record.label_path)


def _group_pools(data_cfg, source, indices: np.ndarray, tag: str,
                 num_classes: int) -> dict[int, uniform.CentroidPool]:
  """Centroid pools (dataset indices) of `indices`, from or into the cache."""
  indices = np.asarray([i for i in indices
                        if source.records[i].label_path is not None], np.int64)
  if len(indices) == 0:
    return {}
  root = os.path.expanduser(data_cfg.root) if data_cfg.root else None
  items = [_item_key(source.records[i], root) for i in indices]
  reader = _GroupReader(source, indices)
  tile = int(data_cfg.class_uniform_tile)
  workers = int(data_cfg.uniform_num_workers)
  if data_cfg.name == "synthetic":  # Rendered, not read: nothing to cache.
    centroids = uniform.class_centroids_all(items, reader, num_classes, tile,
                                            num_workers=1)
  else:
    path = os.path.join(_cache_dir(data_cfg), f"{data_cfg.name}_{tag}_tile"
                        f"{tile}.json")
    centroids = uniform.load_or_compute_centroids(path, items, reader,
                                                  num_classes, tile, workers)
  key_to_index = {k: int(i) for k, i in zip(items, indices)}
  return uniform.centroid_pools(centroids, key_to_index, source=tag)


def make_plan(data_cfg, global_batch: int, seed: int,
              dataset: Any = None) -> SamplingPlan:
  """Lists the training split, computes/loads centroids, returns the plan."""
  if dataset is None:
    from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
    dataset = datasets.get_dataset(data_cfg, data_cfg.train_split)
  source = dataset
  kinds = np.asarray([r.kind for r in source.records])
  sdc = np.flatnonzero(kinds == "sdc")
  base_plain = np.flatnonzero(kinds != "sdc")
  num_classes = int(source.table.num_classes)
  pct = float(data_cfg.class_uniform_pct)
  split = f"{data_cfg.train_split}_cv{data_cfg.cv}"
  if pct <= 0:
    if len(sdc):
      logging.warning("%d SDC-propagated samples are not used without "
                      "class-uniform sampling (as in the original).", len(sdc))
    plan = SamplingPlan(source, int(seed), int(global_batch), num_classes, 0.0,
                        int(data_cfg.max_cu_epoch), base_plain, base_plain, {},
                        {})
  else:
    fine_pools = _group_pools(data_cfg, source, base_plain, split, num_classes)
    sdc_pools = _group_pools(data_cfg, source, sdc,
                             f"{split}_sdc{data_cfg.sdc_max_skip}", num_classes)
    boost = tuple(int(c) for c in data_cfg.coarse_boost_classes)
    boost_pools = {}
    if boost and not np.any(kinds == "coarse"):
      # Coarse pairs are not training items, only centroids of these classes.
      from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
      coarse = datasets.get_dataset(data_cfg, _COARSE_SPLIT)
      source = ConcatSource([dataset, coarse])
      off = len(dataset)
      coarse_pools = _group_pools(data_cfg, source, np.arange(len(coarse)) + off,
                                  "coarse", num_classes)
      boost_pools = {c: p for c, p in coarse_pools.items() if c in boost}
    elif boost:
      logging.info("coarse_boost_classes: coarse samples are training items "
                   "(include_coarse); their centroids count for every class.")
    plain = np.concatenate([base_plain, sdc]) if data_cfg.name == "cityscapes" \
        else base_plain
    pools = uniform.merge_pools(fine_pools, sdc_pools, boost_pools)
    plan = SamplingPlan(source, int(seed), int(global_batch), num_classes, pct,
                        int(data_cfg.max_cu_epoch), plain, base_plain, pools,
                        uniform.cut_pools(pools, fine_pools))
    for c in range(num_classes):
      logging.info("class-uniform: class %d has %d centroids", c,
                   len(pools[c]) if c in pools else 0)
  if plan.steps(0) <= 0 or plan.steps(plan.max_cu_epoch + 1) <= 0:
    raise ValueError(f"{data_cfg.name}/{data_cfg.train_split}: an epoch has "
                     f"{min(plan.epoch_size(0), plan.epoch_size(plan.max_cu_epoch + 1))}"
                     f" samples, fewer than the global batch size {global_batch}.")
  return plan
