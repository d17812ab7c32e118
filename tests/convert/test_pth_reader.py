"""Tests for the torch-free, allow-listed `.pth` reader."""
import collections
import io
import json
import os
import pathlib
import zipfile

import ml_dtypes
import numpy as np
import pytest

from jaxseg.convert.pth_reader import PthFormatError
from jaxseg.convert.pth_reader import UnsafePickleError
from jaxseg.convert.pth_reader import load_pth

_MARKER = pathlib.Path("/tmp/jaxseg_pwned_marker")
_BENIGN = ["seg_checkpoint_legacy.pth", "seg_checkpoint_zip.pth", "bare_state_dict_legacy.pth",
           "bare_state_dict_zip.pth", "sdcnet_checkpoint_legacy.pth",
           "flownet2_checkpoint_legacy.pth"]


@pytest.fixture(scope="module")
def pth_dir(reference_dir: pathlib.Path) -> pathlib.Path:
  path = reference_dir / "pth_formats"
  if not (path / "expected.json").is_file():
    pytest.skip(f"pth_formats fixtures not found at {path}")
  return path


@pytest.fixture(scope="module")
def expected(pth_dir: pathlib.Path) -> dict:
  return json.loads((pth_dir / "expected.json").read_text())


def _lookup(obj, path: str):
  """Follows a '/'-joined key path; integer-looking parts also match int keys/list indices."""
  for part in path.split("/"):
    if isinstance(obj, list):
      obj = obj[int(part)]
    elif part in obj:
      obj = obj[part]
    else:
      obj = obj[int(part)]
  return obj


def _tensor_paths(obj, prefix=""):
  if isinstance(obj, np.ndarray):
    yield prefix
  elif isinstance(obj, dict):
    for k, v in obj.items():
      yield from _tensor_paths(v, f"{prefix}/{k}" if prefix else str(k))
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      yield from _tensor_paths(v, f"{prefix}/{i}" if prefix else str(i))


@pytest.mark.parametrize("name", _BENIGN)
def test_benign_files_match_expected(pth_dir, expected, name):
  want = expected[name]
  obj = load_pth(pth_dir / name)
  assert type(obj) is (collections.OrderedDict if want["top_level_type"] == "OrderedDict"
                       else dict)
  assert list(obj) == want["top_level_keys"]
  assert sorted(_tensor_paths(obj)) == sorted(want["tensors"])
  for path, spec in want["tensors"].items():
    arr = _lookup(obj, path)
    assert isinstance(arr, np.ndarray), path
    assert arr.dtype == np.dtype(spec["dtype"]), path
    assert list(arr.shape) == spec["shape"], path
    assert arr.flags.c_contiguous and arr.flags.owndata, path
    assert arr.astype(np.float64).ravel().tolist() == spec["values"], path
    assert float(arr.astype(np.float64).sum()) == pytest.approx(spec["sum"], rel=1e-12, abs=1e-12)
  for path, spec in want["scalars"].items():
    value = _lookup(obj, path)
    if "python_type" in spec:
      assert f"{type(value).__module__}.{type(value).__qualname__}" == spec["python_type"], path
      assert value == spec["value"], path
    else:  # An optimizer param_group: compared as a whole (lists for tuples as in JSON).
      as_json = json.loads(json.dumps(value, default=float))
      assert as_json == spec, path


def test_optimizer_state_has_integer_keys(pth_dir):
  obj = load_pth(pth_dir / "seg_checkpoint_zip.pth")
  state = obj["optimizer"]["state"]
  assert state and all(type(k) is int for k in state)
  assert sorted(state) == obj["optimizer"]["param_groups"][0]["params"]


@pytest.mark.parametrize("name", ["malicious_zip.pth", "malicious_legacy.pth"])
def test_malicious_files_are_refused(pth_dir, name):
  _MARKER.unlink(missing_ok=True)
  with pytest.raises(UnsafePickleError) as info:
    load_pth(pth_dir / name)
  message = str(info.value)
  assert "posix.system" in message and name in message
  assert isinstance(info.value, ValueError)
  assert not _MARKER.exists()


