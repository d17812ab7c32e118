"""SDCNet2D / SDCNet2DRecon (NVIDIA semantic-segmentation `sdcnet/models/sdc_net2d.py`), NNX, NHWC.

SDCNet predicts a flow that warps frame t onto the next frame from the frames and the FlowNet2
flows between consecutive frames; `sdc_aug.py` uses `SDCNet2DRecon` to propagate labels: the label
of frame t is warped with nearest-neighbour sampling.

Frames are passed as a sequence (list, tuple or stacked array) of (N, H, W, 3) float arrays in
[0, rgb_max], oldest first, as the original's `input_dict['image']` list. With
`sequence_length=2` (the original's default):
  * `SDCNet2D` takes [t-1, t] (optionally followed by the target t+1, which it ignores): the net
    sees frames t-1, t and one flow; it warps frame t.
  * `SDCNet2DRecon` takes [t-1, t, t+1]: the net sees all three frames and two flows; it warps
    frame t (the middle one) towards t+1.
"""
from __future__ import annotations

from typing import Any, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import kernels
from jaxseg.sdcnet.flownet2 import FlowNet2
from jaxseg.sdcnet.flownet2 import check_size
from jaxseg.sdcnet.flownet_parts import conv
from jaxseg.sdcnet.flownet_parts import conv2d
from jaxseg.sdcnet.flownet_parts import deconv

# Constants registered as buffers by the original (published checkpoints carry them too).
FLOW_MEAN = (-0.94427323, -1.23077035)
FLOW_STD = (13.77204132, 7.47463894)
RGB_MEAN = (106.7747911, 96.13649598, 76.61428884)  # a buffer, but unused by the forward pass

# Training-loss weights of SDCNet2D.forward: tot = 0.7 color + 0.2 gradient + 0.1 smoothness.
LOSS_WEIGHTS = {"color": 0.7, "color_gradient": 0.2, "flow_smoothness": 0.1}

Frames = Sequence[jax.Array] | jax.Array


class Buffer(nnx.Variable):
  """A non-trainable constant of the torch module (`register_buffer`): flow_mean, flow_std, ..."""


# nnx filter for what SDCNet trains: its own Params; FlowNet2 is frozen (requires_grad=False).
TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("flownet2")))


