"""Reads PyTorch `.pth` checkpoints into numpy without torch and without running pickled code.

Both serializations written by `torch.save` are supported:

* legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): five consecutive pickles
  (magic number, protocol version 1001, sys info, the object, the list of storage keys)
  followed by each storage as a little-endian int64 element count and its raw
  little-endian bytes, in the order of the key list;
* zip (torch >= 1.6): `<name>/data.pkl` with storages in `<name>/data/<key>` and the byte
  order in `<name>/byteorder`.

Unpickling goes through `_SafeUnpickler`, which resolves only an allow-list of globals
(tensor-rebuild functions, storage types, `collections.OrderedDict`, numpy scalars) to
inert local replacements; anything else raises `UnsafePickleError` before it can be
called. Tensors come back as owning, C-contiguous numpy arrays (0-d tensors as 0-d
arrays, bfloat16/float8 as `ml_dtypes` arrays); containers as dict/OrderedDict/list/tuple.

Memory stays proportional to the file: before any storage is read or copied, every tensor view
must lie inside its storage, a stride-0 or overlapping view may exceed its storage by at most
1 MiB, all tensors together may materialise at most 4x the storage bytes they use (+16 MiB),
and the zip records read may inflate to at most 16x the file size (+1 MiB). A file breaking
one of these raises `OversizedTensorError` naming the tensor.
"""
import collections
import io
import math
import os
import pickle
import struct
import sys
from typing import Any, BinaryIO, Union
import zipfile

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch storage class name -> element dtype. UntypedStorage holds raw bytes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
# torch dtype attribute name -> numpy dtype (for `_rebuild_tensor_v3`, which names the dtype).
_TORCH_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "int64": np.int64, "int32": np.int32,
    "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}


class PthFormatError(ValueError):
  """The file is not a readable PyTorch checkpoint (corrupt, truncated, unsupported)."""


class UnsafePickleError(PthFormatError):
  """The pickle references a global outside the allow-list; nothing was executed."""


class _Inert:
  """Base of the stand-ins handed to the pickle: a BUILD opcode must not mutate them."""
  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafePickleError(f"BUILD applied to {type(self).__name__}")


class _StorageType(_Inert):
  """Inert stand-in for `torch.<X>Storage`: only carries the element dtype."""
  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: Any):
    self.name, self.dtype = name, np.dtype(dtype)


class _TorchDType(_Inert):
  """Inert stand-in for a `torch.<dtype>` global (argument of `_rebuild_tensor_v3`)."""
  __slots__ = ("dtype",)

  def __init__(self, dtype: Any):
    self.dtype = np.dtype(dtype)


class _TensorMarker(_Inert):
  """Inert stand-in for `torch.Tensor` / `torch.nn.Parameter` in `_rebuild_from_type_v2`."""
  __slots__ = ("name",)

  def __init__(self, name: str):
    self.name = name


class _Root:
  """The bytes of one serialized storage, read after unpickling (zip: once views are checked)."""
  __slots__ = ("key", "nbytes", "itemsize", "data")

  def __init__(self, key: str, nbytes: int, itemsize: int):
    self.key, self.nbytes, self.itemsize, self.data = key, nbytes, itemsize, None


class _StorageRef(_Inert):
  """A typed window (element offset, numel) on a `_Root`; what persistent ids resolve to."""
  __slots__ = ("root", "dtype", "offset", "numel")

  def __init__(self, root: _Root, dtype: np.dtype, offset: int, numel: int):
    self.root, self.dtype, self.offset, self.numel = root, dtype, offset, numel


class _TensorRef(_Inert):
  """A tensor to materialise once all storage bytes are known."""
  __slots__ = ("storage", "dtype", "offset", "size", "stride")

  def __init__(self, storage, dtype, offset, size, stride):
    self.storage, self.dtype, self.offset, self.size, self.stride = (
        storage, dtype, offset, size, stride)


def _int(value: Any, what: str) -> int:
  if type(value) is not int or value < 0:  # bool is excluded on purpose.
    raise PthFormatError(f"{what} must be a non-negative int, got {value!r}")
  return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)):
    raise PthFormatError(f"{what} must be a tuple of ints, got {type(value).__name__}")
  return tuple(_int(v, what) for v in value)


