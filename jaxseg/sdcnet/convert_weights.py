r"""SDCNet / FlowNet2 weights: building the models, loading .pth or orbax, converting to orbax.

The conversion's command line is the one of every model, `python -m jaxseg.convert` (= `python
-m jaxseg.main --mode convert`), which hands SDCNet2D / SDCNet2DRecon / FlowNet2 to `convert_file`:

  python -m jaxseg.convert --src sdc_cityscapes_vrec.pth.tar --model SDCNet2DRecon \
      --out /ckpt/sdcnet_cityscapes/sdcnet      # writes /ckpt/sdcnet_cityscapes/sdcnet/0
  python -m jaxseg.convert --src FlowNet2_checkpoint.pth.tar --model FlowNet2 \
      --out /ckpt/sdcnet_cityscapes/flownet2    # writes /ckpt/sdcnet_cityscapes/flownet2/0

Checkpoint layout (jaxseg.runtime.checkpoint: a step directory with `model` + `meta` items):
  * SDCNet: `params` = SDCNet's own parameters, flat '/'-joined NNX paths
    ('conv1/layers/0/kernel', ...), without FlowNet2 (as the original's save_model, which drops
    the frozen 'flownet2.' tensors); `batch_stats` = the three buffers 'flow_mean', 'flow_std'
    (used by the forward pass) and 'rgb_mean' (stored by the original, unused); `meta` = {model,
    sequence_length, rgb_max, source, ...}. SDCNet training (train.py) writes the same `model`
    item, so a training workdir is also a valid `sdcnet.checkpoint`.
  * FlowNet2: `params` = all FlowNet2 parameters, `batch_stats` = {} (no BatchNorm).

Building without materialising FlowNet2: `build_sdcnet` creates the model with `nnx.eval_shape`
and fills only what is needed (FlowNet2 holds 162M parameters; initialising them eagerly takes
minutes on a CPU). The FlowNet2 part stays abstract unless its weights are loaded, which is all
that the DIS flow provider needs.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.convert import converter
from jaxseg.convert import pth_reader
from jaxseg.convert.report import LoadReport
from jaxseg.runtime import checkpoint as ckpt_lib
from jaxseg.runtime import checkpoint_layout
from jaxseg.runtime import variables
from jaxseg.sdcnet import sdcnet as sdcnet_lib
from jaxseg.sdcnet import torch_names
from jaxseg.sdcnet.flownet2 import FlowNet2

MODELS = {"SDCNet2D": sdcnet_lib.SDCNet2D, "SDCNet2DRecon": sdcnet_lib.SDCNet2DRecon}
FLOWNET2 = "FlowNet2"
# The model names `python -m jaxseg.convert --model` hands to `convert_file`.
CONVERTIBLE = (*sorted(MODELS), FLOWNET2)
_BUFFER_VALUES = {"flow_mean": sdcnet_lib.FLOW_MEAN, "flow_std": sdcnet_lib.FLOW_STD,
                  "rgb_mean": sdcnet_lib.RGB_MEAN}
_FLOWNET_PREFIX = "flownet2/"

FlatVars = dict[str, Any]


def is_torch_file(path: str | os.PathLike) -> bool:
  """A .pth/.pt/.tar file (torch.save) rather than an orbax checkpoint directory."""
  return os.path.isfile(path)


def _own_entries(model: nnx.Module) -> tuple[dict[str, tuple], dict[str, tuple]]:
  """({key: path} of SDCNet's own Params, {key: path} of its Buffers); FlowNet2 excluded."""
  params, buffers = {}, {}
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Variable):
      continue
    key = variables.path_key(path)
    if key.startswith(_FLOWNET_PREFIX):
      continue
    if isinstance(var, sdcnet_lib.Buffer):
      buffers[key] = tuple(path)
    elif isinstance(var, nnx.Param):
      params[key] = tuple(path)
  return params, buffers


