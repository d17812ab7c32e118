"""PyTorch state_dict <-> NNX state for the segmentation models (numpy only, no torch).

The NNX attribute paths of jaxseg.models spell the torch keys, so the mapping is
mechanical:

  nnx path                         torch key
  (..., 'kernel')  4-D (kh,kw,I,O)  '....weight'        (O, I, kh, kw)   Conv2d
  (..., 'kernel')  2-D (I, O)       '....weight'        (O, I)           Linear
  (..., 'bias')                     '....bias'
  (..., 'scale')                    '....weight'        1-D              BatchNorm
  (..., 'mean') / (..., 'var')      '....running_mean' / '....running_var'
  (..., 'v')                        '....v'             1-D              EvoNorm-S0
  (nothing)                         '....num_batches_tracked' (consumed, ignored)

Integer path entries are nnx.List indices, i.e. torch Sequential indices.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import re
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.convert.report import LoadReport
from jaxseg.convert.report import ShapeMismatch

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var", "v": "v"}  # v: EvoNorm-S0 (timm EvoNorm2dS0)
_NBT = "num_batches_tracked"
# The segmentation classifier (last conv of `final`); its out-channels = num_classes.
CLASSIFIER_KEY = "final.6.weight"
DEFAULT_CLASSIFIER_KEYS = (CLASSIFIER_KEY, "final.6.bias")


def torch_key_for_path(path: Sequence[Any]) -> str:
  """nnx state path -> torch state_dict key (no 'module.' prefix)."""
  if not path:
    raise ValueError("torch_key_for_path: empty path")
  *head, leaf = (str(p) for p in path)
  if leaf not in _LEAF_TO_TORCH:
    raise ValueError(f"torch_key_for_path: no torch name for leaf {leaf!r} of path {tuple(path)}")
  return ".".join(head + [_LEAF_TO_TORCH[leaf]])


def path_for_torch_key(key: str, ndim: int) -> tuple[Any, ...]:
  """torch key -> nnx path; `ndim` of the torch array decides weight = kernel or BN scale."""
  *head, leaf = key.split(".")
  if leaf == "weight":
    leaf = "kernel" if ndim >= 2 else "scale"
  elif leaf == "running_mean":
    leaf = "mean"
  elif leaf == "running_var":
    leaf = "var"
  elif leaf not in ("bias", "v"):
    raise ValueError(f"path_for_torch_key: unsupported torch entry {key!r}")
  return tuple(int(p) if p.isdigit() else p for p in head) + (leaf,)


def torch_to_nnx_array(leaf: str, value: np.ndarray) -> np.ndarray:
  """Converts one torch-layout array to the layout of nnx leaf `leaf`."""
  value = np.asarray(value)
  if leaf == "kernel":
    if value.ndim == 4:
      return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
      return np.transpose(value, (1, 0))
    raise ValueError(f"torch_to_nnx_array: kernel must be 2-D or 4-D, got shape {value.shape}")
  return value


def nnx_to_torch_array(leaf: str, value: np.ndarray) -> np.ndarray:
  """Inverse of torch_to_nnx_array."""
  value = np.asarray(value)
  if leaf == "kernel":
    if value.ndim == 4:
      return np.transpose(value, (3, 2, 0, 1))
    if value.ndim == 2:
      return np.transpose(value, (1, 0))
    raise ValueError(f"nnx_to_torch_array: kernel must be 2-D or 4-D, got shape {value.shape}")
  return value


def _torch_shape(leaf: str, nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf == "kernel" and len(nnx_shape) == 4:
    kh, kw, i, o = nnx_shape
    return (o, i, kh, kw)
  if leaf == "kernel" and len(nnx_shape) == 2:
    return (nnx_shape[1], nnx_shape[0])
  return tuple(nnx_shape)


def _model_entries(model: nnx.Module) -> dict[str, tuple[tuple[Any, ...], nnx.Variable]]:
  """{torch key: (nnx path, variable)} over the model's Params and BatchStats."""
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  out = {}
  for path, var in nnx.to_flat_state(state):
    out[torch_key_for_path(path)] = (tuple(path), var)
  return out


