"""Is a stored step this run's? Its model / train layouts and run settings, compared before
anything is restored (a mismatch is one CheckpointMismatchError listing the differences)."""
from __future__ import annotations

import collections
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.runtime.checkpoint_format import MODEL
from jaxseg.runtime.checkpoint_format import TRAIN
from jaxseg.runtime.checkpoint_format import DamagedCheckpointError
from jaxseg.runtime.checkpoint_format import read_failure
from jaxseg.runtime.checkpoint_format import unreadable_layout

# Run settings a resume must share with its checkpoint (beyond the array layouts), and the
# model overrides that only choose how the same network computes (free to change on resume).
_RUN_KEYS = (("model",), ("num_classes",), ("config", "model", "overrides"),
             ("config", "data", "name"))
# (`precision`: the deprecated name of `conv_precision`, still in older checkpoints.)
_COMPUTE_ONLY_OVERRIDES = frozenset({"conv_precision", "precision", "conv_impl"})


class CheckpointMismatchError(ValueError):
  """A resume into a checkpoint written by another model, width, dataset or optimizer."""


def stored_tree(item_dir: pathlib.Path) -> Any:
  stored = ocp.PyTreeCheckpointer().metadata(item_dir)
  stored = getattr(stored, "item_metadata", stored)
  return getattr(stored, "tree", stored)


def model_layout_problems(step_dir: pathlib.Path, target: Mapping[str, Mapping[str, Any]]
                          ) -> list[str]:
  """Differences between the stored `model` item's keys/shapes and `target`'s, as sentences;
  DamagedCheckpointError when the stored layout cannot be read."""
  item_dir = pathlib.Path(step_dir) / MODEL
  try:
    stored = stored_tree(item_dir)
  except Exception as err:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step_dir, read_failure(err, item_dir)
                                 or unreadable_layout(item_dir)) from None
  have = {g: dict(stored.get(g, {}) or {}) if hasattr(stored, "get") else {}
          for g in ("params", "batch_stats")}
  if not have["params"]:  # orbax answers an unreadable index with an empty tree
    raise DamagedCheckpointError(step_dir, unreadable_layout(item_dir))
  problems = []
  for group in ("params", "batch_stats"):
    problems += [f"{group}: {p}" for p in layout_problems(target[group], have[group])]
  return problems


def train_layout_problems(step_dir: pathlib.Path, target: Any) -> list[str]:
  """How the stored `train` item (optimizer state, counters) differs from `target`: the
  multiset of array shapes, which changes with the optimizer, precision or model."""
  item_dir = pathlib.Path(step_dir) / TRAIN
  try:
    stored = jax.tree.leaves(stored_tree(item_dir))
  except Exception as err:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step_dir, read_failure(err, item_dir)
                                 or unreadable_layout(item_dir)) from None
  if not stored:
    raise DamagedCheckpointError(step_dir, unreadable_layout(item_dir))
  have = collections.Counter(tuple(getattr(x, "shape", ())) for x in stored)
  want = collections.Counter(tuple(np.shape(x)) for x in jax.tree.leaves(target))
  if have == want:
    return []
  return [f"training state of {sum(have.values())} arrays, this run has {sum(want.values())} "
          "(another optimizer, precision or model?)"]


def run_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """The run settings (model, width and other overrides, class count, dataset) in which two
  checkpoint metas differ, as 'key: checkpoint X, this run Y'; keys either lacks are skipped."""
  differences = []
  for path in _RUN_KEYS:
    a, b = _lookup(stored, path), _lookup(current, path)
    if a is None or b is None:
      continue
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      for key in sorted((set(a) | set(b)) - _COMPUTE_ONLY_OVERRIDES):
        if a.get(key) != b.get(key):
          differences.append(f"{'.'.join(path[1:] + (key,))}: checkpoint {a.get(key)!r}, "
                             f"this run {b.get(key)!r}")
    elif a != b:
      differences.append(f"{'.'.join(path[1:] if len(path) > 1 else path)}: checkpoint {a!r}, "
                         f"this run {b!r}")
  return differences


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


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