def own_variables(model: nnx.Module) -> tuple[FlatVars, FlatVars]:
  """(params, buffers) of an SDCNet without FlowNet2, flat {'conv1/layers/0/kernel': value}."""
  flat = {variables.path_key(p): v for p, v in nnx.iter_graph(model)
          if isinstance(v, nnx.Variable)}
  params, buffers = _own_entries(model)
  return ({k: flat[k].get_value() for k in params}, {k: flat[k].get_value() for k in buffers})


def _check_keys(want: Mapping[str, Any], have: Mapping[str, Any], what: str, where: str) -> None:
  problems = checkpoint_layout.layout_problems(want, have)
  if problems:
    raise ValueError(f"{where}: {what} do not fit the model: " + "; ".join(problems))


def set_own_variables(model: nnx.Module, params: Mapping[str, Any],
                      buffers: Mapping[str, Any], *, where: str = "SDCNet") -> None:
  """Writes flat own params and buffers into `model` (abstract or concrete) in place."""
  want_params, want_buffers = own_variables(model)
  _check_keys(want_params, params, "params", where)
  _check_keys(want_buffers, buffers, "buffers (batch_stats)", where)
  flat = {variables.path_key(p): v for p, v in nnx.iter_graph(model)
          if isinstance(v, nnx.Variable)}
  for key, value in list(params.items()) + list(buffers.items()):
    var = flat[key]
    var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))


@functools.lru_cache(maxsize=8)
def _abstract_parts(name: str, sequence_length: int, rgb_max: float) -> tuple[Any, nnx.State]:
  cls = MODELS[name]
  return nnx.split(nnx.eval_shape(lambda: cls(sequence_length=sequence_length, rgb_max=rgb_max,
                                              rngs=nnx.Rngs(0))))


def abstract_sdcnet(name: str = "SDCNet2DRecon", *, sequence_length: int = 2,
                    rgb_max: float = 255.0) -> nnx.Module:
  """A fresh SDCNet `name` with ShapeDtypeStruct values (no memory, no initialisation).

  Tracing the constructor takes seconds (FlowNet2 has ~100 layers), so its result is cached and
  each call returns an independent copy.
  """
  if name not in MODELS:
    raise ValueError(f"sdcnet.model={name!r}; expected one of {sorted(MODELS)}")
  graphdef, state = _abstract_parts(name, int(sequence_length), float(rgb_max))
  return nnx.merge(graphdef, state, copy=True)


def torch_like_init(model: nnx.Module, seed: int) -> tuple[FlatVars, FlatVars]:
  """Random own params as the original initialises SDCNet, drawn with numpy; constant buffers.

  sdc_net2d.py re-initialises every nn.Conv2d: xavier_uniform weight, U[0, 1) bias. Its
  ConvTranspose2d layers (deconv*) match neither isinstance test of that loop and keep torch's
  default: kaiming_uniform(a=sqrt(5)) weight and bias, both U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  with fan_in = out_channels * kh * kw (torch's fan-in of a (in, out, kh, kw) weight).
  """
  rng = np.random.default_rng(seed)
  transposed = {variables.path_key(p) + "/" for p, node in nnx.iter_graph(model)
                if isinstance(node, nnx.ConvTranspose)}
  shapes, _ = own_variables(model)
  params = {}
  for key in sorted(shapes):
    shape = tuple(shapes[key].shape)
    layer = key.rsplit("/", 1)[0] + "/"
    if layer in transposed:
      kh, kw, out_ch, _ = shapes[layer + "kernel"].shape  # (kh, kw, out, in), see flownet_parts
      bound = 1.0 / np.sqrt(out_ch * kh * kw)
      value = rng.uniform(-bound, bound, shape)
    elif key.endswith("/kernel"):
      kh, kw, in_ch, out_ch = shape
      bound = np.sqrt(6.0 / ((in_ch + out_ch) * kh * kw))
      value = rng.uniform(-bound, bound, shape)
    else:
      value = rng.uniform(0.0, 1.0, shape)
    params[key] = value.astype(np.float32)
  buffers = {k: np.asarray(v, np.float32) for k, v in _BUFFER_VALUES.items()}
  return params, buffers


