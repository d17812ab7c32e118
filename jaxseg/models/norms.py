"""Normalisation layers selectable per model (`create_model(..., norm=...)`).

Every trunk and head asks `make_norm(channels, cfg)` for its normalisation, so one config field
swaps BatchNorm for another normaliser without touching the network code:

  'batch'       torch BatchNorm2d (layers.BatchNorm; running statistics, `bn_groups`)
  'group'       torch GroupNorm(num_groups, C, eps=1e-5, affine=True)
  'instance'    torch InstanceNorm2d(C, affine=True, track_running_stats=False)
  'evonorm_s0'  EvoNorm-S0 (Liu et al. 2020), timm `EvoNorm2dS0` parameters

`cfg.bn_momentum` (default 0.1, torch's convention: running = (1 - m) * running + m * batch)
is the running-statistics momentum of 'batch' (HRNet passes MSeg's 0.01). `cfg.norm_groups`
(default 32) is the group count of 'group' and 'evonorm_s0'; a channel count it does not divide
(tiny test widths, odd heads) uses the largest divisor below it (`layers.divisible_groups`).
The batch-independent normalisers have no statistics to track: train and eval compute the same
function. Statistics are float32 whatever the compute dtype; the output has the compute dtype
`cfg.dtype` (`cfg` is the model's `layer_cfg.LayerCfg`).

A 1x1 feature map (e.g. the image-pooling branch of ASPP / PPM) has zero variance per sample:
'instance' (and 'group' with one channel per group) then output their `bias` alone, where
torch's InstanceNorm2d refuses a single spatial element in training. Prefer 'group' with
several channels per group for such heads.

Parameter names spell the torch state-dict keys through jaxseg/convert/torch_layout.py:
`scale` <-> `weight`, `bias` <-> `bias`, EvoNorm's `v` <-> `v`.
"""
from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layer_cfg import DEFAULT_NORM_GROUPS
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import BatchNorm
from jaxseg.models.layers import divisible_groups

NORM_TYPES = ("batch", "group", "instance", "evonorm_s0")
_EPS = 1e-5


def _affine_params(channels: int, param_dtype: Any) -> tuple[nnx.Param, nnx.Param]:
  # numpy constants: no per-shape XLA programs while a big trunk is constructed.
  return (nnx.Param(jnp.asarray(np.ones((channels,)), param_dtype)),
          nnx.Param(jnp.asarray(np.zeros((channels,)), param_dtype)))


def _check_groups(layer: str, num_channels: int, num_groups: int) -> None:
  if num_groups < 1 or num_channels % num_groups:
    raise ValueError(f"{layer}: num_channels={num_channels} is not divisible by "
                     f"num_groups={num_groups}")


def _group_normalise(x: jax.Array, groups: int, eps: float) -> jax.Array:
  """float32 (x - mean) / sqrt(var + eps) with the statistics of `group_moments`."""
  xg, mean, var = group_moments(x, groups)
  return ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)


def _affine(y: jax.Array, layer: nnx.Module) -> jax.Array:
  """float32 `y` times the layer's per-channel `scale` plus `bias`, in its compute dtype."""
  y = y * layer.scale[...].astype(jnp.float32) + layer.bias[...].astype(jnp.float32)
  return y.astype(layer.dtype)


