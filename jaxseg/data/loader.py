"""grain loaders: infinite, resumable training batches and padded eval batches.

Training: an epoch is a list of samples (plain images, and with class-uniform
sampling class-centred crops) composed and shuffled as a pure function of
(seed, epoch) (`sampling.SamplingPlan`). Epoch e has S_e = len // global_batch
global steps (the remainder is dropped); global step s takes epoch positions
[s * GB, (s + 1) * GB) and process p the slice [p * B, (p + 1) * B) of it. The
augmentation RNG of a sample is seeded by (seed, epoch, position), so batches
do not depend on the process count, worker count or threads. The iterator's
state is the number of batches it has yielded ({'step': k, ...}, JSON), from
which a new loader rebuilds the same stream.

Optional sample mixing (CopyBlob, CutMix; mixing.py, copy_blob.py) follows the
augmentation: a mixed sample's partner is another position of the same epoch
drawn from (seed, epoch, position), read and augmented as it is there, so
mixing keeps all of the above.

Batches are uint8: {'image': (B, H, W, 3), 'label': (B, H, W)}; normalisation
happens on device.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import Any, Optional

import grain
import ml_collections
import numpy as np

from jaxseg.data import copy_blob
from jaxseg.data import defaults
from jaxseg.data import mixing
from jaxseg.data import sampling
from jaxseg.data import transforms


def _datasets_module():
  from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets


def _process(process_index: Optional[int],
             process_count: Optional[int]) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, "
                     f"process_count={process_count}).")
  return int(process_index), int(process_count)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the metrics need to know about the classes."""
  name: str
  num_classes: int
  class_names: tuple[str, ...]
  colors: np.ndarray  # (num_classes, 3) uint8 RGB
  ignore_index: int