def _var_shape_dtype(var: nnx.Variable) -> tuple[tuple[int, ...], Any]:
  v = var.get_value()
  return tuple(v.shape), v.dtype


def _strip(state_dict: Mapping[str, Any], prefix: str | None) -> dict[str, np.ndarray]:
  out = {}
  for k, v in state_dict.items():
    if prefix and k.startswith(prefix):
      k = k[len(prefix):]
    out[k] = np.asarray(v)
  return out


def _fmt(keys: Sequence[Any], limit: int = 20) -> str:
  keys = list(keys)
  text = ", ".join(str(k) for k in keys[:limit])
  return text + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _reinit_value(leaf: str, shape: tuple[int, ...], dtype: Any, seed: int) -> jax.Array:
  if leaf == "kernel":
    init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    return init(jax.random.key(seed), shape, dtype)
  if leaf in ("scale", "var"):
    return jnp.ones(shape, dtype)
  return jnp.zeros(shape, dtype)


def _assign(model: nnx.Module, updates: dict[tuple[Any, ...], tuple[nnx.Variable, Any]]) -> None:
  if not updates:
    return
  flat = [(path, var.replace(value)) for path, (var, value) in updates.items()]
  nnx.update(model, nnx.from_flat_state(flat))


def _load_entries(model: nnx.Module, sd: dict[str, np.ndarray], report: LoadReport, *,
                  key_map: Callable[[str], str | None], allowed_extra: Callable[[str], bool],
                  mismatch_ok: Callable[[str], bool], reinit_seed: int,
                  restrict: Callable[[str], bool] = lambda k: True) -> None:
  """Matches checkpoint keys (through key_map) to model entries and writes them."""
  entries = {k: e for k, e in _model_entries(model).items() if restrict(k)}
  bn_prefixes = {k[:-len("running_mean")] for k in entries if k.endswith(".running_mean")}
  updates = {}
  seen = set()
  for ck, value in sd.items():
    mk = key_map(ck)
    if mk is None or (mk not in entries and allowed_extra(ck)):
      report.ignored.append(ck)
      continue
    if mk.endswith("." + _NBT) and mk[:-len(_NBT)] in bn_prefixes:
      report.ignored.append(ck)
      continue
    if mk not in entries:
      report.unexpected.append(ck)
      continue
    seen.add(mk)
    path, var = entries[mk]
    shape, dtype = _var_shape_dtype(var)
    leaf = path[-1]
    expected = _torch_shape(leaf, shape)
    if tuple(value.shape) != expected:
      if mismatch_ok(mk):
        report.reinitialised.append(mk)
        if isinstance(var.get_value(), jax.ShapeDtypeStruct):
          updates[path] = (var, _reinit_value(leaf, shape, dtype, reinit_seed))
        continue
      report.mismatched.append(ShapeMismatch(ck, expected, tuple(value.shape)))
      continue
    updates[path] = (var, jnp.asarray(torch_to_nnx_array(leaf, value), dtype=dtype))
    report.loaded.append(mk)
  report.missing.extend(k for k in entries if k not in seen)
  _assign(model, updates)


def load_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                    strip_prefix: str | None = "module.", strict: bool = True,
                    reinit_classifier_on_mismatch: bool = False,
                    classifier_keys: Sequence[str] = DEFAULT_CLASSIFIER_KEYS,
                    reinit_seed: int = 0, src: str = "") -> LoadReport:
  """Writes a torch-layout state_dict (numpy arrays) into `model` in place.

  Args:
    model: a jaxseg model (concrete, or abstract from nnx.eval_shape).
    state_dict: {torch key: array}; `strip_prefix` is removed where present.
    strict: raise ValueError naming missing / unexpected / shape-mismatched keys.
      With strict=False everything that matches in name and shape is loaded (the
      original's forgiving_state_restore) and the rest is only reported.
    reinit_classifier_on_mismatch: the `classifier_keys` may differ in shape (other
      num_classes); they keep the model's own initialisation (drawn from
      `reinit_seed` for abstract models) and are listed in `reinitialised`.
    src: the file the state dict came from, named by the report and its errors.

  Returns:
    LoadReport. `num_batches_tracked` entries of known BatchNorms are `ignored`.
  """
  sd = _strip(state_dict, strip_prefix)
  report = LoadReport(model=type(model).__name__, src=src)
  classifier = set(classifier_keys) if reinit_classifier_on_mismatch else set()
  _load_entries(model, sd, report, key_map=lambda k: k, allowed_extra=lambda k: False,
                mismatch_ok=lambda k: k in classifier, reinit_seed=reinit_seed)
  # A re-initialised classifier is not "missing".
  report.missing = [k for k in report.missing if k not in report.reinitialised]
  if strict:
    report.raise_if_incomplete()
  return report


