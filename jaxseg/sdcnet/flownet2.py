"""FlowNet2 (flownet2-pytorch `models.py:FlowNet2(batchNorm=False)`) in Flax NNX, NHWC, eval mode.

The stack: FlowNetC on the image pair, FlowNetS twice on (images, warped image, flow, warp
error), FlowNetSD on the pair, and FlowNetFusion on the SD and S2 flows. Kept from the original:
the per-sample, per-channel mean over both frames subtracted before dividing by `rgb_max`;
`div_flow = 20` (C/S flows are multiplied by it, the SD flow is divided by it); the x4 upsampling of
the 1/4-resolution sub-network flows, bilinear with `align_corners=False` for C and S1 and nearest
for S2 and SD. The warps, correlation and channel norm come from `jaxseg.kernels`.
"""
from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import kernels
from jaxseg.sdcnet.flownet_parts import FlowNetC
from jaxseg.sdcnet.flownet_parts import FlowNetFusion
from jaxseg.sdcnet.flownet_parts import FlowNetS
from jaxseg.sdcnet.flownet_parts import FlowNetSD

# Six stride-2 stages followed by skip concatenations in every sub-network.
SIZE_MULTIPLE = 64


def check_size(height: int, width: int, *, where: str) -> None:
  """Raises ValueError unless H and W are positive multiples of 64 (what the nets require)."""
  if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
    raise ValueError(
        f"{where}: input height and width must be positive multiples of {SIZE_MULTIPLE} "
        f"(six stride-2 stages followed by skip concatenations), got {height}x{width}; "
        f"pad or resize the frames first.")


@functools.lru_cache(maxsize=None)
def _linear_taps(n_in: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Indices and weights of torch's bilinear upsampling (align_corners=False) along one axis.

  torch (`area_pixel_compute_source_index`, scale = 1 / scale_factor): src = max(0,
  (dst + 0.5) / factor - 0.5), i0 = floor(src), i1 = min(i0 + 1, n_in - 1), w1 = src - i0,
  w0 = 1 - w1. Computed in float32 as torch does (exact here: multiples of 1/(2*factor)).
  """
  dst = np.arange(n_in * factor, dtype=np.float32)
  scale = np.float32(1.0 / factor)
  src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
  i0 = np.floor(src).astype(np.int32)
  i1 = np.minimum(i0 + 1, n_in - 1).astype(np.int32)
  w1 = (src - i0).astype(np.float32)
  w0 = (np.float32(1) - w1).astype(np.float32)
  return i0, i1, w0, w1


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
  """`nn.Upsample(scale_factor=factor, mode='bilinear')` (align_corners=False) on NHWC."""
  _, h, w, _ = x.shape
  i0, i1, w0, w1 = _linear_taps(w, factor)
  # torch combines the W taps first, then the H taps: h0*(w0*x00 + w1*x01) + h1*(...).
  x = (w0[:, None] * jnp.take(x, i0, axis=2) + w1[:, None] * jnp.take(x, i1, axis=2))
  i0, i1, w0, w1 = _linear_taps(h, factor)
  return (w0[:, None, None] * jnp.take(x, i0, axis=1)
          + w1[:, None, None] * jnp.take(x, i1, axis=1))


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """`nn.Upsample(scale_factor=factor, mode='nearest')` on NHWC: out[y, x] = in[y // f, x // f]."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class FlowNet2(nnx.Module):
  """FlowNet2(batchNorm=False), eval mode.

  Call with two frames `(first, second)`, each (N, H, W, 3) float in [0, rgb_max] (H, W multiples
  of 64). Returns the flow (N, H, W, 2) in pixels, channel 0 = dx, 1 = dy, defined on `first`:
  `second` sampled at (x + dx, y + dy) approximates `first` at (x, y) (torch: input
  `stack([first, second], dim=2)`). The net does not reorder colour channels.
  """

  def __init__(self, *, rgb_max: float = 255.0, div_flow: float = 20.0, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.rgb_max = float(rgb_max)
    self.div_flow = float(div_flow)
    self.flownetc = FlowNetC(**kw)
    self.flownets_1 = FlowNetS(**kw)
    self.flownets_2 = FlowNetS(**kw)
    self.flownets_d = FlowNetSD(**kw)
    self.flownetfusion = FlowNetFusion(**kw)

  def __call__(self, first: jax.Array, second: jax.Array) -> jax.Array:
    return self.forward_with_intermediates(first, second)[0]

  def normalize(self, first: jax.Array, second: jax.Array) -> jax.Array:
    """(N, H, W, 6): both frames minus their joint per-channel mean, over rgb_max."""
    pair = jnp.stack([first, second], axis=1)  # (N, 2, H, W, C)
    rgb_mean = jnp.mean(pair, axis=(1, 2, 3), keepdims=True)
    pair = (pair - rgb_mean) / self.rgb_max
    return jnp.concatenate([pair[:, 0], pair[:, 1]], axis=-1)

  def _warp_error(self, x: jax.Array, flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(second warped onto first, channel norm of first - warped)."""
    warped = kernels.resample2d(x[..., 3:], flow, mode="bilinear")
    return warped, kernels.channel_norm(x[..., :3] - warped)

  def forward_with_intermediates(self, first: jax.Array,
                                 second: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The flow and the raw sub-network outputs (N, H/4, W/4, 2) as the fixtures store them.

    Intermediates: `flownetc_flow2`, `flownets1_flow2`, `flownets2_flow2` (pixels / div_flow),
    `flownetsd_flow2` (pixels * div_flow).
    """
    if first.shape != second.shape or first.ndim != 4:
      raise ValueError(f"FlowNet2: expected two (N, H, W, 3) frames of one shape, got "
                       f"{first.shape} and {second.shape}")
    check_size(first.shape[1], first.shape[2], where="FlowNet2")
    x = self.normalize(first, second)
    div = self.div_flow

    flownetc_flow2 = self.flownetc(x)
    flownetc_flow = upsample_bilinear(flownetc_flow2 * div, 4)
    warped, err = self._warp_error(x, flownetc_flow)
    concat1 = jnp.concatenate([x, warped, flownetc_flow / div, err], axis=-1)

    flownets1_flow2 = self.flownets_1(concat1)
    flownets1_flow = upsample_bilinear(flownets1_flow2 * div, 4)
    warped, err = self._warp_error(x, flownets1_flow)
    concat2 = jnp.concatenate([x, warped, flownets1_flow / div, err], axis=-1)

    flownets2_flow2 = self.flownets_2(concat2)
    flownets2_flow = upsample_nearest(flownets2_flow2 * div, 4)
    norm_flownets2_flow = kernels.channel_norm(flownets2_flow)
    _, err_s2 = self._warp_error(x, flownets2_flow)

    flownetsd_flow2 = self.flownets_d(x)
    flownetsd_flow = upsample_nearest(flownetsd_flow2 / div, 4)
    norm_flownetsd_flow = kernels.channel_norm(flownetsd_flow)
    _, err_sd = self._warp_error(x, flownetsd_flow)

    concat3 = jnp.concatenate([x[..., :3], flownetsd_flow, flownets2_flow, norm_flownetsd_flow,
                               norm_flownets2_flow, err_sd, err_s2], axis=-1)
    flow = self.flownetfusion(concat3)
    intermediates = dict(flownetc_flow2=flownetc_flow2, flownets1_flow2=flownets1_flow2,
                         flownets2_flow2=flownets2_flow2, flownetsd_flow2=flownetsd_flow2)
    return flow, intermediates