def dataset_info(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
  """Class count, names, colours and ignore index of the configured dataset."""
  table = _datasets_module().get_class_table(data_cfg)
  return DatasetInfo(str(data_cfg.name), int(table.num_classes),
                     tuple(table.class_names), np.asarray(table.colors, np.uint8),
                     int(table.ignore_index))


# ---------------------------------------------------------------- training --
def _element(plan: sampling.SamplingPlan, epoch: int, pos: int) -> dict[str, Any]:
  """Which sample (and centroid) sits at position `pos` of `epoch`."""
  ep = plan.epoch(epoch)
  cx, cy = (int(v) for v in ep.centroid[pos])
  return {"index": int(ep.index[pos]), "centroid": (cx, cy) if cx >= 0 else None,
          "epoch": epoch, "step": pos // plan.global_batch, "pos": pos}


class _TrainIndex(grain.MapDataset):
  """Infinite per-process index -> which sample (and seed) to produce."""

  def __init__(self, plan: sampling.SamplingPlan, process_index: int,
               batch_size: int, start_step: int = 0):
    super().__init__()
    self._plan = plan
    self._p = process_index
    self._b = batch_size
    self._start = start_step

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return (f"_TrainIndex(process={self._p}, batch={self._b}, "
            f"start_step={self._start})")

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    local_step, j = divmod(int(index), self._b)
    epoch, step = self._plan.locate(self._start + local_step)
    pos = step * self._plan.global_batch + self._p * self._b + j
    return _element(self._plan, epoch, pos)


def load_with_skip(source, index: int,
                   on_bad_input: str) -> tuple[dict[str, Any], int, int]:
  """source[index], replaced by the next readable sample when it is bad.

  Returns (sample, number of bad samples passed over, index used).
  """
  n = len(source)
  for k in range(n):
    i = (index + k) % n
    sample = source[i]
    if sample is not None:
      return sample, k, i
    if on_bad_input != "skip":
      raise ValueError(f"sample {i} is bad and on_bad_input={on_bad_input!r}")
  raise RuntimeError(f"on_bad_input=skip: all {n} samples of the dataset are "
                     "unreadable.")


class _LoadAndAugment:
  """Reads one sample and applies the training augmentation."""

  def __init__(self, source, params: transforms.AugmentParams, seed: int,
               on_bad_input: str):
    self._source = source
    self._params = params
    self._seed = seed
    self._on_bad = on_bad_input

  def __call__(self, el: dict[str, Any]) -> dict[str, Any]:
    sample, skipped, _ = load_with_skip(self._source, el["index"], self._on_bad)
    # A replacement sample does not contain the centroid of the bad one.
    centroid = el["centroid"] if skipped == 0 else None
    rng = np.random.default_rng([self._seed, 1, el["epoch"], el["pos"]])
    image, label = transforms.train_transform(sample["image"], sample["label"],
                                              rng, self._params, centroid)
    return {"image": image, "label": label, "_epoch": el["epoch"],
            "_step": el["step"], "_pos": el["pos"], "_skipped": int(skipped > 0)}


class _PlanPartners:
  """mixing.PartnerSource over the sampling plan: partners are read and
  augmented exactly as at their own epoch position."""

  def __init__(self, plan: sampling.SamplingPlan, load: _LoadAndAugment):
    self._plan = plan
    self._load = load

  def epoch_size(self, epoch: int) -> int:
    return self._plan.epoch_size(epoch)

  def sample_at(self, epoch: int, pos: int) -> dict[str, Any]:
    return self._load(_element(self._plan, epoch, pos))


def _mixers(data_cfg, table) -> list[mixing.Mixer]:
  """The configured mixers, in the order they apply: CopyBlob pastes rare
  objects into the sample's own scene, then CutMix swaps a box."""
  mixers = []
  if data_cfg.copyblob_prob > 0:
    mixers.append(copy_blob.from_config(data_cfg, table))
  if data_cfg.cutmix_prob > 0:
    mixers.append(mixing.CutMix(float(data_cfg.cutmix_prob),
                                float(data_cfg.cutmix_alpha)))
  return mixers


class _TrainIterator(grain.DatasetIterator):
  """The training iterator: grain pipeline from a start step, and reporting.

  Its state is {'step': batches yielded, 'skipped': bad samples replaced so
  far this epoch}: plain JSON, independent of the worker and thread counts
  (the batches are a pure function of the step). `set_state` rebuilds the
  grain pipeline from that step.
  """

  def __init__(self, make_pipeline, plan: sampling.SamplingPlan, name: str):
    super().__init__()
    self._make = make_pipeline
    self._plan = plan
    self._name = name
    self._step = 0
    self._skipped = 0
    self._it = None  # grain iterator, built lazily (workers start with it)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._it = iter(self._make(self._step))
    batch = next(self._it)
    self._step += 1
    epoch = int(batch.pop("_epoch")[0])
    step = int(batch.pop("_step")[0])
    batch.pop("_pos")
    self._skipped += int(np.sum(batch.pop("_skipped")))
    if step == self._plan.steps(epoch) - 1:
      if self._skipped:
        logging.warning("%s: epoch %d: %d bad sample(s) skipped and replaced "
                        "by the next readable one (on_bad_input='skip') on "
                        "this process.", self._name, epoch, self._skipped)
      self._skipped = 0
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "skipped": self._skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    if "step" not in state:
      raise ValueError(f'train loader state {state!r} has no "step"; expected '
                       'a dict from this loader\'s get_state().')
    self.close()
    self._step = int(state["step"])
    self._skipped = int(state.get("skipped", 0))

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()
    self._it = None


def _worker_init(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  import cv2  # pylint: disable=g-import-not-at-top
  # The worker processes are the parallelism; OpenCV's own pool would
  # oversubscribe the cores.
  cv2.setNumThreads(1)


def _ensure_absl_flags_parsed() -> None:
  # grain's worker processes read absl flags; outside absl.app.run (tests,
  # notebooks, benchmarks) they are unparsed and grain would raise.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _read_options(data_cfg) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=int(data_cfg.read_num_threads),
                           prefetch_buffer_size=int(
                               data_cfg.read_prefetch_buffer_size))


def build_train_loader(data_cfg: ml_collections.ConfigDict, *,
                       global_batch_size: int, seed: int,
                       process_index: Optional[int] = None,
                       process_count: Optional[int] = None,
                       dataset=None,
                       plan: Optional[sampling.SamplingPlan] = None) -> grain.DatasetIterator:
  """Infinite iterator of this process's training batches.

  Yields {'image': uint8 (B, crop, crop, 3), 'label': uint8 (B, crop, crop)}
  with B = global_batch_size // process_count. `get_state()` returns a small
  JSON-serialisable dict ({'step': batches so far, ...}); `set_state()` on a
  loader built with the same data config, batch size, seed and process
  layout continues with exactly the batches that would have followed (worker
  and thread counts may differ). Call `close()` to stop worker processes.
  `dataset` (optional) replaces `get_dataset(data_cfg, data_cfg.train_split)`; `plan`
  (optional) is `make_plan(data_cfg, global_batch_size, seed, dataset)` built by the caller,
  who also reads its epoch lengths (the plan lists the split: build it once per run).
  """
  defaults.validate(data_cfg)
  p, n_proc = _process(process_index, process_count)
  if global_batch_size <= 0 or global_batch_size % n_proc:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive "
                     f"multiple of the process count {n_proc}.")
  if seed < 0:
    raise ValueError(f"seed={seed}: the loader seed must be >= 0.")
  b = global_batch_size // n_proc
  plan = plan or sampling.make_plan(data_cfg, global_batch_size, seed, dataset)
  params = transforms.AugmentParams.from_config(data_cfg)
  load = _LoadAndAugment(plan.source, params, int(seed), str(data_cfg.on_bad_input))
  mixers = _mixers(data_cfg, plan.source.table)
  partners = _PlanPartners(plan, load)
  read_options = _read_options(data_cfg)
  mp_options = None
  if data_cfg.num_workers > 0:
    _ensure_absl_flags_parsed()
    mp_options = grain.MultiprocessingOptions(
        num_workers=int(data_cfg.num_workers),
        per_worker_buffer_size=int(data_cfg.worker_buffer_size))

  def make_pipeline(start_step: int) -> grain.IterDataset:
    ds = _TrainIndex(plan, p, b, start_step).map(load)
    if mixers:
      ds = mixing.MixWithPartner(ds, partners, mixers, int(seed))
    ds = ds.batch(b, drop_remainder=True).to_iter_dataset(read_options)
    if mp_options is not None:
      ds = ds.mp_prefetch(mp_options, worker_init_fn=_worker_init)
    return ds

  return _TrainIterator(make_pipeline, plan,
                        f"{data_cfg.name}/{data_cfg.train_split}")


def make_plan(data_cfg: ml_collections.ConfigDict, global_batch_size: int, seed: int,
              dataset=None) -> sampling.SamplingPlan:
  """The training sampling plan (split listing, class-uniform pools, epoch lengths)."""
  defaults.validate(data_cfg)
  return sampling.make_plan(data_cfg, global_batch_size, seed, dataset)


def steps_per_epoch(data_cfg: ml_collections.ConfigDict,
                    global_batch_size: int, epoch: int = 0,
                    dataset=None) -> int:
  """Global steps of `epoch` (class-uniform epochs may change size after
  `max_cu_epoch`; the others all have the same size)."""
  plan = sampling.make_plan(data_cfg, global_batch_size, 0, dataset)
  return plan.steps(epoch)


# -------------------------------------------------------------- evaluation --
class _EvalElement:
  """Process-local position -> resized eval sample with `valid` and `name`."""

  def __init__(self, source, data_cfg, process_index: int, process_count: int,
               batch_size: int, expect_hw: Optional[tuple[int, int]]):
    self._source = source
    self._p, self._n_proc, self._b = process_index, process_count, batch_size
    self._on_bad = str(data_cfg.on_bad_input)
    self._policy = str(data_cfg.eval_resize)
    self._size = int(data_cfg.eval_size)
    self._hw = (int(data_cfg.eval_height), int(data_cfg.eval_width))
    self._pad_hw = (int(data_cfg.eval_pad_height), int(data_cfg.eval_pad_width))
    self._pad_value = int(data_cfg.pad_image_value)
    self._expect_hw = expect_hw

  def __call__(self, i: int) -> dict[str, Any]:
    local_batch, j = divmod(int(i), self._b)
    g = (local_batch * self._n_proc + self._p) * self._b + j
    n = len(self._source)
    valid = g < n
    sample, skipped, used = load_with_skip(self._source, min(g, n - 1),
                                           self._on_bad)
    image, label = transforms.eval_resize(
        sample["image"], sample["label"], self._policy, self._size, *self._hw,
        pad_hw=self._pad_hw, pad_value=self._pad_value)
    if self._expect_hw is not None and image.shape[:2] != self._expect_hw:
      rec = self._source.records[used]
      raise ValueError(
          f"eval image {rec.image_path} is {image.shape[0]}x{image.shape[1]} "
          f"(HxW) but the first one is {self._expect_hw[0]}x"
          f"{self._expect_hw[1]}: set data.eval_pad_height/eval_pad_width or "
          "data.eval_resize so that eval batches have one shape.")
    # A replaced bad sample would count another image twice: not valid.
    out = {"image": np.ascontiguousarray(image),
           "label": np.ascontiguousarray(label),
           "valid": bool(valid and skipped == 0),
           "name": sample["name"] if valid else ""}
    if "instance" in sample and self._policy == "none":
      # Cityscapes instance ids for nIoU (evaluation/metrics.py) at native size; -1 = none.
      inst = sample["instance"]
      out["instance"] = np.pad(inst, ((0, image.shape[0] - inst.shape[0]),
                                      (0, image.shape[1] - inst.shape[1])),
                               constant_values=-1)
    return out


def build_eval_loader(data_cfg: ml_collections.ConfigDict, *, batch_size: int,
                      process_index: Optional[int] = None,
                      process_count: Optional[int] = None,
                      dataset=None) -> grain.IterDataset:
  """Iterable of this process's eval batches (re-iterable, one pass each).

  Batches: {'image': uint8 (B, H, W, 3), 'label': uint8 (B, H, W), 'valid':
  bool (B,), 'name': str (B,)} at the eval size. Every process gets the same
  number of batches; samples past the end of the split repeat the last one
  with valid=False.
  """
  defaults.validate(data_cfg)
  p, n_proc = _process(process_index, process_count)
  if batch_size <= 0:
    raise ValueError(f"eval batch_size={batch_size} must be > 0.")
  source = dataset if dataset is not None else _datasets_module().get_dataset(
      data_cfg, data_cfg.eval_split)
  n = len(source)
  if n == 0:
    raise ValueError(f"eval split {data_cfg.eval_split!r} of {data_cfg.name} "
                     "is empty.")
  batches = math.ceil(n / (n_proc * batch_size))
  expect_hw = None
  fixed = (data_cfg.eval_resize != "none" or
           (data_cfg.eval_pad_height > 0 and data_cfg.eval_pad_width > 0))
  if not fixed:
    first, _, _ = load_with_skip(source, 0, str(data_cfg.on_bad_input))
    expect_hw = tuple(first["image"].shape[:2])
  return (grain.MapDataset.range(batches * batch_size)
          .map(_EvalElement(source, data_cfg, p, n_proc, batch_size, expect_hw))
          .batch(batch_size)
          .to_iter_dataset(grain.ReadOptions(
              num_threads=int(data_cfg.eval_num_threads),
              prefetch_buffer_size=int(data_cfg.eval_prefetch_buffer_size))))
