"""torchvision DeepLabV3-ResNet50 (aux head 0.5) on CamVid (SegNet layout, 11 classes).

  python -m jaxseg.main --config configs/camvid_deeplabv3_r50.py --workdir runs/camvid_dlv3 \
      --config.data.root=/data/CamVid --config.init_from=ckpt/dlv3_r50/0

Start from torchvision's COCO weights with a new 11-class classifier (main and aux):
  python -m jaxseg.convert --src deeplabv3_resnet50_coco-cd0a2569.pth --model DeepLabV3R50 \
      --num-classes 11 --out ckpt/dlv3_r50
The schedule is configs/camvid.py's (crop 360, scale 0.5-2, batch 8, lr 0.01, 100 epochs) with
torchvision's poly power 0.9 and aux weight 0.5.
"""
from jaxseg.config import recipes_peers


def get_config():
  return recipes_peers.camvid(recipes_peers.torchvision("DeepLabV3R50", crop_size=360))
