"""torch state-dict <-> NNX state mapping for FlowNet2 and SDCNet2D / SDCNet2DRecon.

The NNX attribute paths mirror the torch keys, so the mapping is mechanical:
  * a torch `nn.Sequential` index `conv1.0.` is the NNX path `conv1 / layers / 0`;
  * `weight` of a convolution is `kernel`; the value is transposed by (2, 3, 1, 0), which maps
    `Conv2d` (out, in, kh, kw) to HWIO and `ConvTranspose2d` (in, out, kh, kw) to the
    (kh, kw, out, in) kernel of the `transpose_kernel=True` ConvTranspose (flownet_parts.py);
  * `bias` is `bias`; buffers `flow_mean` (1, 2, 1, 1), `flow_std`, `rgb_mean` are flat vectors.
Inside SDCNet the FlowNet2 tensors are `'flownet2.' + <FlowNet2 key>`. The published SDCNet
checkpoints drop them (sdcnet/main.py save_model); the FlowNet2 checkpoint provides them.
The loads return `jaxseg.convert.report.LoadReport`, the report of the segmentation loaders and
of every conversion, so strict refusals read alike.
"""
from __future__ import annotations

from typing import Any, Mapping

from flax import nnx
import jax.numpy as jnp
import numpy as np

from jaxseg.convert.report import LoadReport
from jaxseg.convert.report import ShapeMismatch
from jaxseg.sdcnet.sdcnet import Buffer

FLOWNET2_PREFIX = "flownet2."


def torch_key(path: tuple[Any, ...]) -> str:
  """The torch state-dict key of an NNX state path, e.g. ('conv1', 'layers', 0, 'kernel')."""
  parts = []
  for i, part in enumerate(path):
    if part == "layers" and i + 1 < len(path) and isinstance(path[i + 1], int):
      continue  # nnx.Sequential's list; torch's Sequential indexes children directly
    parts.append("weight" if (part == "kernel" and i == len(path) - 1) else str(part))
  return ".".join(parts)


def _torch_shape(var: nnx.Variable) -> tuple[int, ...]:
  shape = tuple(var.get_value().shape)
  if isinstance(var, Buffer):
    return (1, shape[0], 1, 1)
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape


def to_nnx_value(var: nnx.Variable, value: Any) -> np.ndarray:
  """A torch-layout tensor (numpy-convertible) in the layout of `var`."""
  arr = np.asarray(value)
  if isinstance(var, Buffer):
    return arr.reshape(-1)
  if arr.ndim == 4:
    return arr.transpose(2, 3, 1, 0)
  return arr


def to_torch_value(var: nnx.Variable) -> np.ndarray:
  """The value of `var` in torch layout (inverse of `to_nnx_value`)."""
  arr = np.asarray(var.get_value())
  if isinstance(var, Buffer):
    return arr.reshape(1, -1, 1, 1)
  if arr.ndim == 4:
    return arr.transpose(3, 2, 0, 1)
  return arr


def torch_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
  """{torch key: NNX variable} for every parameter and buffer of `model`."""
  out = {}
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Variable):
      out[torch_key(path)] = var
  return out


def transposed_prefixes(model: nnx.Module) -> list[str]:
  """torch prefixes of the ConvTranspose layers (the manifests' `transposed_prefixes`)."""
  return [torch_key(path) + "." for path, node in nnx.iter_graph(model)
          if isinstance(node, nnx.ConvTranspose)]


def to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
  """The torch state dict (numpy, torch layouts) of an NNX FlowNet2 / SDCNet model."""
  return {k: to_torch_value(v) for k, v in torch_variables(model).items()}


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
  """The state dict of a loaded checkpoint: unwraps `{'state_dict': ...}`, strips 'module.'."""
  sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
  if not isinstance(sd, Mapping):
    raise ValueError(f'expected a state dict or a checkpoint dict with a "state_dict" entry, got '
                     f'{type(checkpoint).__name__}')
  return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _match(targets: Mapping[str, nnx.Variable], state_dict: Mapping[str, Any], name: str,
           src: str) -> tuple[LoadReport, list[tuple[nnx.Variable, np.ndarray]]]:
  """Pairs state-dict tensors with target variables; collects what does not fit."""
  unexpected, mismatched, values = [], [], {}
  for key, value in state_dict.items():
    var = targets.get(key)
    if var is None:
      unexpected.append(key)
      continue
    got, want = tuple(np.shape(value)), _torch_shape(var)
    if got != want:
      mismatched.append(ShapeMismatch(key, want, got))
      continue
    values[key] = (var, to_nnx_value(var, value))
  missing = sorted(k for k in targets if k not in state_dict)
  report = LoadReport(model=name, loaded=sorted(values), missing=missing,
                      unexpected=sorted(unexpected), mismatched=mismatched, src=src)
  return report, list(values.values())


def _load(targets: Mapping[str, nnx.Variable], state_dict: Mapping[str, Any], *, strict: bool,
          name: str, src: str) -> LoadReport:
  report, values = _match(targets, state_dict, name, src)
  if strict:
    # Raised before anything is written: a failed strict load leaves the model untouched.
    report.raise_if_incomplete()
  for var, arr in values:
    var.set_value(jnp.asarray(arr, dtype=var.get_value().dtype))
  return report


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          strict: bool = True, prefix: str = "", name: str | None = None,
                          src: str = "") -> LoadReport:
  """Copies a torch state dict (key -> numpy-convertible tensor) into `model` in place.

  Keys are matched as `prefix + torch_key(path)`. With `strict`, any missing, unexpected or
  shape-mismatched key raises ValueError naming them (and the file `src`, when given), before
  anything is written. Without it, the matching tensors are loaded and the returned report
  lists the rest.
  """
  targets = {prefix + k: v for k, v in torch_variables(model).items()}
  return _load(targets, state_dict, strict=strict, name=name or type(model).__name__, src=src)


def load_flownet2_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                             strict: bool = True, src: str = "") -> LoadReport:
  """Loads a FlowNet2 checkpoint (or its state dict; keys without prefix) into a `FlowNet2`.

  `src`: the file the state dict came from, named by the report and its errors.
  """
  return load_torch_state_dict(model, extract_state_dict(state_dict), strict=strict,
                               name="FlowNet2", src=src)


def load_sdcnet_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                           strict: bool = True, src: str = "") -> LoadReport:
  """Loads an SDCNet2D / SDCNet2DRecon checkpoint or state dict.

  The published layout (own keys only, as sdcnet/main.py saves it) leaves the FlowNet2 weights
  alone: load those with `load_flownet2_state_dict(model.flownet2, ...)`. A full module state
  dict, with 'flownet2.'-prefixed keys, loads both, and then the FlowNet2 keys must be complete.
  `src`: the file the state dict came from, named by the report and its errors.
  """
  sd = extract_state_dict(state_dict)
  targets = torch_variables(model)
  if not any(k.startswith(FLOWNET2_PREFIX) for k in sd):
    targets = {k: v for k, v in targets.items() if not k.startswith(FLOWNET2_PREFIX)}
  return _load(targets, sd, strict=strict, name=type(model).__name__, src=src)
