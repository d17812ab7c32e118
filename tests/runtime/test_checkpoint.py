"""Checkpoint reliability: retention, damaged checkpoints, run mismatches, full disk, Ctrl-C."""
import errno
import logging
import re
import signal
from unittest import mock

from _testlib import disk_full_at_step
from _testlib import no_keyboard_interrupt
from _testlib import sigint_on_call
from _testlib import tiny_demo_config
import flax.nnx as nnx
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import loop as trainer
from jaxseg.train import periodic_eval
from jaxseg.train import step as step_lib

# A tiny stand-in for a train state: retention and save errors do not depend on the model.
MODEL_VARS = {"params": {"w": np.zeros(3, np.float32)}, "batch_stats": {}}
TRAIN_VARS = {"step": np.zeros((), np.int32)}
META = {"model": "m", "num_classes": 2}
NO_SPACE = ValueError('RESOURCE_EXHAUSTED: Error writing local file "x/_sharding": Failed '
                      "to write 615 bytes to file 5: No space left on device [os_error_code='28']")


def _save(manager, step, miou=None):
  manager.save(step, model_vars=MODEL_VARS, train_vars=TRAIN_VARS, data_state={"s": step},
               meta=META, metrics=None if miou is None else {"miou": miou})


def _on_disk(directory) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _config(num_steps: int):
  """The tiny demo, checkpointing every step, without evaluation or predictions."""
  c = tiny_demo_config(num_steps)
  c.train.eval_every = 0
  c.train.checkpoint_every = 1
  c.eval.write_predictions = False
  return c


def _train(config, workdir):
  """train_and_evaluate with a stand-in evaluation (its compile would dominate the test)."""
  with mock.patch.object(periodic_eval.PeriodicEval, "evaluate", return_value={"miou": 0.5}):
    return trainer.train_and_evaluate(config, workdir)


# ------------------------------------------------------------------------------ retention --
@pytest.mark.parametrize("async_save", [False, True])
def test_keep_holds_the_last_k_plus_the_best_and_never_the_newest_lost(tmp_path, async_save):
  ckpt = tmp_path / "checkpoints"
  manager = checkpoint_lib.CheckpointManager(ckpt, keep=2, best_metric="miou",
                                             async_save=async_save)
  # eval_every=2 over 10 steps, the best score early: orbax's top-k kept 2 and 4 here.
  scores = {2: 0.1, 4: 0.9, 6: 0.2, 8: 0.3, 10: 0.4}
  for step in range(1, 11):
    _save(manager, step, scores.get(step))
  manager.close()
  assert _on_disk(ckpt) == [4, 9, 10]
  # A resume remembers the best (step 4) from disk; the newest stays although it scores worst.
  manager = checkpoint_lib.CheckpointManager(ckpt, keep=2, best_metric="miou",
                                             async_save=async_save)
  _save(manager, 11, 0.5)
  _save(manager, 12, 0.05)
  manager.close()
  assert _on_disk(ckpt) == [4, 11, 12]
  # Without evaluations: exactly the last `keep` (orbax kept every step).
  plain = tmp_path / "plain"
  manager = checkpoint_lib.CheckpointManager(plain, keep=2, best_metric="miou",
                                             async_save=async_save)
  for step in range(1, 6):
    _save(manager, step)
  manager.close()
  assert _on_disk(plain) == [4, 5]


# ------------------------------------------------------------------- full disk, mismatch --
def test_full_disk_names_the_step_and_directory_in_one_line(tmp_path):
  ckpt = tmp_path / "checkpoints"
  # Synchronous save: the write of step 2 itself fails.
  manager = checkpoint_lib.CheckpointManager(ckpt, keep=3, async_save=False)
  _save(manager, 1)
  real_save = ocp.CheckpointManager.save

  def full_from_step_2(self, step, *args, **kwargs):
    if step >= 2:
      (ckpt / f"{step}.orbax-checkpoint-tmp").mkdir()  # what a failed write leaves behind
      raise NO_SPACE
    return real_save(self, step, *args, **kwargs)

  with mock.patch.object(ocp.CheckpointManager, "save", full_from_step_2):
    with pytest.raises(checkpoint_lib.NoSpaceError) as err:
      _save(manager, 2)
  manager.close()
  assert str(err.value) == f"no space left on device while writing checkpoint 2 under {ckpt}"
  assert err.value.errno == errno.ENOSPC
  assert [p.name for p in ckpt.iterdir()] == ["1"]  # the partial write is removed
  # Asynchronous save: the failure of step 3 surfaces when the next save waits for it.
  manager = checkpoint_lib.CheckpointManager(ckpt, keep=3, async_save=True)
  _save(manager, 3)
  manager._manager.wait_until_finished()  # the real write ends before the simulated failure
  with mock.patch.object(ocp.CheckpointManager, "wait_until_finished",
                         side_effect=OSError(errno.ENOSPC, "No space left on device")):
    with pytest.raises(checkpoint_lib.NoSpaceError, match="writing checkpoint 3 under"):
      _save(manager, 4)
  manager.close()  # releases orbax without raising the reported failure again


