"""Orbax checkpoints: model variables, optimizer state, data-iterator state and run metadata.

A checkpoint step directory holds four items, so each reader restores only what it needs:
  model      {'params': flat dict, 'batch_stats': flat dict}   (eval, predict, init_from)
  train      {'opt_state', 'step', ...}                          (resume)
  data_iter  grain iterator state as JSON                         (resume)
  meta       {'model': name, 'num_classes': K, 'config': ...}    (validation, provenance)
Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that a resume would pick up.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.train_lib import variables

MODEL, TRAIN, DATA_ITER, META = "model", "train", "data_iter", "meta"
_ITEMS = (MODEL, TRAIN, DATA_ITER, META)


def _abstract(tree: Any) -> Any:
  """Restore targets; leaves without a sharding (e.g. from eval_shape) go to the first local
  device, since orbax would otherwise reuse the saving run's mesh, which may not exist here."""
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    sharding = getattr(x, "sharding", None) or local
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree)


class CheckpointManager:
  """Keeps the last `keep` (and optionally the best-by-metric) training checkpoints."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None, read_only: bool = False):
    self.directory = pathlib.Path(directory).absolute()
    best_fn = None
    if best_metric:
      best_fn = lambda metrics: float(metrics.get(best_metric, -np.inf))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, best_fn=best_fn,
        best_mode="max", keep_checkpoints_without_metrics=True, create=not read_only,
        read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, *, model_vars: Mapping[str, Any], train_vars: Mapping[str, Any],
           data_state: Mapping[str, Any] | None, meta: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
    args = ocp.args.Composite(**{
        MODEL: ocp.args.StandardSave(dict(model_vars)),
        TRAIN: ocp.args.StandardSave(dict(train_vars)),
        DATA_ITER: ocp.args.JsonSave(dict(data_state or {})),
        META: ocp.args.JsonSave(dict(meta)),
    })
    return self._manager.save(step, args=args, metrics=dict(metrics) if metrics else None,
                              force=force)

  def restore(self, step: int, *, model_vars: Any, train_vars: Any) -> dict[str, Any]:
    """Restores every item; `model_vars`/`train_vars` are (possibly abstract) targets."""
    args = ocp.args.Composite(**{
        MODEL: ocp.args.StandardRestore(_abstract(model_vars)),
        TRAIN: ocp.args.StandardRestore(_abstract(train_vars)),
        DATA_ITER: ocp.args.JsonRestore(),
        META: ocp.args.JsonRestore(),
    })
    restored = self._manager.restore(step, args=args)
    return {name: restored[name] for name in _ITEMS}

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


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
  meta_dir = step_dir / META
  if not meta_dir.is_dir():
    return {}
  return dict(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir))


def restore_model_variables(path: str | pathlib.Path, model: nnx.Module, *,
                            step: int | None = None, expected_model: str | None = None
                            ) -> dict[str, Any]:
  """Loads params + BN statistics of a checkpoint into `model` in place; returns its metadata.

  Fails with the model names, or the first differing variables, when the checkpoint belongs to
  another network or class count.
  """
  step_dir = resolve_checkpoint(path, step)
  meta = read_meta(step_dir)
  if expected_model and meta.get("model") and meta["model"] != expected_model:
    raise ValueError(f"checkpoint {step_dir} holds model '{meta['model']}' "
                     f"(num_classes={meta.get('num_classes')}), but '{expected_model}' was requested")
  params, stats = variables.model_variables(model)
  restored = restore_model_item(step_dir, {"params": params, "batch_stats": stats})
  variables.update_model(model, restored["params"], restored["batch_stats"])
  return meta


def restore_model_item(step_dir: pathlib.Path, target: Mapping[str, Mapping[str, Any]]
                       ) -> dict[str, Any]:
  """The `model` item of a step, after checking its keys and shapes against `target`."""
  stored = ocp.PyTreeCheckpointer().metadata(step_dir / MODEL)
  stored = getattr(stored, "item_metadata", stored)
  stored = getattr(stored, "tree", stored)
  problems = []
  for group in ("params", "batch_stats"):
    have = dict(stored.get(group, {}) or {}) if hasattr(stored, "get") else {}
    problems += [f"{group}: {p}" for p in layout_problems(target[group], have)]
  if problems:
    raise ValueError(f"checkpoint {step_dir} does not fit this model: " + "; ".join(problems))
  return ocp.StandardCheckpointer().restore(step_dir / MODEL, _abstract(dict(target)))


def layout_problems(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
  """Missing, unexpected and shape-mismatched keys of `have` against `want`, as sentences."""
  shape = lambda x: tuple(getattr(x, "shape", np.shape(x)))
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  mismatched = [(k, shape(have[k]), shape(want[k])) for k in sorted(want)
                if k in have and shape(have[k]) != shape(want[k])]
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing, e.g. {missing[:3]}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
  if mismatched:
    problems.append(f"shape mismatch (key, stored, model) e.g. {mismatched[:3]}")
  return problems