# --------------------------------------------------------------------------------------------
# Loading


def load_sdcnet_weights(model: nnx.Module, path: str | os.PathLike) -> dict[str, Any]:
  """Loads SDCNet's own weights from a torch file or an orbax checkpoint; returns metadata."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"sdcnet.checkpoint not found: {path} (expected a .pth(.tar) file "
                            "or an orbax checkpoint directory)")
  if is_torch_file(path):
    report = torch_names.load_sdcnet_state_dict(model, pth_reader.load_pth(path), strict=True,
                                                src=path)
    return {"model": type(model).__name__, "source": path, "loaded": len(report.loaded)}
  step_dir = ckpt_lib.resolve_checkpoint(path)
  meta = ckpt_lib.read_meta(step_dir)
  name = type(model).__name__
  if meta.get("model") and meta["model"] != name:
    raise ValueError(f'checkpoint {step_dir} holds {meta["model"]!r}, but sdcnet.model={name!r}')
  if meta.get("sequence_length") and int(meta["sequence_length"]) + (
      name == "SDCNet2DRecon") != model.sequence_length:
    raise ValueError(f'checkpoint {step_dir} was saved with sequence_length='
                     f'{meta["sequence_length"]}; the model has {model.sequence_length}')
  params, buffers = own_variables(model)
  restored = ckpt_lib.restore_model_item(step_dir, {"params": params, "batch_stats": buffers})
  set_own_variables(model, restored["params"], restored["batch_stats"],
                    where=f"checkpoint {step_dir}")
  return dict(meta, source=str(step_dir))


def load_flownet2_weights(flownet2: nnx.Module, path: str | os.PathLike) -> dict[str, Any]:
  """Loads FlowNet2 weights (abstract or concrete module) from a torch file or orbax."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"flow.flownet2_checkpoint not found: {path} (expected "
                            "FlowNet2_checkpoint.pth.tar or a converted orbax directory)")
  if is_torch_file(path):
    report = torch_names.load_flownet2_state_dict(flownet2, pth_reader.load_pth(path),
                                                  strict=True, src=path)
    return {"model": FLOWNET2, "source": path, "loaded": len(report.loaded)}
  step_dir = ckpt_lib.resolve_checkpoint(path)
  meta = ckpt_lib.read_meta(step_dir)
  if meta.get("model") and meta["model"] != FLOWNET2:
    raise ValueError(f'checkpoint {step_dir} holds {meta["model"]!r}, not {FLOWNET2}')
  params, stats = variables.model_variables(flownet2)
  restored = ckpt_lib.restore_model_item(step_dir, {"params": params, "batch_stats": stats})
  variables.update_model(flownet2, restored["params"], restored["batch_stats"])
  return dict(meta, source=str(step_dir))


# --------------------------------------------------------------------------------------------
# The model split for jit


def _to_shapes(state: nnx.State) -> nnx.State:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), state)


def _state(paths: Mapping[str, tuple], values: Mapping[str, Any], cls: type) -> nnx.State:
  return nnx.from_flat_state([(paths[k], cls(values[k])) for k in paths])


