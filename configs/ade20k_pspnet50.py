"""hszhao/semseg PSPNet-50 on ADE20K (config/ade20k/ade20k_pspnet50.yaml).

  python -m jaxseg.main --config configs/ade20k_pspnet50.py --workdir runs/ade20k_psp50 \
      --config.data.root=/data/ADEChallengeData2016

semseg's recipe: 150 classes, crop 473, batch 16 (8 GPUs x 2, SyncBN), SGD lr 0.01 momentum 0.9
weight decay 1e-4, poly power 0.9 per iteration, 100 epochs, aux loss weight 0.4, augmentation
RandScale [0.5, 2], RandRotate [-10, 10], Gaussian blur, horizontal flip, random crop (padded
with the mean / ignore 255). The trunk starts from semseg's ImageNet `resnet50_v2.pth`
(`python -m jaxseg.convert --src resnet50_v2.pth --model PSPNetR50 --trunk-only
--num-classes 150 --out ckpt/resnet50_v2`, then --config.init_from=ckpt/resnet50_v2/0).
New layers (ppm / cls / aux) train at 10x the base learning rate, as in semseg.
Evaluation: semseg tests single-scale with sliding 473 crops on images resized to base 512.
"""
from jaxseg.config import recipes_peers

MODEL = "PSPNetR50"
CROP = 473


def get_config():
  c = recipes_peers.semseg(MODEL, crop_size=CROP)
  c.data.name = "ade20k"
  c.loss.ignore_index = 255
  c.optimizer.lr_multipliers = "ppm=10,cls=10,aux=10"
  c.train.batch_size = 16
  c.train.num_epochs = 100
  c.train.log_every = 20
  c.train.eval_every = 5000
  c.train.checkpoint_every = 5000
  c.syncbn = True
  c.eval.mode = "sliding"
  c.eval.crop_size = CROP
  c.eval.batch_size = 8
  return c
