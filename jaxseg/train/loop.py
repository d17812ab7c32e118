"""The training loop: sharded steps, periodic eval, checkpoints, resume, TensorBoard, progress.

Resilience: a checkpoint holds the train state, the data iterator's state and the config, so a
run killed at any point (SIGKILL included) resumes from its last checkpoint and, on CPU, ends
with bit-identical parameters. SIGTERM (preemption, SLURM time limit) saves a checkpoint and
exits; so does Ctrl-C (SIGINT), with status 130, and a second Ctrl-C exits at once without
saving. A resume skips a damaged newest checkpoint (see checkpoint.py) and a full disk stops
the run with one line naming the step. A non-finite loss or gradient is never applied (see
train_step); fp16 counts and logs such skipped steps, the other precisions stop with an error
naming the step and the last good checkpoint, checked before every save so no checkpoint ever
holds NaN.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from jaxseg import data as data_lib
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import distributed
from jaxseg.runtime import executable_cache
from jaxseg.runtime import health as health_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import preemption as preemption_lib
from jaxseg.runtime import tensorboard
from jaxseg.train import class_weights as class_frequency
from jaxseg.train import init_from as init_from_lib
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import periodic_eval
from jaxseg.train import step as step_lib

_GB = float(1 << 30)


NonFiniteLossError = health_lib.NonFiniteLossError  # raised by train_and_evaluate


def global_batch_size(config: ml_collections.ConfigDict, mesh) -> int:
  """Images per update: train.bs_mult x devices on the batch axes when bs_mult > 0, else
  train.batch_size; times train.grad_accum_steps (the loader's batch holds every micro-batch)."""
  bs_mult = int(config.train.get("bs_mult", 0))
  size = (bs_mult * mesh_lib.data_parallel_size(mesh) if bs_mult > 0
          else int(config.train.batch_size))
  if size <= 0 or size % mesh_lib.data_parallel_size(mesh):
    raise ValueError(f"the global batch {size} (config.train.batch_size / bs_mult) must be a "
                     f"positive multiple of the {mesh_lib.data_parallel_size(mesh)} devices on "
                     f"the batch axes {mesh_lib.batch_axes(mesh)}")
  return size * step_lib.grad_accum_steps(config)


def total_train_steps(config: ml_collections.ConfigDict,
                      clock: optimizer_lib.EpochClock | None = None,
                      batch_size: int | None = None) -> int:
  """train.num_steps, or the steps of train.num_epochs epochs as the loader lays them out.

  num_steps > 0 ends training even when num_epochs is set (a warning says so when they differ);
  the lr schedule spans the same run (optimizer.schedule_span). Logs the run and its span.
  """
  num_steps, num_epochs = int(config.train.num_steps), int(config.train.num_epochs)
  if num_steps <= 0 and num_epochs <= 0:
    raise ValueError("set config.train.num_steps or config.train.num_epochs to a positive value")
  clock = clock or optimizer_lib.EpochClock.from_config(
      config, batch_size or int(config.train.batch_size))
  total = num_steps if num_steps > 0 else clock.first_step(num_epochs)
  if num_steps > 0 and num_epochs > 0 and clock.first_step(num_epochs) != num_steps:
    logging.warning("config.train.num_steps=%d ends training instead of config.train.num_epochs"
                    "=%d (%d steps); the lr schedule spans the %d steps", num_steps, num_epochs,
                    clock.first_step(num_epochs), num_steps)
  logging.info("%s", optimizer_lib.describe_schedule(config, total, clock))
  return total


def resolve_num_classes(config: ml_collections.ConfigDict) -> tuple[int, Any]:
  info = data_lib.dataset_info(config.data)
  num_classes = config.model.num_classes if config.model.num_classes > 0 else info.num_classes
  if num_classes != info.num_classes:
    raise ValueError(f"config.model.num_classes={num_classes} but dataset '{config.data.name}' "
                     f"has {info.num_classes} classes")
  return num_classes, info


def rlx_off_at(config: ml_collections.ConfigDict, epoch: int) -> bool:
  """The original turns label relaxation off for epochs > rlx_off_epoch (cfg.EPOCH > ...)."""
  off_epoch = int(config.loss.get("rlx_off_epoch", -1))
  return bool(config.loss.get("rlx_off", False)) or (0 <= off_epoch < epoch)


def make_loss(config: ml_collections.ConfigDict, num_classes: int, rlx_off: bool):
  loss_cfg = ml_collections.ConfigDict(config.loss.to_dict())
  loss_cfg.num_classes = num_classes
  loss_cfg.rlx_off = rlx_off
  # loss.class_weights: counted once over the training labels, then read from the JSON cache.
  class_weights = class_frequency.class_weights_for_config(config, num_classes)
  return losses.make_loss_fn(loss_cfg, class_weights=class_weights)


def train_step_description(config: ml_collections.ConfigDict, num_classes: int, rlx_off: bool,
                           total_steps: int, clock: optimizer_lib.EpochClock, mesh
                           ) -> dict[str, Any]:
  """Everything the jitted train step closes over, the key of its cached executable: the
  config (model, loss, optimizer, precision), the class count and weights, the relaxation
  switch and the schedule's span, and the mesh (runtime/executable_cache.py)."""
  weights = class_frequency.class_weights_for_config(config, num_classes)
  return {"config": json.loads(config.to_json_best_effort()), "num_classes": int(num_classes),
          "class_weights": None if weights is None else np.asarray(weights).tolist(),
          "rlx_off": bool(rlx_off), "total_steps": int(total_steps), "clock": repr(clock),
          "mesh": repr(mesh)}


def _meta(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  return {"model": config.model.name, "num_classes": int(num_classes),
          "config": json.loads(config.to_json_best_effort())}


def device_memory_scalars() -> dict[str, float]:
  """Current and peak device memory (GiB, max over local devices), where JAX reports it."""
  in_use, peak, limit = [], [], []
  for device in jax.local_devices():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats:
      continue
    in_use.append(stats.get("bytes_in_use", 0))
    peak.append(stats.get("peak_bytes_in_use", 0))
    limit.append(stats.get("bytes_limit", 0))
  if not in_use:
    return {}
  return {"memory_gb": max(in_use) / _GB, "peak_memory_gb": max(peak) / _GB,
          "memory_limit_gb": max(limit) / _GB}


def _init_from(config, state: step_lib.TrainState, fns, mesh) -> step_lib.TrainState:
  """Starts from another run's (or a converted) model checkpoint, re-initialising what does
  not fit (see init_from.py)."""
  shardings = {"params": fns.state_sharding.params,
               "batch_stats": fns.state_sharding.batch_stats}
  restored, _ = init_from_lib.restore_forgiving(config.init_from, state.model_vars(), shardings,
                                                mesh_lib.replicated(mesh))
  return state.with_model_vars(restored)  # the EMA, when on, starts there too


def _health(config, writer, ckpt_dir: pathlib.Path, state) -> health_lib.Health:
  """The non-finite guard on the state's counters: fp16 (loss scaling) logs and counts skipped
  steps, the other precisions stop with NonFiniteLossError."""

  def on_skipped(state, new: int, step: int, total: int) -> None:
    scale = float(jax.device_get(state.loss_scale["scale"]))
    logging.warning("fp16: %d step(s) skipped for non-finite gradients up to step %d "
                    "(%d in total); loss scale now %g", new, step, total, scale)
    if writer:
      writer.scalars({"train/skipped_steps": total}, step)

  return health_lib.Health(
      lambda s: s.health, ckpt_dir, state, skip_nonfinite=config.precision == "fp16",
      on_skipped=on_skipped,
      advice="Lower optimizer.lr, check the data, or use precision='fp32'.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last eval."""
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  num_classes, info = resolve_num_classes(config)
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  evaluator = periodic_eval.PeriodicEval(config, mesh, info, workdir)  # settings checked here
  batch_size = global_batch_size(config, mesh)
  plan = data_lib.make_plan(config.data, batch_size, config.seed)  # lists the split: once
  clock = optimizer_lib.EpochClock.from_plan(plan, config.data)
  total_steps = total_train_steps(config, clock, batch_size)
  tx, schedule = optimizer_lib.create_optimizer(config, total_steps, clock)
  start_rlx_off = None  # the loss is built for the epoch the run (re)starts in
  describe = lambda rlx_off: train_step_description(config, num_classes, rlx_off, total_steps,
                                                     clock, mesh)
  # A stored train step loads in the background while the state and first batch are made.
  prefetched = executable_cache.prefetch(describe(rlx_off_at(config, 0)))
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=tx,
                                       loss_fn=None)
  state = fns.init()
  distributed.barrier("checkpoint_manager")  # its set-up is the first collective
  ckpt = checkpoint_lib.CheckpointManager(workdir / "checkpoints", keep=config.checkpoint.keep,
                                          async_save=config.checkpoint.async_save,
                                          best_metric=config.checkpoint.best_metric or None)
  train_iter = data_lib.build_train_loader(config.data, global_batch_size=batch_size,
                                           seed=config.seed, plan=plan)
  meta = _meta(config, num_classes)
  start, restored = ckpt.restore_latest(meta=meta, model_vars=state.model_vars(),
                                        train_vars=state.train_vars())
  if restored is not None:
    state = state.replace_from_checkpoint(restored["model"], restored["train"])
    if restored["data_iter"]:
      train_iter.set_state(restored["data_iter"])
    logging.info("resumed from %s at step %d", ckpt.directory, start)
  elif config.init_from:
    state = _init_from(config, state, fns, mesh)
  start = int(jax.device_get(state.step))
  # A resumed run hides in TensorBoard what the interrupted one logged after its checkpoint.
  writer = (tensorboard.SummaryWriter(workdir / "tensorboard",
                                      purge_step=start + 1 if restored is not None else None)
            if is_main else None)
  rng = jax.random.key(config.seed + 1)
  preemption = preemption_lib.Preemption(config.train.get("preemption_sync_every", 10),
                                         where=lambda: preemption_lib.last_committed(ckpt))
  health = _health(config, writer, ckpt.directory, state)
  last_eval: dict[str, Any] = {}
  last_saved = start if start else None
  eval_every_epochs = int(config.train.get("eval_every_epochs", 0))
  if is_main:
    logging.info("global batch %d on mesh %s; %d steps (%d per epoch)", batch_size,
                 dict(mesh.shape), total_steps, clock.steps_per_epoch)

  def save(step: int, metrics=None, force=False):
    nonlocal last_saved
    health.check(state, step, last_saved)  # never checkpoint a failed run
    ckpt.save(step, model_vars=state.model_vars(), train_vars=state.train_vars(),
              data_state=train_iter.get_state(), meta=meta, metrics=metrics, force=force)
    last_saved = step

  bar = tqdm.tqdm(total=total_steps, initial=start, desc="train", unit="step",
                  disable=not is_main or not config.progress_bar, dynamic_ncols=True)
  window_start, window_steps = time.perf_counter(), 0
  train_step = None
  stopped = None
  with preemption_lib.closing_run(ckpt, preemption, bar, writer):
    for step in range(start + 1, total_steps + 1):
      epoch = clock.epoch_of(step - 1)
      rlx_off = rlx_off_at(config, epoch)
      batch = mesh_lib.shard_batch(next(train_iter), mesh)
      if train_step is None or rlx_off != start_rlx_off:
        if train_step is not None and is_main:
          logging.warning("epoch %d: label relaxation %s (loss.rlx_off_epoch=%s); re-jitting",
                          epoch, "off" if rlx_off else "on", config.loss.get("rlx_off_epoch"))
        jitted = fns.make_train_step(make_loss(config, num_classes, rlx_off))
        compile_start = time.perf_counter()
        train_step = executable_cache.compile_cached(
            jitted, state, batch, rng, description=describe(rlx_off), prefetched=prefetched)
        prefetched = None
        if is_main:
          logging.info("train step ready in %.1f s", time.perf_counter() - compile_start)
        distributed.barrier("train_step")  # all compiled before the first all-reduce
        start_rlx_off = rlx_off
        if window_steps == 0:  # img/s without the compilation
          window_start = time.perf_counter()
      state, step_metrics = train_step(state, batch, rng)
      window_steps += 1
      bar.update(1)
      if _every(step, config.train.log_every) or step == total_steps:
        step_metrics = jax.device_get(step_metrics)
        elapsed = time.perf_counter() - window_start
        step_time = elapsed / window_steps
        scalars = {k: float(v) for k, v in step_metrics.items() if np.ndim(v) == 0}
        health.check(state, step, last_saved, scalars["loss"])
        scalars.update({"lr": float(schedule(step - 1)), "step_time_s": step_time,
                        "img_per_s": batch_size / step_time, "epoch": float(epoch)})
        scalars.update(device_memory_scalars())
        if writer:
          writer.scalars({f"train/{k}": v for k, v in scalars.items() if k != "finite"}, step)
        bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}",
                        img_s=f"{scalars['img_per_s']:.1f}")
        logging.info("step %d/%d (epoch %d) loss %.4f lr %.3e %.1f img/s", step, total_steps,
                     epoch, scalars["loss"], scalars["lr"], scalars["img_per_s"])
        window_start, window_steps = time.perf_counter(), 0
      epoch_end = step == clock.first_step(epoch + 1)
      eval_metrics = None
      if (_every(step, config.train.eval_every) or step == total_steps or
          (eval_every_epochs > 0 and epoch_end and (epoch + 1) % eval_every_epochs == 0)):
        last_eval = evaluator.evaluate(state.model_vars(), step, writer)
        eval_metrics = {"miou": last_eval["miou"]}
      preempted = preemption.should_stop(step)
      stop_here = preempted or step == config.train.stop_at_step
      if (_every(step, config.train.checkpoint_every) or step == total_steps or stop_here or
          eval_metrics is not None):
        save(step, eval_metrics, force=stop_here)
      if stop_here:
        stopped = (step, preemption.reason if preempted else "train.stop_at_step")
        break
  if stopped:  # a Ctrl-C exits with status 130 here
    preemption_lib.report_stop(stopped[0], stopped[1], ckpt.directory)
  if config.eval.write_predictions and last_eval:  # every process runs the sharded engine
    evaluator.write_predictions(state.model_vars(), workdir / "predictions")
  return last_eval


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0
