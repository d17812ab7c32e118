"""Confusion-matrix metrics: accumulated on device, summarised on the host."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jax.Array, preds: jax.Array, num_classes: int, *,
                     ignore_index: int = 255, valid: jax.Array | None = None) -> jax.Array:
  """(K, K) int32 counts, rows = ground truth, columns = prediction; ignores 255 / invalid
  images."""
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
  """A concise per-class table for the log (with an nIoU column when the summary has one)."""
  width = max(8, max(len(n) for n in class_names))
  niou = summary.get("niou")
  fmt = lambda v: "   n/a" if np.isnan(v) else f"{100 * v:6.2f}"
  lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}" + ("  {:>6}".format("nIoU")
                                                          if niou is not None else "")]
  for i, (name, iou, acc) in enumerate(zip(class_names, summary["iou"], summary["acc"])):
    extra = f"  {fmt(niou[i])}" if niou is not None else ""
    lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(acc)}{extra}")
  extra = f"  {fmt(summary['mniou'])}" if niou is not None else ""
  lines.append(f"{'mean':<{width}}  {100 * summary['miou']:6.2f}  {100 * summary['macc']:6.2f}"
               f"{extra}")
  lines.append(f"aAcc {100 * summary['aacc']:.2f}  fwIoU {100 * summary['fwiou']:.2f}")
  return "\n".join(lines)


# ------------------------------------------------------------------ instance-level IoU --
# Instance maps (batch key 'instance', int32): train_id * INSTANCE_SLOTS + k on the pixels of
# instance k of a class, -1 elsewhere (stuff, crowd regions, classes ignored in evaluation).
INSTANCE_SLOTS = 1000
# cityscapesscripts evalPixelLevelSemanticLabeling `avgClassSize` (mean instance size in
# pixels over the training set), keyed by Cityscapes train id; caravan and trailer have
# instances too but are ignored in evaluation.
CITYSCAPES_MEAN_INSTANCE_SIZE = {
    11: 3462.4756337644,  # person
    12: 3930.4788056518,  # rider
    13: 12794.0202738185,  # car
    14: 27855.1264367816,  # truck
    15: 35732.1511111111,  # bus
    16: 67583.7075812274,  # train
    17: 6298.7200839748,  # motorcycle
    18: 4672.3249222261,  # bicycle
}


def instance_counts(preds: jax.Array, instances: jax.Array, classes: tuple[int, ...],
                    valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per image and instance: (size, pixels predicted as its class), (N, S, INSTANCE_SLOTS).

  S = len(classes), the classes with instances; slot [i, s, k] is instance k of classes[s] in
  image i. Exact int32 counts: the size weights are applied on the host in float64.
  """
  n = instances.shape[0]
  instances = instances.astype(jnp.int32).reshape(n, -1)
  preds = preds.astype(jnp.int32).reshape(n, -1)
  cls = instances // INSTANCE_SLOTS
  lut = np.full(max(classes) + 1, -1, np.int32)
  lut[list(classes)] = np.arange(len(classes))
  slot = jnp.asarray(lut)[jnp.clip(cls, 0, len(lut) - 1)]
  keep = (instances >= 0) & (cls < len(lut)) & (slot >= 0)
  if valid is not None:
    keep &= valid.reshape(n, 1)
  bins = len(classes) * INSTANCE_SLOTS
  index = jnp.where(keep, slot * INSTANCE_SLOTS + instances % INSTANCE_SLOTS, bins)
  hit = keep & (preds == cls)
  count = jax.vmap(lambda i, w: jnp.bincount(i, w, length=bins + 1)[:-1])
  sizes = count(index, keep.astype(jnp.int32))
  tps = count(index, hit.astype(jnp.int32))
  shape = (n, len(classes), INSTANCE_SLOTS)
  return sizes.astype(jnp.int32).reshape(shape), tps.astype(jnp.int32).reshape(shape)


class InstanceWeightedCounts:
  """cityscapesscripts' instance-weighted TP / FN per class, accumulated in float64.

  Every ground-truth instance of class c weighs mean_size[c] / its size: its TP pixels
  (predicted as c) and FN pixels (the rest) count that much. FP stay unweighted (taken from
  the confusion matrix), see `instance_iou`.
  """

  def __init__(self, mean_sizes: dict[int, float]):
    self.classes = tuple(sorted(int(c) for c in mean_sizes))
    self.mean = np.asarray([mean_sizes[c] for c in self.classes], np.float64)
    self.tp = np.zeros(len(self.classes), np.float64)
    self.fn = np.zeros(len(self.classes), np.float64)

  def add(self, sizes: np.ndarray, tps: np.ndarray) -> None:
    """Adds `instance_counts` outputs (host arrays) of one batch."""
    sizes = np.asarray(sizes, np.float64)
    tps = np.asarray(tps, np.float64)
    weight = np.divide(self.mean[None, :, None], sizes, out=np.zeros_like(sizes),
                       where=sizes > 0)
    self.tp += (tps * weight).sum(axis=(0, 2))
    self.fn += ((sizes - tps) * weight).sum(axis=(0, 2))


def instance_iou(confusion: np.ndarray, weighted: InstanceWeightedCounts) -> np.ndarray:
  """(K,) iIoU = wTP / (wTP + wFN + FP); NaN for classes without instances or samples."""
  conf = np.asarray(confusion, np.float64)
  fp = conf.sum(axis=0) - np.diag(conf)
  out = np.full(conf.shape[0], np.nan)
  for s, c in enumerate(weighted.classes):
    denom = weighted.tp[s] + weighted.fn[s] + fp[c]
    if c < conf.shape[0] and denom > 0:
      out[c] = weighted.tp[s] / denom
  return out


def add_instance_iou(summary: dict[str, object], confusion: np.ndarray,
                     weighted: InstanceWeightedCounts) -> dict[str, object]:
  """`summary` plus 'niou' (K,) and 'mniou' (mean over the classes that have a value)."""
  niou = instance_iou(confusion, weighted)
  return {**summary, "niou": niou,
          "mniou": float(np.nanmean(niou)) if np.any(~np.isnan(niou)) else float("nan")}