def model_state_dict(model: nnx.Module, *, prefix: str = "",
                     include_num_batches_tracked: bool = False) -> dict[str, np.ndarray]:
  """The model's Params and BatchStats as a torch-layout {key: np.ndarray} dict.

  `include_num_batches_tracked` adds a 0-d int64 counter (0: not tracked in jaxseg)
  per BatchNorm so torch's strict loading sees its full key set.
  """
  out: dict[str, np.ndarray] = {}
  for key, (path, var) in _model_entries(model).items():
    out[prefix + key] = nnx_to_torch_array(path[-1], np.asarray(var.get_value()))
    if include_num_batches_tracked and key.endswith(".running_var"):
      out[prefix + key[:-len("running_var")] + _NBT] = np.zeros((), np.int64)
  return out


def model_state_shapes(model: nnx.Module, *, prefix: str = "",
                       include_num_batches_tracked: bool = False) -> dict[str, tuple[int, ...]]:
  """{torch key: torch shape} of the model; works on abstract (eval_shape) models."""
  out: dict[str, tuple[int, ...]] = {}
  for key, (path, var) in _model_entries(model).items():
    out[prefix + key] = _torch_shape(path[-1], _var_shape_dtype(var)[0])
    if include_num_batches_tracked and key.endswith(".running_var"):
      out[prefix + key[:-len("running_var")] + _NBT] = ()
  return out


# ---------------------------------------------------------------------------------------------
# ImageNet trunk checkpoints (how deepv3.py / SEresnext.py / Resnet.py build their trunks).

TRUNK_FORMATS = ("wider_resnet38", "torchvision_resnet", "cadene_se_resnext", "semseg_resnet")
_TRUNK_PREFIXES = {
    "wider_resnet38": tuple(f"mod{i}." for i in range(1, 8)),
    "torchvision_resnet": tuple(f"layer{i}." for i in range(5)),
    "cadene_se_resnext": tuple(f"layer{i}." for i in range(5)),
    "semseg_resnet": tuple(f"layer{i}." for i in range(5)),
}
# Checkpoint entries that exist in the ImageNet files but are not part of the trunk.
_TRUNK_UNUSED = {
    "wider_resnet38": re.compile(r"^(bn_out|classifier)\."),
    "torchvision_resnet": re.compile(r"^fc\."),
    "cadene_se_resnext": re.compile(r"^last_linear\."),
    "semseg_resnet": re.compile(r"^fc\."),
}


def _torchvision_key(key: str) -> str | None:
  # DeepV3Plus: layer0 = Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool).
  if key.startswith("conv1."):
    return "layer0.0." + key[len("conv1."):]
  if key.startswith("bn1."):
    return "layer0.1." + key[len("bn1."):]
  return key


# torchvision's segmentation models (DeepLabV3R50/R101) keep the ImageNet ResNet whole, minus
# avgpool / fc, under `backbone.` (IntermediateLayerGetter).
_BACKBONE = "backbone."


def _trunk_layout(trunk_format: str, model_keys: Iterable[str]
                  ) -> tuple[tuple[str, ...], Callable[[str], str | None]]:
  """(the model's trunk key prefixes, checkpoint key -> model key) of a trunk file's format.

  A torchvision ImageNet ResNet maps onto whichever layout the model has: its keys under
  `backbone.` (torchvision DeepLabV3) or conv1 / bn1 as layer0.0 / layer0.1 (DeepV3Plus).
  """
  if trunk_format == "torchvision_resnet" and any(k.startswith(_BACKBONE) for k in model_keys):
    return (_BACKBONE,), lambda k: _BACKBONE + k
  key_map = {"torchvision_resnet": _torchvision_key,
             "semseg_resnet": _semseg_key}.get(trunk_format, lambda k: k)
  return _TRUNK_PREFIXES[trunk_format], key_map


