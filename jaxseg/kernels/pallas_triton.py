"""The one module of jaxseg that touches the Pallas Triton (GPU) backend.

Pallas kernels in jaxseg are written for the Triton backend
(`jax.experimental.pallas.triton`): per-pixel gathers at data-dependent
addresses, which JAX's default Mosaic GPU backend cannot express on Hopper.
Everything backend-specific goes through here, so that a change of the Pallas
API touches one file:

* `call(...)`: `pl.pallas_call` over whole-array refs with Triton compiler
  params (or `interpret=True`, which runs the same kernel on any backend, CPU
  included, as plain JAX ops: that is how the tests check the kernels).
* `gather` / `scatter`: unmasked loads and stores at array offsets into
  flattened (1-D) refs. The kernels clamp their offsets instead of masking, so
  the same code is valid in interpret mode, where masked scatters are not.
* `gpu_backend()` and `lowers(...)`: whether the code being traced is for a GPU
  (`jaxseg.runtime.platforms.target_platform`) and whether a given kernel actually
  compiles there (cached), for `impl='auto'`.

Triton constraint: every array inside a kernel must have a power-of-two number
of elements (`next_power_of_2` helps choose block shapes).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Hashable, Sequence

import jax

from jaxseg.runtime import platforms

try:  # The Triton backend ships with jax, but keep CPU-only installs working.
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as plt
  PALLAS_TRITON_IMPORT_ERROR: Exception | None = None
except ImportError as e:  # pragma: no cover - depends on the jax build.
  pl = None
  plt = None
  PALLAS_TRITON_IMPORT_ERROR = e

_LOG = logging.getLogger(__name__)

# Offsets inside kernels are int32; flattened arrays must stay below this.
MAX_ELEMENTS = 2**31 - 1


def available() -> bool:
  """True when `jax.experimental.pallas.triton` imported."""
  return plt is not None


def _require() -> None:
  if plt is None:
    raise ImportError(
        "jaxseg.kernels.pallas_triton: jax.experimental.pallas.triton could "
        f"not be imported ({PALLAS_TRITON_IMPORT_ERROR}); use impl='xla'.")


def next_power_of_2(x: int) -> int:
  """Smallest power of two >= x (1 for x <= 1)."""
  return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def gpu_backend() -> bool:
  """True when the code traced now is for a GPU (CUDA or ROCm): this host's default backend,
  or the platform of a `jaxseg.runtime.platforms.lowering_for` block (a GPU lowering on a CPU
  host)."""
  return platforms.targets_gpu()


def call(kernel: Callable[..., None],
         out_shape: Any,
         *,
         grid: tuple[int, ...],
         interpret: bool = False,
         num_warps: int = 4,
         num_stages: int = 1,
         name: str | None = None) -> Callable[..., Any]:
  """`pl.pallas_call` with whole-array refs and Triton compiler params.

  Args:
    kernel: kernel body; receives one ref per input, then one per output.
    out_shape: `jax.ShapeDtypeStruct` (or a pytree of them).
    grid: launch grid; `pl.program_id(i)` indexes it inside the kernel.
    interpret: run the kernel as plain JAX ops (any backend, e.g. CPU tests).
    num_warps: Triton warps per program.
    num_stages: Triton software-pipelining stages.
    name: kernel name for profiles and error messages.

  Returns:
    The callable taking the kernel inputs.
  """
  _require()
  return pl.pallas_call(
      kernel,
      out_shape=out_shape,
      grid=grid,
      interpret=interpret,
      name=name,
      compiler_params=plt.CompilerParams(num_warps=num_warps,
                                         num_stages=num_stages))


def program_id(axis: int) -> jax.Array:
  """Index of the current program along grid axis `axis`."""
  _require()
  return pl.program_id(axis)


def gather(ref: Any, offsets: jax.Array) -> jax.Array:
  """Loads `ref[offsets]` from a 1-D ref; offsets must be in range."""
  _require()
  return plt.load(ref.at[offsets])


def scatter(ref: Any, offsets: jax.Array, values: jax.Array) -> None:
  """Stores `values` at `ref[offsets]` of a 1-D ref; offsets must be in range.

  Offsets may repeat only where the values written are identical (the kernels
  clamp padded lanes onto real ones), so the result never depends on order.
  """
  _require()
  plt.store(ref.at[offsets], values)


# Answers of `lowers`, by kernel key: a cache, not configuration.
_LOWERS_CACHE: dict[Hashable, bool] = {}


def lowers(key: Hashable, fn: Callable[..., Any],
           avals: Sequence[jax.ShapeDtypeStruct]) -> bool:
  """Whether `fn` (a Pallas Triton call) compiles on the GPU being traced for.

  Compiles `fn` once for small example `avals` and caches the answer under
  `key`, which must name the kernel variant (mode, dtypes, channel count).
  Always False off GPU or without the Triton backend.
  """
  if not (available() and gpu_backend()):
    return False
  # Lowering for a GPU from another host (platforms.lowering_for) cannot compile here: the
  # probe then runs the Triton lowering only, which rejects what the kernel cannot express.
  target = platforms.target_platform()
  key = (key, target, platforms.targets_host_backend())
  if key not in _LOWERS_CACHE:
    try:
      if platforms.targets_host_backend():
        jax.jit(fn).lower(*avals).compile()
      else:
        jax.jit(fn).trace(*avals).lower(lowering_platforms=(target,))
      _LOWERS_CACHE[key] = True
    except Exception as e:  # pylint: disable=broad-except
      # Why broad: Triton and XLA raise many exception types for "cannot
      # compile"; each means "use the XLA path", and we say so once.
      _LOG.warning("jaxseg.kernels: Pallas Triton kernel %s does not compile "
                   "on this backend (%s: %s); falling back to the XLA path.",
                   key, type(e).__name__, e)
      _LOWERS_CACHE[key] = False
  return _LOWERS_CACHE[key]


def lower_for_cuda_text(fn: Callable[..., Any], *args: Any) -> str:
  """StableHLO text of `fn(*args)` lowered for CUDA (works on a CPU host).

  Runs the Pallas Triton lowering (kernel -> Triton IR) without a GPU, which
  catches unsupported primitives and non-power-of-two shapes; tests use it.
  """
  _require()
  return platforms.lower_for(jax.jit(fn), "cuda", *args).as_text()
