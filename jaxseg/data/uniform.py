"""Class-uniform sampling (the original's datasets/uniform.py + CityScapesUniform).

Every label map is cut into `tile_size` x `tile_size` tiles (partial tiles at
the right/bottom are skipped). For every class present in a tile, the class's
centre of mass, in full-image pixels, is a *centroid*. An epoch then holds
`len(items)` samples: `int(len * pct / num_classes)` class-centred crops for
every class that has centroids (centroids drawn by a wrap-around shuffle),
and the rest plain images (a wrap-around shuffle of the items).

Centroids are cached as JSON in the original's format
({"class_id": [[image_fn, label_fn, [x, y], class_id], ...]}) with a sidecar
`<cache>.meta.json` holding a hash of the file list, tile size and class
count: a cache whose sidecar does not match is recomputed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import hashlib
import json
import logging
import multiprocessing.pool
import os
from typing import Any

import numpy as np
import tqdm

from jaxseg.runtime import files

Items = Sequence[tuple[str, str]]
# Centroid entry as the original writes it: [image_fn, label_fn, [x, y], cls].
CentroidDict = dict[int, list[list[Any]]]
_CACHE_VERSION = 1


def calc_tile_locations(tile_size: int,
                        image_hw: tuple[int, int]) -> list[tuple[int, int]]:
  """(x_offset, y_offset) of the whole tiles, row-major."""
  h, w = image_hw
  return [(x * tile_size, y * tile_size) for y in range(h // tile_size)
          for x in range(w // tile_size)]


def image_centroids(label: np.ndarray, tile_size: int,
                    num_classes: int) -> list[tuple[int, int, int]]:
  """(class_id, x, y) for every class present in every tile, tile-major.

  Matches `int(ndimage.center_of_mass(patch == c)) + offset`: the sums of the
  row/column indices are integers well below 2**53, so float64 holds them
  exactly and one division gives the same float as scipy.
  """
  out = []
  for x0, y0 in calc_tile_locations(tile_size, label.shape[:2]):
    patch = label[y0:y0 + tile_size, x0:x0 + tile_size]
    flat = patch.ravel()
    counts = np.bincount(flat, minlength=256)
    present = [c for c in range(num_classes) if counts[c]]
    if not present:
      continue
    rows = np.repeat(np.arange(patch.shape[0], dtype=np.float64),
                     patch.shape[1])
    cols = np.tile(np.arange(patch.shape[1], dtype=np.float64),
                   patch.shape[0])
    sum_y = np.bincount(flat, weights=rows, minlength=256)
    sum_x = np.bincount(flat, weights=cols, minlength=256)
    for c in present:
      n = float(counts[c])
      out.append((c, int(sum_x[c] / n) + x0, int(sum_y[c] / n) + y0))
  return out


def _centroids_job(args):
  """Pool worker: centroids of item `i` (read with `read_label`)."""
  read_label, i, tile_size, num_classes = args
  return image_centroids(read_label(i), tile_size, num_classes)


def class_centroids_all(items: Items, read_label: Callable[[int], np.ndarray],
                        num_classes: int, tile_size: int = 1024,
                        num_workers: int = 0,
                        desc: str = "pooled centroid extraction") -> CentroidDict:
  """Centroids of all items: {class: [[image_fn, label_fn, [x, y], class]]}.

  `read_label(i)` returns item i's label as train ids (255 = ignore). Keys
  appear in first-seen order and values in item then tile order, as the
  original's pooled extraction. Items are processed by a pool of
  `num_workers` threads (0 = one per core), like the original's
  multiprocessing.dummy pool: label decoding (OpenCV) dominates and releases
  the GIL, and threads need no picklable reader nor a `__main__` guard.
  """
  workers = num_workers if num_workers > 0 else (os.cpu_count() or 1)
  jobs = [(read_label, i, tile_size, num_classes) for i in range(len(items))]
  bar = tqdm.tqdm(total=len(items), desc=desc, leave=False,
                  disable=len(items) < 2)
  per_item = []
  if workers > 1 and len(items) > 1:
    with multiprocessing.pool.ThreadPool(min(workers, len(items))) as pool:
      for res in pool.imap(_centroids_job, jobs, chunksize=1):
        per_item.append(res)
        bar.update(1)
  else:
    for job in jobs:
      per_item.append(_centroids_job(job))
      bar.update(1)
  bar.close()
  centroids: CentroidDict = {}
  for (image_fn, label_fn), res in zip(items, per_item):
    for c, x, y in res:
      centroids.setdefault(c, []).append([image_fn, label_fn, [x, y], c])
  return centroids


# ------------------------------------------------------------------- cache --
def items_digest(items: Items, tile_size: int, num_classes: int) -> str:
  """Hash of the file list and the settings that determine the centroids."""
  h = hashlib.sha256()
  h.update(f"v{_CACHE_VERSION}|tile={tile_size}|classes={num_classes}|"
           f"n={len(items)}\n".encode())
  for image_fn, label_fn in items:
    h.update(f"{image_fn}\0{label_fn}\n".encode())
  return h.hexdigest()


def load_or_compute_centroids(cache_path: str, items: Items,
                              read_label: Callable[[int], np.ndarray],
                              num_classes: int, tile_size: int,
                              num_workers: int = 0) -> CentroidDict:
  """Centroids from `cache_path` when its sidecar matches, else computed.

  A fresh computation is written to `cache_path` (json.dump(..., indent=4)
  as the original) and its sidecar `cache_path + '.meta.json'`. Returns the
  dict with int keys, as the original reloads it.
  """
  meta_path = cache_path + ".meta.json"
  digest = items_digest(items, tile_size, num_classes)
  if os.path.isfile(cache_path) and os.path.isfile(meta_path):
    try:
      with open(meta_path) as f:
        meta = json.load(f)
      if meta.get("items_sha256") == digest:
        with open(cache_path) as f:
          raw = json.load(f)
        logging.info("Class-uniform centroids: reusing %s", cache_path)
        return {int(k): v for k, v in raw.items()}
      logging.info("Class-uniform centroids: %s is stale (file list changed); "
                   "recomputing.", cache_path)
    except (OSError, ValueError) as e:
      logging.warning("Class-uniform centroids: cannot reuse %s (%s); "
                      "recomputing.", cache_path, e)
  centroids = class_centroids_all(items, read_label, num_classes, tile_size,
                                  num_workers)
  try:
    files.atomic_write_json(cache_path, {str(k): v for k, v in centroids.items()},
                       indent=4)
    files.atomic_write_json(meta_path, {"items_sha256": digest,
                                   "tile_size": tile_size,
                                   "num_classes": num_classes,
                                   "num_items": len(items),
                                   "version": _CACHE_VERSION}, indent=1)
    logging.info("Class-uniform centroids written to %s", cache_path)
  except OSError as e:
    logging.warning("Class-uniform centroids: cannot write cache %s (%s).",
                    cache_path, e)
  return centroids


# ------------------------------------------------------------------- epoch --
@dataclasses.dataclass(frozen=True)
class CentroidPool:
  """Centroids of one class as arrays: item index, x, y (int64)."""
  index: np.ndarray
  xy: np.ndarray  # (n, 2)

  def __len__(self) -> int:
    return len(self.index)


def centroid_pools(centroids: Mapping[int, Sequence[Sequence[Any]]],
                   item_index: Mapping[tuple[str, str], int],
                   source: str = "centroid cache") -> dict[int, CentroidPool]:
  """Turns JSON centroid entries into arrays of dataset indices."""
  pools = {}
  for c, entries in centroids.items():
    idx, xy = [], []
    for image_fn, label_fn, (x, y), _ in entries:
      key = (image_fn, label_fn)
      if key not in item_index:
        raise ValueError(f"{source}: centroid of class {c} refers to "
                         f"{image_fn} / {label_fn}, which is not in the "
                         "dataset (stale cache? delete it to recompute).")
      idx.append(item_index[key])
      xy.append((x, y))
    pools[int(c)] = CentroidPool(np.asarray(idx, np.int64),
                                 np.asarray(xy, np.int64).reshape(-1, 2))
  return pools


def merge_pools(*pool_dicts: Mapping[int, CentroidPool]) -> dict[int, CentroidPool]:
  """Concatenates per-class pools (in argument order)."""
  out: dict[int, CentroidPool] = {}
  for pools in pool_dicts:
    for c, p in pools.items():
      if c in out:
        out[c] = CentroidPool(np.concatenate([out[c].index, p.index]),
                              np.concatenate([out[c].xy, p.xy]))
      else:
        out[c] = p
  return out


@dataclasses.dataclass(frozen=True)
class Epoch:
  """One epoch's samples: dataset index, centroid (-1, -1 if none), class."""
  index: np.ndarray  # (n,) int64
  centroid: np.ndarray  # (n, 2) int64
  class_id: np.ndarray  # (n,) int64, -1 for plain samples

  def __len__(self) -> int:
    return len(self.index)


