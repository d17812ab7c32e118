"""PSANet of hszhao/semseg (`model/psanet.py`): point-wise spatial attention on layer4.

Trunk, `cls` and `aux` are PSPNet's (jaxseg.models.pspnet.SemsegNet); the context module is
`psa` (keys `psa.reduce.*`, `psa.attention.*`, `psa.reduce_p.*`, `psa.attention_p.*`,
`psa.proj.*`):
  reduce      1x1 conv 2048 -> 512, BN, ReLU; bilinear shrink (align_corners=True) of the
              map to h' = (h - 1) // shrink_factor + 1
  attention   1x1 conv, BN, ReLU, 1x1 conv 512 -> mask_h * mask_w (no bias, no BN)
  psa_mask    collect (psa_type 0) / distribute (1) / both (2, `reduce_p` + `attention_p`
              for the distribute branch), softmax over the source positions, aggregation
              x @ mask * (1 / normalization_factor)
  proj        1x1 conv -> 2048, BN, ReLU; upsample back to (h' - 1) * shrink + 1; concat
              [x, proj] (4096 channels into `cls`)

The mask size. The attention conv predicts one logit per relative offset of a
mask_h x mask_w window, so mask_h * mask_w is a weight shape and is fixed when the model is
built. semseg hard-codes it from the TRAINING crop (tool/train.py: mask = 2 * ((crop - 1) //
(8 * shrink_factor) + 1) - 1, i.e. 59 for its 465 / 473 crops), and its psa_mask kernels
centre that window on every position and clip it to the map. Here the window size follows
the model's training crop (`crop_size`, or an explicit `mask_size`) and the op follows the
input: at any input size the window is centred on each position of the actual (shrunk) map
and clipped to it, exactly the kernels' semantics, so inference is not tied to the training
crop or to (H - 1) % 8 == 0. On a map larger than the window, offsets beyond it get logit 0
before the softmax, as in the original (its zero-initialised mask buffer).
`compact=True` (the mask predicts all h' * w' positions directly) needs the input to give
exactly mask_h x mask_w shrunk maps, and says so otherwise.
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg.models import adapter
from jaxseg.models.interpolate import resize_bilinear_align_corners
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import apply_layers
from jaxseg.models.layers import scale_width
from jaxseg.models.psa_mask import psa_mask
from jaxseg.models.pspnet import AUX_HEADS
from jaxseg.models.pspnet import CLASSIFIER_KEYS
from jaxseg.models.pspnet import SemsegNet
from jaxseg.models.spec import ModelSpec

PSA_TYPES = (0, 1, 2)  # collect, distribute, bi-direction


def mask_size_for_crop(crop_size: int, shrink_factor: int = 2, compact: bool = False) -> int:
  """semseg tool/train.py's mask side for a training crop (stride-8 features, shrunk)."""
  shrunk = (crop_size - 1) // (8 * shrink_factor) + 1
  return shrunk if compact else 2 * shrunk - 1


