"""scripts/train_mapillary_WideResNet38.sh of the original (branch sdcnet), as a jaxseg config.

  python -m jaxseg.main --config configs/mapillary_wrn38.py --workdir runs/mapillary_wrn38 \
      --config.data.root=/path/to/mapillary --config.init_from=/path/to/imagenet_trunk

See jaxseg/config/recipes_nvidia.py for the flag-by-flag mapping and how to convert the ImageNet
trunk.
"""
from jaxseg.config import recipes_nvidia


def get_config():
  return recipes_nvidia.mapillary("wrn38")
