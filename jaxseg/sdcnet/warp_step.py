"""One step of label propagation: (frames, image, label at frame t) -> image, label at t + 1.

`sdcnet/sdc_aug.py` propagates with SDCNet2DRecon given the three frames [a, b, c] (c the
frame to predict): FlowNet2 flows of the pairs (b -> a) and (c -> b) go with the frames into the
net, whose flow warps the *image and label of frame b* onto c. At the first step it warps the
real frame b bilinearly; at later steps it warps the previously predicted image with nearest
sampling (it goes through the `label_image` path, `warp_nn`); the label always with nearest.
Predictions are truncated to uint8 (`.astype(np.uint8)`), as the original writes them to disk
and reads them back for the next step.

Methods:
  * 'sdcnet': the above, with flows from any provider (FlowNet2, or DIS as a stand-in);
  * 'flow': no SDCNet, the provider's flow of (c -> b) warps image and label directly (the
    flow-only baseline; with DIS it needs no weights at all).
Inputs whose size is not a multiple of 64 are edge-padded (bottom/right) for the nets and
cropped back.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import kernels
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet.convert_weights import SDCNetBundle
from jaxseg.sdcnet.flownet2 import SIZE_MULTIPLE

METHODS = ("sdcnet", "flow")


def _pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
  if not (ph or pw):
    return x
  pads = [(0, 0), (0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 3)
  return np.pad(x, pads, mode="edge")


def to_uint8(x: jax.Array | np.ndarray) -> np.ndarray:
  """The original's `.astype(np.uint8)` of a prediction in [0, 255]: truncation."""
  return np.clip(np.asarray(x, np.float32), 0, 255).astype(np.uint8)