@dataclasses.dataclass
class SDCNetBundle:
  """An SDCNet split for jitted functions.

  `params` / `buffers`: flat dicts of SDCNet's own parameters and buffers (what is trained and
  checkpointed). `flownet2`: the FlowNet2 module when its weights were loaded, else None.
  `merge(params, buffers)` rebuilds the model (inside jit too) with FlowNet2 as shapes only,
  which is enough for `network_output`; pass `flownet_state` to run FlowNet2 inside it.
  """
  name: str
  sequence_length: int  # the original's --sequence_length (before SDCNet2DRecon adds one)
  rgb_max: float
  graphdef: Any
  param_paths: dict[str, tuple]
  buffer_paths: dict[str, tuple]
  params: FlatVars
  buffers: FlatVars
  flownet_shapes: nnx.State
  flownet2: nnx.Module | None

  def flownet_state(self) -> nnx.State:
    if self.flownet2 is None:
      raise ValueError("FlowNet2 weights were not loaded: set flow.flownet2_checkpoint, or use "
                       "flow.source='dis'")
    return nnx.state(self.flownet2)

  def merge(self, params: Mapping[str, Any], buffers: Mapping[str, Any],
            flownet_state: nnx.State | None = None) -> nnx.Module:
    fl = self.flownet_shapes
    if flownet_state is not None:
      fl = nnx.State({"flownet2": flownet_state})
    return nnx.merge(self.graphdef, _state(self.param_paths, params, nnx.Param),
                     _state(self.buffer_paths, buffers, sdcnet_lib.Buffer), fl)

  @property
  def num_frames(self) -> int:
    """Frames per sample (inputs + target): the original FrameLoader's sequence_length + 1."""
    return self.sequence_length + 1


def build_sdcnet(name: str = "SDCNet2DRecon", *, sequence_length: int = 2,
                 rgb_max: float = 255.0, checkpoint: str = "", flownet2_checkpoint: str = "",
                 random_init: bool = False, seed: int = 0) -> SDCNetBundle:
  """An SDCNet from its weights (or a torch-like random init) and optionally FlowNet2's.

  Without `checkpoint`, `random_init` must be set (training from scratch, tests), so that a
  forgotten path never silently propagates labels with an untrained net.
  """
  model = abstract_sdcnet(name, sequence_length=sequence_length, rgb_max=rgb_max)
  if checkpoint:
    load_sdcnet_weights(model, checkpoint)
  elif random_init:
    set_own_variables(model, *torch_like_init(model, seed), where="random init")
  else:
    raise ValueError("sdcnet.checkpoint is empty: give a converted or trained SDCNet checkpoint "
                     "(or sdc_cityscapes_vrec.pth.tar), or set sdcnet.random_init=True")
  flownet2 = None
  if flownet2_checkpoint:
    load_flownet2_weights(model.flownet2, flownet2_checkpoint)
    flownet2 = model.flownet2
  return _bundle(model, name, sequence_length, rgb_max, flownet2)


def _bundle(model: nnx.Module, name: str, sequence_length: int, rgb_max: float,
            flownet2: nnx.Module | None) -> SDCNetBundle:
  """Splits an SDCNet whose own weights are set into an SDCNetBundle."""
  graphdef, own, buffers, rest = nnx.split(model, sdcnet_lib.TRAINABLE, sdcnet_lib.Buffer, ...)
  param_paths, buffer_paths = _own_entries(model)
  flat_own = {variables.path_key(p): v.get_value() for p, v in nnx.to_flat_state(own)}
  flat_buf = {variables.path_key(p): v.get_value() for p, v in nnx.to_flat_state(buffers)}
  return SDCNetBundle(name, sequence_length, float(rgb_max), graphdef, param_paths, buffer_paths,
                      flat_own, flat_buf, _to_shapes(rest), flownet2)


# --------------------------------------------------------------------------------------------
# Saving


class _Node(nnx.Module):
  """A namespace node of `_flat_module`."""


def _flat_module(params: Mapping[str, Any], batch_stats: Mapping[str, Any]) -> nnx.Module:
  """A module whose Params / BatchStats sit at the given '/'-joined paths.

  `save_model_checkpoint` accepts modules holding only Param and BatchStat; this stores SDCNet's
  own parameters and its Buffers (as batch_stats) under their original paths.
  """
  root = _Node()
  for cls, flat in ((nnx.Param, params), (nnx.BatchStat, batch_stats)):
    for key, value in flat.items():
      node = root
      *parents, leaf = key.split("/")
      for part in parents:
        if not hasattr(node, part):
          setattr(node, part, _Node())
        node = getattr(node, part)
      setattr(node, leaf, cls(jnp.asarray(value)))
  return root


