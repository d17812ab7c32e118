"""ResNet trunks (network/Resnet.py) with the DeepV3Plus variant-D dilation edits.

The segmentation model keeps `layer0 = Sequential(conv1, bn1, relu, maxpool)` and
`layer1..layer4`, so the state-dict keys are `layer0.0.weight`, `layer0.1.*`,
`layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, ...
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxseg.models.layers import (Conv2d, MaxPool2d, ReLU, _he_normal_fan_out,
                                  apply_layers, block_output, scale_width)
from jaxseg.models.norms import make_norm


def _conv(cin, cout, k, *, cfg, stride=1, padding=0, dilation=1, rngs):
  # torchvision ResNet initialises its convs with kaiming_normal(fan_out).
  return Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                dtype=cfg["dtype"], param_dtype=cfg["param_dtype"], precision=cfg["precision"],
                impl=cfg["conv_impl"], kernel_init=_he_normal_fan_out, rngs=rngs)


def _bn(c, cfg):
  return make_norm(c, cfg)


class Bottleneck(nnx.Module):
  """Resnet.py Bottleneck: 1x1, 3x3 (stride, dilation), 1x1 x4; residual after bn3."""

  expansion = 4

  def __init__(self, inplanes: int, planes: int, out: int, *, stride: int, dilation: int,
               downsample: nnx.List | None, cfg: dict[str, Any], rngs: nnx.Rngs):
    self.conv1 = _conv(inplanes, planes, 1, cfg=cfg, rngs=rngs)
    self.bn1 = _bn(planes, cfg)
    self.conv2 = _conv(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                       cfg=cfg, rngs=rngs)
    self.bn2 = _bn(planes, cfg)
    self.conv3 = _conv(planes, out, 1, cfg=cfg, rngs=rngs)
    self.bn3 = _bn(out, cfg)
    self.downsample = downsample

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    out = jax.nn.relu(self.bn1(self.conv1(x), **kw))
    out = jax.nn.relu(self.bn2(self.conv2(out), **kw))
    out = self.bn3(self.conv3(out), **kw)
    residual = x if self.downsample is None else apply_layers(self.downsample, x, **kw)
    return block_output(jax.nn.relu(out + residual))


class BasicBlock(nnx.Module):
  """Resnet.py BasicBlock (two 3x3 convs).

  The 2019 code never dilates BasicBlocks; for the small `DeepR18V3PlusD_m1` the
  dilated stages use stride 1 and dilate both 3x3 convs (conv1 carries the stride).
  """

  expansion = 1

  def __init__(self, inplanes: int, planes: int, out: int, *, stride: int, dilation: int,
               downsample: nnx.List | None, cfg: dict[str, Any], rngs: nnx.Rngs):
    del out
    self.conv1 = _conv(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                       cfg=cfg, rngs=rngs)
    self.bn1 = _bn(planes, cfg)
    self.conv2 = _conv(planes, planes, 3, padding=dilation, dilation=dilation, cfg=cfg, rngs=rngs)
    self.bn2 = _bn(planes, cfg)
    self.downsample = downsample

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    out = jax.nn.relu(self.bn1(self.conv1(x), **kw))
    out = self.bn2(self.conv2(out), **kw)
    residual = x if self.downsample is None else apply_layers(self.downsample, x, **kw)
    return block_output(jax.nn.relu(out + residual))


RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3))}


def stage_schedule(output_stride: int) -> dict[int, tuple[int, int]]:
  """(stride, dilation) of layer2..layer4 for a torchvision-style trunk.

  8 = DeepV3Plus variant 'D' (layer3 dilation 2, layer4 dilation 4, both stride 1);
  16 = variant 'D16' (layer4 dilation 2, stride 1).
  """
  if output_stride == 8:
    return {2: (2, 1), 3: (1, 2), 4: (1, 4)}
  if output_stride == 16:
    return {2: (2, 1), 3: (2, 1), 4: (1, 2)}
  raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")


def make_resnet_trunk(depth: int, *, output_stride: int, width_multiplier: float,
                      cfg: dict[str, Any], rngs: nnx.Rngs
                      ) -> tuple[dict[str, nnx.Module], int, int]:
  """layer0..layer4 of ResNet-`depth`; returns (modules, layer1 channels, layer4 channels)."""
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
  block, counts = RESNET_DEPTHS[depth]
  sched = stage_schedule(output_stride)
  stem = scale_width(64, width_multiplier)
  modules: dict[str, nnx.Module] = {
      "layer0": nnx.List([_conv(3, stem, 7, stride=2, padding=3, cfg=cfg, rngs=rngs),
                          _bn(stem, cfg), ReLU(), MaxPool2d(3, 2, padding=1)])}
  inplanes = stem
  skip_channels = 0
  for idx, (planes0, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
    planes = scale_width(planes0, width_multiplier)
    out = scale_width(planes0 * block.expansion, width_multiplier)
    stride, dilation = sched.get(idx, (1, 1))
    blocks = []
    for b in range(n):
      s = stride if b == 0 else 1
      downsample = None
      if b == 0 and (s != 1 or inplanes != out):
        downsample = nnx.List([_conv(inplanes, out, 1, stride=s, cfg=cfg, rngs=rngs),
                               _bn(out, cfg)])
      blocks.append(block(inplanes, planes, out, stride=s, dilation=dilation,
                          downsample=downsample, cfg=cfg, rngs=rngs))
      inplanes = out
    modules[f"layer{idx}"] = nnx.List(blocks)
    if idx == 1:
      skip_channels = out
  return modules, skip_channels, inplanes


def default_cfg(dtype=jnp.float32, param_dtype=jnp.float32, bn_groups: int = 1,
                precision=None, conv_impl: str = "auto", norm: str = "batch") -> dict[str, Any]:
  """The layer-construction settings shared by all trunks and heads."""
  return dict(dtype=dtype, param_dtype=param_dtype, bn_groups=bn_groups, precision=precision,
              conv_impl=conv_impl, norm=norm)
