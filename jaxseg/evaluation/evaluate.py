"""Evaluation over a loader (one confusion matrix on device), its report and pictures."""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import jax
from jax.sharding import Mesh
import numpy as np
import tqdm

from jaxseg.data import pictures
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.evaluation import report as eval_outputs
from jaxseg.runtime import mesh as mesh_lib

# The device matrix is int32: it is added into the host's int64 copy before its total could
# pass 2**31 - 1 (one cell can hold at most every pixel seen since the last flush).
_INT32_SAFE_PIXELS = 2**31 - 1

EvalStep = Callable[[dict[str, Any], dict[str, jax.Array]], Any]


@functools.lru_cache(maxsize=None)
def _instance_counter(mesh: Mesh, classes: tuple[int, ...]) -> Callable[..., Any]:
  # Replicated output: every process sees every image's instances (multi-host sums agree).
  return jax.jit(functools.partial(metrics_lib.instance_counts, classes=classes),
                 out_shardings=mesh_lib.replicated(mesh))


def evaluate(eval_step: EvalStep, model_vars: dict[str, Any], batches: Iterable[dict[str, Any]],
             *, mesh: Mesh, num_classes: int, max_batches: int | None = None,
             on_batch: Callable[[dict[str, Any], dict[str, jax.Array]], None] | None = None,
             progress: bool = True,
             instance_mean_sizes: Mapping[int, float] | None = None
             ) -> tuple[dict[str, Any], np.ndarray]:
  """Accumulates one confusion matrix on device; returns (summary, int64 confusion).

  `eval_step(model_vars, arrays)` returns the batch's (K, K) counts, or (counts, preds); then
  `on_batch(batch, arrays)` finds the sharded predictions under arrays['pred'].

  Batches with an 'instance' map (Cityscapes gtFine instanceIds, see
  metrics.INSTANCE_SLOTS) and an eval step returning predictions also give the
  instance-normalised IoU of cityscapesscripts (summary 'niou', 'mniou'), weighted by
  `instance_mean_sizes` (train id -> mean instance size; default: Cityscapes' avgClassSize
  for 19-class models).
  """
  device_total, host_total, pending = None, np.zeros((num_classes, num_classes), np.int64), 0
  weighted, queued = None, None  # instance counts: fetched one batch late (no sync per batch)
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
    if "instance" in batch:
      if weighted is None:
        weighted = _instance_weights(instance_mean_sizes, num_classes, preds is not None)
      if weighted:
        inst = mesh_lib.shard_batch({"instance": np.asarray(batch["instance"], np.int32)},
                                    mesh)["instance"]
        handles = _instance_counter(mesh, weighted.classes)(preds, inst,
                                                            valid=arrays.get("valid"))
        if queued is not None:
          weighted.add(*jax.device_get(queued))
        queued = handles
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
  if queued is not None:
    weighted.add(*jax.device_get(queued))
  if device_total is not None:
    host_total += np.asarray(jax.device_get(device_total), np.int64)
  if host_total.shape != (num_classes, num_classes):
    raise ValueError(f"eval_step returned a {host_total.shape} confusion matrix; expected "
                     f"({num_classes}, {num_classes})")
  summary = metrics_lib.summarize(host_total)
  if weighted:
    summary = metrics_lib.add_instance_iou(summary, host_total, weighted)
  return summary, host_total


def _instance_weights(mean_sizes: Mapping[int, float] | None, num_classes: int,
                      have_preds: bool) -> metrics_lib.InstanceWeightedCounts | bool:
  """The nIoU accumulator, or False (logged) when it cannot be computed."""
  if not have_preds:
    logging.info("eval batches carry instance maps but the eval step returns no "
                 "predictions: nIoU skipped")
    return False
  if mean_sizes is None:
    if num_classes != 19:
      raise ValueError(f"eval batches carry instance maps but no instance_mean_sizes were "
                       f"given for a {num_classes}-class model (the default is Cityscapes' "
                       "19-class avgClassSize)")
    mean_sizes = metrics_lib.CITYSCAPES_MEAN_INSTANCE_SIZE
  return metrics_lib.InstanceWeightedCounts(dict(mean_sizes))


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
  }
  if "niou" in summary:  # Cityscapes instance-normalised IoU (cityscapesscripts' iIoU)
    record["mniou"] = nan_to_none(summary["mniou"])
    for name, niou in zip(class_names, summary["niou"]):
      if not np.isnan(niou):
        record["per_class"][name]["niou"] = float(niou)
  record.update(extra or {})
  (outdir / "metrics.json").write_text(json.dumps(record, indent=2))
  (outdir / "iou_table.txt").write_text(f"step {step}\n{table}\n")
  np.save(outdir / "confusion.npy", np.asarray(confusion))
  if colors is None:
    colors = np.full((len(class_names), 3), 150, np.uint8)
  pictures.write_png(outdir / "iou_per_class.png", eval_outputs.iou_bar_chart(
      summary["iou"], class_names, colors,
      title=f"IoU per class, step {step}, mIoU {100 * summary['miou']:.2f}"))
  pictures.write_png(outdir / "confusion.png",
                         eval_outputs.confusion_chart(confusion, class_names))
  return table


def write_prediction_images(outdir: pathlib.Path, names: Sequence[str], images: np.ndarray,
                            preds: np.ndarray, colors: np.ndarray) -> list[pathlib.Path]:
  """Writes `<name>_color.png` masks and `<name>_overlay.png` blends (RGB inputs)."""
  outdir = pathlib.Path(outdir)
  written = []
  for name, image, pred in zip(names, images, preds):
    stem = pathlib.Path(str(name)).stem
    mask = pictures.colorize(pred, colors)
    written.append(pictures.write_png(outdir / f"{stem}_color.png", mask))
    written.append(pictures.write_png(outdir / f"{stem}_overlay.png", pictures.blend(image, mask)))
  return written
