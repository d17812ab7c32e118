"""Segmenting a video file frame by frame into overlay and colour-mask videos.

Frames are streamed: one is decoded, sent to the device, and the previous one's prediction is
fetched and encoded meanwhile, so at most two frames are in memory and host decoding/encoding
overlaps device work. The outputs keep the source's frame rate and size.

A video that ends before the frame count its container declares (a truncated copy or download)
is still segmented up to its last decodable frame; `SegmentedVideo.problem` then says so with
both counts, and the caller decides whether that fails the run (`data.on_bad_input`).
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Callable, Iterable, Iterator, TypeVar

from absl import logging
import cv2
import numpy as np
import tqdm

from jaxseg.data import pictures
from jaxseg.evaluation import class_share as class_share_lib

T = TypeVar("T")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 25.0


def is_video(path: str | pathlib.Path) -> bool:
  return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
  """RGB frames of a video file, with its fps, size and (container-reported) frame count."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"video {self.path} does not exist")
    self._cap = cv2.VideoCapture(str(self.path))
    if not self._cap.isOpened():
      raise ValueError(f"cannot open video {self.path}: unreadable or an unsupported codec")
    fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
      logging.warning("video %s reports no frame rate; writing at %.0f fps", self.path,
                      DEFAULT_FPS)
      fps = DEFAULT_FPS
    self.fps = fps
    self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    self.frames_read = 0

  def __iter__(self) -> Iterator[np.ndarray]:
    while True:
      ok, frame = self._cap.read()
      if not ok:
        break
      self.frames_read += 1
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if self.frames_read == 0:
      raise ValueError(f"video {self.path}: no frame could be decoded (corrupt file or "
                       "unsupported codec)")

  def shortfall(self) -> str | None:
    """Why the decoded frames fall short of the declared count; None when they do not.

    Call after iterating. Containers without a stored count (0) are never short.
    """
    if self.frames_read >= self.frame_count:
      return None
    return (f"video ended after {self.frames_read} of the {self.frame_count} frames its "
            "container declares (truncated or corrupt file)")

  def close(self) -> None:
    self._cap.release()


@dataclasses.dataclass(frozen=True)
class SegmentedVideo:
  """What `segment_video` wrote; `problem` is set when the source ended early."""
  paths: list[pathlib.Path]
  frames: int
  declared_frames: int
  problem: str | None = None


class VideoWriter:
  """cv2.VideoWriter taking RGB frames; fails loudly when the codec is unavailable."""

  def __init__(self, path: pathlib.Path, fps: float, size_wh: tuple[int, int],
               fourcc: str = "mp4v"):
    if len(fourcc) != 4:
      raise ValueError(f"config.eval.video_fourcc={fourcc!r}: expected 4 characters, e.g. 'mp4v'")
    path.parent.mkdir(parents=True, exist_ok=True)
    self.path = path
    self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size_wh)
    if not self._writer.isOpened():
      raise ValueError(f"cannot write video {path} with codec {fourcc!r} "
                       "(config.eval.video_fourcc); try 'mp4v' (.mp4) or 'MJPG' (.avi)")

  def write(self, rgb: np.ndarray) -> None:
    self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

  def close(self) -> None:
    self._writer.release()


def pipelined(items: Iterable[T], dispatch: Callable[[T], Any],
              emit: Callable[[T, Any], None]) -> None:
  """emit(item, dispatch(item)) for every item, dispatching item i + 1 before emitting item i,
  so the device segments the next image while the host writes the previous one."""
  pending = None
  for item in items:
    handle = dispatch(item)
    if pending is not None:
      emit(*pending)
    pending = (item, handle)
  if pending is not None:
    emit(*pending)


def segment_video(path: str | pathlib.Path, output_dir: str | pathlib.Path, *,
                  dispatch: Callable[[np.ndarray], Any], fetch: Callable[[Any], np.ndarray],
                  colors: np.ndarray, share: class_share_lib.ClassShare | None = None,
                  fourcc: str = "mp4v", alpha: float = 0.5,
                  progress: bool = True) -> SegmentedVideo:
  """Writes <stem>_overlay.mp4 and <stem>_color.mp4 next to each other.

  `dispatch(frame)` starts the segmentation of an RGB frame (e.g. an asynchronous device call)
  and `fetch(handle)` returns its (H, W) train-id map. `share` gets one row per frame. Every
  decodable frame is written even when the video ends early (see `SegmentedVideo.problem`).
  """
  reader = VideoReader(path)
  stem = reader.path.stem
  suffix = ".avi" if fourcc.upper() in ("MJPG", "XVID", "DIVX") else ".mp4"
  out = pathlib.Path(output_dir)
  palette = pictures.palette_of(colors)
  writers: list[VideoWriter] = []
  bar = tqdm.tqdm(total=reader.frame_count or None, desc=stem, unit="frame", disable=not progress)

  def emit(index: int, frame: np.ndarray, handle: Any) -> None:
    if not writers:
      size = (frame.shape[1], frame.shape[0])
      writers.extend([VideoWriter(out / f"{stem}_overlay{suffix}", reader.fps, size, fourcc),
                      VideoWriter(out / f"{stem}_color{suffix}", reader.fps, size, fourcc)])
    pred = fetch(handle)
    if pred.shape != frame.shape[:2]:
      raise ValueError(f"video {reader.path}: prediction {pred.shape} for a frame of "
                       f"{frame.shape[:2]}")
    mask = palette[pred]
    writers[0].write(pictures.blend(frame, mask, alpha))
    writers[1].write(mask)
    if share is not None:
      share.add(f"{stem}#{index:06d}", pred, group=stem)
    bar.update(1)

  try:
    pipelined(enumerate(reader), lambda item: dispatch(item[1]),
              lambda item, handle: emit(*item, handle))
  finally:
    bar.close()
    reader.close()
    for writer in writers:
      writer.close()
  return SegmentedVideo([w.path for w in writers], reader.frames_read, reader.frame_count,
                        reader.shortfall())
