"""The executable cache: a second start loads the program without tracing it, and any change to
what the program is made from (description, argument shapes, code) compiles afresh."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.runtime import executable_cache


@struct.dataclass
class _State:
  w: jax.Array
  n: jax.Array


def _counting_step(traces: list[int]):
  def step(state: _State, x: jax.Array):
    traces.append(1)  # runs once per trace, never when a stored program is called
    return state.replace(w=state.w * 2 + x.sum(), n=state.n + 1), {"mean": x.mean()}
  return step


@pytest.fixture(autouse=True)
def _serialisable_flags(monkeypatch: pytest.MonkeyPatch):
  """The suite's XLA_FLAGS name the classic CPU emitters, which the cache refuses; these small
  programs serialise under them, so the unit tests hide the flags from the cache."""
  monkeypatch.setenv("XLA_FLAGS", "")


def _args(rows: int = 4):
  return _State(w=jnp.ones((3,)), n=jnp.zeros((), jnp.int32)), jnp.arange(rows * 2.0)


def test_second_start_loads_without_tracing(tmp_path: pathlib.Path):
  traces: list[int] = []
  args = _args()
  first = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                          description={"lr": 0.1}, folder=tmp_path)
  assert len(traces) == 1 and len(list(tmp_path.glob("*.jaxexe"))) == 1
  # A new jit object, as in a new process: the stored program is loaded, nothing is traced.
  again = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                          description={"lr": 0.1}, folder=tmp_path)
  assert len(traces) == 1
  (s1, m1), (s2, m2) = first(*args), again(*args)
  np.testing.assert_array_equal(s1.w, s2.w)
  assert int(s2.n) == 1 and float(m2["mean"]) == float(m1["mean"])


@pytest.mark.parametrize("change", ["description", "shape"])
def test_a_different_program_is_compiled_afresh(tmp_path: pathlib.Path, change: str):
  traces: list[int] = []
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(),
                                  description={"lr": 0.1}, folder=tmp_path)
  description = {"lr": 0.2} if change == "description" else {"lr": 0.1}
  args = _args(rows=5 if change == "shape" else 4)
  compiled = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                             description=description, folder=tmp_path)
  assert len(traces) == 2 and len(list(tmp_path.glob("*.jaxexe"))) == 2
  state, _ = compiled(*args)
  np.testing.assert_allclose(state.w, 2 + float(np.arange(len(args[1]) * 1.0).sum()))


def test_the_code_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch):
  args = _args()
  key = executable_cache.cache_key({"lr": 0.1}, args)
  monkeypatch.setattr(executable_cache, "source_digest", lambda: "edited")
  assert executable_cache.cache_key({"lr": 0.1}, args) != key


def test_a_damaged_file_is_replaced(tmp_path: pathlib.Path):
  traces: list[int] = []
  args = _args()
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args, description=1,
                                  folder=tmp_path)
  (stored,) = tmp_path.glob("*.jaxexe")
  stored.write_bytes(b"not a program")
  compiled = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                             description=1, folder=tmp_path)
  assert len(traces) == 2 and stored.read_bytes() != b"not a program"
  assert int(compiled(*args)[0].n) == 1


def test_off_without_a_folder(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setattr(executable_cache, "current_folder", lambda: None)
  traces: list[int] = []
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(), description=1)
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(), description=1)
  assert len(traces) == 2
  assert executable_cache.folder_of(None) is None
  assert executable_cache.folder_of(tmp_path) == tmp_path / "executables"


def test_not_stored_under_flags_that_break_loading(tmp_path: pathlib.Path,
                                                   monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
  traces: list[int] = []
  for _ in range(2):
    executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(), description=1,
                                    folder=tmp_path)
  assert len(traces) == 2 and not list(tmp_path.glob("*.jaxexe"))


def test_only_the_newest_are_kept(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setattr(executable_cache, "KEEP", 2)
  for lr in range(3):
    executable_cache.compile_cached(jax.jit(_counting_step([])), *_args(), description=lr,
                                    folder=tmp_path)
  assert len(list(tmp_path.glob("*.jaxexe"))) == 2



def test_the_command_line_restarts_from_the_stored_train_step(tmp_path: pathlib.Path):
  """Two identical CLI runs: the second loads the train step (no trace) and trains alike."""
  from _testlib import DEMO_ARGS  # pylint: disable=import-outside-toplevel
  from _testlib import ROOT  # pylint: disable=import-outside-toplevel

  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAXSEG_EXECUTABLE", "JAX_COMPILATION"))}
  # Optimisation level 0 as the suite, without the classic emitters (not serialisable).
  env.update(JAXSEG_COMPILE_CACHE=str(tmp_path / "cc"),
             XLA_FLAGS="--xla_backend_optimization_level=0")
  logs = []
  for run in ("first", "second"):
    out = subprocess.run(
        [sys.executable, "-m", "jaxseg.main", *DEMO_ARGS, "--workdir", str(tmp_path / run),
         "--config.train.num_steps=1", "--config.train.log_every=1",
         "--config.eval.write_predictions=False", "--config.eval.max_batches=1",
         "--verbosity=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    logs.append(out.stdout + out.stderr)
  stored = list((tmp_path / "cc" / "executables").glob("*.jaxexe"))
  assert len(stored) == 1
  assert "loaded the compiled program" not in logs[0]
  assert f"loaded the compiled program from {stored[0]}" in logs[1]
  losses = [re.search(r"step 1/1 \(epoch 0\) loss ([\d.]+)", log).group(1) for log in logs]
  assert losses[0] == losses[1]
