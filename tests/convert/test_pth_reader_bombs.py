"""Memory bombs in `.pth` files: refused with one line naming the tensor, in bounded memory.

The files are written here byte by byte (protocol-2 pickles as torch.save writes them), so the
tests need no torch. Each would allocate 128 MiB to 1 TiB if the reader trusted it.
"""
import pathlib
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from jaxseg.convert.pth_reader import OversizedTensorError
from jaxseg.convert.pth_reader import PthFormatError
from jaxseg.convert.pth_reader import load_pth

_PEAK_LIMIT = 100 * 2**20  # Refusing any of these files may allocate at most this much.
_MAGIC = 0x1950a86a20f9469cfc6c


def _int(value: int) -> bytes:
  if 0 <= value < 2**31:
    return b"J" + struct.pack("<i", value)
  raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
  return b"\x8a" + bytes([len(raw)]) + raw  # LONG1: Python ints of any size.


def _str(text: str) -> bytes:
  data = text.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def _ints(values) -> bytes:
  return b"(" + b"".join(_int(v) for v in values) + b"t"


def _state_dict_pickle(tensors: dict, numel: int, legacy: bool) -> bytes:
  """{key: float32 tensor (size, stride) over storage '0' of `numel` elements}."""
  items = b""
  for key, (size, stride) in tensors.items():
    pid = (b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu")
           + _int(numel) + (b"N" if legacy else b"") + b"tQ")
    items += (_str(key) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _int(0)
              + _ints(size) + _ints(stride) + b"\x89ccollections\nOrderedDict\n)RtR")
  return b"\x80\x02}(" + items + b"u."


def _write_zip(path: pathlib.Path, data_pkl: bytes, storage: bytes = b"",
               deflated_zeros: tuple[str, int] | None = None) -> pathlib.Path:
  stored = zipfile.ZIP_STORED  # As torch.save writes every record.
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    z.writestr("archive/byteorder", b"little", compress_type=stored)
    if deflated_zeros is None or deflated_zeros[0] != "archive/data.pkl":
      z.writestr("archive/data.pkl", data_pkl, compress_type=stored)
    if deflated_zeros is None:
      z.writestr("archive/data/0", storage, compress_type=stored)
      return path
    name, nbytes = deflated_zeros
    chunk = bytes(1 << 20)
    with z.open(name, "w") as f:
      for _ in range(nbytes // len(chunk)):
        f.write(chunk)
  return path


def _write_legacy(path: pathlib.Path, data_pkl: bytes, numel: int) -> pathlib.Path:
  header = b"".join(pickle.dumps(x, protocol=2) for x in
                    (_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}))
  path.write_bytes(header + data_pkl + pickle.dumps(["0"], protocol=2)
                   + struct.pack("<q", numel) + bytes(4 * numel))
  return path


def _refusal(path: pathlib.Path) -> tuple[str, int]:
  """The refusal message and the peak traced memory (numpy buffers included) while refusing."""
  tracemalloc.start()
  try:
    with pytest.raises(OversizedTensorError) as info:
      load_pth(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert isinstance(info.value, PthFormatError) and isinstance(info.value, ValueError)
  return str(info.value), peak


_STRIDE0 = {"conv.weight": ((1024, 1024, 256), (0, 0, 0))}  # 1 GiB from one float.
_HUGE = {"fc.weight": ((2**40, 2**40), (0, 0))}  # 16 YiB: no overflow, no MemoryError.


@pytest.mark.parametrize("case", ["stride0_zip", "stride0_legacy", "huge_zip", "huge_legacy",
                                  "past_end_zip"])
def test_views_are_checked_before_materialising(tmp_path, case):
  kind, fmt = case.rsplit("_", 1)
  tensors = {"stride0": _STRIDE0, "huge": _HUGE,
             "past_end": {"bn.bias": ((2**30,), (1,))}}[kind]
  pkl = _state_dict_pickle(tensors, numel=1, legacy=fmt == "legacy")
  path = tmp_path / f"{case}.pth"
  if fmt == "zip":
    _write_zip(path, pkl, storage=bytes(4))
  else:
    _write_legacy(path, pkl, numel=1)
  message, peak = _refusal(path)
  key = next(iter(tensors))
  assert f"tensor '{key}'" in message and str(path) in message and "\n" not in message
  assert ("past the end" if kind == "past_end" else "stride 0 or overlapping") in message
  assert peak < _PEAK_LIMIT, peak


def test_storage_shared_by_many_views_is_refused(tmp_path):
  numel = 1 << 18  # 1 MiB of storage, viewed whole 200 times: 200 MiB.
  tensors = {f"layer{i}.weight": ((numel,), (1,)) for i in range(200)}
  path = _write_zip(tmp_path / "reuse.pth", _state_dict_pickle(tensors, numel, legacy=False),
                    storage=bytes(4 * numel))
  message, peak = _refusal(path)
  assert "tensor 'layer" in message and "shared by too many views" in message
  assert peak < _PEAK_LIMIT, peak


@pytest.mark.parametrize("record", ["archive/data/0", "archive/data.pkl"])
def test_deflated_records_are_bounded(tmp_path, record):
  nbytes = (128 if record.endswith("/0") else 16) << 20
  numel = nbytes // 4
  path = _write_zip(tmp_path / "deflated.pth",
                    _state_dict_pickle({"w": ((numel,), (1,))}, numel, legacy=False),
                    deflated_zeros=(record, nbytes))
  assert path.stat().st_size < nbytes // 100  # A genuine zip bomb...
  message, peak = _refusal(path)
  assert record in message and "16x" in message and "\n" not in message
  if record.endswith("/0"):
    assert "tensor 'w'" in message
  assert peak < _PEAK_LIMIT, peak


def test_small_expansions_and_views_still_load(tmp_path):
  # An expanded bias (stride 0) within the slack, and a transposed view: as torch writes them.
  tensors = {"expanded": ((64, 4), (0, 1)), "transposed": ((2, 2), (1, 2))}
  path = _write_zip(tmp_path / "ok.pth", _state_dict_pickle(tensors, 4, legacy=False),
                    storage=np.arange(4, dtype=np.float32).tobytes())
  got = load_pth(path)
  np.testing.assert_array_equal(got["expanded"], np.tile(np.arange(4.0), (64, 1)))
  np.testing.assert_array_equal(got["transposed"], [[0.0, 2.0], [1.0, 3.0]])
