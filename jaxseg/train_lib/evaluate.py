"""Whole-image evaluation over a loader, and writing its tables and pictures."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable, Sequence

import cv2
import jax
import numpy as np
import tqdm
from jax.sharding import Mesh

from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import metrics as metrics_lib


def evaluate(eval_step: Callable, model_vars: dict[str, Any], batches: Iterable[dict[str, Any]],
             *, mesh: Mesh, num_classes: int, max_batches: int | None = None,
             on_batch: Callable[[dict[str, Any], dict[str, jax.Array]], None] | None = None,
             progress: bool = True) -> tuple[dict[str, Any], np.ndarray]:
  """Accumulates one confusion matrix on device; returns (summary, confusion)."""
  confusion = None
  total = max_batches
  if total is None and hasattr(batches, "__len__"):
    total = len(batches)
  bar = tqdm.tqdm(batches, total=total, desc="eval", unit="batch",
                  disable=not progress or jax.process_index() != 0, leave=False)
  for i, batch in enumerate(bar):
    if max_batches is not None and i >= max_batches:
      break
    arrays = mesh_lib.shard_batch({k: batch[k] for k in ("image", "label", "valid") if k in batch},
                                  mesh)
    counts = eval_step(model_vars, arrays)
    confusion = counts if confusion is None else confusion + counts
    if on_batch is not None:
      on_batch(batch, arrays)
  if confusion is None:
    raise ValueError("the evaluation loader produced no batches: check config.data eval split")
  confusion = np.asarray(jax.device_get(confusion))
  assert confusion.shape == (num_classes, num_classes)
  return metrics_lib.summarize(confusion), confusion


def write_eval_report(outdir: pathlib.Path, step: int, summary: dict[str, Any],
                      confusion: np.ndarray, class_names: Sequence[str]) -> str:
  """Writes metrics.json, iou_table.txt and confusion.npy; returns the table text."""
  outdir.mkdir(parents=True, exist_ok=True)
  table = metrics_lib.format_table(summary, class_names)
  nan_to_none = lambda v: None if np.isnan(v) else float(v)
  record = {
      "step": int(step),
      "miou": summary["miou"], "macc": summary["macc"], "aacc": summary["aacc"],
      "fwiou": summary["fwiou"],
      "per_class": {name: {"iou": nan_to_none(iou), "acc": nan_to_none(acc)}
                    for name, iou, acc in zip(class_names, summary["iou"], summary["acc"])},
  }
  (outdir / "metrics.json").write_text(json.dumps(record, indent=2))
  (outdir / "iou_table.txt").write_text(f"step {step}\n{table}\n")
  np.save(outdir / "confusion.npy", confusion)
  return table


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
  """(H,W) class ids -> (H,W,3) RGB; ignore/unknown ids are black."""
  palette = np.zeros((256, 3), np.uint8)
  palette[:len(colors)] = np.asarray(colors, np.uint8)
  return palette[np.asarray(labels, np.uint8)]


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  blend = image.astype(np.float32) * (1 - alpha) + color_mask.astype(np.float32) * alpha
  return np.clip(blend, 0, 255).astype(np.uint8)


def write_prediction_images(outdir: pathlib.Path, names: Sequence[str], images: np.ndarray,
                            preds: np.ndarray, colors: np.ndarray) -> list[pathlib.Path]:
  """Writes `<name>_color.png` masks and `<name>_overlay.png` blends (RGB inputs)."""
  outdir.mkdir(parents=True, exist_ok=True)
  written = []
  for name, image, pred in zip(names, images, preds):
    stem = pathlib.Path(str(name)).stem
    mask = colorize(pred, colors)
    for suffix, picture in (("color", mask), ("overlay", overlay(image, mask))):
      path = outdir / f"{stem}_{suffix}.png"
      if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
      written.append(path)
  return written
