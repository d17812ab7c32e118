"""The training loop: sharded steps, periodic eval, checkpoints, resume, TensorBoard, progress."""
from __future__ import annotations

import json
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from jaxseg import input_pipeline
from jaxseg.train_lib import checkpoint as checkpoint_lib
from jaxseg.train_lib import evaluate as evaluate_lib
from jaxseg.train_lib import losses
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import optimizer as optimizer_lib
from jaxseg.train_lib import tensorboard
from jaxseg.train_lib import train_step as step_lib
from jaxseg.train_lib import variables


class NonFiniteLossError(RuntimeError):
  pass


def total_train_steps(config: ml_collections.ConfigDict) -> int:
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  if config.train.num_epochs > 0:
    per_epoch = input_pipeline.steps_per_epoch(config.data, config.train.batch_size)
    return int(config.train.num_epochs * per_epoch)
  raise ValueError("set config.train.num_steps or config.train.num_epochs to a positive value")


def resolve_num_classes(config: ml_collections.ConfigDict) -> tuple[int, Any]:
  info = input_pipeline.dataset_info(config.data)
  num_classes = config.model.num_classes if config.model.num_classes > 0 else info.num_classes
  if num_classes != info.num_classes:
    raise ValueError(f"config.model.num_classes={num_classes} but dataset '{config.data.name}' "
                     f"has {info.num_classes} classes")
  return num_classes, info


