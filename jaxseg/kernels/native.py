"""jaxseg's native CPU kernels: XLA FFI handlers compiled from `kernels/cpu/*.cc` on first use.

The sources are built once per (source, jaxlib, compiler, CPU) with the system C++ compiler
(`$CXX`, else `c++`) and `-march=native`, cached in `$JAXSEG_KERNEL_CACHE` (default
`~/.cache/jaxseg/kernels`) and registered as XLA:CPU custom-call targets. Building at first use
keeps `pip install` free of a compiler; without one (or with `JAXSEG_NATIVE_KERNELS=0`) the
callers fall back to their XLA paths after one warning.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shlex
import subprocess
import tempfile

import jax
import jaxlib

from jaxseg.runtime import files

_SOURCE_DIR = pathlib.Path(__file__).parent / "cpu"
_SOURCES = ("grouped_conv.cc",)
# Target name -> exported handler symbol.
_TARGETS = {"jaxseg_grouped_conv": "JaxsegGroupedConv"}
_CXXFLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")

log = logging.getLogger(__name__)


def _cpu_signature() -> str:
  """What -march=native compiles for: the machine and its CPU feature flags."""
  flags = ""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    pass
  return f"{platform.machine()} {flags.strip()}"


def _cache_dir() -> pathlib.Path:
  return files.cache_dir("kernels", env="JAXSEG_KERNEL_CACHE")


def _library_path(compiler: list[str]) -> pathlib.Path:
  digest = hashlib.sha256()
  for name in _SOURCES:
    digest.update((_SOURCE_DIR / name).read_bytes())
  for part in (jaxlib.__version__, " ".join(compiler + list(_CXXFLAGS)), _cpu_signature()):
    digest.update(part.encode())
  return _cache_dir() / f"libjaxseg_cpu_{digest.hexdigest()[:16]}.so"


def _build(compiler: list[str], target: pathlib.Path) -> None:
  """Compiles the sources into `target`, atomically (concurrent builders each write their own
  temporary file; the last rename wins and every rename installs a complete library)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
  os.close(fd)
  cmd = compiler + list(_CXXFLAGS) + ["-I", jax.ffi.include_dir(), "-o", tmp]
  cmd += [str(_SOURCE_DIR / name) for name in _SOURCES]
  try:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"`{shlex.join(cmd)}` failed:\n{result.stderr[:2000]}")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@functools.cache
def _library() -> ctypes.CDLL | None:
  if os.environ.get("JAXSEG_NATIVE_KERNELS", "1") == "0":
    return None
  compiler = shlex.split(os.environ.get("CXX", "c++"))
  try:
    path = _library_path(compiler)
    if not path.exists():
      log.info("jaxseg: building native CPU kernels into %s", path)
      _build(compiler, path)
    lib = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                  platform="cpu")
    return lib
  except (OSError, RuntimeError, AttributeError) as e:
    log.warning("jaxseg: native CPU kernels unavailable (%s); using the XLA paths. "
                "Set CXX to a C++17 compiler, or JAXSEG_NATIVE_KERNELS=0 to silence this.", e)
    return None


def native_kernels_available() -> bool:
  """Whether the native CPU kernels are built, loaded and registered (builds on first call)."""
  return _library() is not None
