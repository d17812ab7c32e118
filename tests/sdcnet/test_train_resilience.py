"""SDCNet training stops and resumes like segmentation training: SIGTERM / Ctrl-C save the
current step, a non-finite update is skipped and stops the run before a NaN is saved, a damaged
newest checkpoint falls back, a workdir of another run is refused, a full disk exits in one line.

One tiny run shape (64x64 crops of one window, batch 1, one device) so every run after the first
compiles from the persistent cache."""
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from unittest import mock

from _testlib import ROOT
from _testlib import disk_full_at_step
from _testlib import load_config
from _testlib import no_keyboard_interrupt
from _testlib import read_checkpoint_params
from _testlib import sigint_on_call
from _testlib import subprocess_env
import jax
import numpy as np
import pytest

from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import health as health_lib
from jaxseg.runtime import tensorboard
from jaxseg.sdcnet import train

TINY = {"data.image_size": (128, 256), "flow.source": "dis", "train.crop_size": (64, 64),
        "train.batch_size": 1, "train.log_every": 1, "train.checkpoint_every": 1,
        "train.num_workers": 1, "checkpoint.async_save": False, "progress_bar": False,
        "mesh.shape": {"data": 1}}


def _config(shared_data, **overrides):
  return load_config("configs/sdcnet_cityscapes.py",
                     **{"data.root": str(shared_data / "cityscapes"), **TINY, **overrides})


def _steps(directory: pathlib.Path) -> list[int]:
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _all_finite(step_dir: pathlib.Path) -> bool:
  saved = read_checkpoint_params(step_dir)
  return all(np.isfinite(v).all() for group in saved.values() for v in group.values())


# ---------------------------------------------------------------------- SIGTERM (subprocess) --
def _start(shared_data, workdir: pathlib.Path, num_steps: int) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **subprocess_env())
  for name in ("JAXSEG_COORDINATOR", "JAXSEG_NUM_CPU_DEVICES"):
    env.pop(name, None)
  args = ["--config", str(ROOT / "configs" / "sdcnet_cityscapes.py"), "--workdir", str(workdir),
          f"--config.data.root={shared_data / 'cityscapes'}", "--config.data.image_size=(128,256)",
          "--config.flow.source=dis", "--config.train.crop_size=(64,64)",
          "--config.train.batch_size=1", f"--config.train.num_steps={num_steps}",
          "--config.train.log_every=1", "--config.train.checkpoint_every=1",
          "--config.train.num_workers=1", "--config.checkpoint.async_save=False",
          "--config.progress_bar=False", "--config.mesh.shape.data=1"]
  return subprocess.Popen([sys.executable, "-m", "jaxseg.main", *args], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_saves_the_current_step_and_a_rerun_resumes_from_it(shared_data, tmp_path):
  ckpt = tmp_path / "checkpoints"
  proc = _start(shared_data, tmp_path, num_steps=200)
  deadline = time.monotonic() + 600
  while not _steps(ckpt):
    assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()}"
    assert time.monotonic() < deadline, "no checkpoint within 600 s"
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-4000:]
  stopped = re.search(r"stopping at step (\d+) \(SIGTERM\); checkpoint \1 is saved under", out)
  assert stopped, out[-4000:]
  at = int(stopped.group(1))
  assert _steps(ckpt)[-1] == at < 200

  proc = _start(shared_data, tmp_path, num_steps=at + 2)  # compiled from the cache
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-4000:]
  assert _steps(ckpt)[-1] == at + 2
  assert "stopping at step" not in out
  # The rerun trained steps at+1 and at+2 only: its TensorBoard file starts after `at`.
  events = sorted((tmp_path / "tensorboard").glob("events.*"), key=os.path.getmtime)
  assert [s for s, _ in tensorboard.read_scalars(events[-1])["train/tot"]] == [at + 1, at + 2]


# ----------------------------------------------- Ctrl-C, damaged newest step, mismatch, disk --
def test_ctrl_c_saves_then_resume_falls_back_from_a_damaged_step(shared_data, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  ckpt = tmp_path / "checkpoints"
  previous = signal.getsignal(signal.SIGINT)
  with mock.patch.object(train.mesh_lib, "shard_batch",
                         sigint_on_call(3, train.mesh_lib.shard_batch)):
    with pytest.raises(SystemExit) as exit_info, no_keyboard_interrupt():
      train.train_sdcnet(_config(shared_data, **{"train.num_steps": 10}), str(tmp_path))
  assert exit_info.value.code == 130
  assert signal.getsignal(signal.SIGINT) is previous
  assert re.search(r"stopping at step 3 \(SIGINT\); checkpoint 3 is saved under", caplog.text)
  assert _steps(ckpt) == [1, 2, 3]

  # Another model or window length: refused before anything is restored, naming the setting.
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=r"sequence_length: checkpoint 2, this run 3"):
    train.train_sdcnet(_config(shared_data, **{"sdcnet.sequence_length": 3}), str(tmp_path))

  # The newest step is damaged: it is moved aside and training resumes from step 2; then the
  # disk fills while writing step 4: one line naming the step to resume from.
  data = max((ckpt / "3" / "model").rglob("d/*"), key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:100])
  with disk_full_at_step(4):
    with pytest.raises(SystemExit) as exit_info:
      train.train_sdcnet(_config(shared_data, **{"train.num_steps": 10}), str(tmp_path))
  assert exit_info.value.code == (
      f"error: no space left on device while writing checkpoint 4 under {ckpt}; free some "
      "space, then run the same command to resume from step 3")
  warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(warnings) == 1 and "resuming from step 2" in warnings[0], warnings
  assert _steps(tmp_path / "checkpoints_damaged") == [3]
  assert _steps(ckpt) == [1, 2, 3]  # step 3 written again by the resumed run


# ------------------------------------------------------------------------------ non-finite --
def test_non_finite_batch_is_not_applied_and_stops_before_it_is_saved(shared_data, tmp_path):
  real_batch = train.Loader.batch
  real_make_step = train.make_train_step
  seen = {}

  def nan_at_step_3(self, step):
    batch = real_batch(self, step)
    if step == 2:  # 0-based: the third step
      batch["frames"][:, :, :4] = np.nan
    return batch

  def spying_step(bundle, tx):
    step_fn = real_make_step(bundle, tx)

    def step(params, opt_state, *rest):
      out = step_fn(params, opt_state, *rest)
      if int(rest[-1]) == 3:
        seen.update(before=(params, opt_state), after=out[:2], finite=out[3]["finite"])
      return out
    return step

  config = _config(shared_data, **{"train.num_steps": 6, "train.log_every": 100})
  with mock.patch.object(train.Loader, "batch", nan_at_step_3), \
      mock.patch.object(train, "make_train_step", spying_step):
    with pytest.raises(health_lib.NonFiniteLossError) as err:
      train.train_sdcnet(config, str(tmp_path))
  # Found by the check before saving step 3 (no log step in between), named with the last
  # good checkpoint; step 3 was never written.
  assert str(err.value).startswith(
      "non-finite loss or gradients at step 3; that update was not applied and training stops "
      f"at step 3; the last good checkpoint is step 2 in {tmp_path / 'checkpoints'}.")
  assert _steps(tmp_path / "checkpoints") == [1, 2]
  assert all(_all_finite(tmp_path / "checkpoints" / str(s)) for s in (1, 2))
  # The step itself left params and the Adam state as they were.
  assert not bool(seen["finite"])
  for before, after in zip(jax.tree.leaves(seen["before"]), jax.tree.leaves(seen["after"])):
    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
