"""CamVid (SegNet layout) through the real loader, and a few training steps on it."""
import jax
import numpy as np

from jaxseg import input_pipeline
from jaxseg.config_base import base_config
from jaxseg.train_lib import losses
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import optimizer as optimizer_lib
from jaxseg.train_lib import train_step as step_lib


def _config(root):
  c = base_config()
  c.precision = "fp32"
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = "camvid"
  c.data.root = str(root)
  c.data.crop_size = 64
  c.data.read_num_threads = 2
  c.optimizer.lr = 0.05
  return c


def test_camvid_loader_shapes_dtypes_labels(shared_data):
  config = _config(shared_data / "camvid")
  info = input_pipeline.dataset_info(config.data)
  assert info.num_classes == 11 and info.class_names[0].lower() == "sky"
  batch = next(input_pipeline.build_train_loader(config.data, global_batch_size=4, seed=0))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4, 64, 64) and batch["label"].dtype == np.uint8
  assert set(np.unique(batch["label"])) <= set(range(11)) | {255}
  eval_batch = next(iter(input_pipeline.build_eval_loader(config.data, batch_size=2)))
  assert eval_batch["image"].shape == (2, 360, 480, 3)
  labels = set(np.unique(eval_batch["label"]))
  assert labels <= set(range(11)) | {255} and len(labels) >= 5


def test_camvid_training_steps_lower_the_loss(shared_data):
  config = _config(shared_data / "camvid")
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=100)
  loss_cfg = losses.default_loss_config()
  loss_cfg.num_classes = 11
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=11, tx=tx,
                                       loss_fn=losses.make_loss_fn(loss_cfg))
  state = fns.init()
  batch = mesh_lib.shard_batch(
      next(input_pipeline.build_train_loader(config.data, global_batch_size=4, seed=0)), mesh)
  seen = []
  for _ in range(5):
    state, metrics = fns.train_step(state, batch, jax.random.key(0))
    seen.append(float(metrics["loss"]))
  assert np.isfinite(seen).all()
  assert seen[-1] < 0.9 * seen[0], seen
