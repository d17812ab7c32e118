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
"""
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from typing import Any, BinaryIO, Union

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch storage class name -> element dtype. UntypedStorage holds raw bytes.
_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'ComplexFloatStorage': np.complex64,
    'ComplexDoubleStorage': np.complex128, 'UntypedStorage': np.uint8,
}
# torch dtype attribute name -> numpy dtype (for `_rebuild_tensor_v3`, which names the dtype).
_TORCH_DTYPES = {
    'float32': np.float32, 'float64': np.float64, 'float16': np.float16,
    'bfloat16': ml_dtypes.bfloat16, 'int64': np.int64, 'int32': np.int32,
    'int16': np.int16, 'int8': np.int8, 'uint8': np.uint8,
    'uint16': np.uint16, 'uint32': np.uint32, 'uint64': np.uint64, 'bool': np.bool_,
    'complex64': np.complex64, 'complex128': np.complex128,
    'float8_e4m3fn': ml_dtypes.float8_e4m3fn, 'float8_e5m2': ml_dtypes.float8_e5m2,
    'float8_e4m3fnuz': ml_dtypes.float8_e4m3fnuz, 'float8_e5m2fnuz': ml_dtypes.float8_e5m2fnuz,
}


class PthFormatError(ValueError):
  """The file is not a readable PyTorch checkpoint (corrupt, truncated, unsupported)."""


class UnsafePickleError(PthFormatError):
  """The pickle references a global outside the allow-list; nothing was executed."""


class _Inert:
  """Base of the stand-ins handed to the pickle: a BUILD opcode must not mutate them."""
  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafePickleError(f'BUILD applied to {type(self).__name__}')


class _StorageType(_Inert):
  """Inert stand-in for `torch.<X>Storage`: only carries the element dtype."""
  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype: Any):
    self.name, self.dtype = name, np.dtype(dtype)


class _TorchDType(_Inert):
  """Inert stand-in for a `torch.<dtype>` global (argument of `_rebuild_tensor_v3`)."""
  __slots__ = ('dtype',)

  def __init__(self, dtype: Any):
    self.dtype = np.dtype(dtype)


class _TensorMarker(_Inert):
  """Inert stand-in for `torch.Tensor` / `torch.nn.Parameter` in `_rebuild_from_type_v2`."""
  __slots__ = ('name',)

  def __init__(self, name: str):
    self.name = name


class _Root:
  """The bytes of one serialized storage (filled after unpickling for legacy files)."""
  __slots__ = ('key', 'nbytes', 'itemsize', 'data')

  def __init__(self, key: str, nbytes: int, itemsize: int):
    self.key, self.nbytes, self.itemsize, self.data = key, nbytes, itemsize, None


class _StorageRef(_Inert):
  """A typed window (element offset, numel) on a `_Root`; what persistent ids resolve to."""
  __slots__ = ('root', 'dtype', 'offset', 'numel')

  def __init__(self, root: _Root, dtype: np.dtype, offset: int, numel: int):
    self.root, self.dtype, self.offset, self.numel = root, dtype, offset, numel


class _TensorRef(_Inert):
  """A tensor to materialise once all storage bytes are known."""
  __slots__ = ('storage', 'dtype', 'offset', 'size', 'stride')

  def __init__(self, storage, dtype, offset, size, stride):
    self.storage, self.dtype, self.offset, self.size, self.stride = (
        storage, dtype, offset, size, stride)


def _int(value: Any, what: str) -> int:
  if type(value) is not int or value < 0:  # bool is excluded on purpose.
    raise PthFormatError(f'{what} must be a non-negative int, got {value!r}')
  return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)):
    raise PthFormatError(f'{what} must be a tuple of ints, got {type(value).__name__}')
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
    super().__init__(file, encoding='utf-8')
    self._source = source
    self._storage_loader = storage_loader  # callable(pid) -> _StorageRef, or None.
    self._allowed = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset,
        ('__builtin__', 'set'): set, ('__builtin__', 'frozenset'): frozenset,
        ('torch', 'Size'): tuple,  # torch.Size is a tuple subclass.
        ('torch._utils', '_rebuild_tensor'): self._rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): self._rebuild_tensor_v2,
        ('torch._utils', '_rebuild_tensor_v3'): self._rebuild_tensor_v3,
        ('torch._utils', '_rebuild_parameter'): self._rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): self._rebuild_parameter,
        ('torch._tensor', '_rebuild_from_type_v2'): self._rebuild_from_type_v2,
        ('torch', 'Tensor'): _TensorMarker('torch.Tensor'),
        ('torch._tensor', 'Tensor'): _TensorMarker('torch.Tensor'),
        ('torch.nn.parameter', 'Parameter'): _TensorMarker('torch.nn.Parameter'),
        ('numpy.core.multiarray', 'scalar'): self._numpy_scalar,
        ('numpy._core.multiarray', 'scalar'): self._numpy_scalar,
        ('numpy', 'dtype'): self._numpy_dtype,
        ('_codecs', 'encode'): self._latin1_encode,
    }
    for name, dtype in _STORAGE_DTYPES.items():
      self._allowed[('torch', name)] = _StorageType(name, dtype)
    self._allowed[('torch.storage', 'UntypedStorage')] = self._allowed[('torch', 'UntypedStorage')]
    for name, dtype in _TORCH_DTYPES.items():
      self._allowed[('torch', name)] = _TorchDType(dtype)

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except (KeyError, TypeError):
      raise UnsafePickleError(
          f'{self._source}: refused to unpickle global {module}.{name}: only tensors, '
          'storages, containers and numpy scalars are allowed in a weights checkpoint '
          '(nothing was executed)') from None

  def persistent_load(self, pid: Any) -> Any:
    if self._storage_loader is None:
      raise PthFormatError(f'{self._source}: unexpected persistent id {pid!r} in a header')
    if not isinstance(pid, tuple) or not pid or pid[0] not in ('storage', b'storage'):
      raise PthFormatError(f'{self._source}: unsupported persistent id {pid!r} '
                           '(only storages are supported; whole pickled modules are not)')
    return self._storage_loader(pid)

  def _rebuild_tensor(self, storage, storage_offset, size, stride) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
      raise PthFormatError(f'{self._source}: tensor rebuilt from {type(storage).__name__}, '
                           'not a storage')
    return self._tensor(storage, storage.dtype, storage_offset, size, stride)

  def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                         backward_hooks=None, metadata=None) -> _TensorRef:
    del requires_grad, backward_hooks, metadata  # Autograd state is irrelevant here.
    return self._rebuild_tensor(storage, storage_offset, size, stride)

  def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad,
                         backward_hooks, dtype, metadata=None) -> _TensorRef:
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, _StorageRef) or not isinstance(dtype, _TorchDType):
      raise PthFormatError(f'{self._source}: malformed _rebuild_tensor_v3 arguments')
    # v3 storages are untyped (bytes); offset, size and stride count elements of `dtype`.
    return self._tensor(storage, dtype.dtype, storage_offset, size, stride)

  def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    if not isinstance(data, _TensorRef):
      raise PthFormatError(f'{self._source}: parameter rebuilt from {type(data).__name__}')
    return data

  def _rebuild_from_type_v2(self, func, new_type, args, state):
    del state  # Python attributes set on a tensor subclass: dropped.
    allowed = (self._rebuild_tensor, self._rebuild_tensor_v2, self._rebuild_tensor_v3,
               self._rebuild_parameter)
    if func not in allowed or not isinstance(new_type, _TensorMarker):
      raise PthFormatError(f'{self._source}: unsupported tensor subclass reconstruction')
    return func(*args)

  def _tensor(self, storage, dtype, storage_offset, size, stride) -> _TensorRef:
    offset = _int(storage_offset, 'storage offset')
    size = _int_tuple(size, 'tensor size')
    stride = _int_tuple(stride, 'tensor stride')
    if len(size) != len(stride):
      raise PthFormatError(f'{self._source}: tensor size {size} and stride {stride} differ '
                           'in length')
    return _TensorRef(storage, np.dtype(dtype), offset, size, stride)

  def _numpy_scalar(self, dtype: Any, data: Any = None) -> np.generic:
    """Own version of `numpy.core.multiarray.scalar`, refusing object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
      raise UnsafePickleError(f'numpy scalar of dtype {dtype!r} refused')
    if isinstance(data, str):  # Python 2 pickles pass the bytes as a latin-1 str.
      data = data.encode('latin1')
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
      raise PthFormatError(f'numpy scalar payload for {dtype} is malformed')
    return np.frombuffer(data, dtype=dtype)[0]

  def _numpy_dtype(self, spec: Any, align: bool = False, copy: bool = True) -> np.dtype:
    # Always copy: BUILD calls __setstate__ on it, which must not mutate numpy's singletons.
    del copy
    if not isinstance(spec, str):
      raise UnsafePickleError(f'numpy.dtype({spec!r}) refused: only dtype names are allowed')
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.hasobject:
      raise UnsafePickleError(f'numpy.dtype({spec!r}) refused: object dtype')
    return dtype

  def _latin1_encode(self, obj: Any, encoding: str = 'utf-8',
                     errors: str = 'strict') -> bytes:
    """`_codecs.encode` as protocol 2 uses it for bytes: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
      raise UnsafePickleError(f'_codecs.encode with encoding {encoding!r} refused')
    return obj.encode('latin1')


def _materialize_tensor(ref: _TensorRef, source: str, big_endian: bool) -> np.ndarray:
  storage, dtype = ref.storage, ref.dtype
  root = storage.root
  if root.data is None:
    raise PthFormatError(f'{source}: no data for storage {root.key!r}')
  if any(s == 0 for s in ref.size):
    return np.zeros(ref.size, dtype=dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  start = storage.offset * storage.dtype.itemsize + ref.offset * dtype.itemsize
  end = storage.offset * storage.dtype.itemsize + (last + 1) * dtype.itemsize
  window_end = (storage.offset + storage.numel) * storage.dtype.itemsize
  if end > min(window_end, root.nbytes):
    raise PthFormatError(
        f'{source}: tensor (offset {ref.offset}, size {ref.size}, stride {ref.stride}) '
        f'reads past the end of storage {root.key!r} ({root.nbytes} bytes)')
  view = np.ndarray(ref.size, dtype=dtype, buffer=root.data, offset=start,
                    strides=tuple(s * dtype.itemsize for s in ref.stride))
  out = np.array(view, copy=True, order='C')
  if big_endian != (sys.byteorder == 'big'):
    out = out.byteswap()  # Per element (per component for complex), ml_dtypes included.
  return out


def _materialize(obj: Any, source: str, big_endian: bool) -> Any:
  """Replaces every `_TensorRef`/`_StorageRef` in the unpickled tree by a numpy array."""
  memo: dict[int, Any] = {}

  def visit(x: Any) -> Any:
    if id(x) in memo:
      return memo[id(x)]
    if isinstance(x, _TensorRef):
      result = _materialize_tensor(x, source, big_endian)
    elif isinstance(x, _StorageRef):
      result = _materialize_tensor(_TensorRef(x, x.dtype, 0, (x.numel,), (1,)), source,
                                   big_endian)
    elif isinstance(x, dict):  # Includes OrderedDict; updated in place (keeps cycles).
      memo[id(x)] = x
      for k in list(x):
        x[k] = visit(x[k])
      return x
    elif isinstance(x, list):
      memo[id(x)] = x
      x[:] = [visit(v) for v in x]
      return x
    elif isinstance(x, tuple):
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
        raise PthFormatError(f'{self.source}: malformed legacy storage id {pid!r}')
      storage_type, key, _, numel, view = fields
    else:
      if len(fields) != 4:
        raise PthFormatError(f'{self.source}: malformed storage id {pid!r}')
      (storage_type, key, _, numel), view = fields, None
    if not isinstance(storage_type, _StorageType):
      raise PthFormatError(f'{self.source}: storage id names {storage_type!r}, not a storage')
    if isinstance(key, bytes):
      key = key.decode('ascii')
    if not isinstance(key, str):
      raise PthFormatError(f'{self.source}: storage key {key!r} is not a string')
    numel = _int(numel, 'storage numel')
    dtype = storage_type.dtype
    if key not in self.roots:
      self.roots[key] = self.new_root(key, numel * dtype.itemsize, dtype.itemsize)
    root = self.roots[key]
    if view is None:
      return _StorageRef(root, dtype, 0, root.nbytes // dtype.itemsize)
    _, offset, view_numel = view  # Legacy storage view: (view key, offset, numel).
    return _StorageRef(root, dtype, _int(offset, 'view offset'), _int(view_numel, 'view size'))

  def new_root(self, key: str, nbytes: int, itemsize: int) -> _Root:
    return _Root(key, nbytes, itemsize)


def _load_legacy(f: BinaryIO, source: str, file_end: int) -> Any:
  header = _SafeUnpickler(f, source)
  if header.load() != _LEGACY_MAGIC:
    raise PthFormatError(f'{source}: invalid magic number: not a PyTorch checkpoint')
  protocol = _SafeUnpickler(f, source).load()
  if protocol != _LEGACY_PROTOCOL:
    raise PthFormatError(f'{source}: unsupported legacy protocol version {protocol!r}')
  sys_info = _SafeUnpickler(f, source).load()
  if isinstance(sys_info, dict) and sys_info.get('little_endian') is False:
    raise PthFormatError(f'{source}: written on a big-endian machine: unsupported')
  table = _StorageTable(source, legacy=True)
  result = _SafeUnpickler(f, source, table).load()
  keys = _SafeUnpickler(f, source).load()
  if not isinstance(keys, list) or set(keys) != set(table.roots):
    raise PthFormatError(f'{source}: storage key list does not match the storages used')
  for key in keys:
    root = table.roots[key]
    count_bytes = f.read(8)
    if len(count_bytes) != 8:
      raise PthFormatError(f'{source}: truncated before the data of storage {key!r}')
    (count,) = struct.unpack('<q', count_bytes)
    if count * root.itemsize != root.nbytes:
      raise PthFormatError(f'{source}: storage {key!r} holds {count} elements, '
                           f'expected {root.nbytes // root.itemsize}')
    if root.nbytes > file_end - f.tell():  # Checked first: never allocate past the file.
      raise PthFormatError(f'{source}: truncated in the data of storage {key!r}')
    root.data = f.read(root.nbytes)
  return _materialize(result, source, big_endian=False)


class _ZipStorageTable(_StorageTable):
  """Storage table that reads each storage's bytes from `<prefix>/data/<key>`."""

  def __init__(self, source: str, archive: zipfile.ZipFile, prefix: str):
    super().__init__(source, legacy=False)
    self.archive, self.prefix = archive, prefix

  def new_root(self, key: str, nbytes: int, itemsize: int) -> _Root:
    if '/' in key or key in ('', '.', '..'):
      raise PthFormatError(f'{self.source}: invalid storage key {key!r}')
    name = f'{self.prefix}/data/{key}'
    try:
      info = self.archive.getinfo(name)
    except KeyError:
      raise PthFormatError(f'{self.source}: missing storage record {name}') from None
    if info.file_size < nbytes:
      raise PthFormatError(f'{self.source}: storage record {name} has {info.file_size} '
                           f'bytes, expected {nbytes}')
    root = _Root(key, nbytes, itemsize)
    with self.archive.open(info) as member:
      root.data = member.read(nbytes)
    if len(root.data) != nbytes:
      raise PthFormatError(f'{self.source}: storage record {name} is truncated')
    return root


