"""Orbax checkpoints: model variables, optimizer state, data-iterator state and run metadata.

A checkpoint step directory holds four items, so each reader restores only what it needs:
  model      {'params': flat dict, 'batch_stats': flat dict}   (eval, predict, init_from)
  train      {'opt_state', 'step', ...}                          (resume)
  data_iter  grain iterator state as JSON                         (resume)
  meta       {'model': name, 'num_classes': K, 'config': ...,
              'metrics': {...} when the step was evaluated}      (validation, provenance, retention)
With train.ema_decay > 0 the `model` item holds the weight EMA and `train` adds 'online' (the
trained weights, same layout) so a resume continues both (train_step.TrainState).
Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that a resume would pick up.

Failures are reported in one line each: a step whose files cannot be read back raises
DamagedCheckpointError (a resume moves it aside and falls back to the previous step), a resume
into a checkpoint of another model/width/dataset raises CheckpointMismatchError before anything
is restored, and a full disk raises NoSpaceError naming the step and directory.
"""
from __future__ import annotations

import json
import math
import pathlib
import shutil
from typing import Any, Iterable, Mapping

from absl import logging
import flax.nnx as nnx
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.runtime import distributed
from jaxseg.runtime import variables
from jaxseg.runtime.checkpoint_format import DAMAGED_SUFFIX
from jaxseg.runtime.checkpoint_format import DATA_ITER
from jaxseg.runtime.checkpoint_format import ITEMS
from jaxseg.runtime.checkpoint_format import META
from jaxseg.runtime.checkpoint_format import MODEL
from jaxseg.runtime.checkpoint_format import TRAIN
from jaxseg.runtime.checkpoint_format import DamagedCheckpointError
from jaxseg.runtime.checkpoint_format import NoSpaceError
from jaxseg.runtime.checkpoint_format import is_no_space
from jaxseg.runtime.checkpoint_format import read_failure
from jaxseg.runtime.checkpoint_format import with_other_steps
from jaxseg.runtime.checkpoint_layout import CheckpointMismatchError
from jaxseg.runtime.checkpoint_layout import model_layout_problems
from jaxseg.runtime.checkpoint_layout import run_differences
from jaxseg.runtime.checkpoint_layout import train_layout_problems


def _abstract(tree: Any) -> Any:
  """Restore targets; leaves without a sharding (e.g. from eval_shape) go to the first local
  device, since orbax would otherwise reuse the saving run's mesh, which may not exist here."""
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    sharding = getattr(x, "sharding", None) or local
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree)


