"""Optical-flow providers for SDCNet and for flow-only label propagation.

Every provider follows FlowNet2's convention: `provider(first, second)` takes two (N, H, W, 3)
batches of frames (BGR, float or uint8 values in [0, 255], as `cv2.imread` gives them and as the
original feeds the nets) and returns the flow (N, H, W, 2), channel 0 = dx, 1 = dy, defined on
`first`: `second` sampled at (x + dx, y + dy) approximates `first` at (x, y), i.e.
`resample2d(second, flow) ~ first`. SDCNet's input flow of pair i is `provider(frames[i + 1],
frames[i])` (see `pair_flows`).

  * `FlowNet2Flow`: the converted FlowNet2 (jitted; H and W multiples of 64).
  * `DISFlow`: OpenCV's DIS optical flow (`cv2.DISOpticalFlow_create`) on the grey frames, on
    the host; any size, no weights. A drop-in for users without FlowNet2 weights. SDCNet was
    trained on FlowNet2 flows, so a pre-trained SDCNet fed DIS flows sees out-of-distribution
    inputs; the flow-only propagation (warping the label with the provider's flow) does not
    depend on that.
"""
from __future__ import annotations

import threading
from typing import Protocol, Sequence

import cv2
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
FLOW_SOURCES = ("flownet2", "dis")

ArrayLike = np.ndarray | jax.Array


class FlowProvider(Protocol):
  """flow(first, second): (N, H, W, 2) on `first`, pointing into `second`."""
  name: str
  needs_multiple_of_64: bool

  def __call__(self, first: ArrayLike, second: ArrayLike) -> ArrayLike:
    ...


def _to_gray_uint8(frame: np.ndarray) -> np.ndarray:
  frame = np.clip(np.asarray(frame, np.float32), 0, 255).astype(np.uint8)
  return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


class DISFlow:
  """OpenCV DIS optical flow, one frame pair at a time on the host.

  `cv2.DISOpticalFlow.calc(I0, I1)` returns a flow on I0 with I0(x) ~ I1(x + flow(x)), which is
  FlowNet2's convention with I0 = first, I1 = second. A cv2 DIS object must not be used by two
  threads at once (it corrupts the flow or crashes), so each thread gets its own.
  """
  name = "dis"
  needs_multiple_of_64 = False

  def __init__(self, preset: str = "medium"):
    if preset not in DIS_PRESETS:
      raise ValueError(f"flow.dis_preset={preset!r}; expected one of {sorted(DIS_PRESETS)}")
    self.preset = preset
    self._local = threading.local()

  def _dis(self) -> cv2.DISOpticalFlow:
    if not hasattr(self._local, "dis"):
      self._local.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
    return self._local.dis

  def __call__(self, first: ArrayLike, second: ArrayLike) -> np.ndarray:
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.ndim != 4 or first.shape[-1] != 3:
      raise ValueError(f"DISFlow: expected two (N, H, W, 3) frame batches of one shape, got "
                       f"{first.shape} and {second.shape}")
    out = np.empty(first.shape[:3] + (2,), np.float32)
    dis = self._dis()
    for i in range(first.shape[0]):
      out[i] = dis.calc(_to_gray_uint8(first[i]), _to_gray_uint8(second[i]), None)
    return out


class FlowNet2Flow:
  """A loaded FlowNet2 module as a provider (one jitted call per batch)."""
  name = "flownet2"
  needs_multiple_of_64 = True

  def __init__(self, flownet2: nnx.Module):
    graphdef, state = nnx.split(flownet2)
    self._state = state

    @jax.jit
    def run(state, first, second):
      return nnx.merge(graphdef, state)(first, second)

    self._run = run

  def __call__(self, first: ArrayLike, second: ArrayLike) -> jax.Array:
    return self._run(self._state, jnp.asarray(first, jnp.float32),
                     jnp.asarray(second, jnp.float32))


def pair_flows(provider: FlowProvider, frames: Sequence[ArrayLike]) -> list[ArrayLike]:
  """SDCNet's input flows: [provider(frames[i + 1], frames[i]) for each consecutive pair].

  All pairs go through the provider as one batch, as SDCNet2D.interframe_optical_flow does.
  """
  if len(frames) < 2:
    raise ValueError(f"pair_flows: need at least two frames, got {len(frames)}")
  xp = jnp if isinstance(frames[0], jax.Array) else np
  firsts = xp.concatenate(list(frames[1:]), axis=0)
  seconds = xp.concatenate(list(frames[:-1]), axis=0)
  flows = provider(firsts, seconds)
  n = frames[0].shape[0]
  return [flows[i * n:(i + 1) * n] for i in range(len(frames) - 1)]


def make_flow_provider(source: str, *, flownet2: nnx.Module | None = None,
                       dis_preset: str = "medium") -> FlowProvider:
  """`flow.source` -> provider: 'flownet2' (needs the loaded module) or 'dis'."""
  if source == "dis":
    return DISFlow(dis_preset)
  if source == "flownet2":
    if flownet2 is None:
      raise ValueError("flow.source='flownet2' needs flow.flownet2_checkpoint (the original "
                       "FlowNet2_checkpoint.pth.tar or its converted orbax directory); without "
                       "FlowNet2 weights use flow.source='dis'")
    return FlowNet2Flow(flownet2)
  raise ValueError(f"flow.source={source!r}; expected one of {FLOW_SOURCES}")
