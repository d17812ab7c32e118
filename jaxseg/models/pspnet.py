"""PSPNet of hszhao/semseg (`model/pspnet.py`) on semseg's deep-stem dilated ResNet.

Layout (state-dict keys as in semseg's `train_epoch_*.pth`, without 'module.'):
  layer0..layer4   deep-stem ResNet-50/101/152, layer3/layer4 dilated 2/4 (output stride 8)
  ppm.features.i   bin b_i: AdaptiveAvgPool2d(b_i) (no params), 1x1 conv (`.1`), BN (`.2`),
                   ReLU; upsampled bilinearly (align_corners=True) and concatenated AFTER x
  cls              3x3 conv 512, BN, ReLU, Dropout2d(0.1), 1x1 conv -> classes (bias)
  aux              on layer3: 3x3 conv 256, BN, ReLU, Dropout2d(0.1), 1x1 conv (bias)
The logits are upsampled (align_corners=True) to the input size. semseg requires
(H - 1) % 8 == 0 and upsamples to (H - 1) / 8 * zoom_factor + 1, which is H for its default
zoom_factor 8; here any input size is accepted and the output always has the input size.
The aux head runs when the caller asks for it (`return_aux=True`); the 0.4 weight of its loss
belongs to the loss configuration.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import adapter
from jaxseg.models.interpolate import resize_bilinear_align_corners
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import Dropout2d
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import scale_width
from jaxseg.models.resnet import make_resnet_trunk
from jaxseg.models.spec import ModelSpec

CLASSIFIER_KEYS = ("cls.4.weight", "cls.4.bias", "aux.4.weight", "aux.4.bias")
AUX_HEADS = ("aux",)


def classifier_head(cin: int, mid: int, num_classes: int, dropout: float, *,
                    cfg: LayerCfg, rngs: nnx.Rngs) -> nnx.List:
  """semseg's `cls` / `aux`: 3x3 conv, BN, ReLU, Dropout2d, 1x1 conv with bias."""
  return nnx.List([*adapter.conv_bn_relu(cin, mid, 3, padding=1, cfg=cfg, rngs=rngs),
                   Dropout2d(dropout),
                   adapter.conv(mid, num_classes, 1, use_bias=True, cfg=cfg, rngs=rngs)])


