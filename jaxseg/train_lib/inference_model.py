"""The model as a pure inference function, optionally with a fixed-size ASPP image pool.

The original eval.py `--fixed_aspp_pool` replaces the ASPP's global image pooling
(`AdaptiveAvgPool2d(1)`) by `AvgPool2d(105)` (kernel = stride = 105, no padding): the feature
size of an 840x840 training crop at output stride 8, so that large test images see pooled
context of the size the model was trained with. The pooled map (floor(h/105) x floor(w/105))
goes through `img_conv` and is upsampled bilinearly (align_corners=True) to the feature size.

jaxseg.models.deeplab.ASPP has no hook for this, so `FixedPoolASPP` takes the ASPP's own
submodules (`features`, `img_conv`): variable paths, and hence checkpoints, are unchanged.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg.models.layers import apply_layers, resize_bilinear_align_corners
from jaxseg.train_lib import train_step as step_lib
from jaxseg.train_lib import variables


class FixedPoolASPP(nnx.Module):
  """ASPP whose image-level branch average-pools `pool_size` x `pool_size` windows."""

  def __init__(self, aspp: nnx.Module, pool_size: int):
    missing = [name for name in ("features", "img_conv") if not hasattr(aspp, name)]
    if missing:
      raise ValueError(f"fixed ASPP pooling: {type(aspp).__name__} has no {missing}; "
                       "expected jaxseg.models.deeplab.ASPP (features, img_conv)")
    self.features = aspp.features
    self.img_conv = aspp.img_conv
    self.pool_size = int(pool_size)

  def __call__(self, x: jax.Array, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    kw = dict(train=train, rngs=rngs)
    h, w = x.shape[1:3]
    # torch would fail on maps smaller than the window; here the window shrinks to the map.
    kh, kw_ = min(self.pool_size, h), min(self.pool_size, w)
    summed = jax.lax.reduce_window(x.astype(jnp.float32), 0.0, jax.lax.add, (1, kh, kw_, 1),
                                   (1, kh, kw_, 1), "VALID")
    pooled = (summed / (kh * kw_)).astype(x.dtype)
    img = apply_layers(self.img_conv, pooled, **kw)
    outs = [resize_bilinear_align_corners(img, (h, w))]
    outs += [apply_layers(f, x, **kw) for f in self.features]
    return jnp.concatenate(outs, axis=-1)


def use_fixed_aspp_pool(model: nnx.Module, pool_size: int) -> nnx.Module:
  """Swaps `model.aspp` for a `FixedPoolASPP` in place (same variables); returns `model`."""
  if not hasattr(model, "aspp"):
    raise ValueError(f"config.eval.mode='pooling' needs a model with an ASPP head "
                     f"(`aspp`); {type(model).__name__} has none")
  model.aspp = FixedPoolASPP(model.aspp, pool_size)
  return model


def build_apply_fn(config: ml_collections.ConfigDict, num_classes: int, *,
                   aspp_pool_size: int | None = None
                   ) -> tuple[variables.ModelLayout, Callable[[dict[str, Any], jax.Array],
                                                               jax.Array]]:
  """(layout, apply_fn): `apply_fn(model_vars, x_normalised) -> float32 logits` (eval mode).

  `model_vars` = {'params', 'batch_stats'} flat dicts, as restored from a checkpoint.
  """
  def make():
    model = step_lib.build_model(config, num_classes, rngs=nnx.Rngs(0))
    if aspp_pool_size:
      use_fixed_aspp_pool(model, aspp_pool_size)
    return model

  layout, _, _ = variables.split_model(nnx.eval_shape(make))

  def apply_fn(model_vars: dict[str, Any], x: jax.Array) -> jax.Array:
    model = layout.merge(model_vars["params"], model_vars["batch_stats"])
    return model(x, train=False).astype(jnp.float32)

  return layout, apply_fn