def _any_process(flag: bool) -> bool:
  """`flag` agreed across processes (any -> all), so collective restores stay in step."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


# ---------------------------------------------------------------------------- retention --
def retained_steps(steps: Iterable[int], keep: int, scores: Mapping[int, float]) -> set[int]:
  """The last `keep` steps (all of them when keep <= 0) plus the best-scoring one.

  Ties go to the newer step; steps without a finite score are never "best".
  """
  steps = sorted(steps)
  kept = set(steps if keep <= 0 else steps[-keep:])
  scored = [(scores[s], s) for s in steps if s in scores and math.isfinite(scores[s])]
  if scored:
    kept.add(max(scored)[1])
  return kept


class CheckpointManager:
  """Training checkpoints: keeps the last `keep` steps plus the best by `best_metric`.

  Retention is done here rather than by orbax: orbax's max_to_keep with a best_fn keeps the
  top-k by metric (it deletes the newest step when an earlier one scored higher) and, with
  keep_checkpoints_without_metrics, never deletes a step saved without metrics. So orbax keeps
  everything (max_to_keep=None) and, once a save is committed, `_prune` deletes the steps that
  are neither among the last `keep` nor the best; the newest is always among the last `keep`,
  and a step still being written is never considered (pruning follows wait_until_finished).
  A step's metrics are stored in its `meta` item, so the best is remembered across resumes.
  """

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None, read_only: bool = False):
    self.directory = pathlib.Path(directory).absolute()
    self._keep = int(keep)
    self._best_metric = best_metric or None
    self._read_only = read_only
    self._async = async_save
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=async_save, create=not read_only,
        read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
    self._scores: dict[int, float] | None = None  # read from the steps' meta on first prune
    self._writing: int | None = None  # the step an async save may still be committing
    self._failed = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def committed_steps(self) -> list[int]:
    """The steps on disk whose write completed (orbax renames a step into place when done)."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

  # -- saving --
  def save(self, step: int, *, model_vars: Mapping[str, Any], train_vars: Mapping[str, Any],
           data_state: Mapping[str, Any] | None, meta: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
    """Starts writing `step` (in the background with async_save) after the previous save is
    committed and pruned; a full disk raises NoSpaceError naming the step that failed."""
    self._settle()
    stored_meta = dict(meta)
    if metrics:
      stored_meta["metrics"] = {k: float(v) for k, v in metrics.items()}
    args = ocp.args.Composite(**{
        MODEL: ocp.args.StandardSave(dict(model_vars)),
        TRAIN: ocp.args.StandardSave(dict(train_vars)),
        DATA_ITER: ocp.args.JsonSave(dict(data_state or {})),
        META: ocp.args.JsonSave(stored_meta),
    })
    self._writing = step
    try:
      saved = self._manager.save(step, args=args, force=force)
    except Exception as err:  # pylint: disable=broad-except
      self._raise_if_no_space(err)
      raise
    if saved and self._scores is not None:
      self._scores[step] = self._score(stored_meta)
    if not self._async:  # committed already: prune now rather than at the next save
      self._settle()
    return saved

  def _settle(self) -> None:
    """Waits for the save in flight; once it is committed, prunes to the retention policy."""
    try:
      self._manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      self._raise_if_no_space(err)
      raise
    self._writing = None
    if not self._read_only:
      self._prune()

  def _raise_if_no_space(self, err: BaseException) -> None:
    """Turns ENOSPC (an OSError or a TensorStore RESOURCE_EXHAUSTED status) into NoSpaceError
    and removes the uncommitted step directory, which is what filled the disk."""
    if not is_no_space(err):
      return
    self._failed = True
    step = self._writing
    if jax.process_index() == 0 and step is not None:
      for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
    raise NoSpaceError(step if step is not None else -1, self.directory) from None

  def _prune(self) -> None:
    if self._keep <= 0 and not self._best_metric:
      return
    steps = self.all_steps()
    if self._best_metric and self._scores is None:
      self._scores = {s: self._stored_score(s) for s in steps}
    keep = retained_steps(steps, self._keep, self._scores or {})
    for step in steps:
      if step not in keep:
        self._manager.delete(step)
        if self._scores:
          self._scores.pop(step, None)

  def _score(self, meta: Mapping[str, Any]) -> float:
    value = (meta.get("metrics") or {}).get(self._best_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan

  def _stored_score(self, step: int) -> float:
    """The best_metric value a step was saved with (NaN when none or unreadable: a step whose
    meta cannot be read is simply never the best)."""
    step_dir = self.directory / str(step)
    try:
      meta = read_meta(step_dir)
      if "metrics" not in meta and (step_dir / "metrics" / "metrics").is_file():
        # Written by earlier versions, whose orbax best_fn kept metrics in their own item.
        meta = {"metrics": json.loads((step_dir / "metrics" / "metrics").read_text())}
    except (DamagedCheckpointError, OSError, ValueError):
      return math.nan
    return self._score(meta)

  # -- restoring --
  def restore(self, step: int, *, model_vars: Any, train_vars: Any) -> dict[str, Any]:
    """Restores every item of `step`, one at a time so a failure names the item;
    `model_vars`/`train_vars` are (possibly abstract) targets. A read that fails on the
    files raises DamagedCheckpointError; other errors propagate unchanged."""
    args = {
        META: ocp.args.JsonRestore(),
        DATA_ITER: ocp.args.JsonRestore(),
        TRAIN: ocp.args.StandardRestore(_abstract(train_vars)),
        MODEL: ocp.args.StandardRestore(_abstract(model_vars)),
    }
    restored = {}
    for name, arg in args.items():
      try:
        restored[name] = self._manager.restore(step, args=ocp.args.Composite(**{name: arg}))[name]
      except Exception as err:  # pylint: disable=broad-except
        detail = read_failure(err, self.directory / str(step) / name)
        if detail is None:
          raise
        raise DamagedCheckpointError(self.directory / str(step), detail) from None
    return restored

  def check_resumable(self, step: int, *, meta: Mapping[str, Any], model_vars: Any,
                      train_vars: Any) -> None:
    """Raises CheckpointMismatchError when `step` was written by a run of another model,
    width, dataset, class count or optimizer than the one described by `meta` and the
    targets; DamagedCheckpointError when its meta or layouts cannot be read."""
    step_dir = self.directory / str(step)
    stored = read_meta(step_dir)
    differences = run_differences(stored, meta)
    problems = []
    if not differences:
      problems = [f"model {p}" for p in model_layout_problems(step_dir, model_vars)]
      problems += train_layout_problems(step_dir, train_vars)
    if differences or problems:
      raise CheckpointMismatchError(
          f"cannot resume from checkpoint {step} under {self.directory}: it was written by a "
          f"different run ({'; '.join(differences or problems)}); use a new --workdir, or "
          "the settings the checkpoint was trained with")

  def restore_latest(self, *, meta: Mapping[str, Any], model_vars: Any, train_vars: Any
                     ) -> tuple[int | None, dict[str, Any] | None]:
    """(step, items) of the newest checkpoint that restores, or (None, None) when none does.

    A damaged step is moved to `<directory>_damaged/<step>` (kept, never deleted, and out of
    the way of the step this run will write again) with one warning naming it; a checkpoint
    of another run raises CheckpointMismatchError before anything is restored.
    """
    damaged = []  # (error, where it was moved)
    for step in reversed(self.all_steps()):
      damage = None
      try:
        self.check_resumable(step, meta=meta, model_vars=model_vars, train_vars=train_vars)
        restored = self.restore(step, model_vars=model_vars, train_vars=train_vars)
      except DamagedCheckpointError as err:
        damage = err
      if _any_process(damage is not None):
        damaged.append((damage or f"checkpoint step {step} is damaged on another process",
                        self._move_aside(step)))
        continue
      for err, moved in damaged:
        logging.warning("%s; moved it to %s and resuming from step %d", err, moved, step)
      return step, restored
    for err, moved in damaged:
      logging.warning("%s; moved it to %s; no other checkpoint restores: starting from the "
                      "beginning", err, moved)
    return None, None

  def _move_aside(self, step: int) -> pathlib.Path:
    root = self.directory.with_name(self.directory.name + DAMAGED_SUFFIX)
    target, n = root / str(step), 1
    while target.exists():
      n += 1
      target = root / f"{step}-{n}"
    if jax.process_index() == 0:
      root.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
    distributed.barrier(f"checkpoint_move_aside_{step}")
    self._manager.reload()
    if self._scores is not None:
      self._scores.pop(step, None)
    return target

  def wait(self) -> None:
    self._settle()

  def close(self) -> None:
    """Waits for the save in flight and prunes; after a failed save only releases orbax."""
    try:
      if not self._failed:
        self._settle()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if not self._failed:  # orbax re-raises the failed write, already reported
          raise


def save_model_checkpoint(directory: str | pathlib.Path, model: nnx.Module, *,
                          metadata: Mapping[str, Any], step: int = 0) -> pathlib.Path:
  """Writes a model-only checkpoint (e.g. converted weights) readable by eval/predict/init_from."""
  directory = pathlib.Path(directory).absolute()
  params, stats = variables.model_variables(model)
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False),
      item_names=(MODEL, META))
  manager.save(step, args=ocp.args.Composite(**{
      MODEL: ocp.args.StandardSave({"params": params, "batch_stats": stats}),
      META: ocp.args.JsonSave(dict(metadata)),
  }), force=True)
  manager.wait_until_finished()
  manager.close()
  return directory / str(step)


