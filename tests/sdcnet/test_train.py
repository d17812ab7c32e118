"""SDCNet video-reconstruction training: sequence windows, deterministic loader, a short
data-parallel run with random init that lowers the loss, checkpoints and resume."""
import pathlib

from _testlib import load_config
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import kernels
from jaxseg.runtime import tensorboard
from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet import train
from jaxseg.sdcnet.sdcnet import reconstruction_loss


def _config(**overrides):
  return load_config("configs/sdcnet_cityscapes.py", **overrides)


def test_config_is_locked():
  c = _config()
  with pytest.raises(AttributeError):
    c.train.lerning_rate = 1.0
  assert c.propagate.steps == 5 and c.train.lr == 1e-4 and c.sdcnet.model == "SDCNet2DRecon"


def test_windows_split_cityscapes_sequences(shared_data, tmp_path):
  seqs = train.find_sequences(str(shared_data / "cityscapes" / "leftImg8bit_sequence" / "train"))
  assert len(seqs) == 6 and all(len(s) == 30 for s in seqs)
  assert all(len({pathlib.Path(p).name.rsplit("_", 2)[0] for p in s}) == 1 for s in seqs)
  assert len(train.make_windows(seqs, 3)) == 6 * 28  # the original: (len - 2) // rate each
  windows = train.make_windows(seqs, 3, sample_rate=2)
  assert len(windows) == 6 * 14 and windows[1][0].endswith("000002_leftImg8bit.jpg")
  # A plain folder of numbered frames is one sequence, in natural order.
  for i in (10, 9, 1, 2):
    (tmp_path / "clip").mkdir(exist_ok=True)
    (tmp_path / "clip" / f"frame{i}.png").write_bytes(b"")
  assert [pathlib.Path(p).name for p in train.find_sequences(str(tmp_path))[0]] == [
      "frame1.png", "frame2.png", "frame9.png", "frame10.png"]
  with pytest.raises(FileNotFoundError, match="train.sequence_root not found"):
    train.find_sequences(str(tmp_path / "missing"))


def _train_config(shared_data, **overrides):
  base = {"data.root": str(shared_data / "cityscapes"), "data.image_size": (128, 256),
          "flow.source": "dis", "train.crop_size": (0, 0), "train.batch_size": 2,
          "train.num_steps": 6, "train.log_every": 1, "train.checkpoint_every": 100,
          "train.num_workers": 2, "checkpoint.async_save": False, "progress_bar": False,
          "mesh.shape": {"data": 2}}
  base.update(overrides)
  return _config(**base)


def test_loader_is_deterministic(shared_data):
  cfg = _train_config(shared_data, **{"train.crop_size": (64, 128)})
  windows = train.make_windows(train.find_sequences(
      str(shared_data / "cityscapes" / "leftImg8bit_sequence" / "train")), 3)
  batches = []
  for _ in range(2):
    loader = train.Loader(windows, cfg, 4, flow_providers.DISFlow(), 3)
    batches.append(loader.batch(5))
    loader.close()
  assert batches[0]["frames"].shape == (4, 3, 64, 128, 3)
  assert batches[0]["flows"].shape == (4, 2, 64, 128, 2)
  for k in batches[0]:
    np.testing.assert_array_equal(batches[0][k], batches[1][k])
  assert loader.steps_per_epoch == 168 // 4


def _fixed_batch_loss(bundle, params, batch):
  """The reconstruction loss of `params` on a batch, without an update."""
  model = bundle.merge(params, bundle.buffers)
  frames = [jnp.asarray(batch["frames"][:, i]) for i in range(3)]
  flows = [jnp.asarray(batch["flows"][:, i]) for i in range(2)]
  _, last, target = model.split_frames(frames)
  flow_pred = model.network_output(frames, flows)
  image_pred = kernels.resample2d(last, flow_pred, mode="bilinear")
  return float(reconstruction_loss(image_pred, target, flow_pred)["tot"])


def test_training_lowers_loss_checkpoints_and_resumes(shared_data, tmp_path):
  workdir = str(tmp_path / "run")
  first = train.train_sdcnet(_train_config(shared_data, **{"train.stop_at_step": 4}), workdir)
  assert first["start_step"] == 0 and first["step"] == 4 and first["total_steps"] == 6
  assert (tmp_path / "run" / "checkpoints" / "4" / "model").is_dir()
  second = train.train_sdcnet(_train_config(shared_data), workdir)
  assert second["start_step"] == 4 and second["step"] == 6
  assert [h["step"] for h in second["history"]] == [5, 6]
  history = first["history"] + second["history"]
  assert all(np.isfinite(h["tot"]) for h in history)
  logged = sorted(s for f in (tmp_path / "run" / "tensorboard").glob("events.*")
                  for s, _ in tensorboard.read_scalars(f)["train/tot"])
  assert logged == [1, 2, 3, 4, 5, 6]  # one event file per run

  # The trained checkpoint loads as sdcnet.checkpoint and fits a fixed batch better than init.
  init = convert_weights.build_sdcnet(random_init=True, seed=0)
  trained = convert_weights.build_sdcnet(checkpoint=workdir)
  windows = train.make_windows(train.find_sequences(
      str(shared_data / "cityscapes" / "leftImg8bit_sequence" / "train")), 3)
  loader = train.Loader(windows, _train_config(shared_data), 2, flow_providers.DISFlow(), 3)
  batch = loader.batch(0)
  loader.close()
  before = _fixed_batch_loss(init, init.params, batch)
  after = _fixed_batch_loss(trained, trained.params, batch)
  assert after < 0.9 * before, (before, after)
  assert any(not np.array_equal(np.asarray(init.params[k]), np.asarray(trained.params[k]))
             for k in init.params)
  np.testing.assert_array_equal(np.asarray(trained.buffers["flow_std"]),
                                np.asarray(init.buffers["flow_std"]))


def test_flownet2_source_needs_weights(shared_data, tmp_path):
  with pytest.raises(ValueError, match="flow.source='dis'"):
    train.train_sdcnet(_train_config(shared_data, **{"flow.source": "flownet2"}),
                       str(tmp_path))
  with pytest.raises(ValueError, match="multiple of the data-parallel size"):
    train.train_sdcnet(_train_config(shared_data, **{"train.batch_size": 3}), str(tmp_path))
