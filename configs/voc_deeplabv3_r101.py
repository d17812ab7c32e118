"""torchvision DeepLabV3-ResNet101 on PASCAL VOC 2012 + SBD (`train_aug`, 10582 images): the
DeepLabV3 tutorial recipe (Chen et al. 2017, "Rethinking Atrous Convolution" on VOC).

  python -m jaxseg.main --config configs/voc_deeplabv3_r101.py --workdir runs/voc_dlv3 \
      --config.data.root=/data/VOCdevkit/VOC2012 --config.init_from=ckpt/dlv3_r101/0

Recipe: 513x513 crops of images scaled by 0.5-2.0 with flips, batch 16, SGD lr 0.01 momentum
0.9 weight decay 1e-4, poly (power 0.9) per iteration over 30k iterations, cross entropy with
the FCN aux head on layer3 weighted 0.5 (torchvision's references/segmentation/train.py),
21 classes, 255 ignored. The network is torchvision's: output stride 8 (layer3/layer4 dilated),
ASPP rates 12/24/36 (`--config.model.overrides.output_stride=16` trains at the paper's
training stride 16 with the same rates).

Starting weights: a converted torchvision checkpoint, e.g.
  python -m jaxseg.convert --src deeplabv3_resnet101_coco-586e9e4e.pth --model DeepLabV3R101 \
      --out ckpt/dlv3_r101
(COCO-trained with the 20 VOC categories + background, as published). Evaluation: whole
images at scale 1 (`--config.eval.preset=deeplab_tutorial` gives the multi-scale + flip
protocol).
"""
from jaxseg.config import recipes_peers


def get_config():
  c = recipes_peers.torchvision("DeepLabV3R101", crop_size=513)
  c.model.overrides.output_stride = 8
  c.data.name = "voc"
  c.data.train_split = "train_aug"
  c.data.eval_split = "val"
  # VOC images are at most 500x500 and differ in size: evaluate them padded to one size.
  c.data.eval_pad_height = 512
  c.data.eval_pad_width = 512
  c.train.batch_size = 16
  c.train.num_steps = 30_000
  c.train.log_every = 50
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.eval.scales = "1.0"
  c.eval.batch_size = 8
  return c