def _load_zip(f: BinaryIO, source: str) -> Any:
  with zipfile.ZipFile(f) as archive:
    names = archive.namelist()
    pkls = [n for n in names if n.count('/') == 1 and n.endswith('/data.pkl')]
    if len(pkls) != 1:
      raise PthFormatError(f'{source}: zip archive without a single <name>/data.pkl record '
                           '(not written by torch.save)')
    prefix = pkls[0][:-len('/data.pkl')]
    if f'{prefix}/constants.pkl' in names or any(n.startswith(f'{prefix}/code/') for n in names):
      raise PthFormatError(f'{source}: TorchScript archive (torch.jit.save) is not supported')
    big_endian = False
    if f'{prefix}/byteorder' in names:
      order = archive.read(f'{prefix}/byteorder')
      if order not in (b'little', b'big'):
        raise PthFormatError(f'{source}: unknown byte order {order!r}')
      big_endian = order == b'big'
    table = _ZipStorageTable(source, archive, prefix)
    with archive.open(pkls[0]) as pkl:
      result = _SafeUnpickler(io.BytesIO(pkl.read()), source, table).load()
    return _materialize(result, source, big_endian)


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
    PthFormatError: the file is truncated, corrupt or not a PyTorch checkpoint.
  """
  if isinstance(path, (str, os.PathLike)):
    source = os.fspath(path)
    if not os.path.isfile(source):
      raise FileNotFoundError(f'checkpoint not found: {source}')
    with open(source, 'rb') as f:
      return _load_stream(f, source)
  return _load_stream(path, getattr(path, 'name', '<stream>'))


def _load_stream(f: BinaryIO, source: str) -> Any:
  start = f.tell()
  file_end = f.seek(0, io.SEEK_END)
  f.seek(start)
  head = f.read(512)
  f.seek(start)
  try:
    if head.startswith(b'PK\x03\x04'):
      return _load_zip(f, source)
    if len(head) >= 262 and head[257:262] == b'ustar':
      raise PthFormatError(f'{source}: legacy tar format (torch <= 0.3) is not supported')
    if head[:1] == b'\x80':
      return _load_legacy(f, source, file_end)
    raise PthFormatError(f'{source}: not a PyTorch checkpoint (starts with {head[:8]!r})')
  except PthFormatError as e:
    if str(e).startswith(source):
      raise
    raise type(e)(f'{source}: {e}') from e
  except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile,
          struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError,
          OverflowError, RecursionError, UnicodeDecodeError) as e:
    raise PthFormatError(f'{source}: corrupt or truncated PyTorch checkpoint '
                         f'({type(e).__name__}: {e})') from e
