"""Building blocks with PyTorch semantics for the NHWC Flax NNX ports.

Every layer takes `(x, *, train=False, rngs=None)` so containers can run any mix
of them in order (`apply_layers`), the way a torch `nn.Sequential` does. Attribute
names are chosen so that nnx state paths spell the torch state-dict keys:
`Conv2d.kernel` <-> `weight`, `BatchNorm.scale/bias/mean/var` <->
`weight/bias/running_mean/running_var` (see jaxseg/convert/torch_layout.py).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.kernels.grouped_conv import grouped_conv_native
from jaxseg.models.conv_algorithms import CONV_IMPLS
from jaxseg.models.conv_algorithms import conv1x1_gemm
from jaxseg.models.conv_algorithms import conv_algorithm
from jaxseg.models.conv_algorithms import conv_grouped_direct
from jaxseg.models.conv_algorithms import conv_grouped_gemm
from jaxseg.models.conv_algorithms import conv_strided_tap_gemms
from jaxseg.models.conv_algorithms import conv_tap_gemms
from jaxseg.models.conv_algorithms import conv_winograd
from jaxseg.runtime import platforms

Dtype = Any
Precision = jax.lax.PrecisionLike


def he_normal(mode: str = "fan_in"):
  """Kaiming-normal initialiser (torch `kaiming_normal_`) for HWIO / (I, O) kernels.

  Concrete keys are expanded with numpy: hundreds of eager (or one huge jitted)
  XLA random programs cost minutes of CPU compile time for the big trunks. Under a
  trace (nnx.eval_shape / jit) it falls back to jax.random.
  """
  jax_init = jax.nn.initializers.variance_scaling(2.0, mode, "normal")

  def init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    if isinstance(key, jax.core.Tracer):
      return jax_init(key, shape, dtype)
    receptive = math.prod(shape[:-2])
    fan = receptive * (shape[-2] if mode == "fan_in" else shape[-1])
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel().tolist()
    values = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)
    return jnp.asarray(values * np.float32(math.sqrt(2.0 / fan)), dtype=dtype)

  return init


_he_normal = he_normal("fan_in")
_he_normal_fan_out = he_normal("fan_out")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  a, b = v
  return (int(a), int(b))


def scale_width(channels: int, multiplier: float) -> int:
  """Channel count scaled by `multiplier`, rounded, at least 4 (identity at 1.0)."""
  if multiplier == 1.0:
    return int(channels)
  return max(4, int(round(channels * multiplier)))


def divisible_groups(width: int, target: int) -> int:
  """Largest group count <= `target` that divides `width` (at least 1)."""
  for g in range(max(1, min(target, width)), 0, -1):
    if width % g == 0:
      return g
  return 1


class Conv2d(nnx.Module):
  """torch.nn.Conv2d on NHWC inputs; kernel stored as (kh, kw, in/groups, out).

  Padding is the torch symmetric zero padding `padding` on each side, so output
  sizes equal torch's for every stride/dilation. `impl`: 'xla' always uses
  lax.conv_general_dilated; 'auto' does the same except in programs for the CPU, where
  some shapes run as GEMMs (see jaxseg/models/conv_algorithms.py).
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
               *, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
               dilation: int | Sequence[int] = 1, groups: int = 1, use_bias: bool = False,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               precision: Precision = None, impl: str = "auto", kernel_init=_he_normal,
               rngs: nnx.Rngs):
    if in_channels % groups or out_channels % groups:
      raise ValueError(f"Conv2d: in_channels={in_channels} and out_channels={out_channels} "
                       f"must be divisible by groups={groups}")
    kh, kw = _pair(kernel_size)
    self.in_channels, self.out_channels = in_channels, out_channels
    self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
    self.groups = groups
    if impl not in CONV_IMPLS:
      raise ValueError(f"Conv2d: impl must be one of {CONV_IMPLS}, got {impl!r}")
    self.dtype, self.precision, self.impl = dtype, precision, impl
    self.kernel = nnx.Param(
        kernel_init(rngs.params(), (kh, kw, in_channels // groups, out_channels), param_dtype))
    self.bias = (nnx.Param(jnp.asarray(np.zeros((out_channels,)), param_dtype)) if use_bias
                 else None)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    x = x.astype(self.dtype)
    kernel = self.kernel[...].astype(self.dtype)
    algo = conv_algorithm(self.impl, x.shape, kernel.shape, self.stride, self.padding,
                          self.dilation, self.groups, itemsize=x.dtype.itemsize)
    if algo == "gemm_1x1":
      y = conv1x1_gemm(x, kernel, self.stride, self.precision)
    elif algo == "winograd":
      y = conv_winograd(x, kernel, self.dilation[0], self.precision)
    elif algo == "gemm_taps":
      y = conv_tap_gemms(x, kernel, self.padding, self.dilation, self.precision)
    elif algo == "gemm_taps_strided":
      y = conv_strided_tap_gemms(x, kernel, self.stride, self.padding, self.dilation,
                                 self.precision)
    elif algo == "grouped_native":
      y = grouped_conv_native(x, kernel, self.stride, self.padding, self.dilation, self.groups)
    elif algo == "grouped_direct":
      y = conv_grouped_direct(x, kernel, self.padding, self.dilation, self.groups)
    elif algo == "grouped_gemm":
      y = conv_grouped_gemm(x, kernel, self.padding, self.dilation, self.groups, self.precision)
    else:
      ph, pw = self.padding
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=self.stride, padding=((ph, ph), (pw, pw)),
          rhs_dilation=self.dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=self.groups, precision=self.precision)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class BatchNorm(nnx.Module):
  """torch.nn.BatchNorm2d over the channel (last) axis, statistics in float32.

  train: normalise with the biased batch variance; update the running stats with
  momentum (torch convention `running = (1 - m) * running + m * batch`) using the
  UNBIASED variance. eval: use the running stats. `groups=G > 1` splits the batch
  into G equal groups with their own statistics (per-device BN as in the original
  without --syncbn); the running stats get the mean over groups.
  """

  def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
               groups: int = 1, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs | None = None):
    del rngs
    if groups < 1:
      raise ValueError(f"BatchNorm: groups must be >= 1, got {groups}")
    self.num_features, self.eps, self.momentum, self.groups = num_features, eps, momentum, groups
    self.dtype = dtype
    # numpy constants: no per-shape XLA programs during construction.
    self.scale = nnx.Param(jnp.asarray(np.ones((num_features,)), param_dtype))
    self.bias = nnx.Param(jnp.asarray(np.zeros((num_features,)), param_dtype))
    self.mean = nnx.BatchStat(jnp.asarray(np.zeros((num_features,)), jnp.float32))
    self.var = nnx.BatchStat(jnp.asarray(np.ones((num_features,)), jnp.float32))

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del rngs
    scale = self.scale[...].astype(jnp.float32)
    bias = self.bias[...].astype(jnp.float32)
    if not train:
      # Folded affine form, the same arithmetic as torch's CPU eval kernel.
      alpha = scale * jax.lax.rsqrt(self.var[...] + self.eps)
      beta = bias - self.mean[...] * alpha
      return (x.astype(jnp.float32) * alpha + beta).astype(self.dtype)
    n = x.shape[0]
    if n % self.groups:
      raise ValueError(f"BatchNorm: batch size {n} is not divisible by bn_groups={self.groups}")
    xg = x.astype(jnp.float32).reshape((self.groups, n // self.groups) + x.shape[1:])
    axes = tuple(range(1, xg.ndim - 1))
    mean = jnp.mean(xg, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
    y = (xg - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
    count = math.prod(xg.shape[1:-1])
    unbiased = var * (count / max(count - 1, 1))
    m = self.momentum
    self.mean[...] = (1 - m) * self.mean[...] + m * jnp.mean(mean.reshape(self.groups, -1), 0)
    self.var[...] = (1 - m) * self.var[...] + m * jnp.mean(unbiased.reshape(self.groups, -1), 0)
    return y.reshape(x.shape).astype(self.dtype)


class ReLU(nnx.Module):
  """Stateless ReLU; a module so that Sequential indices match torch's."""

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    return jax.nn.relu(x)


class MaxPool2d(nnx.Module):
  """torch.nn.MaxPool2d (NHWC), including `ceil_mode` with torch's output-size rule."""

  def __init__(self, kernel_size: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    self.kernel_size, self.stride, self.padding, self.ceil_mode = (
        kernel_size, stride, padding, ceil_mode)

  def _pads(self, size: int) -> tuple[int, int]:
    k, s, p = self.kernel_size, self.stride, self.padding
    # torch's pooling_output_shape (floor division rounds towards -inf there too).
    out = (size + 2 * p - (k - 1) - 1 + (s - 1 if self.ceil_mode else 0)) // s + 1
    if self.ceil_mode and (out - 1) * s >= size + p:
      out -= 1  # torch: the last window must start inside the input or left padding
    if out < 1:
      raise ValueError(f"MaxPool2d(kernel={k}, stride={s}, padding={p}, ceil_mode="
                       f"{self.ceil_mode}): input size {size} gives no output")
    return p, max(0, (out - 1) * s + k - size - p)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    del train, rngs
    k, s = self.kernel_size, self.stride
    pads = ((0, 0), self._pads(x.shape[1]), self._pads(x.shape[2]), (0, 0))
    # A Python -inf scalar lets JAX recognise the max monoid, which is differentiable.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), pads)


class Dropout2d(nnx.Module):
  """torch.nn.Dropout2d: zeroes whole channels per sample, keys from call-time rngs."""

  def __init__(self, rate: float):
    self.rate = rate
    self.drop = nnx.Dropout(rate, broadcast_dims=(1, 2), rng_collection="dropout")

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    if train and self.rate > 0 and rngs is None:
      raise ValueError("Dropout2d: train=True needs `rngs` with a 'dropout' stream")
    return self.drop(x, deterministic=not train, rngs=rngs)


def block_output(x: jax.Array) -> jax.Array:
  """Materialises a residual block's output (identity in value).

  XLA:CPU fuses each block's BN + residual add into the next block's residual add,
  recomputing the whole chain in every later block (quadratic: ~20% of a ResNet-101
  forward). A conditional is a fusion boundary; its predicate is always true
  (`s >= s or isnan(s)` holds for every float) but XLA cannot prove it, so the
  conditional stays. (optimization_barrier is removed before fusion on CPU.)
  Programs for other platforms get `x` unchanged.
  """
  if platforms.target_platform() != "cpu" or x.size == 0:
    return x
  s = x[(0,) * x.ndim]
  return jax.lax.cond((s >= s) | jnp.isnan(s), lambda v: v, lambda v: v + v, x)


REMAT_MODES = ("none", "block")


def check_remat(remat: str) -> str:
  if remat not in REMAT_MODES:
    raise ValueError(f"train.remat={remat!r}; expected one of {REMAT_MODES}")
  return remat


def rematerialised(call: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """Decorates a residual block's `__call__(x, *, train, rngs)`: with `self.remat` set
  (config.train.remat='block') the block runs under nnx.remat, so the backward pass keeps
  only its input and recomputes its activations (one extra forward of the trunk, the memory
  of one block's activations instead of all of them). Values and gradients are unchanged."""

  @functools.wraps(call)
  def wrapper(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    if not getattr(self, "remat", False):
      return call(self, x, train=train, rngs=rngs)
    # train is a Python bool: closed over, so it stays static inside the checkpoint.
    return nnx.remat(lambda block, v, r: call(block, v, train=train, rngs=r))(self, x, rngs)

  return wrapper


def apply_layers(layers: Sequence[Any] | nnx.Module, x: jax.Array, *, train: bool,
                 rngs: nnx.Rngs | None) -> jax.Array:
  """Runs layers in order like torch.nn.Sequential (nested nnx.Lists included).

  A single module (e.g. a NamedSequential) is simply called.
  """
  if not isinstance(layers, (nnx.List, list, tuple)):
    return layers(x, train=train, rngs=rngs)
  for layer in layers:
    if isinstance(layer, nnx.List):
      x = apply_layers(layer, x, train=train, rngs=rngs)
    else:
      x = layer(x, train=train, rngs=rngs)
  return x


class NamedSequential(nnx.Module):
  """Sequential with named children (torch `nn.Sequential(OrderedDict(...))`)."""

  def __init__(self, named_layers: Sequence[tuple[str, nnx.Module]]):
    for name, layer in named_layers:
      setattr(self, name, layer)
    self.layer_names = tuple(name for name, _ in named_layers)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None):
    return apply_layers([getattr(self, n) for n in self.layer_names], x, train=train, rngs=rngs)