def _wrap_sample(rng: np.random.Generator, n: int, num: int) -> np.ndarray:
  """random_sampling: a shuffle of range(n) taken `num` times with wrap."""
  if num <= 0:
    return np.zeros((0,), np.int64)
  if n == 0:
    raise ValueError("class-uniform sampling: cannot draw from an empty list")
  perm = rng.permutation(n)
  return perm[np.arange(num) % n]


def build_epoch(rng: np.random.Generator, items: np.ndarray,
                pools: Mapping[int, CentroidPool], num_classes: int,
                class_uniform_pct: float) -> Epoch:
  """The original build_epoch: rest-uniform items, then each class's share.

  `items` are the dataset indices of the plain part (len(items) = epoch
  size). Classes without centroids get nothing, so the epoch is shorter by
  their share, as in the original. Not shuffled (the loader shuffles).
  """
  n = len(items)
  per_class = int((n * class_uniform_pct) / num_classes)
  num_rand = n - per_class * num_classes
  parts_i = [np.asarray(items, np.int64)[_wrap_sample(rng, n, num_rand)]]
  parts_xy = [np.full((num_rand, 2), -1, np.int64)]
  parts_c = [np.full((num_rand,), -1, np.int64)]
  for c in range(num_classes):
    pool = pools.get(c)
    if pool is None or len(pool) == 0 or per_class == 0:
      continue
    sel = _wrap_sample(rng, len(pool), per_class)
    parts_i.append(pool.index[sel])
    parts_xy.append(pool.xy[sel])
    parts_c.append(np.full((per_class,), c, np.int64))
  return Epoch(np.concatenate(parts_i), np.concatenate(parts_xy),
               np.concatenate(parts_c))


def cut_pools(pools: Mapping[int, CentroidPool],
              fine_pools: Mapping[int, CentroidPool]) -> dict[int, CentroidPool]:
  """The pools the original uses after `max_cu_epoch` (build_epoch(cut=True)).

  The original passes `fine_centroids = centroids.copy()`, a shallow copy made
  before the SDC/coarse centroids are appended to the *shared* per-class
  lists, so after the cut each class keeps its full pool, and only classes
  with no fine centroid lose theirs. Only the plain part becomes fine-only.
  """
  return {c: p for c, p in pools.items()
          if c in fine_pools and len(fine_pools[c]) > 0}


def class_counts(epoch: Epoch, num_classes: int) -> np.ndarray:
  """Number of class-centred samples per class (for logging and tests)."""
  sel = epoch.class_id >= 0
  return np.bincount(epoch.class_id[sel], minlength=num_classes)
