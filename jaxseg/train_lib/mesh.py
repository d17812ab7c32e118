"""Device mesh and shardings: one code path from one CPU to many hosts."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(shape: Mapping[str, int], devices: list[Any] | None = None) -> Mesh:
  """A mesh over `devices` (all by default); one axis may be -1 to take the remaining devices.

  An explicit shape smaller than the device count uses the first devices (single process only).

  The first axis must be `data`: the batch is split over it.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(shape.keys())
  if not names or names[0] != DATA_AXIS:
    raise ValueError(f"config.mesh.shape must start with the '{DATA_AXIS}' axis, got {dict(shape)}")
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the global batch into global arrays split over `data`."""
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in "USO":  # names etc. stay on the host
      continue
    out[name] = jax.make_array_from_process_local_data(sharding, value)
  return out
