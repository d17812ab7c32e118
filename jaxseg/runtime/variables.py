"""Flat, string-keyed views of an NNX model's variables.

The train state keeps parameters and BatchNorm statistics as flat `{"mod2/block1/.../kernel":
array}` dicts: plain pytrees that optax, orbax and sharding rules handle without knowing about
NNX, and whose keys double as readable names in error messages and checkpoints.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.nnx as nnx
import jax
import numpy as np

FlatVars = dict[str, jax.Array]


def path_key(path: tuple[Any, ...]) -> str:
  return "/".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class ModelLayout:
  """The static half of a model: its graph plus the path and type of every variable."""
  graphdef: Any
  param_paths: tuple[tuple[str, tuple[Any, ...], type], ...]
  stat_paths: tuple[tuple[str, tuple[Any, ...], type], ...]

  def merge(self, params: Mapping[str, jax.Array], batch_stats: Mapping[str, jax.Array]
            ) -> nnx.Module:
    """Rebuilds a live model from flat variables (works under jit)."""
    return nnx.merge(self.graphdef, _unflatten(self.param_paths, params),
                     _unflatten(self.stat_paths, batch_stats))


def _entries(state: nnx.State) -> tuple[tuple[str, tuple[Any, ...], type], ...]:
  return tuple((path_key(path), tuple(path), type(var)) for path, var in nnx.to_flat_state(state))


def _flatten(state: nnx.State) -> FlatVars:
  return {path_key(path): var.get_value() for path, var in nnx.to_flat_state(state)}


def _unflatten(entries, values: Mapping[str, jax.Array]) -> nnx.State:
  missing = [key for key, _, _ in entries if key not in values]
  if missing:
    raise KeyError(f"variables missing for {len(missing)} model entries, e.g. {missing[:5]}")
  return nnx.from_flat_state([(path, var_type(values[key])) for key, path, var_type in entries])


def split_model(model: nnx.Module) -> tuple[ModelLayout, FlatVars, FlatVars]:
  """(layout, params, batch_stats); refuses models holding other mutable state."""
  graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  leftovers = [path_key(p) for p, _ in nnx.to_flat_state(rest)]
  if leftovers:
    raise ValueError("model holds state other than Param/BatchStat (e.g. RNG streams created at "
                     f"construction); dropout must draw from call-time rngs: {leftovers[:5]}")
  layout = ModelLayout(graphdef, _entries(params), _entries(stats))
  return layout, _flatten(params), _flatten(stats)


def model_variables(model: nnx.Module) -> tuple[FlatVars, FlatVars]:
  _, params, stats = split_model(model)
  return params, stats


def update_model(model: nnx.Module, params: Mapping[str, jax.Array],
                 batch_stats: Mapping[str, jax.Array]) -> None:
  """Writes flat variables into a live model in place."""
  layout, _, _ = split_model(model)
  nnx.update(model, _unflatten(layout.param_paths, params),
             _unflatten(layout.stat_paths, batch_stats))


def first_non_finite(params: Mapping[str, Any], batch_stats: Mapping[str, Any]
                     ) -> tuple[str, int, int] | None:
  """('params/<key>' or 'batch_stats/<key>', non-finite count, size) of the first variable
  holding NaN/Inf, or None when all are finite."""
  for group, flat in (("params", params), ("batch_stats", batch_stats)):
    for key, value in flat.items():
      host = np.asarray(value)  # Restored variables live on the host: no device round trip.
      if host.dtype.kind in "biu":  # Integers cannot be NaN.
        continue
      finite = np.isfinite(host)
      if not finite.all():
        return f"{group}/{key}", int(finite.size - finite.sum()), int(finite.size)
  return None


def require_finite(params: Mapping[str, Any], batch_stats: Mapping[str, Any], *,
                   where: str) -> None:
  """Refuses variables holding NaN/Inf (e.g. a diverged run): every prediction would be junk."""
  bad = first_non_finite(params, batch_stats)
  if bad is not None:
    name, count, size = bad
    raise ValueError(f"{where}: variable '{name}' holds NaN/Inf ({count} of {size} values); "
                     "the run that wrote it diverged or the file is damaged: refusing to use "
                     "it (try an earlier --step)")