def resolve_checkpoint(path: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
  """A step directory from a workdir, a checkpoints dir or a step dir (latest step if unset)."""
  path = pathlib.Path(path).absolute()
  if (path / MODEL).is_dir():
    return path
  for root in (path / "checkpoints", path):
    if not root.is_dir():
      continue
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MODEL).is_dir())
    if steps:
      if step is None:
        return root / str(steps[-1])
      if step in steps:
        return root / str(step)
      raise FileNotFoundError(f"checkpoint step {step} not found under {root}; have {steps}")
  raise FileNotFoundError(
      f"no checkpoint under {path}: expected a step directory containing '{MODEL}/' "
      "(e.g. WORKDIR/checkpoints/1000) or a workdir with checkpoints/")


def read_meta(step_dir: pathlib.Path) -> dict[str, Any]:
  """The `meta` item of a step ({} when it has none); DamagedCheckpointError when unreadable."""
  meta_dir = pathlib.Path(step_dir) / META
  if not meta_dir.is_dir():
    return {}
  try:
    return dict(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir))
  except Exception as err:  # pylint: disable=broad-except
    detail = read_failure(err, meta_dir)
    if detail is None:
      raise
    raise DamagedCheckpointError(step_dir, detail) from None


def read_model_meta(step_dir: pathlib.Path, expected_model: str | None = None
                    ) -> dict[str, Any]:
  """The meta of a step a model is restored from: damage names the other steps to pass as
  --step; a checkpoint of another network than `expected_model` is refused."""
  try:
    meta = read_meta(step_dir)
  except DamagedCheckpointError as err:
    raise with_other_steps(err) from None
  if expected_model and meta.get("model") and meta["model"] != expected_model:
    raise ValueError(f"checkpoint {step_dir} holds model '{meta['model']}' "
                     f"(num_classes={meta.get('num_classes')}), but '{expected_model}' was "
                     "requested")
  return meta


