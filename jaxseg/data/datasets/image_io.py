"""Reading images and label maps with OpenCV, with errors that name the file.

Images are read with `cv2.imdecode(np.fromfile(path))` (works for non-ASCII paths) and returned
RGB. EXIF orientation is ignored, as PIL's `Image.open` (used by the original code) does.

Label maps must hold one class id per pixel: grayscale PNGs (8 or 16 bit) or palette PNGs
(Mapillary). OpenCV always expands palette PNGs to colours, so for those we swap the PNG's
palette for an identity ramp (entry i = (i, i, i)) before decoding: the decoded value of every
pixel is then its palette index, exactly as PIL's `np.array(Image.open(path))` gives it.
"""
from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# How far from the end of a file we look for its end marker (files may carry trailing bytes).
_TAIL = 4096


class BadInputError(ValueError):
  """An input file is unreadable, truncated, mismatched or holds invalid label ids.

  Attributes:
    kind: 'unreadable', 'size_mismatch', 'unknown_label_id' or 'not_a_label_map'.
    paths: the file(s) concerned.
  """

  def __init__(self, kind: str, message: str, paths: tuple[str, ...] = ()):
    super().__init__(message)
    self.kind = kind
    self.paths = paths


def read_bytes(path: str) -> np.ndarray:
  """The file's bytes as a uint8 array; BadInputError('unreadable') when it cannot be read."""
  try:
    buf = np.fromfile(path, dtype=np.uint8)
  except (OSError, ValueError) as e:
    raise BadInputError("unreadable", f"cannot read {path}: {e}", (path,)) from None
  if buf.size == 0:
    raise BadInputError("unreadable", f"{path} is empty (0 bytes)", (path,))
  return buf


def _check_complete(buf: np.ndarray, path: str) -> None:
  """Rejects PNG/JPEG files whose end marker is missing (truncated downloads/copies)."""
  head = buf[:8].tobytes()
  tail = buf[-_TAIL:].tobytes()
  if head.startswith(_PNG_SIGNATURE) and b"IEND" not in tail:
    raise BadInputError("unreadable", f"{path} is a truncated PNG (no IEND chunk at its end; "
                        f"{buf.size} bytes)", (path,))
  if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
    raise BadInputError("unreadable", f"{path} is a truncated JPEG (no end-of-image marker; "
                        f"{buf.size} bytes)", (path,))


def _decode(buf: np.ndarray, flags: int, path: str) -> np.ndarray:
  try:
    img = cv2.imdecode(buf, flags)
  except cv2.error as e:
    raise BadInputError("unreadable", f"cannot decode {path}: {e}", (path,)) from None
  if img is None:
    raise BadInputError("unreadable", f"cannot decode {path}: not an image OpenCV can read, "
                        f"or a corrupt/truncated file", (path,))
  return img


def read_image(path: str) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB."""
  buf = read_bytes(path)
  _check_complete(buf, path)
  # IMREAD_COLOR always gives 8-bit BGR (grayscale and 16-bit inputs are converted).
  img = _decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path)
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _png_chunks(data: bytes, path: str):
  pos = len(_PNG_SIGNATURE)
  while pos + 8 <= len(data):
    (length,) = struct.unpack(">I", data[pos:pos + 4])
    ctype = data[pos + 4:pos + 8]
    end = pos + 12 + length
    if end > len(data):
      raise BadInputError("unreadable", f"{path} is a truncated PNG (chunk "
                          f"{ctype!r} runs past the end of the file)", (path,))
    yield ctype, data[pos:end], data[pos + 8:pos + 8 + length]
    pos = end
    if ctype == b"IEND":
      return


def _chunk(ctype: bytes, body: bytes) -> bytes:
  crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
  return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _palette_to_index_png(data: bytes, path: str) -> bytes | None:
  """For a palette PNG, the same PNG with an identity-ramp palette; None for other PNGs."""
  if not data.startswith(_PNG_SIGNATURE):
    return None
  chunks = list(_png_chunks(data, path))
  if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][2]) < 10:
    raise BadInputError("unreadable", f"{path}: malformed PNG (no IHDR chunk)", (path,))
  if chunks[0][2][9] != 3:  # colour type 3 = palette
    return None
  out = [_PNG_SIGNATURE]
  for ctype, raw, body in chunks:
    if ctype == b"PLTE":
      n = len(body) // 3
      out.append(_chunk(b"PLTE", bytes(np.repeat(np.arange(n, dtype=np.uint8), 3))))
    elif ctype != b"tRNS":  # transparency would add an alpha channel; indices need none
      out.append(raw)
  return b"".join(out)


def read_label(path: str) -> np.ndarray:
  """Reads a label map as (H, W) integer class ids (uint8, or uint16 for 16-bit PNGs)."""
  buf = read_bytes(path)
  _check_complete(buf, path)
  indexed = _palette_to_index_png(buf.tobytes(), path)
  if indexed is not None:
    lab = _decode(np.frombuffer(indexed, np.uint8), cv2.IMREAD_UNCHANGED, path)
    return np.ascontiguousarray(lab[:, :, 0] if lab.ndim == 3 else lab)
  lab = _decode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION, path)
  if lab.ndim == 3:
    # Grayscale saved as RGB(A) is fine; real colour-coded labels are not class ids.
    if lab.shape[2] >= 3 and (np.array_equal(lab[:, :, 0], lab[:, :, 1])
                              and np.array_equal(lab[:, :, 0], lab[:, :, 2])):
      lab = lab[:, :, 0]
    else:
      raise BadInputError(
          "not_a_label_map", f"{path} is a {lab.shape[2]}-channel colour image; label files "
          f"must hold one class id per pixel (grayscale or palette PNG), not colours "
          f"(for Cityscapes use *_labelIds.png, not *_color.png)", (path,))
  if lab.dtype not in (np.uint8, np.uint16):
    raise BadInputError("not_a_label_map", f"{path}: label pixel type {lab.dtype}; expected "
                        f"8- or 16-bit unsigned class ids", (path,))
  return np.ascontiguousarray(lab)


def file_stem(path: str) -> str:
  """'dir/a.b.png' -> 'a.b'."""
  return os.path.splitext(os.path.basename(path))[0]
