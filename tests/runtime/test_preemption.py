"""Stopping on request: SIGTERM / Ctrl-C become a flag, a second Ctrl-C exits at once, and the
messages that end a run name the step to resume from (runtime/preemption.py)."""
import logging
import os
import signal
from unittest import mock

from _testlib import no_keyboard_interrupt
import numpy as np
import pytest

from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import preemption as preemption_lib


def test_sigterm_sets_the_flag_and_restore_puts_the_handlers_back():
  previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
  preemption = preemption_lib.Preemption(1)
  try:
    assert not preemption.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.should_stop(2) and preemption.reason == "SIGTERM"
  finally:
    preemption.restore()
  assert {sig: signal.getsignal(sig) for sig in previous} == previous


def test_second_ctrl_c_exits_at_once_without_saving(caplog):
  exits = []
  with mock.patch.object(preemption_lib, "exit_now", exits.append):
    preemption = preemption_lib.Preemption(
        1, where=lambda: "the last committed checkpoint is step 7")
    try:
      with caplog.at_level(logging.WARNING), no_keyboard_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        assert preemption.requested and preemption.reason == "SIGINT" and not exits
        os.kill(os.getpid(), signal.SIGINT)
    finally:
      preemption.restore()
  assert exits == [130]
  assert ("Ctrl-C again: exiting at once without saving; the last committed checkpoint is "
          "step 7") in caplog.text


def test_report_stop_exits_130_only_for_ctrl_c(caplog):
  with caplog.at_level(logging.WARNING):
    preemption_lib.report_stop(4, "SIGTERM", "/w/checkpoints")
  assert "stopping at step 4 (SIGTERM); checkpoint 4 is saved under /w/checkpoints" in caplog.text
  with pytest.raises(SystemExit) as exit_info:
    preemption_lib.report_stop(4, "SIGINT", "/w/checkpoints")
  assert exit_info.value.code == 130


def test_last_committed_and_full_disk_name_the_step_to_resume_from(tmp_path):
  manager = checkpoint_lib.CheckpointManager(tmp_path / "ckpt", async_save=False)
  err = checkpoint_lib.NoSpaceError(3, manager.directory)
  assert preemption_lib.last_committed(manager) == (
      f"no checkpoint was committed under {manager.directory}")
  assert preemption_lib.no_space_exit(err, manager).code.endswith("nothing was committed yet")
  manager.save(2, model_vars={"params": {"w": np.zeros(2, np.float32)}, "batch_stats": {}},
               train_vars={"step": np.zeros((), np.int32)}, data_state=None, meta={"model": "m"})
  manager.close()
  assert preemption_lib.last_committed(manager) == (
      f"the last committed checkpoint is step 2 under {manager.directory}")
  assert preemption_lib.no_space_exit(err, manager).code == (
      f"error: no space left on device while writing checkpoint 3 under {manager.directory}; "
      "free some space, then run the same command to resume from step 2")
