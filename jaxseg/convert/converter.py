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
"""
from __future__ import annotations

import collections
import dataclasses
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
from jaxseg.models import registry

_PREFIX = "module."
# Top-level checkpoint fields copied into the orbax metadata (scalars only).
_META_FIELDS = ("epoch", "mean_iu", "command", "arch", "best_EPE")
_SHOWN_KEYS = 5  # How many offending keys an error message lists.
_STEP = 0  # Converted weights are written as step 0 of the output checkpoint directory.


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


def _check_finite(report: ConversionReport, state_dict: Mapping[str, np.ndarray],
                  non_finite: list[str]) -> list[str]:
  """The non-finite tensors the model takes from the file; raises naming the first one."""
  unused = set(report.ignored) | set(report.unexpected) | set(report.reinitialized)
  unused |= {k for k, _, _ in report.mismatched}
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


@dataclasses.dataclass
class ConversionReport:
  """What a conversion loaded, left out and re-initialised."""
  src: str
  model: str
  num_classes: int
  loaded: list[str]
  missing: list[str]  # Model tensors the checkpoint lacks (kept at their initialisation).
  unexpected: list[str]  # Checkpoint tensors the model has no place for (ignored).
  mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, file, model shape.
  reinitialized: list[str]  # Classifier tensors re-initialised for a new class count.
  ignored: list[str] = dataclasses.field(default_factory=list)  # num_batches_tracked, extras.
  trunk_only: bool = False
  left_at_init: list[str] = dataclasses.field(default_factory=list)  # Head, with trunk_only.
  non_finite: list[str] = dataclasses.field(default_factory=list)
  out_path: str | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def summary(self) -> str:
    """Human-readable report: counts, then every offending key by name."""
    lines = [f'{self.src} -> {self.model} (num_classes={self.num_classes}'
             f'{", trunk only" if self.trunk_only else ""}): loaded {len(self.loaded)} tensors']
    if self.meta:
      lines.append("  checkpoint: " + ", ".join(f"{k}={v!r}" for k, v in self.meta.items()))
    if self.ignored:
      lines.append(f"  ignored {len(self.ignored)} entries (BatchNorm num_batches_tracked, "
                   "ImageNet classifier)")
    if self.left_at_init:
      lines.append(f"  {len(self.left_at_init)} head tensors keep their random initialisation")
    if self.reinitialized:
      lines.append(f"  re-initialised classifier for {self.num_classes} classes: "
                   + ", ".join(self.reinitialized))
    for title, keys in (("missing (left at initialisation)", self.missing),
                        ("unexpected (ignored)", self.unexpected),
                        ("non-finite values", self.non_finite)):
      if keys:
        lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
    for key, got, want in self.mismatched:
      lines.append(f"  shape mismatch: {key}: checkpoint {got}, model {want}")
    if self.out_path:
      lines.append(f"  wrote {self.out_path}")
    return "\n".join(lines)


def _classifier_size(state_dict: Mapping[str, np.ndarray], src: str, model_name: str) -> int:
  key = registry.get_spec(model_name).classifier_keys[0]
  if key not in state_dict:
    raise ValueError(f"{src}: cannot infer --num-classes: no classifier tensor {key!r} in the "
                     "checkpoint (pass --num-classes, and --trunk-only for trunk weights)")
  return int(state_dict[key].shape[0])


def _model_keys(model: nnx.Module) -> list[str]:
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return [torch_layout.torch_key_for_path(path) for path, _ in nnx.to_flat_state(state)]


def _fail_wrong_model(report: ConversionReport) -> None:
  """Raises when the checkpoint evidently holds another network's weights."""
  missing = report.missing  # torch_layout does not count a re-initialised classifier.
  if not (missing or report.unexpected or report.mismatched):
    return
  parts = []
  if missing:
    parts.append(f"{len(missing)} model tensors missing from the file, e.g. "
                 f"{missing[:_SHOWN_KEYS]}")
  if report.unexpected:
    parts.append(f"{len(report.unexpected)} file tensors unknown to the model, e.g. "
                 f"{report.unexpected[:_SHOWN_KEYS]}")
  if report.mismatched:
    shown = [f"{k}: file {g} vs model {w}" for k, g, w in report.mismatched[:_SHOWN_KEYS]]
    parts.append(f"{len(report.mismatched)} shape mismatches, e.g. {shown}")
  raise ValueError(
      f"{report.src} does not hold {report.model} weights (loaded {len(report.loaded)} "
      f"tensors): " + "; ".join(parts) + ". Check --model (and --trunk-only for ImageNet trunk "
      "checkpoints), or pass allow_partial=True / --allow-partial to load what matches.")


