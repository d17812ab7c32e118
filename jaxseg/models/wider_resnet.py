"""WiderResNet38-A2 trunk (network/wider_resnet.py, `wider_resnet38_a2(dilation=True)`).

Pre-activation identity blocks: `bn1 = Sequential(BN, ReLU)` on the input feeds both
the conv branch `convs` and, when the shape changes, the 1x1 `proj_conv` shortcut.
With dilation=True: mod4 block1 has stride 2, mod5 dilation 2, mod6/mod7 dilation 4;
`pool2`/`pool3` are MaxPool2d(3, 2, padding=1); mod6/mod7 carry channel dropout
(torch Dropout2d, the file monkey-patches nn.Dropout) p=0.3/0.5 before conv3.
"""
from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax

from jaxseg.models import adapter
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import Dropout2d
from jaxseg.models.layers import MaxPool2d
from jaxseg.models.layers import NamedSequential
from jaxseg.models.layers import ReLU
from jaxseg.models.layers import block_output
from jaxseg.models.layers import rematerialised
from jaxseg.models.layers import scale_width
from jaxseg.models.norms import make_norm

WRN38_STRUCTURE = (3, 3, 6, 3, 1, 1)
WRN38_CHANNELS = ((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048),
                  (1024, 2048, 4096))


def bnrelu(channels: int, cfg: LayerCfg) -> nnx.List:
  """wider_resnet.bnrelu: Sequential(BatchNorm, ReLU) -> keys `<name>.0.*`."""
  return nnx.List([make_norm(channels, cfg), ReLU()])


class IdentityResidualBlock(nnx.Module):
  """Pre-activation residual block, basic (2 channels) or bottleneck (3 channels)."""

  def __init__(self, in_channels: int, channels: Sequence[int], *, stride: int = 1,
               dilation: int = 1, dropout: float | None = None, cfg: LayerCfg,
               rngs: nnx.Rngs):
    if len(channels) not in (2, 3):
      raise ValueError(f"IdentityResidualBlock: channels must have 2 or 3 values, got {channels}")
    self.bn1 = bnrelu(in_channels, cfg)
    if len(channels) == 2:
      layers = [
          ("conv1", adapter.conv(in_channels, channels[0], 3, stride=stride, padding=dilation,
                          dilation=dilation, cfg=cfg, rngs=rngs)),
          ("bn2", bnrelu(channels[0], cfg)),
          ("conv2", adapter.conv(channels[0], channels[1], 3, padding=dilation, dilation=dilation,
                          cfg=cfg, rngs=rngs)),
      ]
      drop_at = 2
    else:
      layers = [
          ("conv1", adapter.conv(in_channels, channels[0], 1, stride=stride, cfg=cfg, rngs=rngs)),
          ("bn2", bnrelu(channels[0], cfg)),
          ("conv2", adapter.conv(channels[0], channels[1], 3, padding=dilation, dilation=dilation,
                          cfg=cfg, rngs=rngs)),
          ("bn3", bnrelu(channels[1], cfg)),
          ("conv3", adapter.conv(channels[1], channels[2], 1, cfg=cfg, rngs=rngs)),
      ]
      drop_at = 4
    if dropout is not None:
      layers.insert(drop_at, ("dropout", Dropout2d(dropout)))
    self.convs = NamedSequential(layers)
    need_proj = stride != 1 or in_channels != channels[-1]
    self.proj_conv = (adapter.conv(in_channels, channels[-1], 1, stride=stride, cfg=cfg, rngs=rngs)
                      if need_proj else None)
    self.remat = cfg.remat == "block"

  @rematerialised
  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    bn1 = self.bn1[1](self.bn1[0](x, **kw))
    shortcut = x if self.proj_conv is None else self.proj_conv(bn1)
    return block_output(self.convs(bn1, **kw) + shortcut)


def make_wider_resnet38_a2_trunk(*, width_multiplier: float, cfg: LayerCfg,
                                 rngs: nnx.Rngs) -> tuple[dict[str, nnx.Module], int, int]:
  """mod1..mod7, pool2, pool3 of wider_resnet38_a2(dilation=True).

  Returns (modules, mod2 channels, mod7 channels). bn_out / classifier of the
  ImageNet model are not part of DeepWV3Plus.
  """
  w = lambda c: scale_width(c, width_multiplier)  # noqa: E731
  stem = w(64)
  modules: dict[str, nnx.Module] = {
      "mod1": NamedSequential([("conv1", adapter.conv(3, stem, 3, padding=1, cfg=cfg, rngs=rngs))]),
      "pool2": MaxPool2d(3, 2, padding=1),
      "pool3": MaxPool2d(3, 2, padding=1),
  }
  in_channels = stem
  mod2_channels = 0
  for mod_id, num in enumerate(WRN38_STRUCTURE):
    channels = tuple(w(c) for c in WRN38_CHANNELS[mod_id])
    dil = {3: 2, 4: 4, 5: 4}.get(mod_id, 1)
    drop = {4: 0.3, 5: 0.5}.get(mod_id)
    blocks = []
    for block_id in range(num):
      stride = 2 if block_id == 0 and mod_id == 2 else 1
      blocks.append((f"block{block_id + 1}",
                     IdentityResidualBlock(in_channels, channels, stride=stride, dilation=dil,
                                           dropout=drop, cfg=cfg, rngs=rngs)))
      in_channels = channels[-1]
    modules[f"mod{mod_id + 2}"] = NamedSequential(blocks)
    if mod_id == 0:
      mod2_channels = in_channels
  return modules, mod2_channels, in_channels
