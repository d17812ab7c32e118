"""scripts/train_cityscapes_WideResNet38.sh of the original (branch sdcnet), as a jaxseg config.

  python -m jaxseg.main --config configs/cityscapes_wrn38.py --workdir runs/cityscapes_wrn38 \
      --config.data.root=/path/to/cityscapes --config.init_from=/path/to/start_checkpoint

See jaxseg/config/recipes_nvidia.py for the flag-by-flag mapping and where the starting weights
come from.
"""
from jaxseg.config import recipes_nvidia


def get_config():
  return recipes_nvidia.cityscapes("wrn38", cv=2)  # --cv 2