class _SafeUnpickler(pickle.Unpickler):
  """Unpickler that maps allow-listed globals to local inert stand-ins and refuses the rest.

  Allowed, and why each is harmless here:
    torch._utils._rebuild_tensor[_v2|_v3], _rebuild_parameter[_with_state],
    torch._tensor._rebuild_from_type_v2: replaced by methods that only record
      (storage, offset, size, stride) after type checks; torch.Tensor/Parameter are
      markers for the latter.
    torch.<X>Storage, torch.<dtype>: inert dtype tokens (no torch object is built);
      `torch.storage._load_from_bytes` is NOT allowed (it would torch.load raw bytes).
    collections.OrderedDict, set, frozenset, torch.Size (-> tuple): plain containers.
    numpy.[_]core.multiarray.scalar, numpy.dtype, _codecs.encode: replaced by
      checked versions that build a numpy scalar from bytes (no object dtypes).
  The stand-ins are bound methods or `_Inert` objects, so a forged BUILD opcode cannot
  modify module-level state.
  """

  def __init__(self, file: BinaryIO, source: str, storage_loader=None):
    super().__init__(file, encoding="utf-8")
    self._source = source
    self._storage_loader = storage_loader  # callable(pid) -> _StorageRef, or None.
    self._allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
        ("torch", "Size"): tuple,  # torch.Size is a tuple subclass.
        ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): self._rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): self._rebuild_from_type_v2,
        ("torch", "Tensor"): _TensorMarker("torch.Tensor"),
        ("torch._tensor", "Tensor"): _TensorMarker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _TensorMarker("torch.nn.Parameter"),
        ("numpy.core.multiarray", "scalar"): self._numpy_scalar,
        ("numpy._core.multiarray", "scalar"): self._numpy_scalar,
        ("numpy", "dtype"): self._numpy_dtype,
        ("_codecs", "encode"): self._latin1_encode,
    }
    for name, dtype in _STORAGE_DTYPES.items():
      self._allowed[("torch", name)] = _StorageType(name, dtype)
    self._allowed[("torch.storage", "UntypedStorage")] = self._allowed[("torch", "UntypedStorage")]
    for name, dtype in _TORCH_DTYPES.items():
      self._allowed[("torch", name)] = _TorchDType(dtype)

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except (KeyError, TypeError):
      raise UnsafePickleError(
          f"{self._source}: refused to unpickle global {module}.{name}: only tensors, "
          "storages, containers and numpy scalars are allowed in a weights checkpoint "
          "(nothing was executed)") from None

  def persistent_load(self, pid: Any) -> Any:
    if self._storage_loader is None:
      raise PthFormatError(f"{self._source}: unexpected persistent id {pid!r} in a header")
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
      raise PthFormatError(f"{self._source}: unsupported persistent id {pid!r} "
                           "(only storages are supported; whole pickled modules are not)")
    return self._storage_loader(pid)

  def _rebuild_tensor(self, storage, storage_offset, size, stride) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
      raise PthFormatError(f"{self._source}: tensor rebuilt from {type(storage).__name__}, "
                           "not a storage")
    return self._tensor(storage, storage.dtype, storage_offset, size, stride)

  def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                         backward_hooks=None, metadata=None) -> _TensorRef:
    del requires_grad, backward_hooks, metadata  # Autograd state is irrelevant here.
    return self._rebuild_tensor(storage, storage_offset, size, stride)

  def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad,
                         backward_hooks, dtype, metadata=None) -> _TensorRef:
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, _StorageRef) or not isinstance(dtype, _TorchDType):
      raise PthFormatError(f"{self._source}: malformed _rebuild_tensor_v3 arguments")
    # v3 storages are untyped (bytes); offset, size and stride count elements of `dtype`.
    return self._tensor(storage, dtype.dtype, storage_offset, size, stride)

  def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    if not isinstance(data, _TensorRef):
      raise PthFormatError(f"{self._source}: parameter rebuilt from {type(data).__name__}")
    return data

  def _rebuild_from_type_v2(self, func, new_type, args, state):
    del state  # Python attributes set on a tensor subclass: dropped.
    allowed = (self._rebuild_tensor, self._rebuild_tensor_v2, self._rebuild_tensor_v3,
               self._rebuild_parameter)
    if func not in allowed or not isinstance(new_type, _TensorMarker):
      raise PthFormatError(f"{self._source}: unsupported tensor subclass reconstruction")
    return func(*args)

  def _tensor(self, storage, dtype, storage_offset, size, stride) -> _TensorRef:
    offset = _int(storage_offset, "storage offset")
    size = _int_tuple(size, "tensor size")
    stride = _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
      raise PthFormatError(f"{self._source}: tensor size {size} and stride {stride} differ "
                           "in length")
    return _TensorRef(storage, np.dtype(dtype), offset, size, stride)

  def _numpy_scalar(self, dtype: Any, data: Any = None) -> np.generic:
    """Own version of `numpy.core.multiarray.scalar`, refusing object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
      raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} refused")
    if isinstance(data, str):  # Python 2 pickles pass the bytes as a latin-1 str.
      data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
      raise PthFormatError(f"numpy scalar payload for {dtype} is malformed")
    return np.frombuffer(data, dtype=dtype)[0]

  def _numpy_dtype(self, spec: Any, align: bool = False, copy: bool = True) -> np.dtype:
    # Always copy: BUILD calls __setstate__ on it, which must not mutate numpy's singletons.
    del copy
    if not isinstance(spec, str):
      raise UnsafePickleError(f"numpy.dtype({spec!r}) refused: only dtype names are allowed")
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.hasobject:
      raise UnsafePickleError(f"numpy.dtype({spec!r}) refused: object dtype")
    return dtype

  def _latin1_encode(self, obj: Any, encoding: str = "utf-8",
                     errors: str = "strict") -> bytes:
    """`_codecs.encode` as protocol 2 uses it for bytes: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
      raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} refused")
    return obj.encode("latin1")


