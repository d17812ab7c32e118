"""Dataset preview: the first augmented training samples as PNGs, to check a dataset before
training (what mmseg's tools/misc/browse_dataset.py does).

  python -m jaxseg.main --config configs/camvid.py --mode preview --workdir /tmp/camvid \
      --config.data.root=/path/to/CamVid --config.preview.num_samples=16

Each picture shows the augmented crop next to it with the label overlaid (ignored pixels
black) and, for a class-centred crop of class-uniform sampling, a cross where the chosen
centroid landed. The samples are the training loader's own (`build_train_loader`: sampling
plan, augmentation and mixing), in the order a run with `config.seed` draws them.

Where the centroid lands is found by the same code, not a second implementation of the
geometry: the sample is augmented again by the loader's `_LoadAndAugment`, with the same seed
and position, but with its label replaced by a disk drawn at the centroid. The random draws
do not depend on the label, so the disk goes through the same scale, rotation, crop and flip.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Optional

import cv2
import ml_collections
import numpy as np

from jaxseg.data import loader as loader_lib
from jaxseg.data import pictures
from jaxseg.data import transforms

_MARK = 1  # marker label value (0 elsewhere, 255 where the transforms pad)


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare fields, not samples
class PreviewSample:
  """One augmented training sample as the loader yields it."""
  image: np.ndarray  # (crop, crop, 3) uint8 RGB
  label: np.ndarray  # (crop, crop) uint8 train ids, 255 = ignore
  name: str  # the source sample's name
  epoch: int
  position: int  # position in the epoch's sample list
  class_id: Optional[int]  # class-uniform crop: the class it was centred on
  centre: Optional[tuple[int, int]]  # (x, y) in the crop where that centroid landed


class _MarkedSource:
  """The training source with each label replaced by a disk of `_MARK` at `centroid`."""

  def __init__(self, source: Any, params: transforms.AugmentParams):
    self._source = source
    self._params = params
    self.centroid: Optional[tuple[int, int]] = None
    self.name = ""

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
    sample = self._source[index]
    if sample is None:  # a bad sample: the loader skips it the same way
      return None
    image = sample["image"]
    marker = np.zeros(image.shape[:2], np.uint8)
    if self.centroid is not None:
      cv2.circle(marker, tuple(int(v) for v in self.centroid),
                 marker_radius(self._params, image.shape[:2]), _MARK, cv2.FILLED)
    self.name = str(sample.get("name", index))
    return {**sample, "label": marker}


def marker_radius(params: transforms.AugmentParams, hw: tuple[int, int]) -> int:
  """A disk, not a pixel: >= 2 px of radius after the smallest random scale."""
  smallest = params.scale_min * (params.pre_size / min(hw) if params.pre_size > 0 else 1.0)
  return max(2, math.ceil(2.0 / smallest))


def _marker_centre(marker: np.ndarray) -> Optional[tuple[int, int]]:
  ys, xs = np.nonzero(marker == _MARK)
  if len(xs) == 0:  # the original's crop rule ignores padding: the centroid can fall outside
    return None
  return int(round(float(xs.mean()))), int(round(float(ys.mean())))


def _preview_data_config(data_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  # In-process reading: a handful of samples do not pay for worker start-up, and the batches
  # do not depend on the worker count.
  data_cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  data_cfg.num_workers = 0
  return data_cfg


def preview_samples(config: ml_collections.ConfigDict, count: int, *,
                    dataset: Any = None) -> list[PreviewSample]:
  """The first `count` training samples of `config` (seed `config.seed`), one process.

  `dataset` (optional) replaces the configured training split, as in build_train_loader.
  """
  if count <= 0:
    raise ValueError(f"config.preview.num_samples={count}: expected a positive count")
  data_cfg = _preview_data_config(config.data)
  seed = int(config.seed)
  # Global batch 1: sample k of the stream is position k of the sampling plan (for every
  # batch size the first epoch holds the same positions).
  train = loader_lib.build_train_loader(data_cfg, global_batch_size=1, seed=seed,
                                        process_index=0, process_count=1, dataset=dataset)
  plan = train._plan  # pylint: disable=protected-access  # the loader's own (centroids once)
  params = transforms.AugmentParams.from_config(data_cfg)
  marked = _MarkedSource(plan.source, params)
  augment = loader_lib._LoadAndAugment(  # pylint: disable=protected-access
      marked, params, seed, str(data_cfg.on_bad_input))
  samples = []
  try:
    for k in range(count):
      batch = next(train)
      epoch, position = plan.locate(k)
      element = loader_lib._element(plan, epoch, position)  # pylint: disable=protected-access
      marked.centroid = element["centroid"]
      out = augment(element)
      class_id = int(plan.epoch(epoch).class_id[position])
      centre = None
      if element["centroid"] is not None and not out["_skipped"]:
        centre = _marker_centre(out["label"])
      samples.append(PreviewSample(
          image=np.asarray(batch["image"][0]), label=np.asarray(batch["label"][0]),
          name=marked.name, epoch=epoch, position=position,
          class_id=class_id if class_id >= 0 and element["centroid"] is not None else None,
          centre=centre))
  finally:
    train.close()
  return samples


def render(sample: PreviewSample, colors: np.ndarray, class_names: tuple[str, ...], *,
           alpha: float = 0.5, gap: int = 4) -> np.ndarray:
  """The crop | the crop with its label overlaid, a caption above, the centre crossed."""
  palette = pictures.palette_of(colors)
  overlay = pictures.blend(sample.image, palette[sample.label], alpha)
  panels = [sample.image.copy(), overlay]
  if sample.centre is not None:
    size = max(4, min(sample.image.shape[:2]) // 16)
    for panel in panels:  # white on black: visible on any colour
      cv2.drawMarker(panel, sample.centre, (0, 0, 0), cv2.MARKER_CROSS, size + 2, 3)
      cv2.drawMarker(panel, sample.centre, (255, 255, 255), cv2.MARKER_CROSS, size, 1)
  if sample.class_id is not None:
    where = "centre crossed" if sample.centre is not None else "centre outside the crop"
    crop = f"class-uniform crop: {class_names[sample.class_id]} ({where})"
  else:
    crop = "random crop"
  caption = [f"{sample.name}  epoch {sample.epoch} position {sample.position}", crop]
  h, w = sample.image.shape[:2]
  top = 8 + 16 * len(caption)
  canvas = np.full((top + h, 2 * w + gap, 3), 255, np.uint8)
  canvas[top:, :w] = panels[0]
  canvas[top:, w + gap:] = panels[1]
  for i, line in enumerate(caption):
    cv2.putText(canvas, line, (4, 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
  return canvas


def _file_stem(name: str) -> str:
  stem = pathlib.Path(name).name
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]


def write_preview(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                  dataset: Any = None) -> list[pathlib.Path]:
  """Writes `config.preview.num_samples` pictures to WORKDIR/preview/NNN_<name>.png."""
  info = dataset.table if dataset is not None else loader_lib.dataset_info(config.data)
  outdir = pathlib.Path(workdir) / "preview"
  written = []
  samples = preview_samples(config, int(config.preview.num_samples), dataset=dataset)
  for k, sample in enumerate(samples):
    picture = render(sample, info.colors, tuple(info.class_names),
                     alpha=config.eval.overlay_alpha)
    path = outdir / f"{k:03d}_{_file_stem(sample.name)}.png"
    written.append(pictures.write_png(path, picture))
  return written
