"""Model registry: names of network/deepv3.py factories -> NNX constructors."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxseg.models.deeplab import DeepV3Plus, DeepWV3Plus
from jaxseg.models.resnet import default_cfg

# Overrides every model accepts (besides the contract's keyword arguments).
_COMMON_OVERRIDES = ("width_multiplier", "output_stride", "aspp_output_stride", "precision",
                     "conv_impl")


def _deepv3plus(trunk: str) -> Callable[..., nnx.Module]:
  def build(num_classes: int, *, cfg: dict[str, Any], rngs: nnx.Rngs, **overrides) -> nnx.Module:
    return DeepV3Plus(num_classes, trunk=trunk, cfg=cfg, rngs=rngs, **overrides)
  return build


def _deepwv3plus(num_classes: int, *, cfg: dict[str, Any], rngs: nnx.Rngs,
                 **overrides) -> nnx.Module:
  return DeepWV3Plus(num_classes, cfg=cfg, rngs=rngs, **overrides)


_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "DeepWV3Plus": _deepwv3plus,
    "DeepSRNX50V3PlusD_m1": _deepv3plus("seresnext-50"),
    "DeepSRNX101V3PlusD_m1": _deepv3plus("seresnext-101"),
    "DeepR50V3PlusD_m1": _deepv3plus("resnet-50"),
    "DeepR101V3PlusD_m1": _deepv3plus("resnet-101"),
    # Small generic model for demos and tests (not in the 2019 code).
    "DeepR18V3PlusD_m1": _deepv3plus("resnet-18"),
}


def list_models() -> list[str]:
  """Registered model names."""
  return list(_REGISTRY)


def create_model(name: str, *, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32, bn_groups: int = 1, **overrides) -> nnx.Module:
  """Builds a registered segmentation network.

  Args:
    name: one of `list_models()` (the original `network.deepv3` factory names).
    num_classes: output channels of the classifier `final.6`.
    rngs: parameter initialisation keys.
    dtype: compute dtype (e.g. bf16 for training); logits are always float32.
    param_dtype: parameter dtype; BN running statistics are always float32.
    bn_groups: BatchNorm statistic groups along the batch axis (1 = global BN).
    **overrides: `width_multiplier` (float, scales every trunk/head width),
      `output_stride` (8 = variant D, 16 = variant D16; DeepWV3Plus: 8 only),
      `aspp_output_stride` (8 doubles the ASPP rates to 12/24/36 as the original
      always does; 16 keeps 6/12/18), `precision` (lax precision of every conv),
      `conv_impl` ('auto': GEMM-based convs where faster on the CPU backend, else
      lax.conv; 'xla': lax.conv everywhere).

  Returns:
    An nnx.Module; `model(x, *, train=False, rngs=None)` maps NHWC normalised
    images to float32 logits (N, H, W, num_classes).
  """
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(list_models())}")
  unknown = sorted(set(overrides) - set(_COMMON_OVERRIDES))
  if unknown:
    raise ValueError(f"create_model({name!r}): unknown overrides {unknown}; "
                     f"accepted: {list(_COMMON_OVERRIDES)}")
  if num_classes < 1:
    raise ValueError(f"create_model({name!r}): num_classes must be >= 1, got {num_classes}")
  cfg = default_cfg(dtype=dtype, param_dtype=param_dtype, bn_groups=bn_groups,
                    precision=overrides.pop("precision", None),
                    conv_impl=overrides.pop("conv_impl", "auto"))
  return _REGISTRY[name](num_classes, cfg=cfg, rngs=rngs, **overrides)
