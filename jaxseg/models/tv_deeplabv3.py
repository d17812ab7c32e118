"""torchvision DeepLabV3 (`torchvision.models.segmentation.deeplabv3_resnet50/101`).

State-dict layout (what `deeplabv3_resnet50_coco-cd0a2569.pth` holds, a bare state dict):

  backbone.conv1 / bn1 / layer1..layer4   torchvision ResNet (v1.5: the 3x3 conv strides),
                                          replace_stride_with_dilation=[False, True, True]
  classifier.0 = ASPP(2048, [12, 24, 36]) convs.0 1x1, convs.1-3 dilated 3x3, convs.4 image
                                          pooling (pool, conv, BN, ReLU); project (1x1, BN,
                                          ReLU, Dropout(0.5))
  classifier.1-4                          3x3 conv 256, BN, ReLU, 1x1 conv -> classes
  aux_classifier = FCNHead(1024)          on layer3: 3x3 conv 256, BN, ReLU, Dropout(0.1), 1x1

Both outputs are resized bilinearly (align_corners=False) to the input size. torchvision's
dilation rule: a dilated stage's FIRST block keeps the previous stage's dilation in its 3x3
conv (and its downsample has stride 1); the other blocks use the new dilation.
"""
from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg.models import adapter
from jaxseg.models.interpolate import resize_bilinear_half_pixel
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import MaxPool2d
from jaxseg.models.layers import _he_normal_fan_out
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import scale_width
from jaxseg.models.norms import make_norm
from jaxseg.models.resnet import Bottleneck
from jaxseg.models.spec import ModelSpec

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# replace_stride_with_dilation of layer2..layer4 per output stride.
DILATE_STAGES = {8: (False, True, True), 16: (False, False, True)}
ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead, whatever the output stride.


class Dropout(nnx.Module):
  """torch.nn.Dropout (element-wise, unlike Dropout2d); keys from the call-time rngs."""

  def __init__(self, rate: float):
    self.rate = rate
    self.drop = nnx.Dropout(rate, rng_collection="dropout")

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    if train and self.rate > 0 and rngs is None:
      raise ValueError("Dropout: train=True needs `rngs` with a 'dropout' stream")
    return self.drop(x, deterministic=not train, rngs=rngs)


class GlobalAvgPool(nnx.Module):
  """nn.AdaptiveAvgPool2d(1), mean in float32."""

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)


class TorchvisionResNet(nnx.Module):
  """torchvision ResNet-50/101 trunk (no avgpool/fc): returns (layer3, layer4) features."""

  def __init__(self, depth: int, *, output_stride: int = 8, width_multiplier: float = 1.0,
               cfg: LayerCfg, rngs: nnx.Rngs):
    if depth not in RESNET_BLOCKS:
      raise ValueError(f"TorchvisionResNet: depth must be one of {sorted(RESNET_BLOCKS)}, "
                       f"got {depth}")
    if output_stride not in DILATE_STAGES:
      raise ValueError(f"TorchvisionResNet: output_stride must be one of "
                       f"{sorted(DILATE_STAGES)}, got {output_stride}")
    conv = functools.partial(adapter.conv, cfg=cfg, rngs=rngs,
                             kernel_init=_he_normal_fan_out)  # torchvision: kaiming fan_out
    stem = scale_width(64, width_multiplier)
    self.conv1 = conv(3, stem, 7, stride=2, padding=3)
    self.bn1 = make_norm(stem, cfg)
    self.maxpool = MaxPool2d(3, 2, padding=1)
    inplanes, dilation = stem, 1
    dilate = (False,) + DILATE_STAGES[output_stride]
    for idx, (planes0, n) in enumerate(zip((64, 128, 256, 512), RESNET_BLOCKS[depth]), start=1):
      planes = scale_width(planes0, width_multiplier)
      out = scale_width(planes0 * Bottleneck.expansion, width_multiplier)
      stride = 1 if idx == 1 else 2
      previous_dilation = dilation
      if dilate[idx - 1]:  # torchvision _make_layer(dilate=True): stride -> dilation.
        dilation *= stride
        stride = 1
      blocks = []
      for b in range(n):
        downsample = None
        if b == 0 and (stride != 1 or inplanes != out):
          downsample = nnx.List([conv(inplanes, out, 1, stride=stride), make_norm(out, cfg)])
        blocks.append(Bottleneck(inplanes, planes, out, stride=stride if b == 0 else 1,
                                 dilation=previous_dilation if b == 0 else dilation,
                                 downsample=downsample, cfg=cfg, rngs=rngs))
        inplanes = out
      setattr(self, f"layer{idx}", nnx.List(blocks))
      if idx == 3:
        self.layer3_channels = out
    self.out_channels = inplanes

  def __call__(self, x: jax.Array, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
    kw = dict(train=train, rngs=rngs)
    x = self.maxpool(jax.nn.relu(self.bn1(self.conv1(x), **kw)))
    x = apply_layers(self.layer2, apply_layers(self.layer1, x, **kw), **kw)
    c3 = apply_layers(self.layer3, x, **kw)
    return c3, apply_layers(self.layer4, c3, **kw)


class ASPP(nnx.Module):
  """torchvision ASPP: 1x1, three dilated 3x3, image pooling; concat; project."""

  def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int, *,
               cfg: LayerCfg, rngs: nnx.Rngs):
    kw = dict(cfg=cfg, rngs=rngs)
    branches = [nnx.List(adapter.conv_bn_relu(in_channels, out_channels, 1, **kw))]
    branches += [nnx.List(adapter.conv_bn_relu(in_channels, out_channels, 3, padding=r, dilation=r,
                                        **kw)) for r in rates]
    # ASPPPooling = Sequential(AdaptiveAvgPool2d(1), conv, BN, ReLU): keys convs.4.1/.2.
    branches.append(nnx.List([GlobalAvgPool(), *adapter.conv_bn_relu(in_channels, out_channels, 1,
                                                              **kw)]))
    self.convs = nnx.List(branches)
    self.project = nnx.List([
        *adapter.conv_bn_relu(len(branches) * out_channels, out_channels, 1, **kw), Dropout(0.5)])

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    outs = [apply_layers(branch, x, **kw) for branch in self.convs]
    # ASPPPooling's bilinear upsample of its 1x1 map reads the single pixel everywhere.
    outs[-1] = jnp.broadcast_to(outs[-1], x.shape[:3] + outs[-1].shape[3:])
    return apply_layers(self.project, jnp.concatenate(outs, axis=-1), **kw)