def _meta(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  return {"model": config.model.name, "num_classes": int(num_classes),
          "config": json.loads(config.to_json_best_effort())}


class _Preemption:
  """Turns SIGTERM into a flag so the loop can save a checkpoint before exiting."""

  def __init__(self):
    self.requested = False
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a test runner thread)
      self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _init_from(config, state: step_lib.TrainState, fns) -> step_lib.TrainState:
  """Starts from another run's (or a converted) model checkpoint."""
  model = jax.tree.map(np.asarray, state.model_vars())
  restored = fns.layout.merge(model["params"], model["batch_stats"])
  checkpoint_lib.restore_model_variables(config.init_from, restored)
  params, stats = variables.model_variables(restored)
  put = lambda tree, sh: jax.device_put(tree, sh)
  return state.replace(params=put(params, fns.state_sharding.params),
                       batch_stats=put(stats, fns.state_sharding.batch_stats))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last eval."""
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  num_classes, info = resolve_num_classes(config)
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  batch_size = int(config.train.batch_size)
  if batch_size % mesh_lib.data_parallel_size(mesh):
    raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the "
                     f"{mesh_lib.data_parallel_size(mesh)} devices on the data axis")
  total_steps = total_train_steps(config)
  tx, schedule = optimizer_lib.create_optimizer(config, total_steps)
  loss_cfg = ml_collections.ConfigDict(config.loss.to_dict())
  loss_cfg.num_classes = num_classes
  loss_fn = losses.make_loss_fn(loss_cfg)
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=tx,
                                       loss_fn=loss_fn)
  state = fns.init()
  ckpt = checkpoint_lib.CheckpointManager(workdir / "checkpoints", keep=config.checkpoint.keep,
                                          async_save=config.checkpoint.async_save,
                                          best_metric=config.checkpoint.best_metric or None)
  train_iter = input_pipeline.build_train_loader(config.data, global_batch_size=batch_size,
                                                 seed=config.seed)
  start = ckpt.latest_step()
  if start is not None:
    restored = ckpt.restore(start, model_vars=state.model_vars(), train_vars=state.train_vars())
    state = state.replace_from_checkpoint(restored["model"], restored["train"])
    if restored["data_iter"]:
      train_iter.set_state(restored["data_iter"])
    logging.info("resumed from %s at step %d", ckpt.directory, start)
  elif config.init_from:
    state = _init_from(config, state, fns)
    logging.info("initialised from %s", config.init_from)
  start = int(jax.device_get(state.step))
  meta = _meta(config, num_classes)
  writer = tensorboard.SummaryWriter(workdir / "tensorboard") if is_main else None
  rng = jax.random.key(config.seed + 1)
  preemption = _Preemption()
  last_eval: dict[str, Any] = {}
  last_saved = start if start else None

  def save(step: int, metrics=None, force=False):
    nonlocal last_saved
    ckpt.save(step, model_vars=state.model_vars(), train_vars=state.train_vars(),
              data_state=train_iter.get_state(), meta=meta, metrics=metrics, force=force)
    last_saved = step

  bar = tqdm.tqdm(total=total_steps, initial=start, desc="train", unit="step",
                  disable=not is_main or not config.progress_bar, dynamic_ncols=True)
  window_start, window_steps = time.perf_counter(), 0
  try:
    for step in range(start + 1, total_steps + 1):
      batch = mesh_lib.shard_batch(next(train_iter), mesh)
      state, step_metrics = fns.train_step(state, batch, rng)
      window_steps += 1
      bar.update(1)
      if step % config.train.log_every == 0 or step == total_steps:
        step_metrics = jax.device_get(step_metrics)
        elapsed = time.perf_counter() - window_start
        step_time = elapsed / window_steps
        scalars = {k: float(v) for k, v in step_metrics.items() if np.ndim(v) == 0}
        scalars.update({"lr": float(schedule(step - 1)), "step_time_s": step_time,
                        "img_per_s": batch_size / step_time})
        if not step_metrics["finite"] and config.precision != "fp16":
          raise NonFiniteLossError(
              f"non-finite loss or gradients at step {step} (loss={scalars['loss']}); the last "
              f"good checkpoint is step {last_saved} in {ckpt.directory}")
        if writer:
          writer.scalars({f"train/{k}": v for k, v in scalars.items() if k != "finite"}, step)
        bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}",
                        img_s=f"{scalars['img_per_s']:.1f}")
        logging.info("step %d/%d loss %.4f lr %.3e %.1f img/s", step, total_steps,
                     scalars["loss"], scalars["lr"], scalars["img_per_s"])
        window_start, window_steps = time.perf_counter(), 0
      eval_metrics = None
      if step % config.train.eval_every == 0 or step == total_steps:
        last_eval = run_eval(config, fns, state.model_vars(), mesh, info, step, workdir, writer)
        eval_metrics = {"miou": last_eval["miou"]}
      stop_here = preemption.requested or step == config.train.stop_at_step
      if step % config.train.checkpoint_every == 0 or step == total_steps or stop_here:
        save(step, eval_metrics, force=stop_here)
      if stop_here:
        logging.warning("stopping at step %d (%s); the checkpoint is saved", step,
                        "SIGTERM" if preemption.requested else "train.stop_at_step")
        break
  finally:
    bar.close()
    ckpt.close()
    preemption.restore()
    if writer:
      writer.close()
  if config.eval.write_predictions and is_main and last_eval:
    write_predictions(config, fns, state.model_vars(), mesh, info, workdir / "predictions")
  return last_eval


def run_eval(config, fns, model_vars, mesh, info, step, workdir, writer) -> dict[str, Any]:
  loader = input_pipeline.build_eval_loader(config.data, batch_size=config.eval.batch_size)
  summary, confusion = evaluate_lib.evaluate(
      fns.eval_step, model_vars, loader, mesh=mesh, num_classes=info.num_classes,
      max_batches=config.eval.max_batches or None, progress=config.progress_bar)
  if jax.process_index() == 0:
    table = evaluate_lib.write_eval_report(workdir / "eval", step, summary, confusion,
                                           info.class_names)
    logging.info("eval at step %d:\n%s", step, table)
    print(f"\n[eval step {step}] mIoU {100 * summary['miou']:.2f}\n{table}", flush=True)
    if writer:
      scalars = {"eval/miou": summary["miou"], "eval/macc": summary["macc"],
                 "eval/aacc": summary["aacc"]}
      scalars.update({f"eval_iou/{name}": float(v) for name, v in
                      zip(info.class_names, summary["iou"]) if not np.isnan(v)})
      writer.scalars(scalars, step)
  return summary


def write_predictions(config, fns, model_vars, mesh, info, outdir: pathlib.Path) -> list:
  """Colour masks and overlays for the first `eval.num_prediction_images` eval images."""
  loader = input_pipeline.build_eval_loader(config.data, batch_size=config.eval.batch_size)
  remaining = int(config.eval.num_prediction_images)
  written = []
  for batch in loader:
    if remaining <= 0:
      break
    images = mesh_lib.shard_batch({"image": batch["image"]}, mesh)["image"]
    preds = np.asarray(jax.device_get(fns.predict_step(model_vars, images)))
    keep = np.flatnonzero(np.asarray(batch.get("valid", np.ones(len(preds), bool))))[:remaining]
    written += evaluate_lib.write_prediction_images(
        outdir, [batch["name"][i] for i in keep], batch["image"][keep], preds[keep], info.colors)
    remaining -= len(keep)
  return written