# What a file may make the reader allocate beyond the bytes it holds (memory-bomb bounds).
_VIEW_SLACK_BYTES = 1 << 20  # A stride-0 / overlapping view may exceed its storage by this.
_REUSE_FACTOR = 4  # All tensors together: at most 4x the storage bytes they use...
_REUSE_SLACK_BYTES = 16 << 20  # ...plus this (views re-reading one storage many times).
_INFLATE_RATIO = 16  # Zip records read may total 16x the file size (deflated records)...
_INFLATE_SLACK_BYTES = 1 << 20  # ...plus this.
_MAX_EMPTY_EXTENT = 1 << 31  # Product of the non-zero sizes of an empty tensor.


class OversizedTensorError(PthFormatError):
  """A tensor would need far more memory than the file holds (a memory bomb): refused before
  any tensor is built."""


def _view_nbytes(ref: _TensorRef) -> int:
  return math.prod(ref.size) * ref.dtype.itemsize


def _view_problem(ref: _TensorRef) -> str | None:
  """Why `ref` may not be materialised (outside its storage, or a memory bomb), else None."""
  storage, itemsize = ref.storage, ref.dtype.itemsize
  window_start = storage.offset * storage.dtype.itemsize
  window_bytes = storage.numel * storage.dtype.itemsize
  if window_start + window_bytes > storage.root.nbytes:
    return (f"storage view (offset {storage.offset}, {storage.numel} elements) lies outside "
            f"storage {storage.root.key!r} ({storage.root.nbytes} bytes)")
  view = f"view (offset {ref.offset}, size {ref.size}, stride {ref.stride})"
  if len(ref.size) > 32:
    return f"{view} has {len(ref.size)} dimensions (at most 32 are supported)"
  if 0 in ref.size:
    extent = math.prod(max(n, 1) for n in ref.size)
    return f"empty {view} is implausibly large" if extent > _MAX_EMPTY_EXTENT else None
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if (last + 1) * itemsize > window_bytes:
    return (f"{view} reads past the end of storage {storage.root.key!r} "
            f"({storage.root.nbytes} bytes)")
  nbytes = _view_nbytes(ref)
  if nbytes > window_bytes + _VIEW_SLACK_BYTES:
    return (f"{view} would materialise {nbytes} bytes from {window_bytes} bytes of storage "
            f"(stride 0 or overlapping; at most {_VIEW_SLACK_BYTES} bytes more are allowed)")
  return None


