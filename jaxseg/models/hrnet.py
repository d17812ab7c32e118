"""HRNetV2-W48 for segmentation as MSeg trains it (mseg_semantic/model/seg_hrnet.py).

Layout (keys of `mseg-3m.pth`, a `{'state_dict': ...}` with DataParallel's 'module.' prefix):

  conv1, bn1, conv2, bn2      stem: two 3x3 stride-2 convs (64) -> 1/4 resolution
  layer1                      4 Bottlenecks (64 -> 256)
  transition1..3              new branches: 3x3 stride-2 conv, BN, ReLU (from the last branch);
                              existing branches with another width: 3x3 conv, BN, ReLU
  stage2..4                   HighResolutionModules (1, 4, 3 of them): `branches` of 4
                              BasicBlocks, then `fuse_layers[i][j]` bringing branch j to i:
                              j > i 1x1 conv + BN then bilinear upsample; j < i (i - j) 3x3
                              stride-2 convs (+ BN, ReLU between them); sum, ReLU
  last_layer                  1x1 conv 720 -> 720 (bias), BN, ReLU, 1x1 conv -> classes (bias)

The four branch outputs (widths 48/96/192/384) are upsampled to the 1/4 branch and
concatenated. MSeg's interpolations: inside the modules and before the concat `mode='bilinear'`
with torch's default align_corners=False; the logits are resized to the input size with
align_corners=True. BatchNorm momentum 0.01 (torch convention), eps 1e-5, as MSeg's
`BN_MOMENTUM`. (MSeg asserts (H - 1) % 8 == 0 on its inputs, e.g. 713; this port takes any size.)
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg.models import adapter
from jaxseg.models.interpolate import resize_bilinear_align_corners
from jaxseg.models.interpolate import resize_bilinear_half_pixel
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import ReLU
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import scale_width
from jaxseg.models.norms import make_norm
from jaxseg.models.resnet import BasicBlock
from jaxseg.models.resnet import Bottleneck
from jaxseg.models.spec import ModelSpec

BN_MOMENTUM = 0.01  # mseg_semantic/model/seg_hrnet.py


def w48_stages() -> tuple[dict[str, Any], ...]:
  """STAGE2..STAGE4 of MSeg's seg_hrnet.yaml (all BASIC blocks, FUSE_METHOD SUM)."""
  return (dict(num_modules=1, num_blocks=(4, 4), channels=(48, 96)),
          dict(num_modules=4, num_blocks=(4, 4, 4), channels=(48, 96, 192)),
          dict(num_modules=3, num_blocks=(4, 4, 4, 4), channels=(48, 96, 192, 384)))


