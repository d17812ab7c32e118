"""FlowNet2 building blocks and sub-networks (NHWC, Flax NNX), batchNorm=False variants.

Ports of flownet2-pytorch `networks/submodules.py`, `FlowNetC.py`, `FlowNetS.py`, `FlowNetSD.py`
and `FlowNetFusion.py` as used by SDCNet (`FlowNet2(batchNorm=False)`), eval mode only: every
sub-network returns its finest flow (`flow2`, or `flow0` for the fusion net), as torch does in eval.

Attribute paths mirror the torch state-dict keys: a torch `nn.Sequential` becomes an
`nnx.Sequential` (torch `conv1.0.weight` <-> NNX `conv1.layers.0.kernel`), see `torch_names.py`.
Convolution kernels are HWIO; transposed convolutions keep torch's weight orientation up to a
transpose, `(kh, kw, out, in)`, and are applied with `transpose_kernel=True` (see
`conv_transpose_4x4`), which reproduces torch `ConvTranspose2d(k=4, s=2, p=1)` exactly.
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from jaxseg import kernels

# torch's default init for these nets: xavier_uniform weights, uniform [0, 1) biases.
_KERNEL_INIT = nnx.initializers.xavier_uniform()
_BIAS_INIT = nnx.initializers.uniform(scale=1.0)


def leaky_relu(x: jax.Array) -> jax.Array:
  """LeakyReLU(0.1), the activation of every FlowNet2 / SDCNet conv block."""
  return jax.nn.leaky_relu(x, negative_slope=0.1)


def conv2d(in_ch: int, out_ch: int, *, kernel_size: int = 3, stride: int = 1,
           rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32) -> nnx.Conv:
  """torch `Conv2d(in, out, k, stride, padding=(k-1)//2, bias=True)` in NHWC."""
  pad = (kernel_size - 1) // 2
  return nnx.Conv(in_ch, out_ch, kernel_size=(kernel_size, kernel_size),
                  strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                  use_bias=True, kernel_init=_KERNEL_INIT, bias_init=_BIAS_INIT,
                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def conv_transpose_4x4(in_ch: int, out_ch: int, *, use_bias: bool = True, rngs: nnx.Rngs,
                       dtype=jnp.float32, param_dtype=jnp.float32) -> nnx.ConvTranspose:
  """torch `ConvTranspose2d(in, out, kernel_size=4, stride=2, padding=1)`: exact 2x upsampling.

  torch's transposed convolution with padding p equals a stride-1 convolution of the input
  dilated by the stride, padded by k - 1 - p = 2 on each side, with the spatially flipped kernel
  and in/out swapped. `lax.conv_transpose(..., transpose_kernel=True)` does exactly that flip and
  swap on a `(kh, kw, out, in)` kernel, so the NNX kernel is the torch weight `(in, out, kh, kw)`
  transposed by (2, 3, 1, 0), and the output is 2H x 2W.
  """
  return nnx.ConvTranspose(in_ch, out_ch, kernel_size=(4, 4), strides=(2, 2),
                           padding=((2, 2), (2, 2)), use_bias=use_bias, transpose_kernel=True,
                           kernel_init=_KERNEL_INIT, bias_init=_BIAS_INIT,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def conv(in_ch: int, out_ch: int, *, kernel_size: int = 3, stride: int = 1,
         rngs: nnx.Rngs, **kw) -> nnx.Sequential:
  """submodules.conv(batchNorm=False): Sequential(Conv2d, LeakyReLU(0.1))."""
  return nnx.Sequential(conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride,
                               rngs=rngs, **kw), leaky_relu)


def i_conv(in_ch: int, out_ch: int, *, rngs: nnx.Rngs, **kw) -> nnx.Sequential:
  """submodules.i_conv(batchNorm=False): Sequential(Conv2d 3x3) (no activation)."""
  return nnx.Sequential(conv2d(in_ch, out_ch, rngs=rngs, **kw))


def deconv(in_ch: int, out_ch: int, *, rngs: nnx.Rngs, **kw) -> nnx.Sequential:
  """submodules.deconv: Sequential(ConvTranspose2d(4, 2, 1), LeakyReLU(0.1))."""
  return nnx.Sequential(conv_transpose_4x4(in_ch, out_ch, rngs=rngs, **kw), leaky_relu)


def predict_flow(in_ch: int, *, rngs: nnx.Rngs, **kw) -> nnx.Conv:
  """submodules.predict_flow: Conv2d(in, 2, 3, padding=1)."""
  return conv2d(in_ch, 2, rngs=rngs, **kw)


def _cat(*xs: jax.Array) -> jax.Array:
  return jnp.concatenate(xs, axis=-1)


class _FlowNetDecoder(nnx.Module):
  """The refinement decoder shared by FlowNetC, FlowNetS and FlowNetSD.

  Subclasses call `_init_decoder` in their constructor (so the layers sit at the top level of the
  sub-network, as in torch) and `_decode` in their forward.
  """

  def _init_decoder(self, *, inter_conv: bool, upsample_bias: bool, rngs: nnx.Rngs, **kw):
    # Concatenations are (skip, deconv, upsampled flow): 512+512+2, 512+256+2, 256+128+2, 128+64+2.
    self.deconv5 = deconv(1024, 512, rngs=rngs, **kw)
    self.deconv4 = deconv(1026, 256, rngs=rngs, **kw)
    self.deconv3 = deconv(770, 128, rngs=rngs, **kw)
    self.deconv2 = deconv(386, 64, rngs=rngs, **kw)
    self.has_inter_conv = inter_conv
    if inter_conv:  # FlowNetSD predicts from a 3x3 "inter" conv of each concatenation.
      self.inter_conv5 = i_conv(1026, 512, rngs=rngs, **kw)
      self.inter_conv4 = i_conv(770, 256, rngs=rngs, **kw)
      self.inter_conv3 = i_conv(386, 128, rngs=rngs, **kw)
      self.inter_conv2 = i_conv(194, 64, rngs=rngs, **kw)
      pred_in = (1024, 512, 256, 128, 64)
    else:
      pred_in = (1024, 1026, 770, 386, 194)
    self.predict_flow6 = predict_flow(pred_in[0], rngs=rngs, **kw)
    self.predict_flow5 = predict_flow(pred_in[1], rngs=rngs, **kw)
    self.predict_flow4 = predict_flow(pred_in[2], rngs=rngs, **kw)
    self.predict_flow3 = predict_flow(pred_in[3], rngs=rngs, **kw)
    self.predict_flow2 = predict_flow(pred_in[4], rngs=rngs, **kw)
    up = dict(use_bias=upsample_bias, rngs=rngs, **kw)
    self.upsampled_flow6_to_5 = conv_transpose_4x4(2, 2, **up)
    self.upsampled_flow5_to_4 = conv_transpose_4x4(2, 2, **up)
    self.upsampled_flow4_to_3 = conv_transpose_4x4(2, 2, **up)
    self.upsampled_flow3_to_2 = conv_transpose_4x4(2, 2, **up)

  def _predict(self, level: int, concat: jax.Array) -> jax.Array:
    if self.has_inter_conv:
      concat = getattr(self, f"inter_conv{level}")(concat)
    return getattr(self, f"predict_flow{level}")(concat)

  def _decode(self, conv6: jax.Array, conv5: jax.Array, conv4: jax.Array, conv3: jax.Array,
              conv2: jax.Array) -> jax.Array:
    """Coarse-to-fine flow refinement; returns flow2 (1/4 resolution, eval output)."""
    flow6 = self.predict_flow6(conv6)
    concat5 = _cat(conv5, self.deconv5(conv6), self.upsampled_flow6_to_5(flow6))
    flow5 = self._predict(5, concat5)
    concat4 = _cat(conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5))
    flow4 = self._predict(4, concat4)
    concat3 = _cat(conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4))
    flow3 = self._predict(3, concat3)
    concat2 = _cat(conv2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3))
    return self._predict(2, concat2)


class FlowNetC(_FlowNetDecoder):
  """FlowNetC (batchNorm=False): siamese encoder + correlation (d=20, stride2=2) + decoder.

  Input (N, H, W, 6): the two normalised images concatenated along channels. Output flow2
  (N, H/4, W/4, 2) in pixels / div_flow.
  """

  def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.conv1 = conv(3, 64, kernel_size=7, stride=2, rngs=rngs, **kw)
    self.conv2 = conv(64, 128, kernel_size=5, stride=2, rngs=rngs, **kw)
    self.conv3 = conv(128, 256, kernel_size=5, stride=2, rngs=rngs, **kw)
    self.conv_redir = conv(256, 32, kernel_size=1, rngs=rngs, **kw)
    # 32 redirected channels + 21*21 correlation channels.
    self.conv3_1 = conv(473, 256, rngs=rngs, **kw)
    self.conv4 = conv(256, 512, stride=2, rngs=rngs, **kw)
    self.conv4_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv5 = conv(512, 512, stride=2, rngs=rngs, **kw)
    self.conv5_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv6 = conv(512, 1024, stride=2, rngs=rngs, **kw)
    self.conv6_1 = conv(1024, 1024, rngs=rngs, **kw)
    self._init_decoder(inter_conv=False, upsample_bias=True, rngs=rngs, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    n = x.shape[0]
    # The two streams share conv1-3: run them as one batch of 2N.
    both = jnp.concatenate([x[..., :3], x[..., 3:]], axis=0)
    out_conv2 = self.conv2(self.conv1(both))
    out_conv3 = self.conv3(out_conv2)
    out_conv2a, out_conv3a, out_conv3b = out_conv2[:n], out_conv3[:n], out_conv3[n:]
    corr = kernels.correlation(out_conv3a, out_conv3b, pad_size=20, kernel_size=1,
                               max_displacement=20, stride1=1, stride2=2)
    in_conv3_1 = _cat(self.conv_redir(out_conv3a), leaky_relu(corr))
    out_conv3_1 = self.conv3_1(in_conv3_1)
    out_conv4 = self.conv4_1(self.conv4(out_conv3_1))
    out_conv5 = self.conv5_1(self.conv5(out_conv4))
    out_conv6 = self.conv6_1(self.conv6(out_conv5))
    return self._decode(out_conv6, out_conv5, out_conv4, out_conv3_1, out_conv2a)


class FlowNetS(_FlowNetDecoder):
  """FlowNetS (batchNorm=False, input_channels=12 in FlowNet2). Output flow2 (N, H/4, W/4, 2)."""

  def __init__(self, *, input_channels: int = 12, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.conv1 = conv(input_channels, 64, kernel_size=7, stride=2, rngs=rngs, **kw)
    self.conv2 = conv(64, 128, kernel_size=5, stride=2, rngs=rngs, **kw)
    self.conv3 = conv(128, 256, kernel_size=5, stride=2, rngs=rngs, **kw)
    self.conv3_1 = conv(256, 256, rngs=rngs, **kw)
    self.conv4 = conv(256, 512, stride=2, rngs=rngs, **kw)
    self.conv4_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv5 = conv(512, 512, stride=2, rngs=rngs, **kw)
    self.conv5_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv6 = conv(512, 1024, stride=2, rngs=rngs, **kw)
    self.conv6_1 = conv(1024, 1024, rngs=rngs, **kw)
    # FlowNetS's flow upsamplers have no bias (unlike C, SD and fusion).
    self._init_decoder(inter_conv=False, upsample_bias=False, rngs=rngs, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    out_conv2 = self.conv2(self.conv1(x))
    out_conv3 = self.conv3_1(self.conv3(out_conv2))
    out_conv4 = self.conv4_1(self.conv4(out_conv3))
    out_conv5 = self.conv5_1(self.conv5(out_conv4))
    out_conv6 = self.conv6_1(self.conv6(out_conv5))
    return self._decode(out_conv6, out_conv5, out_conv4, out_conv3, out_conv2)


class FlowNetSD(_FlowNetDecoder):
  """FlowNetSD (small displacement, batchNorm=False). Input (N, H, W, 6); output flow2."""

  def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.conv0 = conv(6, 64, rngs=rngs, **kw)
    self.conv1 = conv(64, 64, stride=2, rngs=rngs, **kw)
    self.conv1_1 = conv(64, 128, rngs=rngs, **kw)
    self.conv2 = conv(128, 128, stride=2, rngs=rngs, **kw)
    self.conv2_1 = conv(128, 128, rngs=rngs, **kw)
    self.conv3 = conv(128, 256, stride=2, rngs=rngs, **kw)
    self.conv3_1 = conv(256, 256, rngs=rngs, **kw)
    self.conv4 = conv(256, 512, stride=2, rngs=rngs, **kw)
    self.conv4_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv5 = conv(512, 512, stride=2, rngs=rngs, **kw)
    self.conv5_1 = conv(512, 512, rngs=rngs, **kw)
    self.conv6 = conv(512, 1024, stride=2, rngs=rngs, **kw)
    self.conv6_1 = conv(1024, 1024, rngs=rngs, **kw)
    self._init_decoder(inter_conv=True, upsample_bias=True, rngs=rngs, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    out_conv1 = self.conv1_1(self.conv1(self.conv0(x)))
    out_conv2 = self.conv2_1(self.conv2(out_conv1))
    out_conv3 = self.conv3_1(self.conv3(out_conv2))
    out_conv4 = self.conv4_1(self.conv4(out_conv3))
    out_conv5 = self.conv5_1(self.conv5(out_conv4))
    out_conv6 = self.conv6_1(self.conv6(out_conv5))
    return self._decode(out_conv6, out_conv5, out_conv4, out_conv3, out_conv2)


class FlowNetFusion(nnx.Module):
  """FlowNetFusion (batchNorm=False): fuses the SD and S2 flows. Input (N, H, W, 11) -> flow0."""

  def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.conv0 = conv(11, 64, **kw)
    self.conv1 = conv(64, 64, stride=2, **kw)
    self.conv1_1 = conv(64, 128, **kw)
    self.conv2 = conv(128, 128, stride=2, **kw)
    self.conv2_1 = conv(128, 128, **kw)
    self.deconv1 = deconv(128, 32, **kw)
    self.deconv0 = deconv(162, 16, **kw)
    self.inter_conv1 = i_conv(162, 32, **kw)
    self.inter_conv0 = i_conv(82, 16, **kw)
    self.predict_flow2 = predict_flow(128, **kw)
    self.predict_flow1 = predict_flow(32, **kw)
    self.predict_flow0 = predict_flow(16, **kw)
    self.upsampled_flow2_to_1 = conv_transpose_4x4(2, 2, **kw)
    self.upsampled_flow1_to_0 = conv_transpose_4x4(2, 2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    out_conv0 = self.conv0(x)
    out_conv1 = self.conv1_1(self.conv1(out_conv0))
    out_conv2 = self.conv2_1(self.conv2(out_conv1))
    flow2 = self.predict_flow2(out_conv2)
    concat1 = _cat(out_conv1, self.deconv1(out_conv2), self.upsampled_flow2_to_1(flow2))
    flow1 = self.predict_flow1(self.inter_conv1(concat1))
    concat0 = _cat(out_conv0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1))
    return self.predict_flow0(self.inter_conv0(concat0))
