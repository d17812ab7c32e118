"""Class weights from the training labels' class frequencies (`config.loss.class_weights`).

  ''                   no class weights
  'inverse_log'        ENet (Paszke et al. 2016): w_c = 1 / ln(1.02 + p_c), p_c the share of
                       class c among all labelled training pixels
  'median_frequency'   SegNet (Badrinarayanan et al. 2017; Eigen & Fergus 2015):
                       f_c = pixels of c / labelled pixels of the images that contain c,
                       w_c = median(f) / f_c
  'inverse_sqrt'       w_c = 1 / sqrt(p_c), scaled to mean 1 over the classes present
  '1.0,2.5,...'        explicit weights, one per class

Classes that never occur get weight 0 where the formula is undefined (median_frequency,
inverse_sqrt); they never contribute to a loss anyway. The frequencies are counted once over
the training split (a tqdm bar) and cached as JSON next to the data (`data.root`), or under
~/.cache/jaxseg/class_frequency when there is no root or it is read-only; the cache key covers
the dataset, split, label files, class count and ignore id. `loss.class_frequency_file` names
the cache file explicitly.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import pathlib
from typing import Any

import numpy as np

from jaxseg.runtime import files

FREQUENCY_MODES = ("inverse_log", "median_frequency", "inverse_sqrt")
ENET_C = 1.02
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ClassFrequency:
  """Label statistics of a training split.

  counts: (C,) labelled pixels of each class.
  image_pixels: (C,) labelled pixels of the images that contain the class (SegNet's
    median-frequency denominator).
  num_images: labels counted.
  """
  counts: np.ndarray
  image_pixels: np.ndarray
  num_images: int

  def to_json(self) -> dict[str, Any]:
    return {"counts": [int(c) for c in self.counts],
            "image_pixels": [int(c) for c in self.image_pixels],
            "num_images": int(self.num_images)}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "ClassFrequency":
    return cls(np.asarray(d["counts"], np.int64), np.asarray(d["image_pixels"], np.int64),
               int(d["num_images"]))


def class_weights_from_histogram(counts: np.ndarray, mode: str, *,
                                 image_pixels: np.ndarray | None = None,
                                 enet_c: float = ENET_C) -> np.ndarray:
  """(C,) float32 class weights from per-class pixel `counts` (see the module docstring).

  `image_pixels` (median_frequency only): labelled pixels of the images containing each class;
  without it the denominator is all labelled pixels (f_c = p_c, the common simplification).
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or np.any(counts < 0):
    raise ValueError(f"class histogram must be a 1-D array of counts >= 0, got {counts}")
  total = counts.sum()
  if total <= 0:
    raise ValueError("class histogram is empty: no labelled pixels were counted")
  p = counts / total
  present = counts > 0
  if mode == "inverse_log":
    w = 1.0 / np.log(enet_c + p)
  elif mode == "median_frequency":
    denom = np.full_like(counts, total) if image_pixels is None else np.asarray(
        image_pixels, np.float64)
    freq = np.where(present, counts / np.where(denom > 0, denom, 1.0), 0.0)
    w = np.where(present, np.median(freq[present]) / np.where(present, freq, 1.0), 0.0)
  elif mode == "inverse_sqrt":
    w = np.where(present, 1.0 / np.sqrt(np.where(present, p, 1.0)), 0.0)
    w = w / w[present].mean()
  else:
    raise ValueError(f"class weight mode {mode!r}: expected one of {FREQUENCY_MODES}")
  return w.astype(np.float32)


def parse_class_weight_list(spec: str, num_classes: int) -> np.ndarray:
  """Explicit `loss.class_weights` '1.0,2.5,...' -> (C,) float32, checked."""
  try:
    w = np.asarray([float(v) for v in str(spec).split(",") if v.strip()], np.float32)
  except ValueError:
    raise ValueError(f"loss.class_weights={spec!r}: expected '' or one of {FREQUENCY_MODES} or "
                     f"a comma list of {num_classes} numbers") from None
  if w.shape != (num_classes,) or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(f"loss.class_weights={spec!r}: expected {num_classes} finite weights >= 0 "
                     f"(one per class), got {w.size}")
  return w


