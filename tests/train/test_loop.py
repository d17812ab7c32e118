"""End to end: the demo config trains, evaluates, checkpoints, resumes, predicts."""
import json

from _testlib import tiny_demo_config
import numpy as np
import pytest

from jaxseg.inference import commands as inference
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import tensorboard
from jaxseg.train import loop as trainer


def test_demo_end_to_end_writes_checkpoint_eval_predictions_and_events(tmp_path):
  config = tiny_demo_config()
  summary = trainer.train_and_evaluate(config, tmp_path)
  assert 0.0 <= summary["miou"] <= 1.0
  assert checkpoint_lib.CheckpointManager(tmp_path / "checkpoints").latest_step() == 4
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["step"] == 4 and set(metrics["per_class"]) >= {"sky", "road", "car"}
  assert "mean" in (tmp_path / "eval" / "iou_table.txt").read_text()
  colors = sorted((tmp_path / "predictions").glob("*_color.png"))
  assert len(colors) == 3
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  scalars = tensorboard.read_scalars(events)
  assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
  assert "eval/miou" in scalars and "train/img_per_s" in scalars

  # --mode eval restores params only and reproduces the in-training evaluation.
  restored = inference.evaluate_checkpoint(config, tmp_path, checkpoint=tmp_path)
  assert restored["miou"] == pytest.approx(summary["miou"], abs=1e-6)
  # --mode predict on a folder of images writes one mask + overlay per image.
  written = inference.predict_paths(config, checkpoint=tmp_path, step=None,
                                    input_path=tmp_path / "predictions",
                                    output_dir=tmp_path / "predict")
  assert len(written) == 2 * 6


def test_resume_equals_uninterrupted(tmp_path):
  straight = tiny_demo_config(num_steps=4)
  trainer.train_and_evaluate(straight, tmp_path / "straight")
  interrupted = tiny_demo_config(num_steps=4)
  interrupted.train.stop_at_step = 2
  trainer.train_and_evaluate(interrupted, tmp_path / "resumed")
  assert checkpoint_lib.CheckpointManager(tmp_path / "resumed" / "checkpoints").latest_step() == 2
  interrupted.train.stop_at_step = 0
  trainer.train_and_evaluate(interrupted, tmp_path / "resumed")

  def params_at(workdir):
    ckpt = checkpoint_lib.resolve_checkpoint(workdir)
    import orbax.checkpoint as ocp
    return ocp.StandardCheckpointer().restore(ckpt / "model")["params"]

  a, b = params_at(tmp_path / "straight"), params_at(tmp_path / "resumed")
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
  # TensorBoard purges what the first run logged after step 2 (SessionLog START at step 3).
  from tensorboardX.proto import event_pb2
  purges = [event.step for path in (tmp_path / "resumed" / "tensorboard").glob("events.*")
            for event in map(event_pb2.Event.FromString,
                             tensorboard._records(path.read_bytes(), path))
            if event.session_log.status == event_pb2.SessionLog.START]
  assert purges == [3]


def test_checkpoint_of_another_model_is_refused(tmp_path):
  config = tiny_demo_config(num_steps=2)
  trainer.train_and_evaluate(config, tmp_path)
  other = tiny_demo_config()
  other.model.name = "DeepR50V3PlusD_m1"
  with pytest.raises(ValueError, match="DeepR18V3PlusD_m1"):
    inference.evaluate_checkpoint(other, tmp_path, checkpoint=tmp_path)
