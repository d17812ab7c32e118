"""CopyBlob: paste rare-class blobs of a partner sample onto plausible context.

Rare classes (walls, buses, bicycles, ...) are few and their pixels fewer.
CopyBlob (in the spirit of rare-class copy-paste for segmentation, e.g.
Ghiasi et al.'s Copy-Paste, mmseg's / ClassMix-style object pasting) copies
connected blobs of such classes from a partner sample into the sample, but
only where they can stand: a rule table {source class: allowed context
classes} says what a blob may stand on (a bus on road, a fence on sidewalk),
and a blob is placed only where (at least `support` of) its bottom edge, the
lowest blob pixel of each column, covers context pixels of the sample. A
blob with no such place is skipped. Blobs touching the partner's bottom
border are not used: their ground contact is cut off.

Rule tables are written with class NAMES: a built-in one (`BUILTIN_RULES`) or
a JSON file {"wall": ["sidewalk", "terrain"], ...}; `resolve_rules` checks
them against the dataset's class table. The partner scheme is mixing.py's:
seeded by (seed, epoch, position), so resume stays exact.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from jaxseg.data import mixing

Rules = dict[int, frozenset[int]]  # source train id -> allowed context ids

# Rare classes and what they stand on. Cityscapes names also cover KITTI and
# TFDS Cityscapes (same 19 classes).
BUILTIN_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "cityscapes": {
        "wall": ("sidewalk", "terrain"),
        "fence": ("sidewalk", "terrain"),
        "pole": ("sidewalk",),
        "truck": ("road",),
        "bus": ("road",),
        "train": ("road",),
        "motorcycle": ("road",),
        "bicycle": ("road", "sidewalk"),
    },
    "camvid": {
        "Column-Pole": ("Sidewalk",),
        "Fence": ("Sidewalk",),
        "Pedestrian": ("Sidewalk", "Road"),
        "Bicyclist": ("Road",),
    },
}
# data.name -> its built-in rule table when data.copyblob_rules is ''.
DEFAULT_RULES = {"cityscapes": "cityscapes", "kitti": "cityscapes",
                 "tfds": "cityscapes", "camvid": "camvid"}


# ------------------------------------------------------------------- rules --
def rules_spec(spec: str, dataset_name: str) -> str:
  """`data.copyblob_rules`, with '' replaced by the dataset's built-in."""
  if spec:
    return spec
  if dataset_name not in DEFAULT_RULES:
    raise ValueError(f"'' means the built-in rules of the dataset, but "
                     f"data.name={dataset_name!r} has none (built-in: "
                     f"{sorted(DEFAULT_RULES)}); set data.copyblob_rules to a "
                     "built-in name or a JSON file.")
  return DEFAULT_RULES[dataset_name]


def load_rule_names(spec: str) -> dict[str, tuple[str, ...]]:
  """A built-in rule table by name, or a JSON file's, as class names."""
  if spec in BUILTIN_RULES:
    return dict(BUILTIN_RULES[spec])
  if not os.path.isfile(os.path.expanduser(spec)):
    raise ValueError(f'{spec!r} is neither a built-in rule table '
                     f'({", ".join(sorted(BUILTIN_RULES))}) nor a JSON file.')
  try:
    with open(os.path.expanduser(spec), encoding="utf-8") as f:
      table = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read rule table {spec}: {e}") from None
  if not isinstance(table, dict) or not table:
    raise ValueError(f'rule table {spec}: expected a non-empty JSON object '
                     '{"source class": ["context class", ...], ...}.')
  out = {}
  for src, ctx in table.items():
    if (not isinstance(ctx, list) or not ctx or
        not all(isinstance(c, str) for c in ctx)):
      raise ValueError(f"rule table {spec}: {src!r} -> {ctx!r}; expected a "
                       "non-empty list of context class names.")
    out[str(src)] = tuple(ctx)
  return out


def _class_id(name: str, class_names: Sequence[str], where: str,
              table_name: str) -> int:
  if name in class_names:
    return class_names.index(name)
  folded = [i for i, n in enumerate(class_names) if n.lower() == name.lower()]
  if len(folded) == 1:
    return folded[0]
  raise ValueError(f'unknown class {name!r} ({where}) in table '
                   f'{table_name!r}; its classes: {", ".join(class_names)}.')


def resolve_rules(names: Mapping[str, Sequence[str]], table: Any,
                  source: str = "copyblob_rules") -> Rules:
  """Class-name rules -> train-id rules, checked against `table`.

  `table` has `class_names` and `name` (a class_table.ClassTable). Names match
  exactly, else case-insensitively. Raises ValueError naming `source` and
  the unknown class.
  """
  class_names = list(table.class_names)
  tname = getattr(table, "name", "?")
  rules = {}
  try:
    for src, ctx in names.items():
      s = _class_id(src, class_names, "source class", tname)
      rules[s] = frozenset(
          _class_id(c, class_names, f"context of {src!r}", tname) for c in ctx)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None
  return rules


