"""TensorBoard event files through tensorboardX (a maintained writer that needs no TensorFlow).

`SummaryWriter` keeps jaxseg's small interface (`scalars`, `image`, `flush`, `close`) over
`tensorboardX.SummaryWriter`; `read_scalars` reads one event file back without TensorBoard
(tests, scripts). Images are PNG-encoded with OpenCV, which jaxseg already needs, so the
writer does not depend on Pillow (tensorboardX's own `add_image` does).
"""
from __future__ import annotations

import itertools
import os
import pathlib
import struct
import sys
from types import ModuleType
from typing import Any, Mapping

import cv2
import numpy as np

_WRITER_IDS = itertools.count()


def _tensorboardx() -> ModuleType:
  """tensorboardX, imported without PyTorch when PyTorch is not loaded yet.

  tensorboardX imports torch whenever it is installed (7-8 s here) only to accept torch
  tensors, which jaxseg never passes; hiding torch for the duration of the import makes it
  fall back to numpy. A process that already imported torch keeps it.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return tensorboardX


def encode_png(image: np.ndarray) -> bytes:
  """An RGB (H, W, 3) or grey (H, W) uint8 array as PNG bytes."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
      image.ndim == 3 and image.shape[2] != 3):
    raise ValueError(f"TensorBoard image: expected uint8 (H, W, 3) or (H, W), got "
                     f"{image.dtype}{image.shape}")
  data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
  ok, png = cv2.imencode(".png", np.ascontiguousarray(data))
  if not ok:
    raise ValueError(f"TensorBoard image: OpenCV could not encode {image.shape}")
  return png.tobytes()


class SummaryWriter:
  """Scalars and images into `logdir/events.out.tfevents.<time>.<host>.<pid>[.<n>]`.

  `purge_step`: on a resumed run, TensorBoard hides what an earlier run logged at steps
  >= purge_step (the steps done again).
  """

  def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None,
               flush_secs: int = 30):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    # tensorboardX names files by second and host and opens them with "wb": the pid and a
    # per-process count keep two writers (two runs, two processes) from truncating each other.
    n = next(_WRITER_IDS)
    suffix = f".{os.getpid()}" + (f".{n}" if n else "")
    self._writer = _tensorboardx().SummaryWriter(
        logdir=str(self.logdir), purge_step=purge_step, flush_secs=flush_secs,
        filename_suffix=suffix)
    from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    self._summary_pb2 = summary_pb2

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._writer.add_scalar(tag, float(value), int(step))

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Logs each value under its own tag, then flushes (a live TensorBoard sees them)."""
    for tag, value in values.items():
      self.scalar(tag, value, step)
    self.flush()

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    """One RGB (H, W, 3) or grey (H, W) uint8 picture."""
    height, width = image.shape[:2]
    pb = self._summary_pb2
    picture = pb.Summary.Image(height=int(height), width=int(width),
                               colorspace=3 if np.ndim(image) == 3 else 1,
                               encoded_image_string=encode_png(image))
    summary = pb.Summary(value=[pb.Summary.Value(tag=tag, image=picture)])
    self._writer.file_writer.add_summary(summary, int(step))

  def images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
    """Logs each picture under its tag, then flushes."""
    for tag, picture in pictures.items():
      self.image(tag, picture, step)
    self.flush()

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _records(data: bytes, path: Any) -> list[bytes]:
  """The payloads of a TFRecord stream, every CRC checked."""
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top
  out, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    if len(header) < 8 or len(data) < pos + 12:
      raise ValueError(f"{path}: truncated TFRecord at byte {pos}")
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    record = data[pos + 12:pos + 12 + length]
    tail = data[pos + 12 + length:pos + 16 + length]
    if len(record) < length or len(tail) < 4:
      raise ValueError(f"{path}: truncated TFRecord at byte {pos}")
    if header_crc != masked_crc32c(header) or struct.unpack("<I", tail)[0] != masked_crc32c(
        record):
      raise ValueError(f"{path}: corrupt TFRecord at byte {pos}")
    out.append(record)
    pos += 16 + length
  return out


def read_scalars(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """Reads back {tag: [(step, value), ...]} from one event file, checking every CRC."""
  _tensorboardx()
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for record in _records(pathlib.Path(path).read_bytes(), path):
    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
      if value.WhichOneof("value") == "simple_value":
        out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return out
