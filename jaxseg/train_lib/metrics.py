"""Confusion-matrix metrics: accumulated on device, summarised on the host."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jax.Array, preds: jax.Array, num_classes: int, *,
                     ignore_index: int = 255, valid: jax.Array | None = None) -> jax.Array:
  """(K, K) int32 counts, rows = ground truth, columns = prediction; ignores 255 / invalid images."""
  labels = labels.astype(jnp.int32)
  mask = (labels != ignore_index) & (labels < num_classes)
  if valid is not None:
    mask &= valid.reshape((-1,) + (1,) * (labels.ndim - 1))
  index = jnp.where(mask, labels * num_classes + preds.astype(jnp.int32), num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def summarize(confusion: np.ndarray) -> dict[str, object]:
  """Per-class IoU/accuracy, mIoU, mAcc, aAcc and fwIoU; classes absent from both sides are NaN."""
  conf = np.asarray(confusion, dtype=np.float64)
  tp = np.diag(conf)
  gt = conf.sum(axis=1)
  pred = conf.sum(axis=0)
  union = gt + pred - tp
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
    acc = np.where(gt > 0, tp / gt, np.nan)
    total = conf.sum()
    freq = gt / total if total else np.zeros_like(gt)
  present = gt > 0
  return {
      "iou": iou,
      "acc": acc,
      "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0,
      "macc": float(np.nanmean(acc)) if np.any(present) else 0.0,
      "aacc": float(tp.sum() / total) if total else 0.0,
      "fwiou": float(np.nansum(freq[present] * iou[present])) if total else 0.0,
  }


def format_table(summary: dict[str, object], class_names: list[str] | tuple[str, ...]) -> str:
  """A concise per-class table for the log."""
  width = max(8, max(len(n) for n in class_names))
  lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
  for name, iou, acc in zip(class_names, summary["iou"], summary["acc"]):
    fmt = lambda v: "   n/a" if np.isnan(v) else f"{100 * v:6.2f}"
    lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(acc)}")
  lines.append(f"{'mean':<{width}}  {100 * summary['miou']:6.2f}  {100 * summary['macc']:6.2f}")
  lines.append(f"aAcc {100 * summary['aacc']:.2f}  fwIoU {100 * summary['fwiou']:.2f}")
  return "\n".join(lines)