class DeepLabV3(nnx.Module):
  """torchvision DeepLabV3 with its optional FCN auxiliary head on layer3.

  `model(x)` -> float32 logits (N, H, W, classes); `model(x, train=True, rngs=...,
  return_aux=True)` -> `(logits, {'aux': aux_logits})`, both at the input size.
  """

  def __init__(self, num_classes: int, *, depth: int, aux: bool = True, output_stride: int = 8,
               width_multiplier: float = 1.0, cfg: LayerCfg, rngs: nnx.Rngs):
    self.backbone = TorchvisionResNet(depth, output_stride=output_stride,
                                      width_multiplier=width_multiplier, cfg=cfg, rngs=rngs)
    kw = dict(cfg=cfg, rngs=rngs)
    red = scale_width(256, width_multiplier)
    self.classifier = nnx.List([
        ASPP(self.backbone.out_channels, ASPP_RATES, red, **kw),
        *adapter.conv_bn_relu(red, red, 3, padding=1, **kw),
        adapter.conv(red, num_classes, 1, use_bias=True, **kw),
    ])
    cin = self.backbone.layer3_channels  # FCNHead(in_channels, classes): inter = in // 4.
    self.aux_classifier = nnx.List([
        *adapter.conv_bn_relu(cin, cin // 4, 3, padding=1, **kw), Dropout(0.1),
        adapter.conv(cin // 4, num_classes, 1, use_bias=True, **kw),
    ]) if aux else None
    self.num_classes = num_classes

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None,
               return_aux: bool = False):
    if return_aux and self.aux_classifier is None:
      raise ValueError("DeepLabV3: return_aux=True but the model was built with aux=False")
    kw = dict(train=train, rngs=rngs)
    c3, c4 = self.backbone(x, **kw)
    size = x.shape[1:3]
    logits = resize_bilinear_half_pixel(
        apply_layers(self.classifier, c4, **kw).astype(jnp.float32), size)
    if not return_aux:
      return logits
    aux = resize_bilinear_half_pixel(
        apply_layers(self.aux_classifier, c3, **kw).astype(jnp.float32), size)
    return logits, {"aux": aux}


def _builder(depth: int):
  def build(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs, **overrides) -> nnx.Module:
    return DeepLabV3(num_classes, depth=depth, cfg=cfg, rngs=rngs, **overrides)
  return build


_OVERRIDES = ("width_multiplier", "aux", "output_stride")
_CLASSIFIER_KEYS = ("classifier.4.weight", "classifier.4.bias",
                    "aux_classifier.4.weight", "aux_classifier.4.bias")
MODELS: dict[str, ModelSpec] = {
    f"DeepLabV3R{depth}": ModelSpec(
        _builder(depth), _OVERRIDES, classifier_keys=_CLASSIFIER_KEYS, aux_heads=("aux",),
        description=f"torchvision deeplabv3_resnet{depth} (ResNet-{depth}, output stride 8, "
                    "FCN aux head on layer3)")
    for depth in (50, 101)
}
