"""ResNet trunks (network/Resnet.py) with the DeepV3Plus variant-D dilation edits.

The segmentation model keeps `layer0 = Sequential(conv1, bn1, relu, maxpool)` and
`layer1..layer4`, so the state-dict keys are `layer0.0.weight`, `layer0.1.*`,
`layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, ...

`deep_stem=True` builds hszhao/semseg's `model/resnet.py` (`deep_base=True`) instead:
`layer0 = Sequential(conv1 3x3/2 3->64, bn1, relu, conv2 3x3 64->64, bn2, relu,
conv3 3x3 64->128, bn3, relu, maxpool)` (keys `layer0.0`, `.1`, `.3`, `.4`, `.6`, `.7`) and
layer1 starting from 128 channels. semseg dilates layer3/layer4 after construction (every
`conv2`: stride 1, dilation = padding = 2 / 4; `downsample.0`: stride 1), which is the
output-stride-8 schedule below with the downsample branches of the nominal (stride 2) stages.
"""
from __future__ import annotations

from flax import nnx
import jax

from jaxseg.models import adapter
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import MaxPool2d
from jaxseg.models.layers import ReLU
from jaxseg.models.layers import _he_normal_fan_out
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import block_output
from jaxseg.models.layers import rematerialised
from jaxseg.models.layers import scale_width
from jaxseg.models.norms import make_norm


def _conv(cin, cout, k, *, cfg, rngs, **kw):
  # torchvision ResNet initialises its convs with kaiming_normal(fan_out).
  return adapter.conv(cin, cout, k, cfg=cfg, rngs=rngs, kernel_init=_he_normal_fan_out, **kw)


def _bn(c, cfg):
  return make_norm(c, cfg)


class Bottleneck(nnx.Module):
  """Resnet.py Bottleneck: 1x1, 3x3 (stride, dilation), 1x1 x4; residual after bn3."""

  expansion = 4

  def __init__(self, inplanes: int, planes: int, out: int, *, stride: int, dilation: int,
               downsample: nnx.List | None, cfg: LayerCfg, rngs: nnx.Rngs):
    self.conv1 = _conv(inplanes, planes, 1, cfg=cfg, rngs=rngs)
    self.bn1 = _bn(planes, cfg)
    self.conv2 = _conv(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                       cfg=cfg, rngs=rngs)
    self.bn2 = _bn(planes, cfg)
    self.conv3 = _conv(planes, out, 1, cfg=cfg, rngs=rngs)
    self.bn3 = _bn(out, cfg)
    self.downsample = downsample
    self.remat = cfg.remat == "block"

  @rematerialised
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
               downsample: nnx.List | None, cfg: LayerCfg, rngs: nnx.Rngs):
    del out
    self.conv1 = _conv(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                       cfg=cfg, rngs=rngs)
    self.bn1 = _bn(planes, cfg)
    self.conv2 = _conv(planes, planes, 3, padding=dilation, dilation=dilation, cfg=cfg, rngs=rngs)
    self.bn2 = _bn(planes, cfg)
    self.downsample = downsample
    self.remat = cfg.remat == "block"

  @rematerialised
  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    out = jax.nn.relu(self.bn1(self.conv1(x), **kw))
    out = self.bn2(self.conv2(out), **kw)
    residual = x if self.downsample is None else apply_layers(self.downsample, x, **kw)
    return block_output(jax.nn.relu(out + residual))


RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


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


def _stem(width_multiplier: float, deep_stem: bool, cfg: LayerCfg,
          rngs: nnx.Rngs) -> tuple[nnx.List, int]:
  """layer0 and its output channels: torchvision 7x7 stem or semseg's deep 3x3 stem."""
  w = lambda c: scale_width(c, width_multiplier)  # noqa: E731
  if not deep_stem:
    return nnx.List([_conv(3, w(64), 7, stride=2, padding=3, cfg=cfg, rngs=rngs),
                     _bn(w(64), cfg), ReLU(), MaxPool2d(3, 2, padding=1)]), w(64)
  # semseg reuses one ReLU module three times; stateless here, so one per slot.
  return nnx.List([_conv(3, w(64), 3, stride=2, padding=1, cfg=cfg, rngs=rngs),
                   _bn(w(64), cfg), ReLU(),
                   _conv(w(64), w(64), 3, padding=1, cfg=cfg, rngs=rngs), _bn(w(64), cfg), ReLU(),
                   _conv(w(64), w(128), 3, padding=1, cfg=cfg, rngs=rngs), _bn(w(128), cfg),
                   ReLU(), MaxPool2d(3, 2, padding=1)]), w(128)


def make_resnet_trunk(depth: int, *, output_stride: int, width_multiplier: float,
                      cfg: LayerCfg, rngs: nnx.Rngs, deep_stem: bool = False
                      ) -> tuple[dict[str, nnx.Module], int, int]:
  """layer0..layer4 of ResNet-`depth`; returns (modules, layer1 channels, layer4 channels).

  deep_stem: semseg's `deep_base` ResNet (3x3 stem, see the module docstring). Its stages
  keep a downsample branch wherever the undilated network has stride 2 (semseg edits the
  strides of an already built torchvision-style network), even at degenerate tiny widths.
  """
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
  block, counts = RESNET_DEPTHS[depth]
  sched = stage_schedule(output_stride)
  layer0, inplanes = _stem(width_multiplier, deep_stem, cfg, rngs)
  modules: dict[str, nnx.Module] = {"layer0": layer0}
  skip_channels = 0
  for idx, (planes0, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
    planes = scale_width(planes0, width_multiplier)
    out = scale_width(planes0 * block.expansion, width_multiplier)
    stride, dilation = sched.get(idx, (1, 1))
    nominal_stride = stride if not deep_stem else (1 if idx == 1 else 2)
    blocks = []
    for b in range(n):
      s = stride if b == 0 else 1
      downsample = None
      if b == 0 and (s != 1 or nominal_stride != 1 or inplanes != out):
        downsample = nnx.List([_conv(inplanes, out, 1, stride=s, cfg=cfg, rngs=rngs),
                               _bn(out, cfg)])
      blocks.append(block(inplanes, planes, out, stride=s, dilation=dilation,
                          downsample=downsample, cfg=cfg, rngs=rngs))
      inplanes = out
    modules[f"layer{idx}"] = nnx.List(blocks)
    if idx == 1:
      skip_channels = out
  return modules, skip_channels, inplanes
