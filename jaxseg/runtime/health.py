"""The non-finite guard: a training step never applies an update whose loss or gradients are
NaN / Inf, counts such steps on device, and the loop reads the count (a small transfer, at log
steps and before every save) to stop with an error naming the step and the last good
checkpoint, so no checkpoint ever holds NaN. With fp16 loss scaling an overflow is expected:
the loop then only reports the skipped steps and goes on.

The on-device part (`initial_counters`, `all_finite`, `select_if_finite`, `count_nonfinite`)
is pure jnp for any step function; `Health` is the host side, told how to read the counters
from whatever the loop holds (a train state, a tuple of arrays).
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

Counters = Mapping[str, Any]  # {'nonfinite_steps': int32, 'first_nonfinite_step': int32}


class NonFiniteLossError(RuntimeError):
  """A non-finite loss or gradient in a run that cannot skip it (no loss scaling)."""


def initial_counters() -> dict[str, jax.Array]:
  """No non-finite step yet; 'first_nonfinite_step' is the 1-based step of the first, or -1."""
  return {"nonfinite_steps": jnp.asarray(0, jnp.int32),
          "first_nonfinite_step": jnp.asarray(-1, jnp.int32)}


def all_finite(tree: Any) -> jax.Array:
  """True iff every element of every leaf is finite (a scalar bool array; True when empty)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def select_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` where the step was finite, else `old` (leaf by leaf: the update is not applied)."""
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def count_nonfinite(counters: Counters, finite: jax.Array, step: Any) -> dict[str, jax.Array]:
  """The counters after a step (1-based `step`) that was finite or not."""
  bad = jnp.logical_not(finite)
  first = counters["first_nonfinite_step"]
  return {"nonfinite_steps": counters["nonfinite_steps"] + bad.astype(jnp.int32),
          "first_nonfinite_step": jnp.where(bad & (first < 0), jnp.asarray(step, jnp.int32),
                                            first)}


class Health:
  """Reads the non-finite counters on the host and acts on them.

  `read(source)` returns the counters of what the loop passes to `check` (e.g. a train state).
  Without `skip_nonfinite` any non-finite step raises NonFiniteLossError naming that step,
  the step training stops at and the last good checkpoint (call `check` before every save, so
  a failed run is never saved). With it (fp16 loss scaling) the newly skipped steps are handed
  to `on_skipped(source, new, step, total)` and training goes on.
  """

  def __init__(self, read: Callable[[Any], Counters], directory: str | pathlib.Path,
               initial: Any, *, skip_nonfinite: bool = False, advice: str = "",
               on_skipped: Callable[[Any, int, int, int], None] | None = None):
    self._read = read
    self._dir = directory
    self._skip = skip_nonfinite
    self._advice = advice
    self._on_skipped = on_skipped
    self._seen = int(jax.device_get(read(initial)["nonfinite_steps"]))  # before a resume

  def check(self, source: Any, step: int, last_saved: int | None,
            loss: float | None = None) -> None:
    """Raises NonFiniteLossError, or reports skipped steps, from `source`'s counters."""
    counters = jax.device_get(self._read(source))
    count, first = int(counters["nonfinite_steps"]), int(counters["first_nonfinite_step"])
    if count and not self._skip:
      where = (f"the last good checkpoint is step {last_saved} in {self._dir}"
               if last_saved is not None else f"no checkpoint was written yet in {self._dir}")
      raise NonFiniteLossError(
          f"non-finite loss or gradients at step {first}"
          f"{f' (loss {loss})' if loss is not None else ''}; that update was not applied and "
          f"training stops at step {step}; {where}.{' ' + self._advice if self._advice else ''}")
    if count > self._seen and self._on_skipped is not None:
      self._on_skipped(source, count - self._seen, step, count)
    self._seen = count
