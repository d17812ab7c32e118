"""Long jobs: SIGTERM and SIGKILL resume bit-identically, non-finite steps, init_from, rlx_off."""
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from _testlib import DEMO_ARGS
from _testlib import ROOT
from _testlib import read_checkpoint_params
from _testlib import subprocess_env
from _testlib import tiny_demo_config
import jax
import numpy as np
import pytest

from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import tensorboard
from jaxseg.train import init_from as init_from_lib
from jaxseg.train import loop as trainer
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

STEPS = 10


def _demo_config(num_steps=4):
  """The tiny demo, checkpointing every step, without eval."""
  c = tiny_demo_config(num_steps)
  c.train.eval_every = 0
  c.train.checkpoint_every = 1
  c.eval.write_predictions = False
  return c


# ------------------------------------------------------------- SIGTERM / SIGKILL, resume --
def _start(workdir: pathlib.Path) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **subprocess_env())
  for name in ("JAXSEG_COORDINATOR", "JAXSEG_NUM_CPU_DEVICES"):
    env.pop(name, None)
  args = [*DEMO_ARGS, "--workdir", str(workdir), f"--config.train.num_steps={STEPS}",
          "--config.train.checkpoint_every=1", "--config.train.eval_every=0",
          "--config.eval.write_predictions=False", "--config.mesh.shape.data=1"]
  return subprocess.Popen([sys.executable, "-m", "jaxseg.main", *args], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps(workdir: pathlib.Path) -> list[int]:
  root = workdir / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _signal_when(proc, workdir, min_step: int, sig: int, delay: float = 0.0) -> None:
  """Sends `sig` once a checkpoint >= min_step is complete (plus `delay` seconds)."""
  deadline = time.monotonic() + 900
  while not any(s >= min_step for s in _steps(workdir)):
    assert proc.poll() is None, f"run ended before step {min_step}:\n{proc.stdout.read()}"
    assert time.monotonic() < deadline, "no checkpoint within 900 s"
    time.sleep(0.02)
  time.sleep(delay)
  proc.send_signal(sig)


def _finish(proc) -> tuple[int, str]:
  out, _ = proc.communicate(timeout=1200)
  return proc.returncode, out


def test_sigterm_and_sigkill_resume_bit_identical(tmp_path):
  straight = tmp_path / "straight"
  code, out = _finish(_start(straight))
  assert code == 0, out[-4000:]

  work = tmp_path / "interrupted"
  # 1) SIGTERM (preemption): the trainer saves the step it is at and exits cleanly.
  proc = _start(work)
  _signal_when(proc, work, 1, signal.SIGTERM)
  code, out = _finish(proc)
  assert code == 0, out[-4000:]
  stopped = re.search(r"stopping at step (\d+) \(SIGTERM\)", out)
  assert stopped, out[-4000:]
  assert _steps(work)[-1] == int(stopped.group(1)) < STEPS
  # 2) SIGKILL while training/saving: nothing gets to clean up.
  proc = _start(work)
  _signal_when(proc, work, int(stopped.group(1)) + 2, signal.SIGKILL, delay=0.05)
  code, out = _finish(proc)
  assert code == -signal.SIGKILL
  killed_at = _steps(work)[-1]
  assert killed_at < STEPS, "the run finished before it was killed"
  # 3) Resume to the end.
  code, out = _finish(_start(work))
  assert code == 0, out[-4000:]
  assert _steps(work)[-1] == STEPS

  a = read_checkpoint_params(straight / "checkpoints" / str(STEPS))
  b = read_checkpoint_params(work / "checkpoints" / str(STEPS))
  for group in ("params", "batch_stats"):
    assert sorted(a[group]) == sorted(b[group])
    for key in a[group]:
      np.testing.assert_array_equal(a[group][key], b[group][key], err_msg=f"{group}/{key}")


# ------------------------------------------------------------------------------ non-finite --
def test_non_finite_loss_stops_naming_step_and_last_good_checkpoint(tmp_path):
  config = _demo_config(num_steps=4)
  config.optimizer.lr = 1e30  # the first update overflows activations of the next step
  with pytest.raises(trainer.NonFiniteLossError) as err:
    trainer.train_and_evaluate(config, tmp_path)
  message = str(err.value)
  bad = int(re.search(r"non-finite loss or gradients at step (\d+)", message).group(1))
  steps = _steps(tmp_path)
  assert steps and steps[-1] == bad - 1
  assert f"last good checkpoint is step {bad - 1}" in message and str(tmp_path) in message
  for step in steps:  # never a NaN/Inf in a checkpoint
    saved = read_checkpoint_params(tmp_path / "checkpoints" / str(step))
    for group in saved.values():
      for key, value in group.items():
        assert np.isfinite(value).all(), (step, key)


def test_fp16_skips_overflowing_steps_and_counts_them(tmp_path):
  config = _demo_config(num_steps=3)
  config.precision = "fp16"
  config.loss_scale.initial_scale = 1e38  # every step overflows in fp16
  trainer.train_and_evaluate(config, tmp_path)
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  scalars = tensorboard.read_scalars(events)
  assert scalars["train/skipped_steps"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
  assert [v for _, v in scalars["train/loss_scale"]] == pytest.approx([5e37, 2.5e37, 1.25e37],
                                                                        rel=1e-6)
  saved = read_checkpoint_params(tmp_path / "checkpoints" / "3")
  assert all(np.isfinite(v).all() for v in saved["params"].values())


# -------------------------------------------------------------------------------- init_from --
def test_init_from_reinitialises_the_classifier_of_another_class_count(tmp_path):
  import flax.nnx as nnx
  config = _demo_config()
  config.mesh.fsdp_min_size = 256
  source = registry.from_config(config, 5, rngs=nnx.Rngs(7))  # a "Mapillary" model, 5 classes
  checkpoint_lib.save_model_checkpoint(tmp_path / "src", source,
                                       metadata={"model": config.model.name, "num_classes": 5})
  mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4})
  tx, _ = optimizer_lib.create_optimizer(config, 10)
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=8, tx=tx, loss_fn=None)
  state = fns.init()
  fresh = jax.device_get(state.model_vars())
  shardings = {"params": fns.state_sharding.params,
               "batch_stats": fns.state_sharding.batch_stats}
  restored, report = init_from_lib.restore_forgiving(
      str(tmp_path / "src"), state.model_vars(), shardings, mesh_lib.replicated(mesh))
  src_params, src_stats = (jax.device_get(t) for t in
                           step_lib.variables.model_variables(source))
  classifier = {k for k in fresh["params"] if k.startswith("final/6/")}
  assert classifier and {r[0] for r in report.reinitialised} == {f"params/{k}" for k in
                                                                  classifier}
  for key, value in restored["params"].items():
    assert value.sharding == shardings["params"][key], key  # read straight into FSDP shards
    want = fresh["params"][key] if key in classifier else src_params[key]
    np.testing.assert_array_equal(np.asarray(value), want, err_msg=key)
  for key, value in restored["batch_stats"].items():
    np.testing.assert_array_equal(np.asarray(value), src_stats[key], err_msg=key)
  assert f"re-initialised {len(classifier)}" in report.summary()
  assert "final/6/kernel" in report.summary()
  # A checkpoint of an unrelated network is refused with a clear message.
  other = {"params": {"x/kernel": state.params[sorted(state.params)[0]]}, "batch_stats": {}}
  with pytest.raises(ValueError, match="no variable"):
    init_from_lib.restore_forgiving(str(tmp_path / "src"), other, {"params": {}}, None)


