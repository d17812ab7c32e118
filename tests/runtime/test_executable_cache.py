"""The executable cache: a second start loads the program without tracing it, and any change to
what the program is made from (description, argument shapes, code) compiles afresh."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from unittest import mock

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


def test_a_prefetch_is_used_only_for_its_own_program(tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch):
  """prefetch(description) loads the newest program of that description in the background;
  compile_cached takes it when the arguments ask for that very file, and compiles otherwise."""
  traces: list[int] = []
  assert executable_cache.prefetch({"lr": 0.1}, folder=tmp_path) is None  # nothing stored
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(),
                                  description={"lr": 0.1}, folder=tmp_path)
  assert executable_cache.prefetch({"lr": 0.2}, folder=tmp_path) is None  # another program
  prefetched = executable_cache.prefetch({"lr": 0.1}, folder=tmp_path)
  assert prefetched.path == next(tmp_path.glob("*.jaxexe"))
  prefetched.result()  # loaded in the background; compile_cached must not load it again
  real_load = executable_cache._load  # pylint: disable=protected-access
  monkeypatch.setattr(executable_cache, "_load", mock.Mock(side_effect=AssertionError))
  args = _args()
  compiled = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                             description={"lr": 0.1}, folder=tmp_path,
                                             prefetched=prefetched)
  assert len(traces) == 1 and int(compiled(*args)[0].n) == 1
  monkeypatch.setattr(executable_cache, "_load", real_load)
  # Two argument shapes stored: the prefetch takes the newest file (5 rows), which is not the
  # one 4 rows ask for, so compile_cached loads theirs.
  stored_4 = prefetched.path
  executable_cache.compile_cached(jax.jit(_counting_step(traces)), *_args(rows=5),
                                  description={"lr": 0.1}, folder=tmp_path)
  os.utime(stored_4, (0, 0))
  prefetched = executable_cache.prefetch({"lr": 0.1}, folder=tmp_path)
  assert prefetched.path != stored_4 and len(traces) == 2
  compiled = executable_cache.compile_cached(jax.jit(_counting_step(traces)), *args,
                                             description={"lr": 0.1}, folder=tmp_path,
                                             prefetched=prefetched)
  assert len(traces) == 2
  np.testing.assert_allclose(compiled(*args)[0].w, 2 + float(np.arange(8.0).sum()))


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


def _transposing():
  """A new function object each call: jax reuses a compiled program per traced function, and a
  new process (what this cache serves) has traced nothing yet."""
  return lambda x: jnp.tanh(x.transpose(0, 3, 1, 2) * 3.0).transpose(0, 2, 3, 1).sum(axis=(1, 2))


def test_a_program_in_the_persistent_cache_is_stored_runnable(tmp_path: pathlib.Path):
  """XLA:CPU re-serialises a program it loaded from JAX's persistent cache without some of its
  functions (running the stored copy failed with "transpose_copy_fusion... not found"): the
  program stored here is compiled afresh, and the loaded copy runs."""
  x = jnp.arange(4 * 7 * 5 * 6, dtype=jnp.float32).reshape(4, 7, 5, 6) / 100
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    jax.jit(_transposing()).lower(x).compile()  # now in the suite's persistent cache
    executable_cache.compile_cached(jax.jit(_transposing()), x, description="t",
                                    folder=tmp_path)
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
  loaded = executable_cache.compile_cached(jax.jit(_transposing()), x, description="t",
                                           folder=tmp_path)
  np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(_transposing()(x)), rtol=1e-6)


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
  env.update(JAXSEG_COMPILE_CACHE=str(tmp_path / "cc"))
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