def save_sdcnet_checkpoint(directory: str | os.PathLike, bundle: SDCNetBundle, *,
                           metadata: Mapping[str, Any] | None = None, step: int = 0
                           ) -> pathlib.Path:
  """Writes SDCNet's own params + buffers as a model checkpoint (see module docstring)."""
  meta = {"model": bundle.name, "sequence_length": bundle.sequence_length,
          "rgb_max": bundle.rgb_max, "layout": "params: own (no flownet2/); batch_stats: buffers"}
  meta.update(metadata or {})
  return ckpt_lib.save_model_checkpoint(directory, _flat_module(bundle.params, bundle.buffers),
                                        metadata=meta, step=step)


# --------------------------------------------------------------------------------------------
# Converting (behind `python -m jaxseg.convert --model SDCNet2D | SDCNet2DRecon | FlowNet2`)

_SDCNET_ADVICE = ("Check --model (SDCNet2D and SDCNet2DRecon differ in conv1's input channels) "
                  "and --model-override sequence_length=N (the training run's)")
_FLOWNET2_ADVICE = f"Check --model: {FLOWNET2} takes FlowNet2_checkpoint.pth.tar"


def _torch_file(src: str | os.PathLike) -> str:
  src = os.fspath(src)
  if not is_torch_file(src):
    raise FileNotFoundError(f"{src}: not a file (expected a torch .pth(.tar) checkpoint)")
  return src


def _read(src: str, net: nnx.Module, load: Callable[..., LoadReport], *, advice: str,
          allow_non_finite: bool, verbose: bool) -> LoadReport:
  """Reads `src` as every conversion does and loads it into `net` with `load` (torch_names).

  The report names the file and the offending keys of a checkpoint of another network; NaN/Inf
  is refused as in the segmentation converter unless `allow_non_finite`.
  """
  state_dict, meta, non_finite = converter.read_checkpoint(src, verbose=verbose)
  report = load(net, state_dict, strict=False, src=src)
  report.meta = meta
  report.raise_if_incomplete(advice)
  if not allow_non_finite:
    converter.check_finite(report, state_dict, non_finite)
  report.non_finite = non_finite
  return report


def convert_sdcnet(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                   model: str = "SDCNet2DRecon", sequence_length: int = 2,
                   rgb_max: float = 255.0, overwrite: bool = False,
                   allow_non_finite: bool = False, verbose: bool = True) -> LoadReport:
  """Converts an original SDCNet .pth(.tar) into an orbax checkpoint OUT_DIR/0.

  Every own tensor must come from the file (a strict load: nothing is initialised); FlowNet2
  tensors, if the file holds them, are not written (convert FlowNet2_checkpoint.pth.tar with
  `convert_flownet2`). Returns the report with `out_path` set.
  """
  if model not in MODELS:
    raise ValueError(f"unknown SDCNet model {model!r}; expected one of {sorted(MODELS)}")
  src = _torch_file(src)
  step_dir = converter.output_step_dir(out_dir, overwrite=overwrite)
  net = abstract_sdcnet(model, sequence_length=sequence_length, rgb_max=rgb_max)
  report = _read(src, net, torch_names.load_sdcnet_state_dict, advice=_SDCNET_ADVICE,
                 allow_non_finite=allow_non_finite, verbose=verbose)
  bundle = _bundle(net, model, sequence_length, rgb_max, None)
  converter.clear_step_dir(step_dir)
  report.out_path = str(save_sdcnet_checkpoint(
      out_dir, bundle, metadata=converter.source_metadata(src, report.meta), step=converter.STEP))
  if verbose:
    print(report.summary())
  return report


