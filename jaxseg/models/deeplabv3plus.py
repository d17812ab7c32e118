"""ASPP and the DeepLabV3+ heads of network/deepv3.py (DeepV3Plus, DeepWV3Plus).

Head layout (both models): `aspp` (image pooling branch FIRST in the concat, then
1x1, then the three dilated 3x3 branches), `bot_aspp` 1x1 (1280 -> 256, no BN),
`bot_fine` 1x1 (skip -> 48, no BN), `final = Sequential(conv3x3, BN, ReLU, conv3x3,
BN, ReLU, conv1x1 -> classes)`; every upsample is bilinear, align_corners=True.
DeepV3Plus takes the skip from layer1 (stride 4, 'm1'); DeepWV3Plus from mod2
(stride 2).

The ASPP's image pooling is global (`AdaptiveAvgPool2d(1)`) unless `image_pool_window` is set:
the original eval.py `--fixed_aspp_pool` (config.eval.mode='pooling') replaces it by
`AvgPool2d(105)` (kernel = stride = 105, no padding), the feature size of an 840x840 training
crop at output stride 8, so that large test images see pooled context of the size the model
was trained with. The window is a plain setting, not a variable: checkpoints are the same with
or without it.
"""
from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg.models import adapter
from jaxseg.models.interpolate import resize_bilinear_align_corners
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import scale_width
from jaxseg.models.resnet import make_resnet_trunk
from jaxseg.models.seresnext import make_seresnext_trunk
from jaxseg.models.spec import ModelSpec
from jaxseg.models.wider_resnet import make_wider_resnet38_a2_trunk


def aspp_rates(output_stride: int, rates: Sequence[int] = (6, 12, 18)) -> tuple[int, ...]:
  """_AtrousSpatialPyramidPoolingModule rates: doubled at output_stride 8."""
  if output_stride == 8:
    return tuple(2 * r for r in rates)
  if output_stride == 16:
    return tuple(rates)
  raise ValueError(f"ASPP output_stride must be 8 or 16, got {output_stride}")


def _check_window(window: int | None) -> int | None:
  """`window` as an int (or None); checked where it is set AND where it is read, since the
  attribute may be assigned directly on a built model."""
  if window is None:
    return None
  if isinstance(window, bool) or int(window) != window or window < 1:
    raise ValueError(f"ASPP image_pool_window must be a positive int or None, got {window!r}")
  return int(window)