class SDCNet2D(nnx.Module):
  """SDCNet2D(rgb_max, sequence_length) with its frozen FlowNet2(batchNorm=False) at `flownet2`."""

  _recon = False

  def __init__(self, *, sequence_length: int = 2, rgb_max: float = 255.0, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if sequence_length < 2:
      raise ValueError(f"{type(self).__name__}: sequence_length must be >= 2, got "
                       f"{sequence_length}")
    # SDCNet2DRecon increments args.sequence_length before building the layers.
    self.sequence_length = sequence_length + int(self._recon)
    self.rgb_max = float(rgb_max)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    n = self.sequence_length
    in_ch = n * 3 + (n - 1) * 2
    # The original halves FlowNetS's widths (factor = 2).
    self.conv1 = conv(in_ch, 32, kernel_size=7, stride=2, **kw)
    self.conv2 = conv(32, 64, kernel_size=5, stride=2, **kw)
    self.conv3 = conv(64, 128, kernel_size=5, stride=2, **kw)
    self.conv3_1 = conv(128, 128, **kw)
    self.conv4 = conv(128, 256, stride=2, **kw)
    self.conv4_1 = conv(256, 256, **kw)
    self.conv5 = conv(256, 256, stride=2, **kw)
    self.conv5_1 = conv(256, 256, **kw)
    self.conv6 = conv(256, 512, stride=2, **kw)
    self.conv6_1 = conv(512, 512, **kw)
    self.deconv5 = deconv(512, 256, **kw)
    self.deconv4 = deconv(512, 128, **kw)
    self.deconv3 = deconv(384, 64, **kw)
    self.deconv2 = deconv(192, 32, **kw)
    self.deconv1 = deconv(96, 16, **kw)
    self.deconv0 = deconv(48, 8, **kw)
    self.final_flow = conv2d(in_ch + 8, 2, **kw)
    self.flownet2 = FlowNet2(rgb_max=rgb_max, **kw)
    self.flow_mean = Buffer(jnp.asarray(FLOW_MEAN, dtype=param_dtype))
    self.flow_std = Buffer(jnp.asarray(FLOW_STD, dtype=param_dtype))
    self.rgb_mean = Buffer(jnp.asarray(RGB_MEAN, dtype=param_dtype))

  # -- inputs ---------------------------------------------------------------------------------

  def split_frames(self, frames: Frames) -> tuple[list[jax.Array], jax.Array, jax.Array | None]:
    """(network input frames, frame to warp, target frame or None), as `prepare_inputs`."""
    frames = [frames[i] for i in range(len(frames))]
    n = self.sequence_length
    name = type(self).__name__
    if self._recon:
      if len(frames) != n:
        raise ValueError(f"{name}: expected {n} frames (t-1, t, t+1), got {len(frames)}")
      return frames, frames[-2], frames[-1]
    if len(frames) == n:
      return frames, frames[-1], None
    if len(frames) == n + 1:
      return frames[:-1], frames[-2], frames[-1]
    raise ValueError(f"{name}: expected {n} input frames, optionally followed by the target "
                     f"frame, got {len(frames)}")

  def flows(self, frames: Frames) -> list[jax.Array]:
    """FlowNet2 flows between consecutive input frames: pair i warps frame i onto frame i+1.

    Returns `sequence_length - 1` arrays (N, H, W, 2) (Recon: 2). All pairs run as one batch.
    FlowNet2 is frozen, so no gradient flows through it.
    """
    return self._flows_with_intermediates(frames)[0]

  def _flows_with_intermediates(self, frames: Frames
                                ) -> tuple[list[jax.Array], dict[str, list[jax.Array]]]:
    images, _, _ = self.split_frames(frames)
    pairs = len(images) - 1
    firsts = jnp.concatenate(images[1:], axis=0)
    seconds = jnp.concatenate(images[:-1], axis=0)
    out, inter = jax.lax.stop_gradient(
        self.flownet2.forward_with_intermediates(firsts, seconds))
    inter = {k: list(jnp.split(v, pairs, axis=0)) for k, v in inter.items()}
    return list(jnp.split(out, pairs, axis=0)), inter

  def network_input(self, frames: Frames, flows: Sequence[jax.Array]) -> jax.Array:
    """What the original feeds to `conv1`: (N, H, W, 5n - 2), flows first, then images.

    Flows are normalised by (f - flow_mean) / (3 flow_std); images by (x - m) / rgb_max with m the
    per-sample, per-channel mean over all input frames and pixels (not the rgb_mean buffer).
    Channels are interleaved as the pre-trained models expect: (dx_0, dx_1, ..., dy_0, dy_1, ...)
    and (c0 f0, c0 f1, ..., c1 f0, ...).
    """
    images, _, _ = self.split_frames(frames)
    n = self.sequence_length
    if len(flows) != n - 1:
      raise ValueError(f"{type(self).__name__}: expected {n - 1} flows, got {len(flows)}")
    check_size(images[0].shape[1], images[0].shape[2], where=type(self).__name__)
    flows = [(f - self.flow_mean[...]) / (3 * self.flow_std[...]) for f in flows]
    stacked = jnp.stack(images, axis=-1)  # (N, H, W, C, T)
    rgb_mean = jnp.mean(stacked, axis=(1, 2, 4), keepdims=True)
    stacked = (stacked - rgb_mean) / self.rgb_max
    b, h, w = stacked.shape[:3]
    images_in = stacked.reshape(b, h, w, -1)  # channel-major, frame-minor
    flows_in = jnp.stack(flows, axis=-1).reshape(b, h, w, -1)
    return jnp.concatenate([flows_in, images_in], axis=-1)

  def network_output(self, frames: Frames, flows: Sequence[jax.Array]) -> jax.Array:
    """Predicted flow (N, H, W, 2) in pixels: 3 * flow_std * final_flow + flow_mean."""
    x = self.network_input(frames, flows)
    out_conv1 = self.conv1(x)
    out_conv2 = self.conv2(out_conv1)
    out_conv3 = self.conv3_1(self.conv3(out_conv2))
    out_conv4 = self.conv4_1(self.conv4(out_conv3))
    out_conv5 = self.conv5_1(self.conv5(out_conv4))
    out_conv6 = self.conv6_1(self.conv6(out_conv5))
    concat5 = jnp.concatenate([out_conv5, self.deconv5(out_conv6)], axis=-1)
    concat4 = jnp.concatenate([out_conv4, self.deconv4(concat5)], axis=-1)
    concat3 = jnp.concatenate([out_conv3, self.deconv3(concat4)], axis=-1)
    concat2 = jnp.concatenate([out_conv2, self.deconv2(concat3)], axis=-1)
    concat1 = jnp.concatenate([out_conv1, self.deconv1(concat2)], axis=-1)
    concat0 = jnp.concatenate([x, self.deconv0(concat1)], axis=-1)
    final_flow = self.final_flow(concat0)
    return 3 * self.flow_std[...] * final_flow + self.flow_mean[...]

  def predict(self, frames: Frames, label: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """(image_pred, label_pred, flow_pred) as forward() computes them.

    image_pred: bilinear Resample2d of frame t (N, H, W, 3); label_pred: nearest Resample2d of
    `label` ((N, H, W, 1) or (N, H, W), label ids of frame t) as float (N, H, W, 1), or None;
    flow_pred: (N, H, W, 2) in pixels.
    """
    return self.predict_with_intermediates(frames, label)[:3]

  def predict_with_intermediates(self, frames: Frames, label: jax.Array | None = None
                                 ) -> tuple[jax.Array, jax.Array | None, jax.Array, dict[str, Any]]:
    """`predict` plus a dict of what led to it, for inspection and parity checks.

    The dict holds `flows` (the FlowNet2 flows, list per pair) and FlowNet2's raw sub-network
    outputs (`flownetc_flow2`, ...: lists per pair, see FlowNet2.forward_with_intermediates).
    """
    _, last_image, _ = self.split_frames(frames)
    flows, aux = self._flows_with_intermediates(frames)
    flow_pred = self.network_output(frames, flows)
    image_pred = kernels.resample2d(last_image, flow_pred, mode="bilinear")
    label_pred = None
    if label is not None:
      if label.ndim == 3:
        label = label[..., None]
      label_pred = kernels.resample2d(label.astype(flow_pred.dtype), flow_pred, mode="nearest")
    return image_pred, label_pred, flow_pred, dict(aux, flows=flows)

  def __call__(self, frames: Frames, label: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    return self.predict(frames, label)


class SDCNet2DRecon(SDCNet2D):
  """SDCNet2DRecon: consumes [t-1, t, t+1] (sequence_length + 1 frames) and warps frame t."""

  _recon = True


def _l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a - b))


def reconstruction_loss(image_pred: jax.Array, target: jax.Array, flow_pred: jax.Array, *,
                        rgb_max: float = 255.0) -> dict[str, jax.Array]:
  """SDCNet's training losses (forward() of sdc_net2d.py), all L1 means, NHWC inputs.

  color = L1(image_pred / rgb_max, target / rgb_max); color_gradient = L1 of the absolute
  horizontal, plus vertical, finite differences (unnormalised intensities); flow_smoothness = L1
  between horizontally, plus vertically, adjacent flow vectors; tot = 0.7 color + 0.2
  color_gradient + 0.1 flow_smoothness.
  """
  def grads(x):
    return jnp.abs(x[:, :, 1:] - x[:, :, :-1]), jnp.abs(x[:, 1:] - x[:, :-1])

  px, py = grads(image_pred)
  tx, ty = grads(target)
  losses = {
      "color": _l1(image_pred / rgb_max, target / rgb_max),
      "color_gradient": _l1(px, tx) + _l1(py, ty),
      "flow_smoothness": (_l1(flow_pred[:, :, 1:], flow_pred[:, :, :-1])
                          + _l1(flow_pred[:, 1:], flow_pred[:, :-1])),
  }
  losses["tot"] = sum(LOSS_WEIGHTS[k] * losses[k] for k in LOSS_WEIGHTS)
  return losses


def as_frames(array: np.ndarray | jax.Array) -> jax.Array:
  """Torch-layout frames (T, N, 3, H, W) -> (T, N, H, W, 3), e.g. for the fixtures' frames.npy."""
  return jnp.transpose(jnp.asarray(array), (0, 1, 3, 4, 2))
