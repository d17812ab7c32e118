"""SE-ResNeXt trunks (network/SEresnext.py, Cadene layout) for DeepV3Plus.

layer0 = (conv1 7x7/2, bn1, relu1, pool = MaxPool2d(3, 2, ceil_mode=True) with NO
padding); the bottleneck puts the stride on the grouped 3x3 conv2 and ends with a
squeeze-excitation module before the residual add.
"""
from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg.models import adapter
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import MaxPool2d
from jaxseg.models.layers import NamedSequential
from jaxseg.models.layers import ReLU
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import block_output
from jaxseg.models.layers import divisible_groups
from jaxseg.models.layers import rematerialised
from jaxseg.models.layers import scale_width
from jaxseg.models.norms import make_norm
from jaxseg.models.resnet import stage_schedule


def _bn(c, cfg):
  return make_norm(c, cfg)


class SEModule(nnx.Module):
  """Squeeze-excitation: global mean, fc1 (1x1 + bias), relu, fc2, sigmoid, rescale."""

  def __init__(self, channels: int, reduction: int, *, cfg: LayerCfg, rngs: nnx.Rngs):
    hidden = max(1, channels // reduction)
    self.fc1 = adapter.conv(channels, hidden, 1, use_bias=True, cfg=cfg, rngs=rngs)
    self.fc2 = adapter.conv(hidden, channels, 1, use_bias=True, cfg=cfg, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
    s = jax.nn.sigmoid(self.fc2(jax.nn.relu(self.fc1(s))))
    return x * s


class SEResNeXtBottleneck(nnx.Module):
  """ResNeXt type-C bottleneck with SE; `relu(se(bn3(...)) + residual)`."""

  def __init__(self, inplanes: int, width: int, groups: int, out: int, *, reduction: int,
               stride: int, dilation: int, downsample: nnx.List | None, cfg: LayerCfg,
               rngs: nnx.Rngs):
    self.conv1 = adapter.conv(inplanes, width, 1, cfg=cfg, rngs=rngs)
    self.bn1 = _bn(width, cfg)
    self.conv2 = adapter.conv(width, width, 3, stride=stride, padding=dilation, dilation=dilation,
                       groups=groups, cfg=cfg, rngs=rngs)
    self.bn2 = _bn(width, cfg)
    self.conv3 = adapter.conv(width, out, 1, cfg=cfg, rngs=rngs)
    self.bn3 = _bn(out, cfg)
    self.se_module = SEModule(out, reduction, cfg=cfg, rngs=rngs)
    self.downsample = downsample
    self.remat = cfg.remat == "block"

  @rematerialised
  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    out = jax.nn.relu(self.bn1(self.conv1(x), **kw))
    out = jax.nn.relu(self.bn2(self.conv2(out), **kw))
    out = self.bn3(self.conv3(out), **kw)
    residual = x if self.downsample is None else apply_layers(self.downsample, x, **kw)
    return block_output(jax.nn.relu(self.se_module(out) + residual))


SE_RESNEXT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def make_seresnext_trunk(depth: int, *, output_stride: int, width_multiplier: float,
                         cfg: LayerCfg, rngs: nnx.Rngs, groups: int = 32,
                         base_width: int = 4, reduction: int = 16
                         ) -> tuple[dict[str, nnx.Module], int, int]:
  """layer0..layer4 of se_resnext{50,101}_32x4d; returns (modules, layer1 ch, layer4 ch).

  SEresnext.py builds layer3/layer4 with stride 1 already; variant D (output_stride
  8) dilates their 3x3 convs by 2 and 4. output_stride=16 gives layer3 stride 2 and
  layer4 dilation 2 (a true stride-16 trunk).
  """
  if depth not in SE_RESNEXT_DEPTHS:
    raise ValueError(f"SE-ResNeXt depth must be one of {sorted(SE_RESNEXT_DEPTHS)}, got {depth}")
  sched = stage_schedule(output_stride)
  stem = scale_width(64, width_multiplier)
  modules: dict[str, nnx.Module] = {"layer0": NamedSequential([
      ("conv1", adapter.conv(3, stem, 7, stride=2, padding=3, cfg=cfg, rngs=rngs)),
      ("bn1", _bn(stem, cfg)),
      ("relu1", ReLU()),
      # Caffe-compatible pooling: ceil_mode=True and no padding.
      ("pool", MaxPool2d(3, 2, padding=0, ceil_mode=True)),
  ])}
  inplanes = stem
  skip_channels = 0
  target_groups = max(1, int(round(groups * width_multiplier)))
  for idx, (planes, n) in enumerate(zip((64, 128, 256, 512), SE_RESNEXT_DEPTHS[depth]), start=1):
    width = scale_width(math.floor(planes * (base_width / 64)) * groups, width_multiplier)
    g = groups if width_multiplier == 1.0 else divisible_groups(width, target_groups)
    out = scale_width(planes * 4, width_multiplier)
    stride, dilation = sched.get(idx, (1, 1))
    blocks = []
    for b in range(n):
      s = stride if b == 0 else 1
      downsample = None
      if b == 0 and (s != 1 or inplanes != out):
        downsample = nnx.List([adapter.conv(inplanes, out, 1, stride=s, cfg=cfg, rngs=rngs),
                               _bn(out, cfg)])
      blocks.append(SEResNeXtBottleneck(inplanes, width, g, out, reduction=reduction, stride=s,
                                        dilation=dilation, downsample=downsample, cfg=cfg,
                                        rngs=rngs))
      inplanes = out
    modules[f"layer{idx}"] = nnx.List(blocks)
    if idx == 1:
      skip_channels = out
  return modules, skip_channels, inplanes
