"""`config.init_from`: start training from another model checkpoint, forgivingly.

As the original's `forgiving_state_restore`: every variable whose name and shape match is
taken from the checkpoint; the others (typically the final classifier when fine-tuning a
Mapillary model with 65/66 classes on Cityscapes' 19, or the head when starting from an
ImageNet trunk converted with `--trunk_only`) keep their fresh initialisation, and the run says
which. The checkpoint is read straight into the train state's shardings (FSDP or replicated),
on every process, so nothing is gathered on one host.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.runtime import checkpoint as checkpoint_lib

_GROUPS = ("params", "batch_stats")
_SHOWN = 8


@dataclasses.dataclass
class InitReport:
  """What `init_from` loaded and what kept its initialisation."""
  path: str
  source_model: str
  loaded: list[str]
  reinitialised: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, checkpoint, model
  missing: list[str]  # model variables the checkpoint lacks (kept at initialisation)
  unexpected: list[str]  # checkpoint variables the model has no place for (ignored)
  trunk_only: bool = False  # an ImageNet trunk converted with --trunk_only

  def summary(self) -> str:
    lines = [f"init_from {self.path} (model '{self.source_model}'): loaded "
             f"{len(self.loaded)} variables"]
    if self.trunk_only:
      lines.append("  an ImageNet trunk conversion: its head holds the converter's random "
                   "initialisation")
    if self.reinitialised:
      shown = ", ".join(f"{k} (checkpoint {g}, model {w})" for k, g, w in
                        self.reinitialised[:_SHOWN])
      lines.append(f"  re-initialised {len(self.reinitialised)} with another shape "
                   f"(e.g. a classifier for another class count): {shown}")
    if self.missing:
      lines.append(f"  {len(self.missing)} not in the checkpoint, kept at initialisation: "
                   + ", ".join(self.missing[:_SHOWN]) + (" ..." if len(self.missing) > _SHOWN
                                                         else ""))
    if self.unexpected:
      lines.append(f"  {len(self.unexpected)} checkpoint variables unused: "
                   + ", ".join(self.unexpected[:_SHOWN]))
    return "\n".join(lines)


def _stored_tree(step_dir) -> dict[str, dict[str, Any]]:
  stored = ocp.PyTreeCheckpointer().metadata(step_dir / checkpoint_lib.MODEL)
  tree = getattr(stored, "item_metadata", stored)
  tree = getattr(tree, "tree", tree)
  return {g: dict(tree.get(g, {})) if hasattr(tree, "get") else {} for g in _GROUPS}


def restore_forgiving(path: str, model_vars: dict[str, dict[str, jax.Array]],
                      shardings: dict[str, dict[str, Any]], replicated: Any,
                      *, step: int | None = None
                      ) -> tuple[dict[str, dict[str, jax.Array]], InitReport]:
  """`model_vars` ({'params', 'batch_stats'} flat dicts) with every matching variable replaced.

  Args:
    path: a checkpoint step dir, checkpoints dir or workdir (latest step unless `step`).
    model_vars: the freshly initialised (sharded) model variables.
    shardings: the same tree of NamedShardings (where loaded arrays go).
    replicated: sharding for checkpoint arrays that are read only to be dropped.

  Raises:
    ValueError: no variable at all fits (another network entirely).
  """
  step_dir = checkpoint_lib.resolve_checkpoint(path, step)
  meta = checkpoint_lib.read_meta(step_dir)
  stored = _stored_tree(step_dir)
  target, loaded, reinit, missing, unexpected = {}, [], [], [], []
  for group in _GROUPS:
    have, want = stored[group], model_vars[group]
    target[group] = {}
    for key, info in have.items():
      shape = tuple(getattr(info, "shape", ()))
      dtype = getattr(info, "dtype", np.float32)
      if key in want and shape == tuple(want[key].shape):
        target[group][key] = jax.ShapeDtypeStruct(shape, want[key].dtype,
                                                  sharding=shardings[group][key])
        loaded.append(f"{group}/{key}")
      else:
        # Orbax restores whole trees; the leftovers are read replicated and dropped.
        target[group][key] = jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)
        if key in want:
          reinit.append((f"{group}/{key}", shape, tuple(want[key].shape)))
        else:
          unexpected.append(f"{group}/{key}")
    missing += [f"{group}/{k}" for k in want if k not in have]
  report = InitReport(str(step_dir), str(meta.get("model", "?")), loaded, reinit, missing,
                      unexpected, trunk_only=bool(meta.get("trunk_only", False)))
  if not loaded:
    raise ValueError(f"config.init_from={path}: no variable of {step_dir} fits this model "
                     f"(checkpoint model '{report.source_model}'); e.g. missing "
                     f"{missing[:3]}, unused {unexpected[:3]}")
  restored = ocp.StandardCheckpointer().restore(step_dir / checkpoint_lib.MODEL, target)
  taken = set(loaded)
  out = {}
  for group in _GROUPS:
    out[group] = dict(model_vars[group])
    for key in model_vars[group]:
      if f"{group}/{key}" in taken:
        out[group][key] = restored[group][key]
  if jax.process_index() == 0:
    logging.warning("%s", report.summary())
    print(report.summary(), flush=True)
  return out, report