class Propagator:
  """Callable step: `(frames, image, label, bilinear) -> (image, label)`, all host numpy.

  frames: 3 arrays (N, H, W, 3) BGR in [0, 255] = (a, b, c) above ('flow' uses b and c only);
  image (N, H, W, 3) and label (N, H, W) uint8 at frame b; `bilinear`: warp the image
  bilinearly (the first step) or nearest (later steps). Returns uint8 image and label at c.
  """

  def __init__(self, method: str, provider: flow_providers.FlowProvider,
               bundle: SDCNetBundle | None = None):
    if method not in METHODS:
      raise ValueError(f"propagate.method={method!r}; expected one of {METHODS}")
    if method == "sdcnet" and bundle is None:
      raise ValueError("propagate.method='sdcnet' needs an SDCNet (sdcnet.checkpoint)")
    if bundle is not None and bundle.sequence_length != 2:
      raise ValueError(f"propagation uses three-frame windows (sdcnet.sequence_length=2, as "
                       f"sdc_aug.py); got sequence_length={bundle.sequence_length}")
    self.method = method
    self.provider = provider
    self.bundle = bundle
    self._pad64 = method == "sdcnet" or provider.needs_multiple_of_64
    self._warp = jax.jit(_warp, static_argnames="bilinear")
    if bundle is not None:
      self._params = jax.tree.map(jnp.asarray, bundle.params)
      self._buffers = jax.tree.map(jnp.asarray, bundle.buffers)

      def sdc_flow(params, buffers, frames, flows):
        return bundle.merge(params, buffers).network_output(frames, flows)

      self._sdc_flow = jax.jit(sdc_flow)

  def flow(self, frames: Sequence[np.ndarray]) -> jax.Array:
    """The flow (N, H, W, 2) that warps frame b onto frame c (padded inputs)."""
    if self.method == "flow":
      return jnp.asarray(self.provider(frames[2], frames[1]))
    inputs = self._net_inputs(frames)
    flows = [jnp.asarray(f) for f in flow_providers.pair_flows(self.provider, inputs)]
    return self._sdc_flow(self._params, self._buffers, [jnp.asarray(f) for f in inputs], flows)

  def _net_inputs(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    # SDCNet2DRecon sees all three frames; SDCNet2D sees (a, b) and predicts c.
    # (sequence_length 2 only: longer windows would need more context frames.)
    recon = self.bundle.name == "SDCNet2DRecon"
    return list(frames) if recon else list(frames[:2])

  def __call__(self, frames: Sequence[np.ndarray], image: np.ndarray, label: np.ndarray, *,
               bilinear: bool) -> tuple[np.ndarray, np.ndarray]:
    if len(frames) != 3:
      raise ValueError(f"Propagator: expected 3 frames (a, b, c), got {len(frames)}")
    h, w = image.shape[1:3]
    ph = (-h) % SIZE_MULTIPLE if self._pad64 else 0
    pw = (-w) % SIZE_MULTIPLE if self._pad64 else 0
    frames = [_pad(np.asarray(f, np.float32), ph, pw) for f in frames]
    flow = self.flow(frames)
    image_pred, label_pred = self._warp(
        flow, jnp.asarray(_pad(np.asarray(image, np.float32), ph, pw)),
        jnp.asarray(_pad(np.asarray(label, np.float32), ph, pw)), bilinear=bilinear)
    return (to_uint8(image_pred)[:, :h, :w],
            np.asarray(label_pred).astype(np.uint8)[:, :h, :w])


def _warp(flow: jax.Array, image: jax.Array, label: jax.Array, *, bilinear: bool
          ) -> tuple[jax.Array, jax.Array]:
  image_pred = kernels.resample2d(image, flow, mode="bilinear" if bilinear else "nearest")
  label_pred = kernels.resample2d(label[..., None], flow, mode="nearest")[..., 0]
  return image_pred, label_pred


def step_offsets(n: int, direction: int, first_frame: str = "anchor") -> tuple[int, int, int]:
  """Frame offsets (a, b, c) from the annotated frame t for step n >= 1 of a chain.

  Step 1: (t - d, t, t + d). Step n >= 2: sdc_aug.py's multi_step_augmentation feeds
  (t, t + d(n-1), t + dn), i.e. the first frame stays the annotated one ('anchor'); 'previous'
  uses t + d(n-2) instead, a sliding window.
  """
  d = direction
  if n == 1:
    return (-d, 0, d)
  if first_frame == "anchor":
    return (0, d * (n - 1), d * n)
  if first_frame == "previous":
    return (d * (n - 2), d * (n - 1), d * n)
  raise ValueError(f"propagate.first_frame={first_frame!r}; expected 'anchor' or 'previous'")


def propagate_sequence(step: Propagator, frames: Sequence[np.ndarray], image: np.ndarray,
                       label: np.ndarray, *, steps: int, direction: int,
                       first_frame: str = "anchor", anchor: int | None = None
                       ) -> list[np.ndarray]:
  """Labels propagated from frames[anchor] to anchor + direction * (1..steps), in memory.

  `frames`: the clip as (H, W, 3) BGR arrays; `image`/`label`: the annotated frame's image and
  label (H, W, 3) / (H, W). Needs frames[anchor - direction] for the first step when the method
  is 'sdcnet' (for 'flow', anchor - direction may be out of the clip). Returns `steps` (H, W)
  uint8 labels.
  """
  t = anchor
  img, lab = image[None], label[None]
  out = []
  for n in range(1, steps + 1):
    offs = step_offsets(n, direction, first_frame)
    batch = []
    for o in offs:
      i = t + o
      if 0 <= i < len(frames):
        batch.append(frames[i][None])
      elif step.method == "flow" and o == offs[0]:
        batch.append(frames[t + offs[1]][None])  # unused by the flow-only method
      else:
        raise IndexError(f"frame {i} is outside the clip of {len(frames)} frames")
    if n == 1:
      batch[1] = image[None]
    img, lab = step(batch, img, lab, bilinear=n == 1)
    out.append(lab[0])
  return out