def test_storage_load_from_bytes_is_refused():
  # `torch.storage._load_from_bytes` would call torch.load on attacker-controlled bytes.
  payload = b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00C\x00\x85R."
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/data.pkl", payload)
  buf.seek(0)
  with pytest.raises(UnsafePickleError, match=r"torch\.storage\._load_from_bytes"):
    load_pth(buf)


@pytest.mark.parametrize("name", ["seg_checkpoint_legacy.pth", "seg_checkpoint_zip.pth"])
def test_truncated_file_names_the_path(pth_dir, tmp_path, name):
  data = (pth_dir / name).read_bytes()
  for cut in (len(data) // 3, len(data) - 7):
    path = tmp_path / f"cut_{cut}_{name}"
    path.write_bytes(data[:cut])
    with pytest.raises(PthFormatError) as info:
      load_pth(path)
    assert str(path) in str(info.value)


def test_garbage_and_missing_files(tmp_path):
  path = tmp_path / "garbage.pth"
  path.write_bytes(b"this is not a checkpoint at all")
  with pytest.raises(PthFormatError, match="not a PyTorch checkpoint"):
    load_pth(path)
  corrupt = tmp_path / "corrupt.pth"
  corrupt.write_bytes(b"\x80\x02" + os.urandom(64))
  with pytest.raises(PthFormatError, match=str(corrupt)):
    load_pth(corrupt)
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    load_pth(tmp_path / "nope.pth")


def test_out_of_bounds_tensor_is_refused(pth_dir, tmp_path):
  # Same zip, but conv1.weight claims more elements than its storage holds.
  src = pth_dir / "bare_state_dict_zip.pth"
  out = tmp_path / "oob.pth"
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
    for item in zin.infolist():
      data = zin.read(item)
      if item.filename.endswith("/data/0"):
        data = data[:len(data) // 2]
      zout.writestr(item, data)
  with pytest.raises(PthFormatError, match=str(out)):
    load_pth(out)


def test_big_endian_zip(tmp_path):
  torch = pytest.importorskip("torch")
  values = {"a": torch.randn(3, 2).t(), "b": torch.arange(-3, 3), "c": torch.randn(4).bfloat16(),
            "d": torch.randn(2, dtype=torch.complex64)}
  little = tmp_path / "little.pth"
  torch.save(values, little)
  want = load_pth(little)
  itemsize = {str(i): want[k].dtype for i, k in enumerate(values)}  # Storage keys '0', '1', ...
  big = tmp_path / "big.pth"
  with zipfile.ZipFile(little) as zin, zipfile.ZipFile(big, "w") as zout:
    for item in zin.infolist():
      data = zin.read(item)
      key = item.filename.rsplit("/data/", 1)[-1] if "/data/" in item.filename else None
      if key in itemsize:
        data = np.frombuffer(data, dtype=itemsize[key]).byteswap().tobytes()
      elif item.filename.endswith("/byteorder"):
        data = b"big"
      zout.writestr(item, data)
  got = load_pth(big)
  for k in values:
    assert got[k].dtype == want[k].dtype
    np.testing.assert_array_equal(got[k].view(np.uint8), want[k].view(np.uint8), err_msg=k)


def test_numpy_dtype_singletons_untouched(pth_dir):
  before = np.dtype("float64").byteorder
  load_pth(pth_dir / "seg_checkpoint_legacy.pth")
  assert np.dtype("float64").byteorder == before


# --- round trip with torch (test-only dependency) -----------------------------------------


def _torch_objects(torch):
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(5, 7, generator=gen)
  shared = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  with_attr = torch.full((2,), 7.0)
  with_attr.note = "pickled through torch._tensor._rebuild_from_type_v2"
  return {
      "with_attr": with_attr,
      "f32": base,
      "f16": torch.randn(3, 4, generator=gen).half(),
      "bf16": torch.randn(3, 4, generator=gen).bfloat16(),
      "f64": torch.randn(2, 3, generator=gen).double(),
      "i64": torch.arange(-5, 7, dtype=torch.int64).reshape(3, 4),
      "i32": torch.arange(6, dtype=torch.int32),
      "u8": torch.arange(250, 256, dtype=torch.uint8),
      "i8": torch.arange(-3, 3, dtype=torch.int8),
      "bool": torch.tensor([True, False, True]),
      "scalar0d": torch.tensor(3712, dtype=torch.int64),
      "f0d": torch.tensor(1.5),
      "empty": torch.zeros(0, 3),
      "transposed": base.t(),
      "sliced": base[1:4, ::2],
      "strided_view": shared[:, 1::3],
      "shared_a": shared,
      "shared_b": shared[2],
      "expanded": torch.randn(3, 1, generator=gen).expand(3, 4),
      "param": torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
      "nested": [torch.ones(2), (torch.zeros(1, dtype=torch.int64), "x"), {3: torch.eye(2)}],
      "odict": collections.OrderedDict(a=torch.ones(1), b=torch.full((2,), 2.0)),
      "size": torch.Size([2, 3]),
      "meta": {"epoch": 3, "lr": 0.1, "name": "x", "flag": None, "np": np.float64(0.25)},
  }


def _to_numpy(torch, t):
  if t.dtype == torch.bfloat16:
    return t.float().numpy().astype(ml_dtypes.bfloat16)
  return t.detach().numpy()


def _assert_same(torch, got, want, path="obj"):
  if isinstance(want, torch.Tensor):
    ref = _to_numpy(torch, want)
    assert isinstance(got, np.ndarray), path
    assert got.dtype == ref.dtype and got.shape == ref.shape, path
    # Bitwise: NaN payloads and -0.0 must survive too.
    as_bytes = lambda a: np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    np.testing.assert_array_equal(as_bytes(got), as_bytes(ref), err_msg=path)
  elif isinstance(want, dict):
    assert type(got) is type(want) and list(got) == list(want), path
    for k in want:
      _assert_same(torch, got[k], want[k], f"{path}/{k}")
  elif isinstance(want, (list, tuple)):
    assert isinstance(got, type(want) if type(want) is not torch.Size else tuple), path
    assert len(got) == len(want), path
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_same(torch, g, w, f"{path}/{i}")
  else:
    assert type(got) is type(want) and got == want, path


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_round_trip(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  objects = _torch_objects(torch)
  path = tmp_path / f"roundtrip_{zip_format}.pth"
  torch.save(objects, path, _use_new_zipfile_serialization=zip_format)
  got = load_pth(path)
  _assert_same(torch, got, objects)
  assert got["bf16"].dtype == ml_dtypes.bfloat16
  assert got["scalar0d"].shape == () and got["scalar0d"] == 3712
  assert got["transposed"].flags.c_contiguous


def test_torch_round_trip_module_state_dict(tmp_path):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  for zip_format in (True, False):
    path = tmp_path / f"sd_{zip_format}.pth"
    torch.save({"state_dict": net.state_dict()}, path, _use_new_zipfile_serialization=zip_format)
    got = load_pth(path)["state_dict"]
    assert isinstance(got, collections.OrderedDict)
    _assert_same(torch, got, net.state_dict())


def test_torch_round_trip_float8(tmp_path):
  torch = pytest.importorskip("torch")
  if not hasattr(torch, "float8_e4m3fn"):
    pytest.skip("torch without float8")
  t = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)
  path = tmp_path / "f8.pth"
  torch.save({"t": t}, path)
  got = load_pth(path)["t"]
  assert got.dtype == ml_dtypes.float8_e4m3fn
  np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())