def _collect_tensors(obj: Any) -> list[tuple[str, _TensorRef, Any]]:
  """(key path, tensor view, object to replace) of every tensor/storage, in traversal order."""
  found: list[tuple[str, _TensorRef, Any]] = []
  seen: set[int] = set()

  def visit(x: Any, path: str) -> None:
    if id(x) in seen:
      return
    seen.add(id(x))
    if isinstance(x, _TensorRef):
      found.append((path, x, x))
    elif isinstance(x, _StorageRef):  # A bare storage: the whole window as a 1-d array.
      found.append((path, _TensorRef(x, x.dtype, 0, (x.numel,), (1,)), x))
    elif isinstance(x, dict):
      for k, v in x.items():
        visit(v, f"{path}/{k}" if path else str(k))
    elif isinstance(x, (list, tuple, set, frozenset)):
      for i, v in enumerate(x):
        visit(v, f"{path}/{i}" if path else str(i))

  visit(obj, "")
  return [(path or "<top level>", ref, x) for path, ref, x in found]


def _check_tensors(tensors: list[tuple[str, _TensorRef, Any]], source: str) -> None:
  """Refuses, naming the tensor, any view outside its storage and any memory bomb."""
  for path, ref, _ in tensors:
    problem = _view_problem(ref)
    if problem:
      raise OversizedTensorError(f"{source}: tensor {path!r}: {problem}")
  roots = {id(ref.storage.root): ref.storage.root.nbytes for _, ref, _ in tensors}
  allowed = _REUSE_FACTOR * sum(roots.values()) + _REUSE_SLACK_BYTES
  total = 0
  for path, ref, _ in tensors:
    total += _view_nbytes(ref)
    if total > allowed:
      raise OversizedTensorError(
          f"{source}: tensor {path!r}: the tensors up to here would materialise {total} bytes "
          f"from {sum(roots.values())} bytes of storage (storages shared by too many views; "
          f"at most {_REUSE_FACTOR}x plus {_REUSE_SLACK_BYTES} bytes are allowed)")


def _materialize_tensor(ref: _TensorRef, big_endian: bool) -> np.ndarray:
  """An owning C-contiguous copy of a view already checked by `_check_tensors`."""
  storage, dtype = ref.storage, ref.dtype
  if 0 in ref.size:
    return np.zeros(ref.size, dtype=dtype)
  start = storage.offset * storage.dtype.itemsize + ref.offset * dtype.itemsize
  view = np.ndarray(ref.size, dtype=dtype, buffer=storage.root.data, offset=start,
                    strides=tuple(s * dtype.itemsize for s in ref.stride))
  out = np.array(view, copy=True, order="C")
  if big_endian != (sys.byteorder == "big"):
    out = out.byteswap()  # Per element (per component for complex), ml_dtypes included.
  return out


def _materialize(obj: Any, source: str, big_endian: bool,
                 table: "_ZipStorageTable | None" = None) -> Any:
  """Replaces every `_TensorRef`/`_StorageRef` in the unpickled tree by a numpy array.

  Every view is checked (bounds, memory-bomb limits) before any storage is read or copied;
  `table`, when given, reads the storages that have no bytes yet (zip records) on demand.
  """
  tensors = _collect_tensors(obj)
  _check_tensors(tensors, source)
  if table is not None:
    for path, ref, _ in tensors:
      table.claim(ref.storage.root, path)
  arrays: dict[int, np.ndarray] = {}
  for path, ref, original in tensors:
    root = ref.storage.root
    if root.data is None and table is not None:
      table.load(root, path)
    if root.data is None:
      raise PthFormatError(f"{source}: no data for storage {root.key!r} (tensor {path!r})")
    arrays[id(original)] = _materialize_tensor(ref, big_endian)
  memo: dict[int, Any] = {}

  def visit(x: Any) -> Any:
    if id(x) in arrays:
      return arrays[id(x)]
    if id(x) in memo:
      return memo[id(x)]
    if isinstance(x, dict):  # Includes OrderedDict; updated in place (keeps cycles).
      memo[id(x)] = x
      for k in list(x):
        x[k] = visit(x[k])
      return x
    if isinstance(x, list):
      memo[id(x)] = x
      x[:] = [visit(v) for v in x]
      return x
    if isinstance(x, tuple):
      result = tuple(visit(v) for v in x)
    elif isinstance(x, (set, frozenset)):
      result = type(x)(visit(v) for v in x)
    else:
      return x
    memo[id(x)] = result
    return result

  return visit(obj)