def convert_flownet2(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                     rgb_max: float = 255.0, overwrite: bool = False,
                     allow_non_finite: bool = False, verbose: bool = True) -> LoadReport:
  """Converts FlowNet2_checkpoint.pth.tar into an orbax checkpoint OUT_DIR/0 (strict load)."""
  src = _torch_file(src)
  step_dir = converter.output_step_dir(out_dir, overwrite=overwrite)
  net = nnx.eval_shape(lambda: FlowNet2(rgb_max=rgb_max, rngs=nnx.Rngs(0)))
  report = _read(src, net, torch_names.load_flownet2_state_dict, advice=_FLOWNET2_ADVICE,
                 allow_non_finite=allow_non_finite, verbose=verbose)
  converter.clear_step_dir(step_dir)
  metadata = {"model": FLOWNET2, "rgb_max": rgb_max, **converter.source_metadata(src, report.meta)}
  report.out_path = str(ckpt_lib.save_model_checkpoint(out_dir, net, metadata=metadata,
                                                       step=converter.STEP))
  if verbose:
    print(report.summary())
  return report


# `--model-override` keywords each model takes (its constructor's; nothing else is built).
_OVERRIDES = {FLOWNET2: ("rgb_max",), **{name: ("sequence_length", "rgb_max") for name in MODELS}}


def convert_file(src: str | os.PathLike, model_name: str, *, out_dir: str | os.PathLike,
                 model_overrides: Mapping[str, Any] | None = None, overwrite: bool = False,
                 allow_non_finite: bool = False, verbose: bool = True) -> LoadReport:
  """One SDCNet2D / SDCNet2DRecon / FlowNet2 .pth(.tar) -> OUT_DIR/0, for `python -m
  jaxseg.convert`: the same report, refusals and `--overwrite` / `--allow-non-finite` as a
  segmentation conversion. `model_overrides`: sequence_length (SDCNet), rgb_max.
  """
  if model_name not in CONVERTIBLE:
    raise ValueError(f"unknown model {model_name!r}; SDCNet / FlowNet2 models: "
                     f'{", ".join(CONVERTIBLE)}')
  overrides = dict(model_overrides or {})
  unknown = sorted(set(overrides) - set(_OVERRIDES[model_name]))
  if unknown:
    raise ValueError(f"--model-override {unknown[0]}=...: {model_name} takes only "
                     f'{", ".join(_OVERRIDES[model_name])}')
  common = dict(overwrite=overwrite, allow_non_finite=allow_non_finite, verbose=verbose)
  if model_name == FLOWNET2:
    return convert_flownet2(src, out_dir, rgb_max=float(overrides.get("rgb_max", 255.0)), **common)
  return convert_sdcnet(src, out_dir, model=model_name,
                        sequence_length=int(overrides.get("sequence_length", 2)),
                        rgb_max=float(overrides.get("rgb_max", 255.0)), **common)


def convert(*, sdcnet: str = "", flownet2: str = "", out: str, model: str = "SDCNet2DRecon",
            sequence_length: int = 2, rgb_max: float = 255.0) -> dict[str, str]:
  """Converts the original .pth(.tar) files to orbax: OUT/sdcnet/0 and OUT/flownet2/0.

  The pair a propagation run needs, in one call (jaxseg.pretrained uses it); quiet.
  """
  if not (sdcnet or flownet2):
    raise ValueError("convert: give sdcnet= and/or flownet2=")
  written = {}
  if sdcnet:
    written["sdcnet"] = convert_sdcnet(sdcnet, os.path.join(out, "sdcnet"), model=model,
                                       sequence_length=sequence_length, rgb_max=rgb_max,
                                       verbose=False).out_path
  if flownet2:
    written["flownet2"] = convert_flownet2(flownet2, os.path.join(out, "flownet2"),
                                           rgb_max=rgb_max, verbose=False).out_path
  return written
