"""Sample mixing on the grain pipeline: each sample meets a seeded partner.

`MixWithPartner` is a grain MapDataset over augmented training samples. For
each mixer (CutMix here, CopyBlob in copy_blob.py) and each sample at epoch
position `pos`, an RNG seeded by (seed, mixer stream, epoch, pos) decides
whether the mixer fires and, if it does, picks the partner: another position
of the same epoch, read and augmented exactly as it is at that position
(`PartnerSource.sample_at`). Everything is a pure function of (seed, epoch,
pos), so batches do not depend on worker / process counts and a resumed
loader reproduces them. Partners are plain augmented samples (never mixed
themselves), so a mixed sample holds pixels of at most 1 + len(mixers)
samples.

CutMix for segmentation (Yun et al. 2019; French et al. 2020, "Semi-
supervised semantic segmentation needs strong, varied perturbations"): a box
of the partner's image AND label replaces the same box of the sample. The
box's share of the area is r ~ Beta(alpha, alpha), its sides are about
sqrt(r) of the image's (Yun's aspect) and it lies inside the image (French's
`within_bounds`), so the pasted share is r up to pixel rounding.

Everything is numpy on the host; images uint8 HxWx3, labels uint8 HxW.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, Sequence

import grain
import numpy as np

Sample = dict[str, Any]

# RNG stream tags of the mixers (the loader's augmentation uses 1): fixed per
# mixer so that enabling one mixer leaves the other's draws unchanged.
CUTMIX_STREAM = 2
COPYBLOB_STREAM = 3


class PartnerSource(Protocol):
  """Where partners come from: the training epochs, by position."""

  def epoch_size(self, epoch: int) -> int:
    """Number of positions of `epoch` (partners are drawn among them)."""

  def sample_at(self, epoch: int, pos: int) -> Sample:
    """The augmented (unmixed) sample at position `pos` of `epoch`."""


class Mixer(Protocol):
  """Mixes a partner into a sample; `stream` tags its RNG, `prob` its rate."""
  stream: int
  prob: float

  def __call__(self, sample: Sample, partner: Sample,
               rng: np.random.Generator) -> Sample:
    """Returns `sample` with mixed 'image' and 'label' (inputs untouched)."""


def partner_position(rng: np.random.Generator, pos: int, size: int) -> int:
  """A position of the epoch other than `pos`, uniformly (size >= 2)."""
  return (pos + 1 + int(rng.integers(size - 1))) % size


# ------------------------------------------------------------------ CutMix --
@dataclasses.dataclass(frozen=True)
class Box:
  """A pixel box: rows [y, y + h), columns [x, x + w)."""
  y: int
  x: int
  h: int
  w: int

  @property
  def area(self) -> int:
    return self.h * self.w


def cutmix_box(rng: np.random.Generator, hw: tuple[int, int],
               alpha: float) -> Box:
  """A box inside an (h, w) image whose area share is ~ Beta(alpha, alpha).

  r ~ Beta(alpha, alpha); the height is round(sqrt(r) * h) and the width is
  rounded so that the area is closest to r * h * w (the share then errs by
  at most half a row, also for r near 0 or 1). The top-left corner is
  uniform among the positions that keep the box inside the image.
  """
  h, w = hw
  r = float(rng.beta(alpha, alpha))
  bh = int(round(math.sqrt(r) * h))
  bw = min(w, int(round(r * h * w / bh))) if bh else 0
  y = int(rng.integers(h - bh + 1))
  x = int(rng.integers(w - bw + 1))
  return Box(y, x, bh, bw)


def paste_box(image: np.ndarray, label: np.ndarray, p_image: np.ndarray,
              p_label: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
  """Copies of (image, label) with `box` taken from (p_image, p_label)."""
  if image.shape != p_image.shape or label.shape != p_label.shape:
    raise ValueError(f"CutMix needs samples of one size: {image.shape} / "
                     f"{label.shape} vs the partner {p_image.shape} / "
                     f"{p_label.shape}")
  image, label = image.copy(), label.copy()
  rows, cols = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
  image[rows, cols] = p_image[rows, cols]
  label[rows, cols] = p_label[rows, cols]
  return image, label


@dataclasses.dataclass(frozen=True)
class CutMix:
  """CutMix mixer (`data.cutmix_prob`, `data.cutmix_alpha`)."""
  prob: float
  alpha: float = 1.0
  stream: int = CUTMIX_STREAM

  def __call__(self, sample: Sample, partner: Sample,
               rng: np.random.Generator) -> Sample:
    box = cutmix_box(rng, sample["label"].shape, self.alpha)
    image, label = paste_box(sample["image"], sample["label"],
                             partner["image"], partner["label"], box)
    return {**sample, "image": image, "label": label}


# ------------------------------------------------------------------- grain --
def mix_sample(sample: Sample, epoch: int, pos: int, seed: int,
               mixers: Sequence[Mixer], partners: PartnerSource) -> Sample:
  """Applies `mixers` in order to the sample at (epoch, pos); pure."""
  size = partners.epoch_size(epoch)
  if size < 2:
    return sample
  for mixer in mixers:
    rng = np.random.default_rng([seed, mixer.stream, epoch, pos])
    if not rng.random() < mixer.prob:
      continue
    partner = partners.sample_at(epoch, partner_position(rng, pos, size))
    sample = mixer(sample, partner, rng)
  return sample


class MixWithPartner(grain.MapDataset):
  """Augmented training samples, each mixed with seeded partners.

  The parent's elements carry '_epoch' and '_pos' (their epoch and position
  in it); they are passed through with 'image' and 'label' mixed.
  """

  def __init__(self, parent: grain.MapDataset, partners: PartnerSource,
               mixers: Sequence[Mixer], seed: int):
    super().__init__(parent)
    self._partners = partners
    self._mixers = tuple(mixers)
    self._seed = int(seed)

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    names = ", ".join(type(m).__name__ for m in self._mixers)
    return f"MixWithPartner(mixers=[{names}], seed={self._seed})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    sample = self._parent[index]
    if sample is None:
      return None
    return mix_sample(sample, int(sample["_epoch"]), int(sample["_pos"]),
                      self._seed, self._mixers, self._partners)
