"""How a training run stops on request and says where to resume: SIGTERM (preemption, a SLURM
time limit) and a first Ctrl-C become a flag the loop polls so it can save the step it is at;
a second Ctrl-C exits at once; a full disk ends the run in one line naming the step to resume
from. Shared by the segmentation loop (train/loop.py) and SDCNet training (sdcnet/train.py),
so both stop the same way.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxseg.runtime import checkpoint as checkpoint_lib

CTRL_C_STATUS = 130  # the shell's status for a program ended by Ctrl-C (128 + SIGINT)


def exit_now(status: int) -> None:
  """Ends the process without unwinding: nothing (an orbax writer thread, a GC callback
  swallowing a KeyboardInterrupt) can delay or cancel it."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def interactive() -> bool:
  """A Python prompt or a notebook kernel, where a second Ctrl-C must not kill the session."""
  return hasattr(sys, "ps1") or "ipykernel" in sys.modules


class Preemption:
  """Turns SIGTERM and a first Ctrl-C (SIGINT) into a flag so the loop can save a checkpoint
  before exiting. A second Ctrl-C exits at once with status 130, without saving (a save in
  flight is never committed, so nothing committed is lost); at an interactive prompt it raises
  KeyboardInterrupt instead of ending the session.

  With several processes the flag is agreed on (any process signalled -> all stop at the same
  step) every `sync_every` steps, since a checkpoint is a collective operation. Call
  `restore()` when the loop ends to put the previous handlers back.
  """

  def __init__(self, sync_every: int, where: Callable[[], str] = lambda: ""):
    self.requested = False
    self.reason: str | None = None  # "SIGTERM" or "SIGINT"
    self._sync_every = max(int(sync_every), 1)
    self._where = where  # names the last committed checkpoint, for the abort message
    self._previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a test runner thread)
        pass

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if signum == signal.SIGINT and self.reason == "SIGINT":
      logging.warning("Ctrl-C again: exiting at once without saving; %s", self._where())
      if interactive():
        raise KeyboardInterrupt
      exit_now(CTRL_C_STATUS)
      return
    self.requested = True
    self.reason = signal.Signals(signum).name
    if signum == signal.SIGINT:
      logging.warning("Ctrl-C: saving a checkpoint after this step, then exiting; press Ctrl-C "
                      "again to exit at once without saving")

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop (agreed across processes every `sync_every` steps)."""
    if jax.process_count() == 1:
      return self.requested
    if step % self._sync_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def restore(self) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}


def report_stop(step: int, reason: str, directory: Any) -> None:
  """Logs a requested stop after its checkpoint is saved; a Ctrl-C then exits with status 130
  (SystemExit) so scripts see the interruption, other reasons return normally."""
  logging.warning("stopping at step %d (%s); checkpoint %d is saved under %s", step, reason,
                  step, directory)
  if reason == "SIGINT":
    raise SystemExit(CTRL_C_STATUS)


def last_committed(ckpt: checkpoint_lib.CheckpointManager) -> str:
  """Names the newest checkpoint a resume would start from, for a message ending the run."""
  committed = ckpt.committed_steps()
  if not committed:
    return f"no checkpoint was committed under {ckpt.directory}"
  return f"the last committed checkpoint is step {committed[-1]} under {ckpt.directory}"


def no_space_exit(err: checkpoint_lib.NoSpaceError,
                  ckpt: checkpoint_lib.CheckpointManager) -> SystemExit:
  """The one-line exit for a full disk: what failed, and the step the same command resumes
  from (a traceback would bury the one thing to do)."""
  committed = ckpt.committed_steps()
  resume = (f"run the same command to resume from step {committed[-1]}" if committed
            else "nothing was committed yet")
  return SystemExit(f"error: {err}; free some space, then {resume}")


@contextlib.contextmanager
def closing_run(ckpt: checkpoint_lib.CheckpointManager, preemption: Preemption,
                *resources: Any) -> Iterator[None]:
  """The end of a training loop, however it ends: closes `resources` (a progress bar, a
  loader, a writer; None is skipped) in order, then the checkpoint manager (which waits for a
  save in flight), then restores the signal handlers; a full disk becomes no_space_exit."""
  try:
    try:
      yield
    finally:
      for resource in resources:
        if resource is not None:
          resource.close()
      try:
        ckpt.close()
      finally:
        preemption.restore()
  except checkpoint_lib.NoSpaceError as err:
    raise no_space_exit(err, ckpt) from None