def convert_checkpoint(src: str | os.PathLike, model_name: str, *,
                       out_dir: str | os.PathLike, num_classes: int | None = None,
                       trunk_only: bool = False, allow_partial: bool = False, seed: int = 0,
                       model_overrides: Mapping[str, Any] | None = None,
                       overwrite: bool = False, allow_non_finite: bool = False,
                       verbose: bool = True) -> ConversionReport:
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
    The ConversionReport, with `out_path` set to the written step directory.

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
  step_dir = pathlib.Path(out_dir) / str(_STEP)
  if step_dir.exists() and not overwrite:
    raise FileExistsError(f"{step_dir} already exists: choose another output directory or "
                          "pass overwrite=True / --overwrite")
  state_dict, meta = unwrap_checkpoint(load_pth(src))
  non_finite = []
  for key in tqdm(list(state_dict), desc="tensors", unit="tensor", disable=not verbose):
    state_dict[key] = _as_float32(key, state_dict[key])
    if state_dict[key].dtype.kind == "f" and not np.isfinite(state_dict[key]).all():
      non_finite.append(key)
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
  model = nnx.eval_shape(build)
  report = _load(model, state_dict, trunk_only=trunk_only, seed=seed, model_name=model_name)
  report.src, report.model, report.num_classes, report.meta = src, model_name, num_classes, meta
  if not allow_partial:
    _fail_wrong_model(report)
  if not allow_non_finite:  # Checked on the abstract model: no initialisation paid for.
    _check_finite(report, state_dict, non_finite)
  if not _is_concrete(model):  # Missing tensors or the trunk-only head need initial values.
    model = build()
    report = dataclasses.replace(_load(model, state_dict, trunk_only=trunk_only, seed=seed,
                                       model_name=model_name),
                                 src=src, model=model_name, num_classes=num_classes, meta=meta)
  report.non_finite = non_finite
  if trunk_only:  # Everything outside the trunk (the head) keeps its initialisation.
    done = set(report.loaded) | set(report.missing)
    report.left_at_init = [k for k in _model_keys(model) if k not in done]
  metadata = dict(model=model_name, num_classes=num_classes, model_overrides=overrides,
                  source=os.path.abspath(src), source_sha256=_sha256(src),
                  source_meta=meta, converted_by="jaxseg.convert", trunk_only=trunk_only,
                  reinitialized=report.reinitialized, missing=report.missing,
                  unexpected=report.unexpected)
  if step_dir.exists():  # overwrite: orbax refuses to save over an existing step.
    shutil.rmtree(step_dir)
  report.out_path = str(save_model_checkpoint(pathlib.Path(out_dir), model, metadata=metadata,
                                              step=_STEP))
  if verbose:
    print(report.summary())
  return report


def _load(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, trunk_only: bool,
          seed: int, model_name: str) -> ConversionReport:
  """Loads into `model` in place (non-strict) and translates torch_layout's report."""
  if trunk_only:
    loaded = torch_layout.load_trunk_state_dict(model, state_dict, strict=False)
  else:
    loaded = torch_layout.load_state_dict(
        model, state_dict, reinit_classifier_on_mismatch=True, strict=False, reinit_seed=seed,
        classifier_keys=registry.get_spec(model_name).classifier_keys)
  return ConversionReport(
      src="", model="", num_classes=0, loaded=list(loaded.loaded), missing=list(loaded.missing),
      unexpected=list(loaded.unexpected),
      # torch_layout reports (key, model shape, file shape).
      mismatched=[(k, tuple(got), tuple(want)) for k, want, got in loaded.mismatched],
      reinitialized=list(loaded.reinitialized), ignored=list(loaded.ignored),
      trunk_only=trunk_only)


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
