"""Files every job writes: atomic replacement, and the one rule for jaxseg's cache folders.

Atomic: a file is written to a temporary name in its own folder and renamed over the target,
so a reader (or a second process writing the same file) sees the old or the new content,
never a torn one. Caches: $JAXSEG_CACHE, else $XDG_CACHE_HOME/jaxseg, else ~/.cache/jaxseg,
with one sub-folder per kind; a kind may also have its own variable (JAXSEG_KERNEL_CACHE,
JAXSEG_COMPILE_CACHE) that wins.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any


def cache_root() -> pathlib.Path:
  """$JAXSEG_CACHE, else $XDG_CACHE_HOME/jaxseg, else ~/.cache/jaxseg."""
  if os.environ.get("JAXSEG_CACHE"):
    return pathlib.Path(os.environ["JAXSEG_CACHE"]).expanduser()
  if os.environ.get("XDG_CACHE_HOME"):
    return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "jaxseg"
  return pathlib.Path.home() / ".cache" / "jaxseg"


def cache_dir(kind: str, env: str = "") -> pathlib.Path:
  """The cache folder of `kind` (e.g. 'kernels'): $`env` when set, else cache_root()/kind."""
  if env and os.environ.get(env):
    return pathlib.Path(os.environ[env]).expanduser()
  return cache_root() / kind


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` (parents created) through a temporary file and a rename."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return path


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1
                      ) -> pathlib.Path:
  """`obj` as JSON (and a final newline when indented), written atomically."""
  text = json.dumps(obj, indent=indent) + ("\n" if indent is not None else "")
  return atomic_write_bytes(path, text.encode())