@functools.lru_cache(maxsize=64)
def adaptive_pool_matrix(in_size: int, bins: int) -> np.ndarray:
  """(bins, in_size) averaging weights of torch's AdaptiveAvgPool along one axis.

  Bin i averages [floor(i * in / bins), ceil((i + 1) * in / bins)) (bins may overlap, and
  repeat inputs when bins > in_size), exactly as torch's adaptive_avg_pool2d.
  """
  weights = np.zeros((bins, in_size), np.float32)
  for i in range(bins):
    start = (i * in_size) // bins
    end = -((-(i + 1) * in_size) // bins)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x: jax.Array, bins: int) -> jax.Array:
  """torch AdaptiveAvgPool2d(bins) on NHWC `x`, computed in float32."""
  ph = jnp.asarray(adaptive_pool_matrix(x.shape[1], bins))
  pw = jnp.asarray(adaptive_pool_matrix(x.shape[2], bins))
  y = jnp.einsum("ih,nhwc->niwc", ph, x.astype(jnp.float32),
                 precision=jax.lax.Precision.HIGHEST)
  y = jnp.einsum("jw,niwc->nijc", pw, y, precision=jax.lax.Precision.HIGHEST)
  return y.astype(x.dtype)


class _Identity(nnx.Module):
  """Placeholder for a parameter-free torch module whose work the parent does."""

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    return x


class PPM(nnx.Module):
  """Pyramid pooling module: [x, up(branch_b(pool_b(x))) for b in bins] concatenated."""

  def __init__(self, in_dim: int, reduction_dim: int, bins: Sequence[int], *,
               cfg: LayerCfg, rngs: nnx.Rngs):
    self.bins = tuple(int(b) for b in bins)
    # Index 0 of each torch branch is the (parameter-free) AdaptiveAvgPool2d; keep the slot
    # so the conv / BN keys are `ppm.features.i.1` / `.2`.
    self.features = nnx.List([
        nnx.List([_Identity(), *adapter.conv_bn_relu(in_dim, reduction_dim, 1, cfg=cfg, rngs=rngs)])
        for _ in self.bins])

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    outs = [x]
    for b, branch in zip(self.bins, self.features):
      y = apply_layers(branch, adaptive_avg_pool(x, b), train=train, rngs=rngs)
      outs.append(resize_bilinear_align_corners(y, x.shape[1:3]))
    return jnp.concatenate(outs, axis=-1)


class SemsegNet(nnx.Module):
  """semseg's shared skeleton: dilated deep-stem ResNet, a context module, `cls` and `aux`.

  Subclasses set `self.<context>` and call `_init_heads`; `_context(x4)` maps layer4
  features to the `cls` input.
  """

  def _init_trunk(self, layers: int, width_multiplier: float, cfg: LayerCfg,
                  rngs: nnx.Rngs) -> tuple[int, int]:
    if layers not in (50, 101, 152):
      raise ValueError(f"{type(self).__name__}: layers must be 50, 101 or 152, got {layers}")
    mods, _, high = make_resnet_trunk(layers, output_stride=8, width_multiplier=width_multiplier,
                                      cfg=cfg, rngs=rngs, deep_stem=True)
    self.layer0, self.layer1, self.layer2 = mods["layer0"], mods["layer1"], mods["layer2"]
    self.layer3, self.layer4 = mods["layer3"], mods["layer4"]
    return scale_width(1024, width_multiplier), high  # layer3 and layer4 channels

  def _init_heads(self, cls_in: int, aux_in: int, num_classes: int, dropout: float,
                  width_multiplier: float, cfg: LayerCfg, rngs: nnx.Rngs) -> None:
    w = lambda c: scale_width(c, width_multiplier)  # noqa: E731
    self.cls = classifier_head(cls_in, w(512), num_classes, dropout, cfg=cfg, rngs=rngs)
    self.aux = classifier_head(aux_in, w(256), num_classes, dropout, cfg=cfg, rngs=rngs)
    self.num_classes = num_classes

  def _context(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    raise NotImplementedError

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None,
               return_aux: bool = False):
    """NHWC images -> float32 logits (N, H, W, classes) [, {'aux': aux logits}]."""
    kw = dict(train=train, rngs=rngs)
    h = apply_layers(self.layer2, apply_layers(self.layer1, apply_layers(self.layer0, x, **kw),
                                               **kw), **kw)
    x3 = apply_layers(self.layer3, h, **kw)
    x4 = apply_layers(self.layer4, x3, **kw)
    logits = apply_layers(self.cls, self._context(x4, **kw), **kw)
    logits = resize_bilinear_align_corners(logits.astype(jnp.float32), x.shape[1:3])
    if not return_aux:
      return logits
    aux = apply_layers(self.aux, x3, **kw)
    return logits, {"aux": resize_bilinear_align_corners(aux.astype(jnp.float32),
                                                         x.shape[1:3])}


class PSPNet(SemsegNet):
  """semseg PSPNet(layers, bins=(1, 2, 3, 6), dropout=0.1, zoom_factor=8, use_ppm=True)."""

  def __init__(self, num_classes: int, *, layers: int = 50, bins: Sequence[int] = (1, 2, 3, 6),
               dropout: float = 0.1, width_multiplier: float = 1.0, cfg: LayerCfg,
               rngs: nnx.Rngs):
    aux_in, fea_dim = self._init_trunk(layers, width_multiplier, cfg, rngs)
    if not bins:
      raise ValueError("PSPNet: bins must name at least one pyramid level")
    # semseg: int(2048 / len(bins)) per branch, so the concat has 2 * 2048 channels.
    reduction = fea_dim // len(bins)
    self.ppm = PPM(fea_dim, reduction, bins, cfg=cfg, rngs=rngs)
    self._init_heads(fea_dim + len(bins) * reduction, aux_in, num_classes, dropout,
                     width_multiplier, cfg, rngs)

  def _context(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    return self.ppm(x, train=train, rngs=rngs)


def _pspnet(layers: int):
  def build(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs, **overrides) -> PSPNet:
    return PSPNet(num_classes, layers=layers, cfg=cfg, rngs=rngs, **overrides)
  return build


_OVERRIDES = ("width_multiplier", "bins", "dropout")
MODELS: dict[str, ModelSpec] = {
    f"PSPNetR{d}": ModelSpec(_pspnet(d), _OVERRIDES, classifier_keys=CLASSIFIER_KEYS,
                             aux_heads=AUX_HEADS,
                             description=f"semseg PSPNet, deep-stem ResNet-{d}, output stride 8")
    for d in (50, 101, 152)
}