def _attention(mid: int, mask_channels: int, cfg: LayerCfg, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([*adapter.conv_bn_relu(mid, mid, 1, cfg=cfg, rngs=rngs),
                   adapter.conv(mid, mask_channels, 1, cfg=cfg, rngs=rngs)])


class PSA(nnx.Module):
  """semseg's PSA module (see the module docstring); output channels = 2 * in_channels."""

  def __init__(self, in_channels: int, mid_channels: int, *, psa_type: int, compact: bool,
               shrink_factor: int, mask_size: tuple[int, int], normalization_factor: float | None,
               psa_softmax: bool, cfg: LayerCfg, rngs: nnx.Rngs):
    if psa_type not in PSA_TYPES:
      raise ValueError(f"PSA: psa_type must be 0 (collect), 1 (distribute) or 2 (both), "
                       f"got {psa_type}")
    mask_h, mask_w = mask_size
    if not compact and (mask_h % 2 == 0 or mask_w % 2 == 0):
      raise ValueError(f"PSA: mask_size must be odd without compact, got {mask_h}x{mask_w}")
    if shrink_factor < 1:
      raise ValueError(f"PSA: shrink_factor must be >= 1, got {shrink_factor}")
    self.psa_type, self.compact, self.shrink_factor = psa_type, compact, shrink_factor
    self.mask_size, self.psa_softmax = (mask_h, mask_w), psa_softmax
    self.normalization_factor = float(mask_h * mask_w if normalization_factor is None
                                      else normalization_factor)
    self.reduce = nnx.List(adapter.conv_bn_relu(in_channels, mid_channels, 1, cfg=cfg, rngs=rngs))
    self.attention = _attention(mid_channels, mask_h * mask_w, cfg, rngs)
    if psa_type == 2:
      self.reduce_p = nnx.List(adapter.conv_bn_relu(in_channels, mid_channels, 1, cfg=cfg,
                                                    rngs=rngs))
      self.attention_p = _attention(mid_channels, mask_h * mask_w, cfg, rngs)
    proj_in = mid_channels * (2 if psa_type == 2 else 1)
    self.proj = nnx.List(adapter.conv_bn_relu(proj_in, in_channels, 1, cfg=cfg, rngs=rngs))

  def _mask(self, logits: jax.Array, direction: int) -> jax.Array:
    """(N, h, w, mask) logits -> (N, h, w, h*w) over-the-map rows (NHWC of semseg's y)."""
    n, h, w, c = logits.shape
    if not self.compact:
      return psa_mask(logits, direction, self.mask_size)
    if c != h * w:
      raise ValueError(f"PSA(compact=True): the shrunk map is {h}x{w} but the mask was built "
                       f"for {self.mask_size[0]}x{self.mask_size[1]} positions; use the "
                       "training crop size or compact=False")
    if direction == 0:
      return logits
    # semseg: y.view(n, hw, hw).transpose(1, 2) on NCHW; in NHWC the same swap of p and q.
    return jnp.swapaxes(logits.reshape(n, h * w, h * w), 1, 2).reshape(n, h, w, h * w)

  def _aggregate(self, x: jax.Array, logits: jax.Array, direction: int) -> jax.Array:
    n, h, w, c = x.shape
    y = self._mask(logits, direction).astype(jnp.float32)
    if self.psa_softmax:
      y = jax.nn.softmax(y, axis=-1)  # semseg: softmax over dim 1 = the source positions
    # semseg: bmm(x (n, c, hw_src), y (n, hw_src, hw_dst)); here y is [n, dst, src].
    out = jnp.einsum("nqp,npc->nqc", y.reshape(n, h * w, h * w),
                     x.reshape(n, h * w, c).astype(jnp.float32))
    return (out * (1.0 / self.normalization_factor)).reshape(n, h, w, c).astype(x.dtype)

  def _shrink(self, x: jax.Array) -> jax.Array:
    if self.shrink_factor == 1:
      return x
    h, w = x.shape[1:3]
    f = self.shrink_factor
    return resize_bilinear_align_corners(x, ((h - 1) // f + 1, (w - 1) // f + 1))

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    kw = dict(train=train, rngs=rngs)
    branches = [(self.reduce, self.attention, self.psa_type if self.psa_type < 2 else 0)]
    if self.psa_type == 2:
      branches.append((self.reduce_p, self.attention_p, 1))
    outs = []
    for reduce, attention, direction in branches:
      feats = self._shrink(apply_layers(reduce, x, **kw))
      outs.append(self._aggregate(feats, apply_layers(attention, feats, **kw), direction))
    y = apply_layers(self.proj, jnp.concatenate(outs, axis=-1), **kw)
    if self.shrink_factor != 1:
      f = self.shrink_factor
      h, w = y.shape[1:3]
      y = resize_bilinear_align_corners(y, ((h - 1) * f + 1, (w - 1) * f + 1))
    # semseg concatenates the input with the re-expanded context; the two agree in size
    # exactly when (h - 1) % shrink_factor == 0 (its (H - 1) % 8 == 0 inputs at shrink 2
    # give odd maps). Other sizes: resize the context to the input's map.
    y = resize_bilinear_align_corners(y, x.shape[1:3])
    return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class PSANet(SemsegNet):
  """semseg PSANet(layers, psa_type=2, compact=False, shrink_factor=2, mask from the crop,
  normalization_factor=1.0, psa_softmax=True, dropout=0.1, zoom_factor=8)."""

  def __init__(self, num_classes: int, *, layers: int = 50, psa_type: int = 2,
               compact: bool = False, shrink_factor: int = 2, crop_size: int = 465,
               mask_size: int | tuple[int, int] | None = None,
               normalization_factor: float | None = 1.0, psa_softmax: bool = True,
               dropout: float = 0.1, width_multiplier: float = 1.0, cfg: LayerCfg,
               rngs: nnx.Rngs):
    if mask_size is None:
      mask_size = mask_size_for_crop(crop_size, shrink_factor, compact)
    if isinstance(mask_size, int):
      mask_size = (mask_size, mask_size)
    aux_in, fea_dim = self._init_trunk(layers, width_multiplier, cfg, rngs)
    self.psa = PSA(fea_dim, scale_width(512, width_multiplier), psa_type=psa_type,
                   compact=compact, shrink_factor=shrink_factor,
                   mask_size=tuple(int(v) for v in mask_size),
                   normalization_factor=normalization_factor, psa_softmax=psa_softmax,
                   cfg=cfg, rngs=rngs)
    self._init_heads(2 * fea_dim, aux_in, num_classes, dropout, width_multiplier, cfg, rngs)

  def _context(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    return self.psa(x, train=train, rngs=rngs)


def _psanet(layers: int):
  def build(num_classes: int, *, cfg: LayerCfg, rngs: nnx.Rngs, **overrides) -> PSANet:
    return PSANet(num_classes, layers=layers, cfg=cfg, rngs=rngs, **overrides)
  return build


_OVERRIDES = ("width_multiplier", "psa_type", "compact", "shrink_factor", "crop_size",
              "mask_size", "normalization_factor", "psa_softmax", "dropout")
MODELS: dict[str, ModelSpec] = {
    f"PSANetR{d}": ModelSpec(_psanet(d), _OVERRIDES, classifier_keys=CLASSIFIER_KEYS,
                             aux_heads=AUX_HEADS,
                             description=f"semseg PSANet, deep-stem ResNet-{d}, output stride 8")
    for d in (50, 101)
}