def _conv_bn(cin: int, cout: int, k: int, *, relu: bool, cfg: LayerCfg, rngs: nnx.Rngs,
             **kw) -> nnx.List:
  layers = [adapter.conv(cin, cout, k, padding=k // 2, cfg=cfg, rngs=rngs, **kw),
            make_norm(cout, cfg)]
  return nnx.List(layers + [ReLU()] if relu else layers)


def _basic_blocks(cin: int, cout: int, n: int, *, cfg: LayerCfg,
                  rngs: nnx.Rngs) -> nnx.List:
  """A branch: n BasicBlocks (a 1x1 conv + BN downsample when the width changes)."""
  blocks = []
  for b in range(n):
    inp = cin if b == 0 else cout
    downsample = None
    if inp != cout:
      downsample = nnx.List([adapter.conv(inp, cout, 1, cfg=cfg, rngs=rngs), make_norm(cout, cfg)])
    blocks.append(BasicBlock(inp, cout, cout, stride=1, dilation=1, downsample=downsample,
                             cfg=cfg, rngs=rngs))
  return nnx.List(blocks)


class HighResolutionModule(nnx.Module):
  """Parallel branches of BasicBlocks followed by the all-to-all fusion (sum, ReLU)."""

  def __init__(self, in_channels: Sequence[int], channels: Sequence[int],
               num_blocks: Sequence[int], *, cfg: LayerCfg, rngs: nnx.Rngs):
    n = len(channels)
    if not len(in_channels) == len(num_blocks) == n:
      raise ValueError(f"HighResolutionModule: in_channels {tuple(in_channels)}, channels "
                       f"{tuple(channels)} and num_blocks {tuple(num_blocks)} must have the "
                       "same length (one per branch)")
    self.branches = nnx.List([_basic_blocks(ci, co, nb, cfg=cfg, rngs=rngs)
                              for ci, co, nb in zip(in_channels, channels, num_blocks)])
    rows = []
    if n > 1:  # MSeg builds every output (multi_scale_output=True in all stages).
      for i in range(n):
        row = []
        for j in range(n):
          if j > i:
            row.append(_conv_bn(channels[j], channels[i], 1, relu=False, cfg=cfg, rngs=rngs))
          elif j == i:
            row.append(None)
          else:  # i - j stride-2 convs; widths stay channels[j] until the last one.
            row.append(nnx.List([
                _conv_bn(channels[j], channels[i] if k == i - j - 1 else channels[j], 3,
                         stride=2, relu=k != i - j - 1, cfg=cfg, rngs=rngs)
                for k in range(i - j)]))
        rows.append(nnx.List(row))
    self.fuse_layers = nnx.List(rows) if rows else None

  def __call__(self, xs: Sequence[jax.Array], *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> list[jax.Array]:
    kw = dict(train=train, rngs=rngs)
    xs = [apply_layers(branch, x, **kw) for branch, x in zip(self.branches, xs)]
    if self.fuse_layers is None:
      return xs
    out = []
    for i, row in enumerate(self.fuse_layers):
      y = xs[i]
      for j, fuse in enumerate(row):
        if j == i:
          continue
        z = apply_layers(fuse, xs[j], **kw)
        if j > i:  # MSeg: F.interpolate(mode='bilinear') -> align_corners=False.
          z = resize_bilinear_half_pixel(z, xs[i].shape[1:3])
        y = y + z
      out.append(jax.nn.relu(y))
    return out


class HRNet(nnx.Module):
  """HRNetV2 segmentation network with MSeg's `last_layer` head."""

  def __init__(self, num_classes: int, *, stages: Sequence[dict[str, Any]] | None = None,
               width_multiplier: float = 1.0, cfg: LayerCfg, rngs: nnx.Rngs):
    stages = tuple(stages or w48_stages())
    cfg = dataclasses.replace(cfg, bn_momentum=BN_MOMENTUM)  # every BatchNorm: MSeg's momentum
    w = lambda c: scale_width(c, width_multiplier)  # noqa: E731
    kw = dict(cfg=cfg, rngs=rngs)
    stem = w(64)
    self.conv1 = adapter.conv(3, stem, 3, stride=2, padding=1, **kw)
    self.bn1 = make_norm(stem, cfg)
    self.conv2 = adapter.conv(stem, stem, 3, stride=2, padding=1, **kw)
    self.bn2 = make_norm(stem, cfg)
    planes, out = w(64), w(64) * Bottleneck.expansion  # STAGE1: 4 BOTTLENECK blocks of 64.
    layer1 = []
    for b in range(4):
      inp = stem if b == 0 else out
      downsample = (nnx.List([adapter.conv(inp, out, 1, **kw), make_norm(out, cfg)])
                    if inp != out else None)
      layer1.append(Bottleneck(inp, planes, out, stride=1, dilation=1, downsample=downsample,
                               **kw))
    self.layer1 = nnx.List(layer1)
    pre = [out]
    for s, stage in enumerate(stages, start=1):
      channels = [w(c) for c in stage["channels"]]
      setattr(self, f"transition{s}", self._transition(pre, channels, **kw))
      setattr(self, f"stage{s + 1}", nnx.List([
          HighResolutionModule(channels, channels, stage["num_blocks"], **kw)
          for _ in range(stage["num_modules"])]))
      pre = channels
    self.num_stages = len(stages)
    last = sum(pre)
    self.last_layer = nnx.List([
        adapter.conv(last, last, 1, use_bias=True, **kw), make_norm(last, cfg), ReLU(),
        adapter.conv(last, num_classes, 1, use_bias=True, **kw)])
    self.num_classes = num_classes

  @staticmethod
  def _transition(pre: Sequence[int], cur: Sequence[int], *, cfg: LayerCfg,
                  rngs: nnx.Rngs) -> nnx.List:
    """_make_transition_layer: None where a branch passes through unchanged."""
    layers = []
    for i, c in enumerate(cur):
      if i < len(pre):
        layers.append(None if c == pre[i] else
                      _conv_bn(pre[i], c, 3, relu=True, cfg=cfg, rngs=rngs))
      else:  # New branches come from the lowest-resolution existing one.
        layers.append(nnx.List([
            _conv_bn(pre[-1], c if k == i - len(pre) else pre[-1], 3, stride=2, relu=True,
                     cfg=cfg, rngs=rngs)
            for k in range(i + 1 - len(pre))]))
    return nnx.List(layers)

  def __call__(self, x: jax.Array, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    kw = dict(train=train, rngs=rngs)
    size = x.shape[1:3]
    h = jax.nn.relu(self.bn1(self.conv1(x), **kw))
    h = jax.nn.relu(self.bn2(self.conv2(h), **kw))
    ys = [apply_layers(self.layer1, h, **kw)]
    for s in range(1, self.num_stages + 1):
      transition = getattr(self, f"transition{s}")
      # Existing branches pass through (or are re-widthed); new ones grow from ys[-1].
      xs = [ys[i] if t is None else apply_layers(t, ys[min(i, len(ys) - 1)], **kw)
            for i, t in enumerate(transition)]
      for module in getattr(self, f"stage{s + 1}"):
        xs = module(xs, **kw)
      ys = xs
    hw = ys[0].shape[1:3]
    feats = jnp.concatenate([ys[0]] + [resize_bilinear_half_pixel(y, hw) for y in ys[1:]],
                            axis=-1)
    logits = apply_layers(self.last_layer, feats, **kw).astype(jnp.float32)
    return resize_bilinear_align_corners(logits, size)


def _build_w48(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs,
               **overrides) -> nnx.Module:
  return HRNet(num_classes, cfg=cfg, rngs=rngs, **overrides)


MODELS: dict[str, ModelSpec] = {
    "HRNetW48": ModelSpec(_build_w48, ("width_multiplier",),
                          classifier_keys=("last_layer.3.weight", "last_layer.3.bias"),
                          description="HRNetV2-W48 (MSeg seg_hrnet, last_layer head)"),
}
