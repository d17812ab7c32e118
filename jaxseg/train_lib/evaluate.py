"""Evaluation over a loader (one confusion matrix on device), its report and pictures."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
import tqdm
from jax.sharding import Mesh

from jaxseg.train_lib import eval_outputs
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import metrics as metrics_lib

# The device matrix is int32: it is added into the host's int64 copy before its total could
# pass 2**31 - 1 (one cell can hold at most every pixel seen since the last flush).
_INT32_SAFE_PIXELS = 2**31 - 1

EvalStep = Callable[[dict[str, Any], dict[str, jax.Array]], Any]


def evaluate(eval_step: EvalStep, model_vars: dict[str, Any], batches: Iterable[dict[str, Any]],
             *, mesh: Mesh, num_classes: int, max_batches: int | None = None,
             on_batch: Callable[[dict[str, Any], dict[str, jax.Array]], None] | None = None,
             progress: bool = True) -> tuple[dict[str, Any], np.ndarray]:
  """Accumulates one confusion matrix on device; returns (summary, int64 confusion).

  `eval_step(model_vars, arrays)` returns the batch's (K, K) counts, or (counts, preds); then
  `on_batch(batch, arrays)` finds the sharded predictions under arrays['pred'].
  """
  device_total, host_total, pending = None, np.zeros((num_classes, num_classes), np.int64), 0
  total = max_batches
  if total is None and hasattr(batches, "__len__"):
    total = len(batches)
  bar = tqdm.tqdm(batches, total=total, desc="eval", unit="batch",
                  disable=not progress or jax.process_index() != 0, leave=False)
  seen = 0
  for i, batch in enumerate(bar):
    if max_batches is not None and i >= max_batches:
      break
    arrays = mesh_lib.shard_batch({k: batch[k] for k in ("image", "label", "valid") if k in batch},
                                  mesh)
    out = eval_step(model_vars, arrays)
    counts, preds = out if isinstance(out, tuple) else (out, None)
    pixels = int(np.prod(arrays["label"].shape))
    if device_total is not None and pending + pixels > _INT32_SAFE_PIXELS:
      host_total += np.asarray(jax.device_get(device_total), np.int64)
      device_total, pending = None, 0
    device_total = counts if device_total is None else device_total + counts
    pending += pixels
    seen += 1
    if on_batch is not None:
      if preds is not None:
        arrays = {**arrays, "pred": preds}
      on_batch(batch, arrays)
  if not seen:
    raise ValueError("the evaluation loader produced no batches: check config.data eval split")
  if device_total is not None:
    host_total += np.asarray(jax.device_get(device_total), np.int64)
  if host_total.shape != (num_classes, num_classes):
    raise ValueError(f"eval_step returned a {host_total.shape} confusion matrix; expected "
                     f"({num_classes}, {num_classes})")
  return metrics_lib.summarize(host_total), host_total


def write_eval_report(outdir: pathlib.Path, step: int, summary: dict[str, Any],
                      confusion: np.ndarray, class_names: Sequence[str], *,
                      colors: np.ndarray | None = None,
                      extra: dict[str, Any] | None = None) -> str:
  """Writes metrics.json, iou_table.txt, confusion.npy and the charts; returns the table.

  Charts: iou_per_class.png (bars in the class `colors`, grey without) and confusion.png
  (row-normalised). `extra` (e.g. the inference settings) is merged into metrics.json.
  """
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  table = metrics_lib.format_table(summary, class_names)
  nan_to_none = lambda v: None if np.isnan(v) else float(v)
  record = {
      "step": int(step),
      "miou": summary["miou"], "macc": summary["macc"], "aacc": summary["aacc"],
      "fwiou": summary["fwiou"],
      "pixels": int(np.asarray(confusion).sum()),
      "per_class": {name: {"iou": nan_to_none(iou), "acc": nan_to_none(acc)}
                    for name, iou, acc in zip(class_names, summary["iou"], summary["acc"])},
      **(extra or {}),
  }
  (outdir / "metrics.json").write_text(json.dumps(record, indent=2))
  (outdir / "iou_table.txt").write_text(f"step {step}\n{table}\n")
  np.save(outdir / "confusion.npy", np.asarray(confusion))
  if colors is None:
    colors = np.full((len(class_names), 3), 150, np.uint8)
  eval_outputs.write_png(outdir / "iou_per_class.png", eval_outputs.iou_bar_chart(
      summary["iou"], class_names, colors,
      title=f"IoU per class, step {step}, mIoU {100 * summary['miou']:.2f}"))
  eval_outputs.write_png(outdir / "confusion.png",
                         eval_outputs.confusion_chart(confusion, class_names))
  return table


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
  """(H,W) class ids -> (H,W,3) RGB; ignore/unknown ids are black."""
  return eval_outputs.palette_of(colors)[np.asarray(labels, np.uint8)]


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """`image` and `color_mask` blended, (1 - alpha) : alpha."""
  return eval_outputs.blend(image, color_mask, alpha)


def write_prediction_images(outdir: pathlib.Path, names: Sequence[str], images: np.ndarray,
                            preds: np.ndarray, colors: np.ndarray) -> list[pathlib.Path]:
  """Writes `<name>_color.png` masks and `<name>_overlay.png` blends (RGB inputs)."""
  outdir = pathlib.Path(outdir)
  written = []
  for name, image, pred in zip(names, images, preds):
    stem = pathlib.Path(str(name)).stem
    mask = colorize(pred, colors)
    written.append(eval_outputs.write_png(outdir / f"{stem}_color.png", mask))
    written.append(eval_outputs.write_png(outdir / f"{stem}_overlay.png", overlay(image, mask)))
  return written


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order (host numpy)."""
  if getattr(array, "is_fully_addressable", True):
    return np.asarray(jax.device_get(array))
  shards = {}
  for shard in array.addressable_shards:
    start = shard.index[0].start or 0
    shards.setdefault(start, np.asarray(shard.data))
  return np.concatenate([shards[k] for k in sorted(shards)], axis=0)
