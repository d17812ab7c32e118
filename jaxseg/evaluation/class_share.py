"""Class-share reports: the percentage of pixels predicted as each class, per image and folder."""
from __future__ import annotations

import csv
import pathlib
from typing import Sequence

import numpy as np


def pixel_counts(pred: np.ndarray, num_classes: int) -> np.ndarray:
  """(K,) int64 pixel count of every class in a train-id map (other ids are not counted)."""
  return np.bincount(np.asarray(pred, np.int64).ravel(), minlength=256)[:num_classes]


class ClassShare:
  """Accumulates per-item pixel counts and their per-group (folder) and overall sums."""

  def __init__(self, class_names: Sequence[str]):
    self.class_names = [str(n) for n in class_names]
    self.rows: list[tuple[str, str, np.ndarray]] = []  # (item, group, counts)

  def add(self, item: str, pred: np.ndarray, group: str = "") -> np.ndarray:
    counts = pixel_counts(pred, len(self.class_names))
    self.rows.append((str(item), str(group), counts))
    return counts

  def total(self, group: str | None = None) -> np.ndarray:
    counts = [c for _, g, c in self.rows if group is None or g == group]
    return np.sum(counts, axis=0) if counts else np.zeros(len(self.class_names), np.int64)

  def groups(self) -> list[str]:
    return sorted({g for _, g, _ in self.rows})

  @staticmethod
  def percent(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return 100.0 * counts / total if total else np.zeros(len(counts))

  def write_csv(self, path: str | pathlib.Path) -> pathlib.Path:
    """One row per item, then one per group ('<group>/*') and 'ALL': pixels and % per class."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["item", "kind", "pixels", *self.class_names])
      summary = [(f"{g or '.'}/*", "folder", self.total(g)) for g in self.groups()]
      for name, kind, counts in ([(i, "item", c) for i, _, c in self.rows] + summary +
                                 [("ALL", "total", self.total())]):
        writer.writerow([name, kind, int(counts.sum()),
                         *(f"{p:.4f}" for p in self.percent(counts))])
    return path

  def format_table(self, max_groups: int = 6, min_percent: float = 0.0) -> str:
    """Classes as rows, the overall share and (up to `max_groups`) folder shares as columns."""
    columns = [("ALL", self.total())]
    groups = self.groups()
    if 1 < len(groups) <= max_groups:
      columns += [(g or ".", self.total(g)) for g in groups]
    shares = [self.percent(c) for _, c in columns]
    width = max(8, max(len(n) for n in self.class_names))
    heads = [h[-12:] for h, _ in columns]
    lines = [f"{'class':<{width}}  " + "  ".join(f"{h:>12}" for h in heads)]
    for k, name in enumerate(self.class_names):
      if max(s[k] for s in shares) < min_percent:
        continue
      lines.append(f"{name:<{width}}  " + "  ".join(f"{s[k]:11.2f}%" for s in shares))
    lines.append(f"{'pixels':<{width}}  " + "  ".join(f"{int(c.sum()):>12d}" for _, c in columns))
    return "\n".join(lines)
