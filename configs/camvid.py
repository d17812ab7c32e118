"""DeepLabV3+ on CamVid (SegNet layout: train/ trainannot/ val/ valannot/, 11 classes).

  python -m jaxseg.main --config configs/camvid.py --workdir /tmp/camvid \
      --config.data.root=/path/to/CamVid
"""
from jaxseg.config_base import base_config


def get_config():
  c = base_config()
  c.model.name = "DeepR50V3PlusD_m1"
  c.data.name = "camvid"
  c.data.crop_size = 360
  c.data.scale_min = 0.5
  c.data.scale_max = 2.0
  c.optimizer.lr = 0.01
  c.train.batch_size = 8
  c.train.num_epochs = 100
  c.train.log_every = 20
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.batch_size = 8
  return c
