"""Model registry: network names -> ModelSpec (constructor, overrides, classifier keys).

Each model family module exports `MODELS: dict[str, ModelSpec]`; the registry merges them.
The 2019 networks keep the names of network/deepv3.py's factories.
"""
from __future__ import annotations

from typing import Any

from absl import logging
from flax import nnx
import jax.numpy as jnp

from jaxseg.models import deeplabv3plus
from jaxseg.models import hrnet
from jaxseg.models import psanet
from jaxseg.models import pspnet
from jaxseg.models import tv_deeplabv3
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.spec import ModelSpec
from jaxseg.runtime import precision as precision_lib

# Overrides every model accepts: they become fields of the model's LayerCfg.
_CFG_OVERRIDES = ("conv_precision", "conv_impl", "norm", "norm_groups")
# Deprecated spellings of those overrides -> their names. `precision` was the lax conv
# precision, easily confused with the run's dtype policy `config.precision` (bf16 / fp32).
_DEPRECATED_OVERRIDES = {"precision": "conv_precision"}
_warned_deprecated: set[str] = set()

_FAMILIES: tuple[dict[str, ModelSpec], ...] = (
    deeplabv3plus.MODELS,
    tv_deeplabv3.MODELS, hrnet.MODELS,
    pspnet.MODELS, psanet.MODELS,
)


def _merge(families) -> dict[str, ModelSpec]:
  out: dict[str, ModelSpec] = {}
  for family in families:
    for name, spec in family.items():
      if name in out:
        raise ValueError(f"model {name!r} is registered twice")
      out[name] = spec
  return out


_REGISTRY = _merge(_FAMILIES)


def list_models() -> list[str]:
  """Registered model names."""
  return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
  """The ModelSpec of a registered model (ValueError naming the known ones otherwise)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(list_models())}")
  return _REGISTRY[name]


def create_model(name: str, *, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32, bn_groups: int = 1, remat: str = "none",
                 **overrides: Any) -> nnx.Module:
  """Builds a registered segmentation network.

  Args:
    name: one of `list_models()` (the original `network.deepv3` factory names, ...).
    num_classes: output channels of the classifier(s).
    rngs: parameter initialisation keys.
    dtype: compute dtype (e.g. bf16 for training); logits are always float32.
    param_dtype: parameter dtype; normalisation statistics are always float32.
    bn_groups: BatchNorm statistic groups along the batch axis (1 = global BN).
    remat: 'none' | 'block': residual blocks (ResNet, SE-ResNeXt, WideResNet) recompute their
      activations in the backward pass instead of keeping them (config.train.remat).
    **overrides: every model accepts `conv_precision` (lax precision of every conv; the
      deprecated `precision` still works and logs a warning once),
      `conv_impl` ('auto': GEMM-based convs where faster on the CPU backend, else lax.conv;
      'xla': lax.conv everywhere) and `norm` (see jaxseg.models.norms.NORM_TYPES); the
      family's own ones are listed in `get_spec(name).overrides`, e.g. DeepLabV3+:
      `width_multiplier`, `output_stride` (8 = variant D, 16 = D16), `aspp_output_stride`.

  Returns:
    An nnx.Module; `model(x, *, train=False, rngs=None)` maps NHWC normalised
    images to float32 logits (N, H, W, num_classes).
  """
  spec = get_spec(name)
  overrides = _renamed_overrides(name, overrides)
  accepted = set(spec.overrides) | set(_CFG_OVERRIDES)
  unknown = sorted(set(overrides) - accepted)
  if unknown:
    raise ValueError(f"create_model({name!r}): unknown overrides {unknown}; "
                     f"accepted: {sorted(accepted)}")
  if num_classes < 1:
    raise ValueError(f"create_model({name!r}): num_classes must be >= 1, got {num_classes}")
  layer = {key: overrides.pop(key) for key in _CFG_OVERRIDES if key in overrides}
  if "norm_groups" in layer:
    layer["norm_groups"] = int(layer["norm_groups"])
  cfg = LayerCfg(dtype=dtype, param_dtype=param_dtype, bn_groups=bn_groups, remat=remat, **layer)
  return spec.build(num_classes, cfg=cfg, rngs=rngs, **overrides)


def _renamed_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
  """`overrides` with deprecated keys under their new names (a warning the first time each is
  seen); both spellings at once is an error, since they could disagree."""
  out = dict(overrides)
  for old, new in _DEPRECATED_OVERRIDES.items():
    if old not in out:
      continue
    if new in out:
      raise ValueError(f"create_model({name!r}): overrides {old!r} and {new!r} name the same "
                       f"setting; keep {new!r} ({old!r} is deprecated)")
    out[new] = out.pop(old)
    if old not in _warned_deprecated:
      _warned_deprecated.add(old)
      logging.warning("model override %r is deprecated: use %r (config.model.overrides.%s); "
                      "config.precision stays the dtype policy", old, new, new)
  return out


def from_config(config: Any, num_classes: int, *, rngs: nnx.Rngs, bn_groups: int = 1
                ) -> nnx.Module:
  """The model of a run's config: `config.model` (name, overrides), its precision policy's
  compute dtype with float32 parameters, and `config.train.remat`."""
  dtype = precision_lib.compute_dtype(config.precision)
  overrides = dict(config.model.overrides) if config.model.get("overrides") else {}
  return create_model(config.model.name, num_classes=num_classes, rngs=rngs, dtype=dtype,
                      param_dtype=jnp.float32, bn_groups=bn_groups,
                      remat=config.train.get("remat", "none"), **overrides)
