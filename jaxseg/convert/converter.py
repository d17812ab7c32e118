"""Converts published PyTorch checkpoints into jaxseg orbax model checkpoints.

    obj = load_pth(src)                       # torch-free, allow-listed unpickling
    state_dict, meta = unwrap_checkpoint(obj) # {'state_dict': ...} wrappers, 'module.' prefix
    model = create_model(name, num_classes=K) # K defaults to the file's classifier size
    torch_layout.load_state_dict(model, state_dict, reinit_classifier_on_mismatch=True)
    save_model_checkpoint(out_dir, model, metadata=...)

A checkpoint that does not belong to the requested model (missing, unexpected or
differently shaped tensors outside the final classifier) is refused with an error naming
the model and some of the offending keys; a different `num_classes` re-initialises only
the final classifier and the report says so. NaN/Inf in a tensor the model would load is
refused too (`allow_non_finite` converts anyway and lists the tensors in the report).
The report is `convert.report.LoadReport`; `read_checkpoint`, `output_step_dir`,
`check_finite` and `source_metadata` are shared with the SDCNet / FlowNet2 conversion
(sdcnet/convert_weights.py), so both read files, refuse and record their source alike.
"""
from __future__ import annotations

import collections
import hashlib
import os
import pathlib
import shutil
from typing import Any, Mapping

from flax import nnx
import jax
import numpy as np
from tqdm import tqdm

from jaxseg.convert import torch_layout
from jaxseg.convert.pth_reader import load_pth
from jaxseg.convert.report import LoadReport
from jaxseg.models import registry

_PREFIX = "module."
# Top-level checkpoint fields copied into the orbax metadata (scalars only).
_META_FIELDS = ("epoch", "mean_iu", "command", "arch", "best_EPE")
_SHOWN_KEYS = 5  # How many offending keys an error message lists.
_WRONG_MODEL_ADVICE = ("Check --model (and --trunk-only for ImageNet trunk checkpoints), or pass "
                       "allow_partial=True / --allow-partial to load what matches")
STEP = 0  # Converted weights are written as step 0 of the output checkpoint directory.


def _plain(value: Any) -> Any:
  """numpy scalars -> Python scalars, so metadata stays JSON-serialisable."""
  return value.item() if isinstance(value, np.generic) else value


def unwrap_checkpoint(obj: Any) -> tuple[collections.OrderedDict, dict[str, Any]]:
  """Extracts the state dict and the scalar metadata of a loaded checkpoint.

  Accepts the published layouts: segmentation `{'state_dict', 'optimizer', 'epoch',
  'mean_iu', 'command'}` (keys 'module.'-prefixed by DataParallel), SDCNet `{'epoch',
  'arch', 'state_dict', 'optimizer'}`, FlowNet2 `{'epoch', 'state_dict', 'best_EPE'}`, and
  bare state dicts. The optimizer state is dropped.

  Returns:
    (state_dict, meta): state dict with the 'module.' prefix stripped, tensors as numpy
    arrays, in file order; meta holds the scalar fields (Python scalars).

  Raises:
    ValueError: no state dict found, or a state-dict entry is not a tensor.
  """
  if not isinstance(obj, Mapping):
    raise ValueError(f"expected a checkpoint dict or a state dict, got {type(obj).__name__}")
  meta: dict[str, Any] = {}
  if isinstance(obj.get("state_dict"), Mapping):
    state_dict = obj["state_dict"]
    for key in _META_FIELDS:
      value = _plain(obj.get(key))
      if isinstance(value, (bool, int, float, str)):
        meta[key] = value
  elif obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    state_dict = obj
  else:
    raise ValueError('expected a checkpoint with a "state_dict" entry or a bare state dict of '
                     f'tensors; got a dict with keys {sorted(map(str, obj))[:10]}')
  out = collections.OrderedDict()
  for key, value in state_dict.items():
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
      raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    out[key[len(_PREFIX):] if key.startswith(_PREFIX) else key] = value
  return out, meta


class NonFiniteWeightsError(ValueError):
  """A tensor the model would load holds NaN or Inf: every prediction would be garbage."""


def _non_finite_counts(value: np.ndarray) -> str:
  nan = int(np.isnan(value).sum())
  inf = int(np.isinf(value).sum())
  return f"{nan} NaN and {inf} Inf of {value.size} values"


