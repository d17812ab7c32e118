"""DeepLabV3+ on CamVid (SegNet layout: train/ trainannot/ val/ valannot/, 11 classes).

  python -m jaxseg.main --config configs/camvid.py --workdir /tmp/camvid \
      --config.data.root=/path/to/CamVid
"""
from jaxseg.config import recipes_peers
from jaxseg.config.base import base_config


def get_config():
  c = recipes_peers.camvid(base_config())
  c.model.name = "DeepR50V3PlusD_m1"
  c.data.crop_size = 360
  c.data.scale_min = 0.5
  c.data.scale_max = 2.0
  c.optimizer.lr = 0.01
  return c