# hszhao/semseg resnet*_v2.pth (deep_base stem): PSPNet / PSANet's layer0 = Sequential(conv1,
# bn1, relu, conv2, bn2, relu, conv3, bn3, relu, maxpool).
_SEMSEG_STEM = {"conv1.": "layer0.0.", "bn1.": "layer0.1.", "conv2.": "layer0.3.",
                "bn2.": "layer0.4.", "conv3.": "layer0.6.", "bn3.": "layer0.7."}


def _semseg_key(key: str) -> str | None:
  head, dot, rest = key.partition(".")
  return _SEMSEG_STEM.get(head + dot, head + dot) + rest


def detect_trunk_format(state_dict: Mapping[str, Any], strip_prefix: str = "module.") -> str:
  """Guesses the ImageNet checkpoint layout from its keys."""
  keys = {k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k
          for k in state_dict}
  if any(k.startswith("mod1.") for k in keys):
    return "wider_resnet38"
  if any(k.startswith("layer0.conv1.") for k in keys):
    return "cadene_se_resnext"
  if "conv3.weight" in keys and any(k.startswith("layer1.") for k in keys):
    return "semseg_resnet"
  if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
    return "torchvision_resnet"
  raise ValueError("detect_trunk_format: keys match none of " + ", ".join(TRUNK_FORMATS)
                   + f" (first keys: {_fmt(sorted(keys), 5)})")


def load_trunk_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          trunk_format: str = "auto", strip_prefix: str | None = "module.",
                          strict: bool = True, src: str = "") -> LoadReport:
  """Initialises the trunk of a segmentation model from an ImageNet checkpoint.

  trunk_format: 'wider_resnet38' (wider_resnet38.pth.tar: `module.mod1..mod7`, plus
  unused `bn_out`, `classifier.fc`), 'torchvision_resnet' (conv1/bn1 -> layer0.0/1, or
  every key under `backbone.` when the model keeps its ResNet there, as torchvision's
  DeepLabV3 does; unused `fc`), 'cadene_se_resnext' (layer0..layer4, unused `last_linear`),
  'semseg_resnet' (hszhao/semseg resnet*_v2.pth: conv1/bn1/conv2/bn2/conv3/bn3 ->
  layer0.0/1/3/4/6/7, unused `fc`) or 'auto'.
  Only the model's trunk entries are written; the head keeps its initialisation.
  Report: `missing` = trunk entries absent from the checkpoint, `ignored` = known
  unused checkpoint entries (and num_batches_tracked), `unexpected` = others. `src`: the
  file the state dict came from, named by the report and its errors.
  """
  if trunk_format == "auto":
    trunk_format = detect_trunk_format(state_dict, strip_prefix or "")
  if trunk_format not in TRUNK_FORMATS:
    raise ValueError(f"load_trunk_state_dict: trunk_format must be 'auto' or one of "
                     f"{TRUNK_FORMATS}, got {trunk_format!r}")
  entries = _model_entries(model)
  prefixes, key_map = _trunk_layout(trunk_format, entries)
  if not any(k.startswith(prefixes) for k in entries):
    raise ValueError(f"load_trunk_state_dict: the model has no {trunk_format} trunk entries "
                     f"(expected keys starting with {prefixes})")
  sd = _strip(state_dict, strip_prefix)
  unused = _TRUNK_UNUSED[trunk_format]
  report = LoadReport(model=f"{type(model).__name__} trunk ({trunk_format})", src=src)
  _load_entries(model, sd, report, key_map=key_map, allowed_extra=lambda k: bool(unused.match(k)),
                mismatch_ok=lambda k: False, reinit_seed=0,
                restrict=lambda k: k.startswith(prefixes))
  if strict:
    report.raise_if_incomplete()
  return report
