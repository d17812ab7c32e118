"""semseg PSPNet-50 on CamVid (SegNet layout, 11 classes; semseg ships camvid names/colours).

  python -m jaxseg.main --config configs/camvid_pspnet50.py --workdir runs/camvid_psp50 \
      --config.data.root=/path/to/CamVid

configs/camvid.py's data with semseg's training recipe (lr 0.01 poly 0.9 per iteration, aux
weight 0.4, scale 0.5-2.0, rotate 10, blur, flip); crop 361 ((361 - 1) % 8 == 0 like semseg's
crops; the 360x480 frames are padded to it with ignore labels).
"""
from jaxseg.config import recipes_peers


def get_config():
  return recipes_peers.camvid(recipes_peers.semseg("PSPNetR50", crop_size=361))
