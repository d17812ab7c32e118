"""Evaluation pictures: the original `--dump_images` folders, metric charts and the TensorBoard
image grid (cv2 + numpy).

Dump folders (file names as the original eval.py writes them, `name` = image file stem):
  rgb/<name>_color.png        prediction in the class colours
  pred/<name>.png             prediction as the dataset's raw label ids (Cityscapes labelIds:
                              what the benchmark server expects)
  compose/<name>_compose.png  image and colour mask blended 50/50
  diff/<name>_diff.png        the blend where the prediction is wrong, white where it is right
                              or the ground truth is ignored (not written without labels)
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import cv2
import numpy as np

from jaxseg.data import pictures
from jaxseg.runtime import mesh as mesh_lib

DUMP_FOLDERS = ("rgb", "pred", "compose", "diff")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def error_image(composed: np.ndarray, pred: np.ndarray, label: np.ndarray,
                ignore_index: int = 255) -> np.ndarray:
  """The original diff picture: `composed` at wrong pixels, white elsewhere."""
  wrong = (pred != label) & (label != ignore_index)
  out = np.full_like(composed, 255)
  out[wrong] = composed[wrong]
  return out


class DumpWriter:
  """Writes the rgb/pred/compose/diff pictures of one evaluation run."""

  def __init__(self, outdir: str | pathlib.Path, colors: np.ndarray, train_to_raw: np.ndarray,
               *, ignore_index: int = 255, alpha: float = 0.5):
    self.outdir = pathlib.Path(outdir)
    self.palette = pictures.palette_of(colors)
    self.train_to_raw = np.asarray(train_to_raw, np.uint8)
    self.ignore_index = ignore_index
    self.alpha = alpha
    for folder in DUMP_FOLDERS:
      (self.outdir / folder).mkdir(parents=True, exist_ok=True)

  def write(self, name: str, image: np.ndarray, pred: np.ndarray,
            label: np.ndarray | None = None) -> list[pathlib.Path]:
    """Pictures of one image (RGB uint8), prediction (train ids) and optional label."""
    stem = pathlib.Path(str(name)).name
    color = self.palette[np.asarray(pred, np.uint8)]
    composed = pictures.blend(image, color, self.alpha)
    written = [
        pictures.write_png(self.outdir / "rgb" / f"{stem}_color.png", color),
        pictures.write_png(self.outdir / "pred" / f"{stem}.png", self.train_to_raw[pred]),
        pictures.write_png(self.outdir / "compose" / f"{stem}_compose.png", composed),
    ]
    if label is not None and np.any(label != self.ignore_index):
      written.append(pictures.write_png(self.outdir / "diff" / f"{stem}_diff.png",
                               error_image(composed, pred, label, self.ignore_index)))
    return written


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = (0, 0, 0)) -> None:
  cv2.putText(canvas, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45) -> int:
  return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def iou_bar_chart(values: Sequence[float], class_names: Sequence[str], colors: np.ndarray, *,
                  title: str = "IoU per class", bar_height: int = 20) -> np.ndarray:
  """Horizontal bars in the class colours, value in percent; NaN (absent class) = 'n/a'."""
  names = [str(n) for n in class_names]
  label_w = max(_text_width(n) for n in names) + 16
  plot_w, margin, top = 500, 70, 40
  height = top + bar_height * len(names) + 30
  canvas = np.full((height, label_w + plot_w + margin, 3), 255, np.uint8)
  _text(canvas, title, (10, 24), 0.6)
  for pct in range(0, 101, 20):  # grid and axis ticks
    x = label_w + int(plot_w * pct / 100)
    cv2.line(canvas, (x, top - 4), (x, height - 26), (220, 220, 220), 1)
    _text(canvas, f"{pct}", (x - 8, height - 10), 0.4, (90, 90, 90))
  for i, (name, value) in enumerate(zip(names, values)):
    y = top + i * bar_height
    _text(canvas, name, (label_w - 8 - _text_width(name), y + bar_height - 6))
    if value is None or np.isnan(value):
      _text(canvas, "n/a", (label_w + 4, y + bar_height - 6), 0.4, (120, 120, 120))
      continue
    x2 = label_w + int(round(plot_w * float(value)))
    color = tuple(int(c) for c in np.asarray(colors[i], np.uint8))
    cv2.rectangle(canvas, (label_w, y + 3), (max(label_w + 1, x2), y + bar_height - 3), color,
                  cv2.FILLED)
    cv2.rectangle(canvas, (label_w, y + 3), (max(label_w + 1, x2), y + bar_height - 3),
                  (60, 60, 60), 1)
    _text(canvas, f"{100 * value:.1f}", (x2 + 4, y + bar_height - 6), 0.4)
  return canvas


def normalized_confusion(confusion: np.ndarray) -> np.ndarray:
  """Rows (ground truth) scaled to sum 1; rows without pixels stay 0."""
  conf = np.asarray(confusion, np.float64)
  rows = conf.sum(axis=1, keepdims=True)
  return np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)


def confusion_chart(confusion: np.ndarray, class_names: Sequence[str], *,
                    title: str = "confusion (rows: ground truth, normalised)") -> np.ndarray:
  """Heat map of the row-normalised confusion matrix with class names on both axes."""
  norm = normalized_confusion(confusion)
  k = norm.shape[0]
  cell = int(np.clip(720 // max(k, 1), 8, 36))
  names = [str(n) for n in class_names]
  label_w = max(_text_width(n, 0.4) for n in names) + 10
  top = label_w + 36
  heat = cv2.applyColorMap(np.round(norm * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
  heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
  heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
  canvas = np.full((top + k * cell + 10, label_w + k * cell + 10, 3), 255, np.uint8)
  canvas[top:top + k * cell, label_w:label_w + k * cell] = heat
  _text(canvas, title, (6, 20), 0.5)
  # Column names: written on a strip, rotated a quarter turn to read bottom-up.
  strip = np.full((cell * k, label_w, 3), 255, np.uint8)
  for i, name in enumerate(names):
    _text(strip, name, (6, i * cell + cell // 2 + 4), 0.4)
    _text(canvas, name, (label_w - 6 - _text_width(name, 0.4), top + i * cell + cell // 2 + 4),
          0.4)
  canvas[top - label_w:top, label_w:label_w + k * cell] = np.rot90(strip)
  if cell >= 28:  # room for the values
    for r in range(k):
      for c in range(k):
        if norm[r, c] >= 0.005:
          shade = (0, 0, 0) if norm[r, c] > 0.6 else (255, 255, 255)
          _text(canvas, f"{100 * norm[r, c]:.0f}",
                (label_w + c * cell + 3, top + r * cell + cell // 2 + 4), 0.35, shade)
  return canvas


class FirstImages:
  """Keeps the first `count` valid eval images with their labels and predictions.

  Its `add` is an `evaluate(on_batch=...)` callback: the predictions are the eval step's own
  (no second forward pass), read from this process's rows of the batch.
  """

  def __init__(self, count: int):
    self.count = max(int(count), 0)
    self.images: list[np.ndarray] = []
    self.labels: list[np.ndarray] = []
    self.preds: list[np.ndarray] = []
    self.names: list[str] = []

  @property
  def full(self) -> bool:
    return len(self.images) >= self.count

  def add(self, batch: dict, arrays: dict) -> None:
    if self.full or "pred" not in arrays:
      return
    preds = mesh_lib.local_rows(arrays["pred"])
    valid = np.asarray(batch.get("valid", np.ones(len(preds), bool)), bool)
    names = batch.get("name", [""] * len(preds))
    for i in np.flatnonzero(valid)[:self.count - len(self.images)]:
      self.images.append(np.asarray(batch["image"][i], np.uint8))
      self.labels.append(np.asarray(batch["label"][i], np.uint8))
      self.preds.append(np.asarray(preds[i], np.uint8))
      self.names.append(str(names[i]))


def _fit_width(image: np.ndarray, width: int, nearest: bool) -> np.ndarray:
  h, w = image.shape[:2]
  if w <= width:
    return image
  size = (width, max(1, round(h * width / w)))
  return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def overlay_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                 preds: Sequence[np.ndarray], colors: np.ndarray, *, alpha: float = 0.5,
                 panel_width: int = 320, gap: int = 4) -> np.ndarray:
  """One row per image: the image, the ground truth and the prediction as class-colour overlays.

  Panels wider than `panel_width` are shrunk (event files hold PNGs, and tensorboardX's
  pure-Python checksum costs ~1 s per MB). Ignored label pixels are black in the overlay.
  """
  if not images:
    raise ValueError("overlay_grid: no images")
  palette = pictures.palette_of(colors)
  rows = []
  for image, label, pred in zip(images, labels, preds):
    image = _fit_width(np.asarray(image, np.uint8), panel_width, nearest=False)
    hw = image.shape[1::-1]
    label = cv2.resize(np.asarray(label, np.uint8), hw, interpolation=cv2.INTER_NEAREST)
    pred = cv2.resize(np.asarray(pred, np.uint8), hw, interpolation=cv2.INTER_NEAREST)
    panels = [image, pictures.blend(image, palette[label], alpha),
              pictures.blend(image, palette[pred], alpha)]
    rows.append(panels)
  width = max(p.shape[1] for row in rows for p in row)
  header = 22
  canvas_h = header + sum(max(p.shape[0] for p in row) + gap for row in rows)
  canvas = np.full((canvas_h, 3 * width + 2 * gap, 3), 255, np.uint8)
  for col, title in enumerate(("image", "ground truth", "prediction")):
    _text(canvas, title, (col * (width + gap) + 4, 16), 0.5)
  y = header
  for row in rows:
    for col, panel in enumerate(row):
      x = col * (width + gap)
      canvas[y:y + panel.shape[0], x:x + panel.shape[1]] = panel
    y += max(p.shape[0] for p in row) + gap
  return canvas


def eval_pictures(shown: FirstImages, summary: dict, confusion: np.ndarray,
                  class_names: Sequence[str], colors: np.ndarray, step: int, *,
                  alpha: float = 0.5) -> dict[str, np.ndarray]:
  """The TensorBoard pictures of one evaluation, by tag."""
  pictures = {
      "eval/iou_per_class": iou_bar_chart(
          summary["iou"], class_names, colors,
          title=f"IoU per class, step {step}, mIoU {100 * summary['miou']:.2f}"),
      "eval/confusion": confusion_chart(confusion, class_names),
  }
  if shown.images:
    pictures["eval/images"] = overlay_grid(shown.images, shown.labels, shown.preds, colors,
                                           alpha=alpha)
  return pictures
