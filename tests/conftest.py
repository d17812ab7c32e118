"""Test-wide JAX set-up: 8 virtual CPU devices and a persistent compile cache."""
import os
import pathlib

# XLA:CPU backend optimisation level 0 and the classic emitters for every program the tests
# compile, here and in the subprocesses they start (they inherit XLA_FLAGS): the suite is
# compile-bound, and this halves its CPU time (test_train_step + test_eval_modes: 293 -> 134 CPU
# seconds). Only code generation differs; parity tolerances are far above its ~1e-6 effect.
from _testlib import COMPILE_CACHE  # imports no jax
from _testlib import FAST_XLA_FLAGS  # imports no jax
from _testlib import SHARED  # imports no jax

os.environ.setdefault("XLA_FLAGS", FAST_XLA_FLAGS)
# Stored executables are keyed by config and code, which a test's monkeypatch changes unseen:
# off here and in the subprocesses, on only in the tests that are about it.
os.environ["JAXSEG_EXECUTABLE_CACHE"] = "off"

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# JAXSEG_TEST_PLATFORMS=auto lets `pytest -m gpu` (benchmarks/gpu/run.sh) see the GPU.
_PLATFORMS = os.environ.get("JAXSEG_TEST_PLATFORMS", "cpu")
jax.config.update("jax_platforms", None if _PLATFORMS == "auto" else _PLATFORMS)
jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not DATA.is_dir():
    pytest.skip(f"shared data not found at {DATA}")
  return DATA


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  if not REFERENCE.is_dir():
    pytest.skip(f"reference fixtures not found at {REFERENCE}")
  return REFERENCE