def count_label_frequency(dataset, num_classes: int, *, num_threads: int = 4,
                          progress: bool = True, skip_bad: bool = False) -> ClassFrequency:
  """Counts the train ids of every label of `dataset` (a SegmentationDataset).

  Ids outside [0, num_classes) (the ignore id) are not counted. Records without a label file
  are skipped; a bad label raises unless `skip_bad`.
  """
  import tqdm  # pylint: disable=g-import-not-at-top

  from jaxseg.data.datasets import BadInputError  # pylint: disable=g-import-not-at-top

  def read(i: int) -> np.ndarray | None:
    try:
      label = dataset.read_label(i)
    except BadInputError:
      if skip_bad:
        return None
      raise
    return np.bincount(np.asarray(label).ravel(), minlength=256)[:num_classes]

  indices = [i for i, r in enumerate(dataset.records) if r.label_path is not None]
  counts = np.zeros(num_classes, np.int64)
  image_pixels = np.zeros(num_classes, np.int64)
  images = 0
  desc = f"class frequency {getattr(dataset, 'name', '')}/{getattr(dataset, 'split', '')}"
  # Decoding (cv2 / PIL) releases the GIL: threads overlap the file reads.
  with concurrent.futures.ThreadPoolExecutor(max(1, int(num_threads))) as pool:
    for hist in tqdm.tqdm(pool.map(read, indices), total=len(indices), desc=desc,
                          unit="label", disable=not progress, dynamic_ncols=True):
      if hist is None:
        continue
      counts += hist
      image_pixels += (hist > 0) * hist.sum()
      images += 1
  return ClassFrequency(counts, image_pixels, images)


def _cache_key(data_cfg, dataset, num_classes: int) -> str:
  ident = {"version": _CACHE_VERSION, "name": str(data_cfg.name), "split": dataset.split,
           "num_classes": int(num_classes), "ignore_index": int(dataset.table.ignore_index),
           "labels": [r.label_path for r in dataset.records]}
  if data_cfg.name == "synthetic" and "synthetic" in data_cfg:
    ident["synthetic"] = data_cfg.synthetic.to_dict()
  return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _home_cache() -> pathlib.Path:
  return files.cache_dir("class_frequency")


def label_frequency(data_cfg, num_classes: int, *, cache_file: str = "",
                    progress: bool = True) -> tuple[ClassFrequency, pathlib.Path]:
  """The training split's ClassFrequency, from the JSON cache or counted (then cached).

  Returns it with the cache file's path.
  """
  from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
  dataset = datasets.get_dataset(data_cfg, data_cfg.train_split)
  key = _cache_key(data_cfg, dataset, num_classes)
  name = f"class_frequency_{data_cfg.name}_{dataset.split}_{key[:16]}.json"
  root = data_cfg.get("root")
  candidates = ([pathlib.Path(cache_file).expanduser()] if cache_file else
                ([pathlib.Path(root).expanduser() / name] if root else []) + [_home_cache() / name])
  for path in candidates:
    if path.is_file():
      cached = json.loads(path.read_text())
      if cached.get("key") == key:
        return ClassFrequency.from_json(cached), path
      if cache_file:
        logging.warning("%s was written for other training labels; recounting", path)
  freq = count_label_frequency(dataset, num_classes,
                               num_threads=int(data_cfg.get("read_num_threads", 4) or 4),
                               progress=progress,
                               skip_bad=data_cfg.get("on_bad_input", "error") == "skip")
  payload = {"key": key, "dataset": str(data_cfg.name), "split": dataset.split,
             **freq.to_json()}
  for path in candidates:
    try:
      files.atomic_write_json(path, payload)
      return freq, path
    except OSError as e:  # a read-only dataset folder: fall back to the home cache
      logging.warning("cannot write the class-frequency cache %s (%s)", path, e)
  raise OSError(f"could not write the class-frequency cache to any of {candidates}")


def class_weights_for_config(config, num_classes: int) -> np.ndarray | None:
  """`config.loss.class_weights` resolved to (C,) float32 weights (None when unset)."""
  spec = str(config.loss.get("class_weights", "") or "").strip()
  if not spec:
    return None
  if spec not in FREQUENCY_MODES:
    return parse_class_weight_list(spec, num_classes)
  freq, path = label_frequency(config.data, num_classes,
                               cache_file=str(config.loss.get("class_frequency_file", "") or ""),
                               progress=bool(config.get("progress_bar", True)))
  weights = class_weights_from_histogram(freq.counts, spec, image_pixels=freq.image_pixels)
  logging.info("class weights %s from %d training labels (%s): %s", spec, freq.num_images,
               path, np.array2string(weights, precision=3))
  return weights
