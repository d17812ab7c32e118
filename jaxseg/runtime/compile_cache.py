"""JAX's persistent compilation cache, on by default for the command line.

A jaxseg run compiles a few large programs (the train step, the evaluator); the cache turns the
tens of seconds that costs into a file read on every later start with the same shapes. Where it
lives, in order of precedence:
  JAX_COMPILATION_CACHE_DIR / jax.config   set explicitly: left alone (tests, user set-ups)
  JAXSEG_COMPILE_CACHE                     a folder, or 'off'
  config.compile_cache                     a folder, 'off', or 'auto'
  'auto'                                   <cache root>/jax_compile (runtime/files.py:
                                           $JAXSEG_CACHE, else $XDG_CACHE_HOME/jaxseg, else
                                           ~/.cache/jaxseg)
"""
from __future__ import annotations

import os
import pathlib

import jax

from jaxseg.runtime import files

OFF = ("off", "none", "0", "false")


def default_dir() -> pathlib.Path:
  return files.cache_root() / "jax_compile"


def resolve(setting: str = "auto") -> pathlib.Path | None:
  """The cache folder for `setting` (config.compile_cache) and the environment; None = off."""
  value = os.environ.get("JAXSEG_COMPILE_CACHE") or setting or "auto"
  if value.lower() in OFF:
    return None
  return default_dir() if value == "auto" else pathlib.Path(value).expanduser()


def enable(setting: str = "auto") -> pathlib.Path | None:
  """Turns the persistent cache on (unless configured elsewhere or switched off); its folder."""
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return pathlib.Path(configured)
  folder = resolve(setting)
  if folder is None:
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  # Cache every program, the small ones too: building the state eagerly compiles ~30 tiny
  # programs (one per new shape of a BN or optimizer buffer, ~0.05 s each), which together
  # cost more at start-up than reading them back.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return folder
