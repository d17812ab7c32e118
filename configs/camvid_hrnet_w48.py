"""HRNetV2-W48 (MSeg's seg_hrnet, `last_layer` head) on CamVid (SegNet layout, 11 classes).

  python -m jaxseg.main --config configs/camvid_hrnet_w48.py --workdir runs/camvid_hrnet \
      --config.data.root=/data/CamVid --config.init_from=ckpt/hrnet_w48/0

Starting weights, either MSeg's multi-dataset model with a new 11-class classifier:
  python -m jaxseg.convert --src mseg-3m.pth --model HRNetW48 --num-classes 11 \
      --out ckpt/hrnet_w48
or the ImageNet trunk (its extra classification modules are not part of the segmentation
network, and `last_layer` keeps its initialisation):
  python -m jaxseg.convert --src hrnetv2_w48_imagenet_pretrained.pth --model HRNetW48 \
      --num-classes 11 --allow-partial --out ckpt/hrnet_w48
Optimisation as HRNet-Semantic-Segmentation's seg_hrnet_w48 (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, poly 0.9), with configs/camvid.py's crops (360, scale 0.5-2) and 100 epochs.
"""
from jaxseg.config import recipes_peers


def get_config():
  return recipes_peers.camvid(recipes_peers.sgd_poly("HRNetW48", crop_size=360, weight_decay=5e-4))