# --------------------------------------------------------------------------------- rlx_off --
def test_label_relaxation_switches_off_after_rlx_off_epoch_and_resumes(tmp_path, caplog):
  def config(stop=0):
    c = _demo_config(num_steps=4)  # 16 images / batch 8: 2 steps per epoch
    c.loss.name = "label_relaxation"
    c.loss.rlx_off_epoch = 0  # epoch 1 (steps 3, 4) trains without relaxation
    c.train.stop_at_step = stop
    return c

  straight = config()
  straight.train.eval_every_epochs = 1  # and validation after every epoch, as the original
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(straight, tmp_path / "straight")
  assert any("epoch 1: label relaxation off" in r.getMessage() for r in caplog.records)
  (events,) = (tmp_path / "straight" / "tensorboard").glob("events.out.tfevents.*")
  scalars = tensorboard.read_scalars(events)
  assert [s for s, _ in scalars["eval/miou"]] == [2, 4]
  assert [s for s, v in scalars["train/epoch"]] == [1, 2, 3, 4]
  assert [v for _, v in scalars["train/epoch"]] == [0, 0, 1, 1]
  trainer.train_and_evaluate(config(stop=3), tmp_path / "resumed")  # stops inside epoch 1
  trainer.train_and_evaluate(config(), tmp_path / "resumed")
  a = read_checkpoint_params(tmp_path / "straight" / "checkpoints" / "4")
  b = read_checkpoint_params(tmp_path / "resumed" / "checkpoints" / "4")
  for key in a["params"]:
    np.testing.assert_array_equal(a["params"][key], b["params"][key], err_msg=key)
