"""The non-finite guard (runtime/health.py): a step skips a non-finite update and counts it;
the host side stops naming the step and the last good checkpoint, or reports skipped steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.runtime import health as health_lib


def test_a_non_finite_update_is_not_applied_and_counted():
  counters = health_lib.initial_counters()
  old = {"w": jnp.ones(3), "b": jnp.zeros(())}
  for step, value in ((1, 2.0), (2, jnp.nan), (3, jnp.inf), (4, 3.0)):
    new = jax.tree.map(lambda x, v=value: x + v, old)
    finite = health_lib.all_finite(new)
    old = health_lib.select_if_finite(finite, new, old)
    counters = health_lib.count_nonfinite(counters, finite, step)
  np.testing.assert_array_equal(old["w"], np.full(3, 6.0))
  assert int(counters["nonfinite_steps"]) == 2 and int(counters["first_nonfinite_step"]) == 2
  assert bool(health_lib.all_finite({}))


def test_health_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
  counters = health_lib.initial_counters()
  health = health_lib.Health(lambda c: c, tmp_path, counters, advice="Lower the lr.")
  health.check(counters, 5, None)  # nothing wrong yet
  bad = health_lib.count_nonfinite(counters, jnp.asarray(False), 6)
  with pytest.raises(health_lib.NonFiniteLossError) as err:
    health.check(bad, 8, 4, loss=float("nan"))
  assert str(err.value) == (
      "non-finite loss or gradients at step 6 (loss nan); that update was not applied and "
      f"training stops at step 8; the last good checkpoint is step 4 in {tmp_path}. Lower the "
      "lr.")
  with pytest.raises(health_lib.NonFiniteLossError, match="no checkpoint was written yet"):
    health.check(bad, 8, None)


def test_health_with_skipping_reports_only_new_skipped_steps(tmp_path):
  reports = []
  state = {"health": health_lib.initial_counters()}
  health = health_lib.Health(lambda s: s["health"], tmp_path, state, skip_nonfinite=True,
                             on_skipped=lambda s, new, step, total: reports.append(
                                 (new, step, total)))
  for step in (1, 2, 3):
    finite = jnp.asarray(step == 2)
    state = {"health": health_lib.count_nonfinite(state["health"], finite, step)}
    health.check(state, step, None)
  health.check(state, 4, None)  # nothing new
  assert reports == [(1, 1, 1), (1, 3, 2)]