class _StorageTable:
  """Resolves storage persistent ids to `_StorageRef`s, sharing one `_Root` per key."""

  def __init__(self, source: str, legacy: bool):
    self.source, self.legacy, self.roots = source, legacy, {}

  def __call__(self, pid: tuple) -> _StorageRef:
    fields = pid[1:]
    if self.legacy:
      if len(fields) != 5:
        raise PthFormatError(f"{self.source}: malformed legacy storage id {pid!r}")
      storage_type, key, _, numel, view = fields
    else:
      if len(fields) != 4:
        raise PthFormatError(f"{self.source}: malformed storage id {pid!r}")
      (storage_type, key, _, numel), view = fields, None
    if not isinstance(storage_type, _StorageType):
      raise PthFormatError(f"{self.source}: storage id names {storage_type!r}, not a storage")
    if isinstance(key, bytes):
      key = key.decode("ascii")
    if not isinstance(key, str):
      raise PthFormatError(f"{self.source}: storage key {key!r} is not a string")
    numel = _int(numel, "storage numel")
    dtype = storage_type.dtype
    if key not in self.roots:
      self.roots[key] = self.new_root(key, numel * dtype.itemsize, dtype.itemsize)
    root = self.roots[key]
    if view is None:
      return _StorageRef(root, dtype, 0, root.nbytes // dtype.itemsize)
    _, offset, view_numel = view  # Legacy storage view: (view key, offset, numel).
    return _StorageRef(root, dtype, _int(offset, "view offset"), _int(view_numel, "view size"))

  def new_root(self, key: str, nbytes: int, itemsize: int) -> _Root:
    return _Root(key, nbytes, itemsize)


def _load_legacy(f: BinaryIO, source: str, file_end: int) -> Any:
  header = _SafeUnpickler(f, source)
  if header.load() != _LEGACY_MAGIC:
    raise PthFormatError(f"{source}: invalid magic number: not a PyTorch checkpoint")
  protocol = _SafeUnpickler(f, source).load()
  if protocol != _LEGACY_PROTOCOL:
    raise PthFormatError(f"{source}: unsupported legacy protocol version {protocol!r}")
  sys_info = _SafeUnpickler(f, source).load()
  if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
    raise PthFormatError(f"{source}: written on a big-endian machine: unsupported")
  table = _StorageTable(source, legacy=True)
  result = _SafeUnpickler(f, source, table).load()
  keys = _SafeUnpickler(f, source).load()
  if not isinstance(keys, list) or set(keys) != set(table.roots):
    raise PthFormatError(f"{source}: storage key list does not match the storages used")
  for key in keys:
    root = table.roots[key]
    count_bytes = f.read(8)
    if len(count_bytes) != 8:
      raise PthFormatError(f"{source}: truncated before the data of storage {key!r}")
    (count,) = struct.unpack("<q", count_bytes)
    if count * root.itemsize != root.nbytes:
      raise PthFormatError(f"{source}: storage {key!r} holds {count} elements, "
                           f"expected {root.nbytes // root.itemsize}")
    if root.nbytes > file_end - f.tell():  # Checked first: never allocate past the file.
      raise PthFormatError(f"{source}: truncated in the data of storage {key!r}")
    root.data = f.read(root.nbytes)
  return _materialize(result, source, big_endian=False)


class _ZipStorageTable(_StorageTable):
  """Storage table over `<prefix>/data/<key>` records, read only once every view is checked.

  The records read may inflate to at most `_INFLATE_RATIO` times the file size in total, so a
  deflated record (torch.save never compresses) cannot expand a small file into gigabytes.
  """

  def __init__(self, source: str, archive: zipfile.ZipFile, prefix: str, file_size: int):
    super().__init__(source, legacy=False)
    self.archive, self.prefix = archive, prefix
    self.budget = _INFLATE_RATIO * file_size + _INFLATE_SLACK_BYTES
    self.records: dict[str, zipfile.ZipInfo] = {}
    self.claimed: set[str] = set()

  def new_root(self, key: str, nbytes: int, itemsize: int) -> _Root:
    if "/" in key or key in ("", ".", ".."):
      raise PthFormatError(f"{self.source}: invalid storage key {key!r}")
    name = f"{self.prefix}/data/{key}"
    try:
      info = self.archive.getinfo(name)
    except KeyError:
      raise PthFormatError(f"{self.source}: missing storage record {name}") from None
    if info.file_size < nbytes:
      raise PthFormatError(f"{self.source}: storage record {name} has {info.file_size} "
                           f"bytes, expected {nbytes}")
    self.records[key] = info
    return _Root(key, nbytes, itemsize)

  def spend(self, nbytes: int, what: str) -> None:
    """Counts `nbytes` about to be read against the inflation budget; refuses past it."""
    self.budget -= nbytes
    if self.budget < 0:
      raise OversizedTensorError(
          f"{self.source}: {what} would inflate the file past {_INFLATE_RATIO}x its size "
          f"(compressed zip records; torch.save writes them stored): refused")

  def claim(self, root: _Root, path: str) -> None:
    """Reserves the bytes of `root`'s record before anything is read."""
    if root.key not in self.claimed:
      self.claimed.add(root.key)
      info = self.records[root.key]
      self.spend(root.nbytes, f"tensor {path!r}: storage record {info.filename} "
                 f"({root.nbytes} bytes from {info.compress_size} compressed)")

  def load(self, root: _Root, path: str) -> None:
    info = self.records[root.key]
    with self.archive.open(info) as member:
      root.data = member.read(root.nbytes)
    if len(root.data) != root.nbytes:
      raise PthFormatError(f"{self.source}: storage record {info.filename} of tensor {path!r} "
                           "is truncated")


def _read_record(archive: zipfile.ZipFile, table: _ZipStorageTable, name: str) -> bytes:
  info = archive.getinfo(name)
  table.spend(info.file_size, f"record {name} ({info.file_size} bytes from "
              f"{info.compress_size} compressed)")
  return archive.read(info)


def _load_zip(f: BinaryIO, source: str, file_size: int) -> Any:
  with zipfile.ZipFile(f) as archive:
    names = archive.namelist()
    pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pkls) != 1:
      raise PthFormatError(f"{source}: zip archive without a single <name>/data.pkl record "
                           "(not written by torch.save)")
    prefix = pkls[0][:-len("/data.pkl")]
    if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
      raise PthFormatError(f"{source}: TorchScript archive (torch.jit.save) is not supported")
    table = _ZipStorageTable(source, archive, prefix, file_size)
    big_endian = False
    if f"{prefix}/byteorder" in names:
      order = _read_record(archive, table, f"{prefix}/byteorder")
      if order not in (b"little", b"big"):
        raise PthFormatError(f"{source}: unknown byte order {order[:16]!r}")
      big_endian = order == b"big"
    pickled = _read_record(archive, table, pkls[0])
    result = _SafeUnpickler(io.BytesIO(pickled), source, table).load()
    del pickled
    return _materialize(result, source, big_endian, table)