def test_resume_refuses_a_checkpoint_of_another_run_before_restoring(tmp_path):
  ours = _config(2)
  manager = checkpoint_lib.CheckpointManager(tmp_path, async_save=False)
  manager.save(3, model_vars=MODEL_VARS, train_vars=TRAIN_VARS, data_state={},
               meta=trainer._meta(ours, 8))

  def resume(config=ours, model_vars=MODEL_VARS, train_vars=TRAIN_VARS):
    with mock.patch.object(manager, "restore", return_value="restored") as restore:
      found = manager.restore_latest(meta=trainer._meta(config, 8), model_vars=model_vars,
                                     train_vars=train_vars)
    return found, restore.call_count

  other_impl = _config(2)
  other_impl.model.overrides.conv_impl = "xla"  # how the same network computes: allowed
  assert resume(other_impl) == ((3, "restored"), 1)
  wider, other_data = _config(2), _config(2)
  wider.model.overrides.width_multiplier = 0.125
  other_data.data.name = "cityscapes"
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=rf"^cannot resume from checkpoint 3 under {tmp_path}: it was written by "
                           r"a different run \(model.overrides.width_multiplier: checkpoint "
                           r"0.0625, this run 0.125\); use a new --workdir"):
    resume(wider)
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=r"data.name: checkpoint 'synthetic', this run 'cityscapes'"):
    resume(other_data)
  bigger = {"params": {"w": np.zeros(4, np.float32)}, "batch_stats": {}}
  with pytest.raises(checkpoint_lib.CheckpointMismatchError, match=r"model params: shape mism"):
    resume(model_vars=bigger)
  with pytest.raises(checkpoint_lib.CheckpointMismatchError, match=r"training state of 1 arr"):
    resume(train_vars={**TRAIN_VARS, "momentum": np.zeros(3, np.float32)})
  manager.close()


# ------------------------------------------------------------------------------- damaged --
def _checkpoints_as_a_run_writes_them(config, workdir, steps) -> None:
  """Checkpoints of `config`'s initial state at `steps` (step counters set), without training."""
  num_classes, _ = trainer.resolve_num_classes(config)
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  tx, _ = trainer.optimizer_lib.create_optimizer(config, 10)
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=tx,
                                       loss_fn=None)
  state = fns.init()
  manager = checkpoint_lib.CheckpointManager(workdir / "checkpoints", async_save=False)
  for step in steps:
    train_vars = dict(state.train_vars(), step=np.asarray(step, state.step.dtype))
    manager.save(step, model_vars=state.model_vars(), train_vars=train_vars, data_state={},
                 meta=trainer._meta(config, num_classes))
  manager.close()


def _largest_data_file(step_dir):
  return max((step_dir / "model").rglob("d/*"), key=lambda p: p.stat().st_size)


@pytest.mark.slow  # one tiny training run: ~15 s of CPU (tracing the step)
def test_damaged_checkpoints_eval_names_them_resume_falls_back_full_disk_exits(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  _checkpoints_as_a_run_writes_them(_config(4), tmp_path, [1, 2, 3])
  ckpt = tmp_path / "checkpoints"
  data = _largest_data_file(ckpt / "3")
  data.write_bytes(data.read_bytes()[:100])  # truncated, as by a disk fault
  (ckpt / "2" / "model" / "_METADATA").unlink()  # an index file lost

  # eval/predict: one line naming the step, the file and the steps to pass as --step.
  model = registry.from_config(_config(4), 8, rngs=nnx.Rngs(0))
  with pytest.raises(checkpoint_lib.DamagedCheckpointError) as err:
    checkpoint_lib.restore_model_variables(tmp_path, model)
  message = str(err.value)
  assert "\n" not in message and message.startswith(f"checkpoint step 3 under {ckpt} is damaged")
  assert f"{ckpt}/3/model/" in message and "--step with another step (1, 2)" in message
  with pytest.raises(checkpoint_lib.DamagedCheckpointError, match=r"2/model/_METADATA is miss"):
    checkpoint_lib.restore_model_variables(tmp_path, model, step=2)

  # Resume: steps 3 and 2 are moved aside (never deleted) and training continues from step 1;
  # then the disk fills while writing step 4: one message, a non-zero exit.
  with disk_full_at_step(4):
    with pytest.raises(SystemExit) as exit_info:
      _train(_config(4), tmp_path)
  warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(warnings) == 2 and all("resuming from step 1" in w for w in warnings), warnings
  assert "checkpoint step 3 under" in warnings[0] and "checkpoint step 2 under" in warnings[1]
  assert _on_disk(tmp_path / "checkpoints_damaged") == [2, 3]
  assert exit_info.value.code == (
      f"error: no space left on device while writing checkpoint 4 under {ckpt}; free some "
      "space, then run the same command to resume from step 3")
  assert _on_disk(ckpt) == [1, 2, 3]  # written again by the resumed run
  # orbax's expected notices stay silent (item directories never hold step metadata).
  assert "Metadata file does not exist" not in caplog.text
  assert "tracked_metric" not in caplog.text


# ---------------------------------------------------------------------------------- Ctrl-C --
@pytest.mark.slow  # one tiny training run: ~15 s of CPU (tracing the step)
def test_ctrl_c_saves_the_current_step_and_exits_130(tmp_path, caplog):
  config = _config(6)
  config.train.checkpoint_every = 100  # only the interrupt saves
  previous = signal.getsignal(signal.SIGINT)
  with mock.patch.object(trainer.mesh_lib, "shard_batch",
                         sigint_on_call(2, mesh_lib.shard_batch)):
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as exit_info:
      with no_keyboard_interrupt():
        _train(config, tmp_path)
  assert exit_info.value.code == 130
  assert _on_disk(tmp_path / "checkpoints") == [2]
  assert re.search(r"stopping at step 2 \(SIGINT\); checkpoint 2 is saved under", caplog.text)
  assert signal.getsignal(signal.SIGINT) is previous  # the handler is uninstalled


# The second Ctrl-C (exit at once, without saving): tests/runtime/test_preemption.py.