# ------------------------------------------------------------------- blobs --
@dataclasses.dataclass(frozen=True)
class Blob:
  """A connected component of one class in the partner: bbox + mask."""
  class_id: int
  y: int
  x: int
  mask: np.ndarray  # (h, w) bool, the component inside its bounding box

  @property
  def bottom(self) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) in the bbox of each column's lowest blob pixel."""
    cols = np.flatnonzero(self.mask.any(axis=0))
    h = self.mask.shape[0]
    rows = h - 1 - np.argmax(self.mask[::-1, cols], axis=0)
    return rows, cols


@dataclasses.dataclass(frozen=True)
class Paste:
  """Where a blob went: class, bbox top-left in the partner and in the
  sample, bbox size, blob pixels."""
  class_id: int
  src_yx: tuple[int, int]
  dst_yx: tuple[int, int]
  hw: tuple[int, int]
  pixels: int


def find_blobs(label: np.ndarray, classes: Sequence[int],
               min_pixels: int) -> list[Blob]:
  """8-connected blobs of `classes` with >= min_pixels pixels, not cut by
  the bottom border, in class then component order."""
  blobs = []
  h = label.shape[0]
  for c in sorted(classes):
    m = (label == c).astype(np.uint8)
    if not m.any():
      continue
    n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    for k in range(1, n):
      x, y, bw, bh, area = (int(v) for v in stats[k])
      if area < min_pixels or y + bh >= h:
        continue
      blobs.append(Blob(c, y, x, comp[y:y + bh, x:x + bw] == k))
  return blobs


def placements(allowed: np.ndarray, blob: Blob, support: float) -> np.ndarray:
  """Top-left (y, x) positions, (N, 2), where the blob fits in the image and
  >= `support` of its bottom pixels cover `allowed` (bool HxW) pixels."""
  h, w = allowed.shape
  bh, bw = blob.mask.shape
  if bh > h or bw > w:
    return np.zeros((0, 2), np.int64)
  rows, cols = blob.bottom
  kernel = np.zeros((bh, bw), np.float32)
  kernel[rows, cols] = 1.0
  # Correlation with the anchor at the kernel's top-left: hits[y, x] counts
  # the bottom pixels on context when the bbox's top-left is at (y, x).
  hits = cv2.filter2D(allowed.astype(np.float32), -1, kernel, anchor=(0, 0),
                      borderType=cv2.BORDER_CONSTANT)[:h - bh + 1, :w - bw + 1]
  need = math.ceil(support * len(cols) - 1e-9)
  # Counts are integers; the 0.5 margin absorbs DFT round-off on big kernels.
  return np.argwhere(hits > need - 0.5)


def copy_blobs(image: np.ndarray, label: np.ndarray, p_image: np.ndarray,
               p_label: np.ndarray, rules: Rules, rng: np.random.Generator,
               max_blobs: int = 3, min_pixels: int = 50,
               support: float = 0.9
               ) -> tuple[np.ndarray, np.ndarray, list[Paste]]:
  """Pastes up to `max_blobs` rule blobs of the partner into the sample.

  Candidate blobs are tried in a random order; each goes to a uniformly drawn
  valid placement on the sample as pasted so far (a pasted blob is no longer
  context). Returns copies of (image, label) and the pastes made.
  """
  blobs = find_blobs(p_label, tuple(rules), min_pixels)
  image, label = image.copy(), label.copy()
  pastes: list[Paste] = []
  for i in rng.permutation(len(blobs)):
    if len(pastes) == max_blobs:
      break
    blob = blobs[int(i)]
    context = np.fromiter(rules[blob.class_id], np.uint8)
    where = placements(np.isin(label, context), blob, support)
    if len(where) == 0:
      continue
    y, x = (int(v) for v in where[rng.integers(len(where))])
    bh, bw = blob.mask.shape
    src_img = p_image[blob.y:blob.y + bh, blob.x:blob.x + bw]
    image[y:y + bh, x:x + bw][blob.mask] = src_img[blob.mask]
    label[y:y + bh, x:x + bw][blob.mask] = blob.class_id
    pastes.append(Paste(blob.class_id, (blob.y, blob.x), (y, x), (bh, bw),
                        int(blob.mask.sum())))
  return image, label, pastes


@dataclasses.dataclass(frozen=True)
class CopyBlob:
  """CopyBlob mixer (`data.copyblob_*`), for mixing.MixWithPartner."""
  prob: float
  rules: Rules
  max_blobs: int = 3
  min_pixels: int = 50
  support: float = 0.9
  stream: int = mixing.COPYBLOB_STREAM

  def __call__(self, sample: mixing.Sample, partner: mixing.Sample,
               rng: np.random.Generator) -> mixing.Sample:
    image, label, _ = copy_blobs(sample["image"], sample["label"],
                                 partner["image"], partner["label"],
                                 self.rules, rng, self.max_blobs,
                                 self.min_pixels, self.support)
    return {**sample, "image": image, "label": label}


def from_config(data_cfg: Any, table: Any) -> CopyBlob:
  """The CopyBlob mixer of a data config, rules checked against `table`."""
  spec = rules_spec(str(data_cfg.copyblob_rules), str(data_cfg.name))
  rules = resolve_rules(load_rule_names(spec), table,
                        f"data.copyblob_rules={spec!r}")
  return CopyBlob(float(data_cfg.copyblob_prob), rules,
                  int(data_cfg.copyblob_max_blobs),
                  int(data_cfg.copyblob_min_pixels),
                  float(data_cfg.copyblob_support))
