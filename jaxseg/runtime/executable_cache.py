"""Compiled programs kept across runs, so that a warm start skips tracing as well as compiling.

JAX's persistent compilation cache (compile_cache.py) is keyed by the lowered program, so every
start still traces and lowers the train step (seconds for a segmentation net) before it can look
the executable up. This cache is keyed instead by what the program is made from, and stores the
executable itself (`jax.experimental.serialize_executable`):
  - the caller's description of everything its function closes over (for the train step: the
    run's config, class count, loss weights, schedule span, relaxation flag),
  - the arguments' shapes, dtypes, shardings and tree structure,
  - the code: a digest of every jaxseg source file, and the jax / jaxlib versions, the
    devices, the JAXSEG_ / JAX_ / XLA_ environment and the jax settings that change a trace.
A key that misses any of these would load a stale program, so anything a caller cannot describe
must not go through here. A file that fails to load is compiled afresh and replaced. A file is
named `<program key>-<arguments key>`: a start that knows the description early `prefetch`es
its program in the background before it has the arguments.

Why our own code: JAX offers the serialisation but no cache around it. The files live in an
`executables/` folder inside the compile-cache folder and follow its on/off switch
($JAXSEG_EXECUTABLE_CACHE, a folder or 'off', overrides both); the newest `KEEP` files are
kept. Loading runs a pickle of native code, like JAX's own cache: the folder is the user's, and
nothing from elsewhere is ever read from it. Single-process runs only: a multi-host program
must be compiled by every process together. The test suite switches it off (tests patch code
that no key can see) except where it is the subject.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import pickle
import re
import threading
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import serialize_executable
from jax.experimental.compilation_cache import compilation_cache as jax_compilation_cache

from jaxseg.runtime import files

KEEP = 8  # newest files kept; one is a few MB (demo) to a few 100 MB (a large net)
_SUFFIX = ".jaxexe"
_ENV_PREFIXES = ("JAXSEG_", "JAX_", "XLA_")  # kernel switches, XLA_FLAGS, jax settings
# Programs calling jaxseg's native CPU kernels are not stored: their custom-call targets are
# registered while tracing (kernels/native.py), which a loaded program would skip.
_NATIVE_TARGET = re.compile(r'custom_call_target="jaxseg_')
_TRACE_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
                   "jax_default_prng_impl", "jax_threefry_partitionable")


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
  """sha256 over jaxseg's own .py files (paths and contents): any code change is a new key."""
  package = pathlib.Path(__file__).resolve().parents[1]
  digest = hashlib.sha256()
  for path in sorted(package.rglob("*.py")):
    digest.update(str(path.relative_to(package)).encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()


def _arg_spec(leaf: Any) -> str:
  sharding = getattr(leaf, "sharding", None)
  shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
  if shape is None:  # a Python scalar is traced as a weakly typed value
    return f"py:{type(leaf).__name__}"
  return f"{tuple(shape)}:{dtype}:{sharding}"


def program_key(description: Any) -> str:
  """The hex key of what a program is made from: `description` (JSON-able), the code, the
  jax / jaxlib versions, the devices, the environment and the jax settings."""
  devices = [f"{d.platform}:{d.device_kind}:{d.id}" for d in jax.devices()]
  settings = {name: str(getattr(jax.config, name, None)) for name in _TRACE_SETTINGS}
  record = {"description": description, "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"), "devices": devices,
            "environment": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)},
            "settings": settings, "source": source_digest()}
  return _digest(record)


def args_key(args: tuple[Any, ...]) -> str:
  """The hex key of the arguments' shapes, dtypes, shardings and tree structure."""
  leaves, treedef = jax.tree.flatten(args)
  return _digest({"args": [_arg_spec(x) for x in leaves], "tree": str(treedef)})


def cache_key(description: Any, args: tuple[Any, ...]) -> str:
  """The file stem of a program made from `description` and called with `args`: the program
  key first, so that a start can find (and begin loading) its program before it has the
  arguments (`prefetch`)."""
  return f"{program_key(description)}-{args_key(args)}"


def _digest(record: dict[str, Any]) -> str:
  text = json.dumps(record, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:32]


def folder_of(compile_cache_dir: str | os.PathLike | None) -> pathlib.Path | None:
  """Where the executables live: `executables/` in the compile-cache folder; None = off."""
  if not compile_cache_dir:
    return None
  return pathlib.Path(compile_cache_dir) / "executables"


def current_folder() -> pathlib.Path | None:
  """$JAXSEG_EXECUTABLE_CACHE (a folder, or 'off'), else `executables/` in the compile-cache
  folder jax uses now (compile_cache.enable set it); None = off."""
  setting = os.environ.get("JAXSEG_EXECUTABLE_CACHE", "")
  if setting.lower() in ("off", "none", "0", "false"):
    return None
  if setting:
    return pathlib.Path(setting).expanduser()
  return folder_of(jax.config.jax_compilation_cache_dir or None)


def _usable_folder(folder: pathlib.Path | None) -> pathlib.Path | None:
  """`folder` (default: current_folder()), or None where programs must not be stored."""
  folder = current_folder() if folder is None else folder
  return None if folder is None or jax.process_count() > 1 else folder


