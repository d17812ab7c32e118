"""The platform that traced code is FOR, which may differ from the platform it is traced ON.

Some layers pick their algorithm while they are traced: Conv2d's CPU algorithms (GEMMs,
Winograd, the native grouped-conv custom call, jaxseg/models/conv_algorithms.py),
`block_output`'s CPU fusion barrier and `resample2d(impl='auto')`'s Pallas Triton kernel. They
all ask `target_platform()`, which is the process's default backend unless a
`lowering_for(platform)` context says otherwise. Lowering for another platform than the host's
(`jitted.trace(...).lower(lowering_platforms=("cuda",))` on a CPU host, e.g. a CI check of the
GPU program) must therefore trace inside `lowering_for`: `lower_for(jitted, "cuda", *args)`
does both, so the traced choice and the lowering platform cannot disagree.

Why not `lax.platform_dependent`, which defers the choice to lowering: it traces every
alternative, and tracing the CPU algorithms of SE-ResNeXt's grouped convs costs tens of
seconds that every GPU run would pay for code it never runs.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import importlib.metadata
import os
from typing import Any

import jax
import jax.extend

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
_GPU_PLATFORMS = ("cuda", "rocm")
# A JAX user context, not a plain context variable: its value is part of every jit cache key,
# so a function traced for one platform is never reused from the cache for another.
_TARGET = jax.make_user_context(default_value=None)


def _normalise(platform: str) -> str:
  """jax.default_backend() says 'gpu' for CUDA and ROCm; lowering needs the precise name."""
  if platform != "gpu":
    return platform
  version = str(getattr(jax.extend.backend.get_backend(), "platform_version", "")).lower()
  return "rocm" if "rocm" in version else "cuda"


def target_platform() -> str:
  """'cpu' | 'cuda' | 'rocm' | 'tpu': the `lowering_for` platform, else the default backend."""
  target = _TARGET.value
  if target is not None:
    return target
  return _normalise(jax.default_backend())


def targets_gpu() -> bool:
  """Whether code traced now is for a GPU (CUDA or ROCm)."""
  return target_platform() in _GPU_PLATFORMS


def targets_host_backend() -> bool:
  """Whether code traced now runs on this process's own backend (compile probes work)."""
  return _TARGET.value is None or _TARGET.value == _normalise(jax.default_backend())


@contextlib.contextmanager
def lowering_for(platform: str) -> Iterator[None]:
  """Within the block, layers trace their code paths for `platform` (one of PLATFORMS)."""
  if platform not in PLATFORMS:
    raise ValueError(f"lowering_for: platform={platform!r}; expected one of {PLATFORMS}")
  with _TARGET(platform):
    yield


def lower_for(jitted: Any, platform: str, *args: Any, **kwargs: Any) -> Any:
  """`jitted` traced for `platform` and lowered for it (a jax.stages.Lowered), on any host."""
  with lowering_for(platform), _target_device(platform, (args, kwargs)):
    return jitted.trace(*args, **kwargs).lower(lowering_platforms=(platform,))


def _jax_version() -> tuple[int, int]:
  return tuple(int(v) for v in importlib.metadata.version("jax").split(".")[:2])


def _target_device(platform: str, args: Any) -> contextlib.AbstractContextManager:
  """From jax 0.11, Pallas lowers Triton kernels for the compute capability of the GPU in
  context and fails on a host without one: name the target GPU there ($JAXSEG_LOWERING_GPU,
  default the H200 the GPU benchmarks run on) through an abstract mesh. Only for unsharded
  arguments: an abstract GPU mesh beside arguments sharded over the host's CPU mesh is refused
  as a mesh mismatch (a sharded program with Pallas kernels lowers for CUDA on a GPU host)."""
  if (platform != "cuda" or _normalise(jax.default_backend()) == "cuda"
      or _jax_version() < (0, 11)):
    return contextlib.nullcontext()
  from jax.sharding import AbstractDevice
  from jax.sharding import AbstractMesh
  from jax.sharding import AxisType
  from jax.sharding import NamedSharding
  if any(isinstance(getattr(leaf, "sharding", None), NamedSharding)
         for leaf in jax.tree.leaves(args)):
    return contextlib.nullcontext()
  device = AbstractDevice(device_kind=os.environ.get("JAXSEG_LOWERING_GPU", "NVIDIA H200"),
                          num_cores=None, platform="gpu")
  return jax.sharding.use_abstract_mesh(
      AbstractMesh((1,), ("target",), (AxisType.Auto,), abstract_device=device))
