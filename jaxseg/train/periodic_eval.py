"""Evaluation during training and the end-of-run prediction pictures, through inference/.

Both run the inference engine of `--mode eval` (`inference/model.build_engine`, the
`inference/sliding.Segmenter`) and `evaluation/evaluate`, so a run's logged numbers are the
ones `--mode eval` gives for its checkpoint under the same settings: one inference program, not
a second one beside it. `config.train.eval_protocol` picks the settings:

  'whole'   whole image, scale 1, no flip: the original train.py `validate` (the default). It
            stays cheap: the engine's direct path, one batched model call per batch.
  'config'  exactly config.eval's inference settings (mode, scales, flip, preset, ...), as
            `--mode eval` runs them: e.g. sliding tiles or multi-scale + flip while training.

The engine is built once per run (its jitted pieces and tile plans are cached on it: at the
start for 'config', at the first evaluation for 'whole'); the live
variables (`TrainState.model_vars()`: the EMA when on) are passed to each evaluation.

A run evaluates the classes it trains (config.data's eval split): `config.eval.taxonomy`, which
maps a universal model onto one dataset's classes for `--mode eval`, is not applied here.
"""
from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Any, Protocol

from absl import logging
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from jaxseg import data as data_lib
from jaxseg.evaluation import evaluate as evaluate_lib
from jaxseg.evaluation import report as eval_outputs
from jaxseg.inference import model as inference_model
from jaxseg.inference import sliding
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import tensorboard

PROTOCOLS = ("whole", "config")


class Engine(Protocol):
  """What evaluation needs of `sliding.Segmenter` (tests pass stand-ins without a model)."""

  def confusion(self, model_vars: Any, batch: dict[str, jax.Array]
                ) -> tuple[jax.Array, jax.Array]: ...

  def predict(self, model_vars: Any, images: jax.Array) -> jax.Array: ...


def eval_protocol(config: ml_collections.ConfigDict) -> str:
  """config.train.eval_protocol, checked: 'whole' or 'config'."""
  protocol = str(config.train.get("eval_protocol", "whole"))
  if protocol not in PROTOCOLS:
    raise ValueError(f"config.train.eval_protocol={protocol!r}; expected one of {PROTOCOLS}")
  return protocol


def inference_settings(config: ml_collections.ConfigDict) -> sliding.InferenceSettings:
  """The inference settings of the run's evaluations (validated before any training step)."""
  if eval_protocol(config) == "config":
    return sliding.InferenceSettings.from_config(config.eval, config.data)
  return sliding.InferenceSettings.of(mode="whole", scales="1.0", flip=False)


def build_engine(config: ml_collections.ConfigDict, info: Any, mesh: Mesh,
                 settings: sliding.InferenceSettings | None = None) -> sliding.Segmenter:
  """`--mode eval`'s engine for the model being trained (default settings: the protocol's),
  without a checkpoint: the variables come with every call."""
  if config.eval.get("taxonomy") or config.eval.get("taxonomy_dataset"):
    config = copy.deepcopy(config)  # the run's own classes (see the module docstring)
    config.eval.taxonomy = ""
    config.eval.taxonomy_dataset = ""
  return inference_model.build_engine(config, info, mesh,
                                      settings or inference_settings(config))


class PeriodicEval:
  """The evaluations of one training run: one engine, any number of evaluations.

  `info` is the dataset's `data.DatasetInfo`; `engine` replaces the model's (tests).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, info: Any,
               workdir: str | pathlib.Path, *, engine: Engine | None = None):
    self.config = config
    self.mesh = mesh
    self.info = info
    self.workdir = pathlib.Path(workdir)
    self.protocol = eval_protocol(config)
    self.settings = inference_settings(config)
    self._engine = engine
    if self._engine is None and self.protocol == "config":
      self._engine = build_engine(config, info, mesh, self.settings)  # the user's settings:
      # checked against the model (e.g. mode='pooling' needs an ASPP) before any step
    if jax.process_index() == 0:
      logging.info("periodic evaluation: train.eval_protocol=%s, %s", self.protocol,
                   self.settings)

  @property
  def engine(self) -> Engine:
    """The engine, built at the first evaluation for 'whole' (fixed, always valid settings):
    a run's start does not wait for it."""
    if self._engine is None:
      self._engine = build_engine(self.config, self.info, self.mesh, self.settings)
    return self._engine

  def evaluate(self, model_vars: dict[str, Any], step: int,
               writer: tensorboard.SummaryWriter | None) -> dict[str, Any]:
    """Evaluates the eval split; process 0 writes WORKDIR/eval, the log and TensorBoard."""
    config, info = self.config, self.info
    loader = data_lib.build_eval_loader(config.data, batch_size=config.eval.batch_size)
    # Only the writing process (writer set) keeps pictures: the engine's own predictions.
    shown = eval_outputs.FirstImages(config.eval.num_tensorboard_images) if writer else None
    summary, confusion = evaluate_lib.evaluate(
        self.engine.confusion, model_vars, loader, mesh=self.mesh,
        num_classes=info.num_classes, max_batches=config.eval.max_batches or None,
        progress=config.progress_bar, on_batch=shown.add if shown and shown.count else None)
    if jax.process_index() != 0:
      return summary
    extra = {"eval_protocol": self.protocol, "inference": dataclasses.asdict(self.settings)}
    table = evaluate_lib.write_eval_report(self.workdir / "eval", step, summary, confusion,
                                           info.class_names, colors=info.colors, extra=extra)
    logging.info("eval at step %d:\n%s", step, table)
    print(f"\n[eval step {step}] mIoU {100 * summary['miou']:.2f}\n{table}", flush=True)
    if writer:
      scalars = {"eval/miou": summary["miou"], "eval/macc": summary["macc"],
                 "eval/aacc": summary["aacc"]}
      if "mniou" in summary:  # Cityscapes instance-normalised IoU
        scalars["eval/mniou"] = summary["mniou"]
      scalars.update({f"eval_iou/{name}": float(v) for name, v in
                      zip(info.class_names, summary["iou"]) if not np.isnan(v)})
      writer.scalars(scalars, step)
      writer.images(eval_outputs.eval_pictures(shown, summary, confusion, info.class_names,
                                               info.colors, step,
                                               alpha=config.eval.overlay_alpha), step)
    return summary

  def write_predictions(self, model_vars: dict[str, Any], outdir: str | pathlib.Path
                        ) -> list[pathlib.Path]:
    """Colour masks and overlays of the first `eval.num_prediction_images` eval images.

    Every process runs the sharded engine; process 0 writes its own share of the images.
    """
    config = self.config
    loader = data_lib.build_eval_loader(config.data, batch_size=config.eval.batch_size)
    remaining = int(config.eval.num_prediction_images)
    written: list[pathlib.Path] = []
    for batch in loader:
      if remaining <= 0:
        break
      images = mesh_lib.shard_batch({"image": batch["image"]}, self.mesh)["image"]
      preds = mesh_lib.local_rows(self.engine.predict(model_vars, images))
      keep = np.flatnonzero(np.asarray(batch.get("valid", np.ones(len(preds), bool))))
      keep = keep[:remaining]
      if jax.process_index() == 0:
        written += evaluate_lib.write_prediction_images(
            pathlib.Path(outdir), [batch["name"][i] for i in keep], batch["image"][keep],
            preds[keep], self.info.colors)
      remaining -= len(keep)
    return written
