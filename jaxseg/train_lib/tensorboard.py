"""TensorBoard event files without TensorFlow.

An event file is a TFRecord stream of serialized `tensorflow.Event` protos. Only scalar summaries
are written, which needs a handful of protobuf fields, so they are encoded by hand here instead of
pulling in TensorFlow or tensorboardX.
"""
from __future__ import annotations

import os
import pathlib
import socket
import struct
import time
from typing import Iterator, Mapping

_CRC32C_POLY = 0x82F63B78


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  value &= (1 << 64) - 1
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
  # Summary.Value{tag=1, simple_value=2 (float32)}; Event{wall_time=1, step=2, summary=5}.
  summary_value = _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
  summary = _field_bytes(1, summary_value)
  return (_varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) +
          _varint(int(step)) + _field_bytes(5, summary))


def _version_event(wall_time: float) -> bytes:
  return (_varint(1 << 3 | 1) + struct.pack("<d", wall_time) +
          _field_bytes(3, b"brain.Event:2"))


def _record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data +
          struct.pack("<I", _masked_crc(data)))


class SummaryWriter:
  """Appends scalar summaries to `logdir/events.out.tfevents.*`."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
    self.path = self.logdir / name
    self._file = open(self.path, "ab")
    self._file.write(_record(_version_event(now)))
    self._file.flush()

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._file.write(_record(_scalar_event(tag, float(value), step, time.time())))

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    for tag, value in values.items():
      self.scalar(tag, value, step)
    self.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  shift = value = 0
  while True:
    b = buf[pos]
    pos += 1
    value |= (b & 0x7F) << shift
    if not b & 0x80:
      return value, pos
    shift += 7


def _parse_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire == 5:
      value, pos = buf[pos:pos + 4], pos + 4
    elif wire == 2:
      size, pos = _read_varint(buf, pos)
      value, pos = buf[pos:pos + size], pos + size
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    yield number, wire, value


def read_scalars(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """Reads back {tag: [(step, value), ...]} from one event file, checking every CRC."""
  data = pathlib.Path(path).read_bytes()
  out: dict[str, list[tuple[int, float]]] = {}
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    record = data[pos + 12:pos + 12 + length]
    (record_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
    if header_crc != _masked_crc(header) or record_crc != _masked_crc(record):
      raise ValueError(f"{path}: corrupt TFRecord at byte {pos}")
    pos += 16 + length
    step, summary = 0, None
    for number, _, value in _parse_fields(record):
      if number == 2:
        step = value
      elif number == 5:
        summary = value
    if summary is None:
      continue
    for _, _, summary_value in _parse_fields(summary):
      tag, scalar = None, None
      for number, _, value in _parse_fields(summary_value):
        if number == 1:
          tag = value.decode()
        elif number == 2:
          (scalar,) = struct.unpack("<f", value)
      if tag is not None and scalar is not None:
        out.setdefault(tag, []).append((step, scalar))
  return out