def group_moments(x: jax.Array, groups: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """NHWC `x` as float32 (N, H, W, G, C // G), with its mean and biased variance per group.

  The moments have shape (N, 1, 1, G, 1) (per sample and channel group, over H, W and the
  group's channels); `groups == C` gives instance statistics.
  """
  n, h, w, c = x.shape
  xg = x.astype(jnp.float32).reshape(n, h, w, groups, c // groups)
  axes = (1, 2, 4)
  mean = jnp.mean(xg, axis=axes, keepdims=True)
  # Two-pass variance (not E[x^2] - E[x]^2): torch's kernels are accurate for large means.
  var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
  return xg, mean, var


class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm over the channel (last) axis of NHWC inputs.

  Each sample's channels are split into `num_groups` contiguous groups (channel k is in group
  k // (C / G), as torch); every group is normalised with its own mean and biased variance over
  (H, W, channels of the group), then the per-channel affine `scale`, `bias` applies.
  """

  def __init__(self, num_channels: int, *, num_groups: int = DEFAULT_NORM_GROUPS,
               eps: float = _EPS, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
    _check_groups("GroupNorm", num_channels, num_groups)
    self.num_channels, self.num_groups, self.eps, self.dtype = (
        num_channels, num_groups, eps, dtype)
    self.scale, self.bias = _affine_params(num_channels, param_dtype)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    return _affine(_group_normalise(x, self.num_groups, self.eps), self)


class InstanceNorm(nnx.Module):
  """torch.nn.InstanceNorm2d(affine=True, track_running_stats=False) on NHWC inputs.

  Per sample and channel: mean and biased variance over (H, W), in train and eval alike
  (torch uses the input's statistics in eval mode too when running stats are not tracked).
  """

  def __init__(self, num_channels: int, *, eps: float = _EPS, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32):
    self.num_channels, self.eps, self.dtype = num_channels, eps, dtype
    self.scale, self.bias = _affine_params(num_channels, param_dtype)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    return _affine(_group_normalise(x, x.shape[-1], self.eps), self)  # a group per channel


class EvoNormS0(nnx.Module):
  """EvoNorm-S0 (Liu et al., "Evolving Normalization-Activation Layers", 2020).

    y = x * sigmoid(v * x) / sqrt(group_var(x) + eps) * scale + bias

  group_var is the biased variance per sample over (H, W, channels of the group), as timm's
  `EvoNorm2dS0` (`group_std`): the mean is NOT subtracted from the numerator. `v`, `scale`
  (torch `weight`) and `bias` are per channel, initialised to 1, 1, 0. The layer is a
  normalisation AND an activation; the networks keep their ReLU after it.
  """

  def __init__(self, num_channels: int, *, num_groups: int = DEFAULT_NORM_GROUPS,
               eps: float = _EPS, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
    _check_groups("EvoNormS0", num_channels, num_groups)
    self.num_channels, self.num_groups, self.eps, self.dtype = (
        num_channels, num_groups, eps, dtype)
    self.scale, self.bias = _affine_params(num_channels, param_dtype)
    self.v = nnx.Param(jnp.asarray(np.ones((num_channels,)), param_dtype))

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    xg, _, var = group_moments(x, self.num_groups)
    v = self.v[...].astype(jnp.float32).reshape(xg.shape[3:])
    y = (xg * jax.nn.sigmoid(xg * v) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    return _affine(y, self)


def norm_groups(channels: int, cfg: LayerCfg) -> int:
  """The group count for `channels`: cfg.norm_groups or its largest divisor below it."""
  target = int(cfg.norm_groups)
  if target < 1:
    raise ValueError(f"norm_groups must be >= 1, got {target}")
  return divisible_groups(channels, target)


def make_norm(channels: int, cfg: LayerCfg) -> nnx.Module:
  """The normalisation layer `cfg.norm` over `channels` (NHWC, last axis)."""
  kind = cfg.norm
  dtypes = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
  if kind == "batch":
    return BatchNorm(channels, momentum=float(cfg.bn_momentum), groups=cfg.bn_groups, **dtypes)
  if kind == "group":
    return GroupNorm(channels, num_groups=norm_groups(channels, cfg), **dtypes)
  if kind == "instance":
    return InstanceNorm(channels, **dtypes)
  if kind == "evonorm_s0":
    return EvoNormS0(channels, num_groups=norm_groups(channels, cfg), **dtypes)
  raise ValueError(f"norm={kind!r}: expected one of {NORM_TYPES}")
