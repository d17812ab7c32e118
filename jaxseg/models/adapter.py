"""The layer adapter every family builds with: a Conv2d, and conv -> norm -> ReLU, from the
model's layer settings (`LayerCfg`: dtype, parameter dtype, conv precision and implementation,
norm), so that no family spells these settings out per layer.
"""
from __future__ import annotations

from typing import Any

from flax import nnx

from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import Conv2d
from jaxseg.models.layers import ReLU
from jaxseg.models.norms import make_norm


def conv(cin: int, cout: int, k: int, *, cfg: LayerCfg, rngs: nnx.Rngs, **kw: Any) -> Conv2d:
  """A Conv2d with the model's dtype / precision / implementation settings (`kw`: stride,
  padding, dilation, groups, use_bias, kernel_init ...)."""
  return Conv2d(cin, cout, k, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                precision=cfg.conv_precision, impl=cfg.conv_impl, rngs=rngs, **kw)


def conv_bn_relu(cin: int, cout: int, k: int, *, cfg: LayerCfg, rngs: nnx.Rngs,
                 **kw: Any) -> list[nnx.Module]:
  """[conv, the model's norm, ReLU]: torch's Sequential of the three (keys `.0`, `.1`)."""
  return [conv(cin, cout, k, cfg=cfg, rngs=rngs, **kw), make_norm(cout, cfg), ReLU()]