def _load(path: pathlib.Path, devices: dict[int, Any]) -> Callable[..., Any]:
  payload, in_tree, out_tree, device_ids = pickle.loads(path.read_bytes())
  return serialize_executable.deserialize_and_load(
      payload, in_tree, out_tree, execution_devices=[devices[i] for i in device_ids])


class Prefetch:
  """The newest stored program of a description, loading in a background thread.

  Loading a program is native work that releases the GIL (0.5-0.7 s for the demo's train step
  on a 2-core CPU), so a start that prefetches as soon as it knows the description overlaps the
  load with building the state and reading the first batch. `compile_cached` takes the result
  only if the file is the one the arguments ask for.
  """

  def __init__(self, path: pathlib.Path):
    self.path = path
    self._result: Callable[..., Any] | Exception | None = None
    devices = {d.id: d for d in jax.devices()}
    self._thread = threading.Thread(target=self._run, args=(devices,), daemon=True,
                                    name="jaxseg-executable-prefetch")
    self._thread.start()

  def _run(self, devices: dict[int, Any]) -> None:
    try:
      self._result = _load(self.path, devices)
    except Exception as err:  # pylint: disable=broad-except  (reported by result())
      self._result = err

  def result(self) -> Callable[..., Any]:
    """The loaded program; raises what loading raised."""
    self._thread.join()
    if isinstance(self._result, Exception):
      raise self._result
    return self._result


def prefetch(description: Any, folder: pathlib.Path | None = None) -> Prefetch | None:
  """Starts loading the newest stored program made from `description`; None if there is none
  (or the cache is off). Pass the result to `compile_cached`."""
  folder = _usable_folder(folder)
  if folder is None:
    return None
  stored = sorted(folder.glob(f"{program_key(description)}-*{_SUFFIX}"),
                  key=_mtime, reverse=True)
  return Prefetch(stored[0]) if stored else None


def compile_cached(jitted: Callable[..., Any], *args: Any, description: Any,
                   folder: pathlib.Path | None = None,
                   prefetched: Prefetch | None = None) -> Callable[..., Any]:
  """`jitted.lower(*args).compile()`, loaded from / stored in the cache folder when one is on.

  `description` must name everything the function closes over (see the module docstring).
  `prefetched` (from `prefetch(description)`) is used when it loaded this very program.
  The function must be new to this process (jax would hand back its earlier compilation,
  which may come from the persistent cache: see `_fresh_compile`); the loops build theirs.
  """
  folder = _usable_folder(folder)
  if folder is None:
    return jitted.lower(*args).compile()
  path = folder / f"{cache_key(description, args)}{_SUFFIX}"
  if path.exists():
    try:
      if prefetched is not None and prefetched.path == path:
        compiled = prefetched.result()
      else:
        compiled = _load(path, {d.id: d for d in jax.devices()})
      os.utime(path)  # newest use: kept longest
      logging.info("loaded the compiled program from %s", path)
      return compiled
    except Exception as err:  # pylint: disable=broad-except  (any damage: compile instead)
      logging.warning("compiling afresh: cannot load %s (%s: %s)", path, type(err).__name__, err)
  with _fresh_compile():
    compiled = jitted.lower(*args).compile()
  try:
    if _NATIVE_TARGET.search(compiled.as_text() or ""):
      logging.info("not caching the compiled program: it calls jaxseg's native CPU kernels")
      return compiled
    # The devices it runs on: loading onto all of the backend's would misplace a program
    # compiled for a sub-mesh (or for one device on a host with several).
    device_ids = [d.id for d in compiled.runtime_executable().local_devices()]
    payload = (*serialize_executable.serialize(compiled), device_ids)
    files.atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    _prune(folder)
  except (ValueError, NotImplementedError, TypeError, pickle.PicklingError, OSError) as err:
    # Constants baked into the program, a backend without serialisation, a read-only cache.
    logging.info("not caching the compiled program (%s: %s)", type(err).__name__, err)
  return compiled


@contextlib.contextmanager
def _fresh_compile() -> Iterator[None]:
  """JAX's persistent cache off for one compile. A program that XLA:CPU loaded from there
  serialises without some of its functions (jaxlib 0.10 and 0.11: the copy, loaded and run,
  fails with "Function <a fusion> not found"), so what is stored here must be
  compiled here. The persistent cache then does not hold this program: this cache does."""
  if not jax.config.jax_enable_compilation_cache:
    yield
    return
  jax.config.update("jax_enable_compilation_cache", False)
  jax_compilation_cache.reset_cache()  # it remembers whether it is on
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
    jax_compilation_cache.reset_cache()


def _mtime(path: pathlib.Path) -> float:
  try:
    return path.stat().st_mtime
  except OSError:  # removed by another run's pruning meanwhile
    return 0.0


def _prune(folder: pathlib.Path) -> None:
  stored = sorted(folder.glob(f"*{_SUFFIX}"), key=_mtime, reverse=True)
  for old in stored[KEEP:]:
    old.unlink(missing_ok=True)