def check_finite(report: LoadReport, state_dict: Mapping[str, np.ndarray],
                 non_finite: list[str]) -> list[str]:
  """The non-finite tensors the model takes from the file; raises naming the first one.

  Shared with the SDCNet / FlowNet2 conversion (sdcnet/convert_weights.py), so both refuse a
  diverged checkpoint with the same message.
  """
  unused = set(report.ignored) | set(report.unexpected) | set(report.reinitialised)
  unused |= {m.key for m in report.mismatched}
  bad = [k for k in non_finite if k not in unused]
  if bad:
    more = f" (and {len(bad) - 1} more tensors, e.g. {bad[1:1 + _SHOWN_KEYS]})" if bad[1:] else ""
    raise NonFiniteWeightsError(
        f"{report.src}: tensor {bad[0]!r} holds {_non_finite_counts(state_dict[bad[0]])}{more}: "
        "the converted model would predict garbage; pass allow_non_finite=True / "
        "--allow-non-finite to convert anyway")
  return bad


def _as_float32(key: str, value: np.ndarray) -> np.ndarray:
  """Half/bfloat16 (e.g. AMP) checkpoints are widened to float32; integers stay as they are."""
  if value.dtype.kind in "biu":
    return value
  if value.dtype.kind not in "fV" or value.dtype.itemsize > 8:
    raise ValueError(f"tensor {key!r} has unsupported dtype {value.dtype}")
  return np.asarray(value, dtype=np.float32)


def read_checkpoint(src: str, *, verbose: bool = False
                    ) -> tuple[collections.OrderedDict, dict[str, Any], list[str]]:
  """(state dict widened to float32, the file's scalar metadata, keys of tensors with NaN/Inf).

  The one way a conversion reads its `.pth` file (the safe reader, the published wrappers), for
  segmentation and SDCNet / FlowNet2 alike. `verbose` shows a progress bar over the tensors.
  """
  state_dict, meta = unwrap_checkpoint(load_pth(src))
  non_finite = []
  for key in tqdm(list(state_dict), desc="tensors", unit="tensor", disable=not verbose):
    state_dict[key] = _as_float32(key, state_dict[key])
    if state_dict[key].dtype.kind == "f" and not np.isfinite(state_dict[key]).all():
      non_finite.append(key)
  return state_dict, meta, non_finite


def output_step_dir(out_dir: str | os.PathLike, *, overwrite: bool) -> pathlib.Path:
  """The step directory a conversion writes (OUT/0); refuses to replace one unless `overwrite`.

  Checked before the (possibly large) file is read, so a mistyped --out fails at once.
  """
  step_dir = pathlib.Path(out_dir) / str(STEP)
  if step_dir.exists() and not overwrite:
    raise FileExistsError(f"{step_dir} already exists: choose another output directory or "
                          "pass overwrite=True / --overwrite")
  return step_dir


def clear_step_dir(step_dir: pathlib.Path) -> None:
  """Removes an earlier conversion right before saving (orbax refuses to save over a step)."""
  if step_dir.exists():
    shutil.rmtree(step_dir)


def source_metadata(src: str, meta: Mapping[str, Any]) -> dict[str, Any]:
  """The metadata every converted checkpoint records about its source file."""
  return dict(source=os.path.abspath(src), source_sha256=_sha256(src), source_meta=dict(meta),
              converted_by="jaxseg.convert")


def _classifier_size(state_dict: Mapping[str, np.ndarray], src: str, model_name: str) -> int:
  key = registry.get_spec(model_name).classifier_keys[0]
  if key not in state_dict:
    raise ValueError(f"{src}: cannot infer --num-classes: no classifier tensor {key!r} in the "
                     "checkpoint (pass --num-classes, and --trunk-only for trunk weights)")
  return int(state_dict[key].shape[0])


def _model_keys(model: nnx.Module) -> list[str]:
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return [torch_layout.torch_key_for_path(path) for path, _ in nnx.to_flat_state(state)]