def load_pth(path: Union[str, os.PathLike, BinaryIO]) -> Any:
  """Loads a `torch.save` file (legacy or zip) as nested containers of numpy arrays.

  Args:
    path: file path, or a seekable binary file object.

  Returns:
    The saved object with every tensor replaced by a C-contiguous numpy array of the
    tensor's dtype and shape (bfloat16/float8 via ml_dtypes); numpy scalars stay numpy
    scalars, other Python values are returned as saved.

  Raises:
    FileNotFoundError: `path` does not exist.
    UnsafePickleError: the pickle references a global outside the allow-list.
    OversizedTensorError: a tensor would need far more memory than the file holds.
    PthFormatError: the file is truncated, corrupt or not a PyTorch checkpoint.
  """
  if isinstance(path, (str, os.PathLike)):
    source = os.fspath(path)
    if not os.path.isfile(source):
      raise FileNotFoundError(f"checkpoint not found: {source}")
    with open(source, "rb") as f:
      return _load_stream(f, source)
  return _load_stream(path, getattr(path, "name", "<stream>"))


def _load_stream(f: BinaryIO, source: str) -> Any:
  start = f.tell()
  file_end = f.seek(0, io.SEEK_END)
  f.seek(start)
  head = f.read(512)
  f.seek(start)
  try:
    if head.startswith(b"PK\x03\x04"):
      return _load_zip(f, source, file_end - start)
    if len(head) >= 262 and head[257:262] == b"ustar":
      raise PthFormatError(f"{source}: legacy tar format (torch <= 0.3) is not supported")
    if head[:1] == b"\x80":
      return _load_legacy(f, source, file_end)
    raise PthFormatError(f"{source}: not a PyTorch checkpoint (starts with {head[:8]!r})")
  except PthFormatError as e:
    if str(e).startswith(source):
      raise
    raise type(e)(f"{source}: {e}") from e
  except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile,
          struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError,
          OverflowError, RecursionError, UnicodeDecodeError) as e:
    raise PthFormatError(f"{source}: corrupt or truncated PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from e