class ASPP(nnx.Module):
  """_AtrousSpatialPyramidPoolingModule: out channels = 5 * reduction_dim.

  image_pool_window: None pools the whole map (the original's training and default eval);
  an int pools `window` x `window` blocks (stride = window, no padding; the module docstring's
  `--fixed_aspp_pool`). Settable after construction (`aspp.image_pool_window = 105`), e.g. on
  a restored model.
  """

  def __init__(self, in_dim: int, reduction_dim: int, *, output_stride: int,
               cfg: LayerCfg, rngs: nnx.Rngs, image_pool_window: int | None = None):
    feats = [nnx.List(adapter.conv_bn_relu(in_dim, reduction_dim, 1, cfg=cfg, rngs=rngs))]
    for r in aspp_rates(output_stride):
      feats.append(nnx.List(adapter.conv_bn_relu(in_dim, reduction_dim, 3, padding=r, dilation=r,
                                                cfg=cfg, rngs=rngs)))
    self.features = nnx.List(feats)
    self.img_conv = nnx.List(adapter.conv_bn_relu(in_dim, reduction_dim, 1, cfg=cfg, rngs=rngs))
    self.image_pool_window = _check_window(image_pool_window)

  def _image_pool(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    """The image-level branch at the resolution of `x`."""
    kw = dict(train=train, rngs=rngs)
    window = _check_window(self.image_pool_window)
    if window is None:
      pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
      img = apply_layers(self.img_conv, pooled, **kw)
      # Upsample of a 1x1 map with align_corners=True is a broadcast.
      return jnp.broadcast_to(img, x.shape[:3] + img.shape[3:])
    h, w = x.shape[1:3]
    # torch would fail on maps smaller than the window; here the window shrinks to the map.
    kh, kw_ = min(window, h), min(window, w)
    summed = jax.lax.reduce_window(x.astype(jnp.float32), 0.0, jax.lax.add, (1, kh, kw_, 1),
                                   (1, kh, kw_, 1), "VALID")
    pooled = (summed / (kh * kw_)).astype(x.dtype)
    img = apply_layers(self.img_conv, pooled, **kw)
    return resize_bilinear_align_corners(img, (h, w))

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    outs = [self._image_pool(x, **kw)]
    outs += [apply_layers(f, x, **kw) for f in self.features]
    return jnp.concatenate(outs, axis=-1)


class _DecoderHead(nnx.Module):
  """Shared decoder: aspp -> bot_aspp, bot_fine(skip), concat(fine, up), final."""

  def _init_head(self, high_channels: int, skip_channels: int, num_classes: int, *,
                 aspp_output_stride: int, width_multiplier: float, cfg: LayerCfg,
                 rngs: nnx.Rngs):
    w = lambda c: scale_width(c, width_multiplier)  # noqa: E731
    red, fine = w(256), w(48)
    self.aspp = ASPP(high_channels, red, output_stride=aspp_output_stride, cfg=cfg, rngs=rngs)
    self.bot_fine = adapter.conv(skip_channels, fine, 1, cfg=cfg, rngs=rngs)
    self.bot_aspp = adapter.conv(5 * red, red, 1, cfg=cfg, rngs=rngs)
    self.final = nnx.List([
        *adapter.conv_bn_relu(red + fine, red, 3, padding=1, cfg=cfg, rngs=rngs),
        *adapter.conv_bn_relu(red, red, 3, padding=1, cfg=cfg, rngs=rngs),
        adapter.conv(red, num_classes, 1, cfg=cfg, rngs=rngs),
    ])
    self.num_classes = num_classes

  def set_image_pool_window(self, window: int | None) -> None:
    """Pools the ASPP image branch over `window` x `window` blocks (None: the whole map); the
    switch behind config.eval.mode='pooling' (see `ASPP`)."""
    self.aspp.image_pool_window = _check_window(window)

  def _decode(self, high: jax.Array, skip: jax.Array, out_hw: Sequence[int], *, train: bool,
              rngs: nnx.Rngs | None) -> jax.Array:
    kw = dict(train=train, rngs=rngs)
    dec0_up = self.bot_aspp(self.aspp(high, **kw))
    dec0_fine = self.bot_fine(skip)
    dec0_up = resize_bilinear_align_corners(dec0_up, skip.shape[1:3])
    dec1 = apply_layers(self.final, jnp.concatenate([dec0_fine, dec0_up], axis=-1), **kw)
    return resize_bilinear_align_corners(dec1.astype(jnp.float32), out_hw)


class DeepV3Plus(_DecoderHead):
  """DeepV3Plus (skip 'm1') on a ResNet / SE-ResNeXt trunk, variant D by default."""

  def __init__(self, num_classes: int, *, trunk: str, output_stride: int = 8,
               aspp_output_stride: int = 8, width_multiplier: float = 1.0,
               cfg: LayerCfg, rngs: nnx.Rngs):
    kw = dict(output_stride=output_stride, width_multiplier=width_multiplier, cfg=cfg, rngs=rngs)
    if trunk.startswith("seresnext-"):
      mods, skip_ch, high_ch = make_seresnext_trunk(int(trunk.split("-")[1]), **kw)
    elif trunk.startswith("resnet-"):
      mods, skip_ch, high_ch = make_resnet_trunk(int(trunk.split("-")[1]), **kw)
    else:
      raise ValueError(f"DeepV3Plus: unknown trunk {trunk!r}; expected 'seresnext-50', "
                       "'seresnext-101', 'resnet-18', 'resnet-50' or 'resnet-101'")
    self.trunk = trunk
    self.layer0, self.layer1, self.layer2 = mods["layer0"], mods["layer1"], mods["layer2"]
    self.layer3, self.layer4 = mods["layer3"], mods["layer4"]
    self._init_head(high_ch, skip_ch, num_classes, aspp_output_stride=aspp_output_stride,
                    width_multiplier=width_multiplier, cfg=cfg, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    kw = dict(train=train, rngs=rngs)
    x0 = apply_layers(self.layer0, x, **kw)
    x1 = apply_layers(self.layer1, x0, **kw)
    x4 = apply_layers(self.layer4, apply_layers(self.layer3, apply_layers(self.layer2, x1, **kw),
                                                **kw), **kw)
    return self._decode(x4, x1, x.shape[1:3], **kw)


class DeepWV3Plus(_DecoderHead):
  """DeepLabV3+ on WiderResNet38-A2 (dilated, stride 8), skip from mod2 (stride 2)."""

  def __init__(self, num_classes: int, *, output_stride: int = 8, aspp_output_stride: int = 8,
               width_multiplier: float = 1.0, cfg: LayerCfg, rngs: nnx.Rngs):
    if output_stride != 8:
      raise ValueError(f"DeepWV3Plus only supports output_stride=8, got {output_stride}")
    mods, skip_ch, high_ch = make_wider_resnet38_a2_trunk(width_multiplier=width_multiplier,
                                                          cfg=cfg, rngs=rngs)
    self.mod1, self.pool2, self.mod2 = mods["mod1"], mods["pool2"], mods["mod2"]
    self.pool3, self.mod3, self.mod4 = mods["pool3"], mods["mod3"], mods["mod4"]
    self.mod5, self.mod6, self.mod7 = mods["mod5"], mods["mod6"], mods["mod7"]
    self._init_head(high_ch, skip_ch, num_classes, aspp_output_stride=aspp_output_stride,
                    width_multiplier=width_multiplier, cfg=cfg, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    kw = dict(train=train, rngs=rngs)
    m2 = self.mod2(self.pool2(self.mod1(x, **kw)), **kw)
    h = self.mod3(self.pool3(m2), **kw)
    for mod in (self.mod4, self.mod5, self.mod6, self.mod7):
      h = mod(h, **kw)
    return self._decode(h, m2, x.shape[1:3], **kw)


def _deepv3plus(trunk: str):
  def build(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs, **overrides) -> nnx.Module:
    return DeepV3Plus(num_classes, trunk=trunk, cfg=cfg, rngs=rngs, **overrides)
  return build


def _deepwv3plus(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs,
                 **overrides) -> nnx.Module:
  return DeepWV3Plus(num_classes, cfg=cfg, rngs=rngs, **overrides)


_OVERRIDES = ("width_multiplier", "output_stride", "aspp_output_stride")
MODELS: dict[str, ModelSpec] = {
    "DeepWV3Plus": ModelSpec(_deepwv3plus, _OVERRIDES, description="WideResNet38-A2"),
    "DeepSRNX50V3PlusD_m1": ModelSpec(_deepv3plus("seresnext-50"), _OVERRIDES,
                                      description="SE-ResNeXt50 32x4d"),
    "DeepSRNX101V3PlusD_m1": ModelSpec(_deepv3plus("seresnext-101"), _OVERRIDES,
                                       description="SE-ResNeXt101 32x4d"),
    "DeepR50V3PlusD_m1": ModelSpec(_deepv3plus("resnet-50"), _OVERRIDES,
                                   description="ResNet-50 variant D"),
    "DeepR101V3PlusD_m1": ModelSpec(_deepv3plus("resnet-101"), _OVERRIDES,
                                    description="ResNet-101 variant D"),
    # Small generic model for demos and tests (not in the 2019 code).
    "DeepR18V3PlusD_m1": ModelSpec(_deepv3plus("resnet-18"), _OVERRIDES,
                                   description="ResNet-18 (demos, tests)"),
}