def convert_checkpoint(src: str | os.PathLike, model_name: str, *,
                       out_dir: str | os.PathLike, num_classes: int | None = None,
                       trunk_only: bool = False, allow_partial: bool = False, seed: int = 0,
                       model_overrides: Mapping[str, Any] | None = None,
                       overwrite: bool = False, allow_non_finite: bool = False,
                       verbose: bool = True) -> LoadReport:
  """Converts a `.pth` checkpoint into an orbax model checkpoint under `out_dir`.

  Args:
    src: published PyTorch checkpoint (legacy or zip serialization).
    model_name: a `jaxseg.models.registry` name, e.g. 'DeepWV3Plus'.
    out_dir: checkpoint directory; the model is written as step 0.
    num_classes: classifier size; defaults to the checkpoint's. A different value
      re-initialises the final classifier only (required with `trunk_only`).
    trunk_only: the file holds ImageNet trunk weights (e.g. WiderResNet38-A2); the
      segmentation head keeps its random initialisation.
    allow_partial: load what matches instead of refusing a checkpoint of another model.
    seed: initialisation seed of everything not taken from the file.
    model_overrides: extra `create_model` keywords (e.g. width_multiplier); stored in the
      metadata so readers can rebuild the same model.
    overwrite: replace an existing converted checkpoint in `out_dir`.
    allow_non_finite: convert even when tensors the model loads hold NaN/Inf (they are
      listed in the report) instead of raising NonFiniteWeightsError.
    verbose: print the report and show a progress bar.

  Returns:
    The LoadReport, with `out_path` set to the written step directory.

  Raises:
    FileNotFoundError: `src` does not exist.
    FileExistsError: `out_dir` already holds a converted checkpoint (and not `overwrite`).
    ValueError: unreadable or unsafe file (pth_reader errors), unknown model, or a
      checkpoint of another network.
    NonFiniteWeightsError: a loaded tensor holds NaN/Inf (and not `allow_non_finite`).
  """
  from jaxseg.runtime.checkpoint import save_model_checkpoint  # Heavy (orbax): import late.
  src = os.fspath(src)
  if model_name not in registry.list_models():  # Before reading a possibly large file.
    raise ValueError(f'unknown model {model_name!r}; known models: '
                     f'{", ".join(registry.list_models())}')
  step_dir = output_step_dir(out_dir, overwrite=overwrite)
  state_dict, meta, non_finite = read_checkpoint(src, verbose=verbose)
  if num_classes is None:
    if trunk_only:
      raise ValueError(f"{src}: --num-classes is required with --trunk-only (the trunk "
                       "checkpoint has no segmentation classifier)")
    num_classes = _classifier_size(state_dict, src, model_name)
  overrides = dict(model_overrides or {})
  build = lambda: registry.create_model(model_name, num_classes=num_classes,  # noqa: E731
                                        rngs=nnx.Rngs(seed), **overrides)
  # Match against an abstract model first: a wrong checkpoint fails before paying for a full
  # initialisation, and a complete one needs none (every value comes from the file).
  def load(model: nnx.Module) -> LoadReport:
    report = _load(model, state_dict, trunk_only=trunk_only, seed=seed, model_name=model_name)
    report.src, report.num_classes, report.meta = src, num_classes, meta
    return report

  model = nnx.eval_shape(build)
  report = load(model)
  if not allow_partial:  # A checkpoint of another network is refused, naming the keys.
    report.raise_if_incomplete(_WRONG_MODEL_ADVICE)
  if not allow_non_finite:  # Checked on the abstract model: no initialisation paid for.
    check_finite(report, state_dict, non_finite)
  if not _is_concrete(model):  # Missing tensors or the trunk-only head need initial values.
    model = build()
    report = load(model)
  report.non_finite = non_finite
  if trunk_only:  # Everything outside the trunk (the head) keeps its initialisation.
    done = set(report.loaded) | set(report.missing)
    report.left_at_init = [k for k in _model_keys(model) if k not in done]
  metadata = dict(model=model_name, num_classes=num_classes, model_overrides=overrides,
                  **source_metadata(src, meta), trunk_only=trunk_only,
                  reinitialized=report.reinitialized, missing=report.missing,
                  unexpected=report.unexpected)
  clear_step_dir(step_dir)
  report.out_path = str(save_model_checkpoint(pathlib.Path(out_dir), model, metadata=metadata,
                                              step=STEP))
  if verbose:
    print(report.summary())
  return report


def _load(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, trunk_only: bool,
          seed: int, model_name: str) -> LoadReport:
  """Loads into `model` in place (non-strict); the report names the registry model."""
  if trunk_only:
    report = torch_layout.load_trunk_state_dict(model, state_dict, strict=False)
  else:
    report = torch_layout.load_state_dict(
        model, state_dict, reinit_classifier_on_mismatch=True, strict=False, reinit_seed=seed,
        classifier_keys=registry.get_spec(model_name).classifier_keys)
  report.model, report.trunk_only = model_name, trunk_only
  return report


def _is_concrete(model: nnx.Module) -> bool:
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return not any(isinstance(var.get_value(), jax.ShapeDtypeStruct)
                 for _, var in nnx.to_flat_state(state))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
