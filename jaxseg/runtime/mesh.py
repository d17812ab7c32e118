"""Device mesh and shardings: one code path from one CPU to many hosts.

Axes: `data` (always first) and optionally `fsdp`. The batch is split over both (FSDP is data
parallelism whose replicas also split the largest parameters): a mesh {"data": -1, "fsdp": 4}
on 16 GPUs runs a global batch over 16 devices while each parameter above
`mesh.fsdp_min_size` elements lives in 4 slices, one per device of an `fsdp` group (its
optimizer state alike). XLA inserts the all-gathers and reduce-scatters.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
_AXES = (DATA_AXIS, FSDP_AXIS)


def create_mesh(shape: Mapping[str, int], devices: list[Any] | None = None) -> Mesh:
  """A mesh over `devices` (all by default); one axis may be -1 to take the remaining devices.

  An explicit shape smaller than the device count uses the first devices (single process only).
  The first axis must be `data`; the only other axis allowed is `fsdp`. Devices are laid out
  process-major (jax.devices() order), so an `fsdp` group stays inside a host when it fits.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(shape.keys())
  if not names or names[0] != DATA_AXIS:
    raise ValueError(f"config.mesh.shape must start with the '{DATA_AXIS}' axis, got {dict(shape)}")
  unknown = [n for n in names if n not in _AXES]
  if unknown:
    raise ValueError(f"config.mesh.shape: unknown axes {unknown}; expected some of {_AXES}")
  sizes = [int(v) for v in shape.values()]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh.shape may have at most one -1 entry, got {dict(shape)}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh.shape {dict(shape)} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  needed = int(np.prod(sizes))
  if needed > len(devices):
    raise ValueError(f"config.mesh.shape {dict(shape)} needs {needed} devices, "
                     f"{len(devices)} are available")
  if needed < len(devices) and jax.process_count() > 1:
    raise ValueError(f"config.mesh.shape {dict(shape)} uses {needed} of {len(devices)} devices; "
                     "a multi-process run must use them all (set an axis to -1)")
  devices = devices[:needed]  # e.g. debugging on one device of a bigger machine
  return Mesh(np.asarray(devices).reshape(sizes), names)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over."""
  return tuple(a for a in _AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  axes = batch_axes(mesh)
  return NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0]))


def data_parallel_size(mesh: Mesh) -> int:
  """Devices the batch is split over (= BatchNorm ghost-batch groups when syncbn=False)."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def fsdp_size(mesh: Mesh) -> int:
  return int(mesh.shape[FSDP_AXIS]) if FSDP_AXIS in mesh.axis_names else 1


def param_spec(shape: Sequence[int], fsdp: int, min_size: int) -> P:
  """The size rule: arrays of >= min_size elements are split over `fsdp` on their largest
  divisible dimension (the last one on ties: output channels of HWIO kernels); others are
  replicated. A function of the shape only, so parameters and their momentum match."""
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [(d, i) for i, d in enumerate(shape) if d % fsdp == 0]
  if not candidates:
    return P()
  _, axis = max(candidates)
  return P(*([None] * axis + [FSDP_AXIS]))


def tree_shardings(tree: Any, mesh: Mesh, min_size: int) -> Any:
  """NamedShardings for every array leaf of `tree` (abstract or concrete) by `param_spec`."""
  fsdp = fsdp_size(mesh)
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(np.shape(x), fsdp, min_size)),
                      tree)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the global batch into global arrays split over the batch
  axes (each process passes only the rows its own devices hold)."""
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in "USO":  # names etc. stay on the host
      continue
    out[name] = jax.make_array_from_process_local_data(sharding, value)
  return out


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order (host numpy)."""
  if getattr(array, "is_fully_addressable", True):
    return np.asarray(jax.device_get(array))
  shards = {}
  for shard in array.addressable_shards:
    start = shard.index[0].start or 0
    shards.setdefault(start, np.asarray(shard.data))
  return np.concatenate([shards[k] for k in sorted(shards)], axis=0)
