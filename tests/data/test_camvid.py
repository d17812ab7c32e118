"""CamVid (SegNet layout) through the real loader, and a few training steps on it."""
from _testlib import assert_loss_decreases
from _testlib import camvid_smoke_config
from _testlib import camvid_training_metrics
import numpy as np

from jaxseg import data as data_lib


def _config(root):
  """configs/camvid.py with a 1/16-width ResNet-18 DeepLabV3+ on 64x64 crops."""
  return camvid_smoke_config(root, "DeepR18V3PlusD_m1", recipe="configs/camvid.py")


def test_camvid_loader_shapes_dtypes_labels(shared_data):
  config = _config(shared_data / "camvid")
  info = data_lib.dataset_info(config.data)
  assert info.num_classes == 11 and info.class_names[0].lower() == "sky"
  batch = next(data_lib.build_train_loader(config.data, global_batch_size=4, seed=0))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4, 64, 64) and batch["label"].dtype == np.uint8
  assert set(np.unique(batch["label"])) <= set(range(11)) | {255}
  eval_batch = next(iter(data_lib.build_eval_loader(config.data, batch_size=2)))
  assert eval_batch["image"].shape == (2, 360, 480, 3)
  labels = set(np.unique(eval_batch["label"]))
  assert labels <= set(range(11)) | {255} and len(labels) >= 5


def test_camvid_training_steps_lower_the_loss(shared_data):
  assert_loss_decreases(camvid_training_metrics(_config(shared_data / "camvid")))