def restore_model_variables(path: str | pathlib.Path, model: nnx.Module, *,
                            step: int | None = None, expected_model: str | None = None
                            ) -> dict[str, Any]:
  """Loads params + BN statistics of a checkpoint into `model` in place; returns its metadata.

  Fails with the model names, or the first differing variables, when the checkpoint belongs to
  another network or class count, and with DamagedCheckpointError (naming the step, the file
  and the other steps to pass as --step) when its files cannot be read.
  """
  step_dir = resolve_checkpoint(path, step)
  meta = read_model_meta(step_dir, expected_model)
  params, stats = variables.model_variables(model)
  restored = restore_model_item(step_dir, {"params": params, "batch_stats": stats})
  variables.update_model(model, restored["params"], restored["batch_stats"])
  return meta


def restore_model_item(step_dir: pathlib.Path, target: Mapping[str, Mapping[str, Any]]
                       ) -> dict[str, Any]:
  """The `model` item of a step, after checking its keys and shapes against `target`."""
  try:
    problems = model_layout_problems(step_dir, target)
    if problems:
      raise ValueError(f"checkpoint {step_dir} does not fit this model: " + "; ".join(problems))
    try:
      return ocp.StandardCheckpointer().restore(step_dir / MODEL, _abstract(dict(target)))
    except Exception as err:  # pylint: disable=broad-except
      detail = read_failure(err, step_dir / MODEL)
      if detail is None:
        raise
      raise DamagedCheckpointError(step_dir, detail) from None
  except DamagedCheckpointError as err:
    raise with_other_steps(err) from None
