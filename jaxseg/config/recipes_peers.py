"""Training recipes of the peer codebases: hszhao/semseg, torchvision's segmentation references,
HRNet-Semantic-Segmentation / MSeg (jaxseg/config/recipes_nvidia.py holds the 2019 paper's own
recipes).

They share one optimisation recipe, `sgd_poly`: SGD (lr 0.01, momentum 0.9, weight decay 1e-4;
HRNet 5e-4), poly power 0.9 stepped every iteration, random scale 0.5-2.0 with flips, plain
cross entropy, whole-image evaluation. `semseg` and `torchvision` add each codebase's own
augmentation and auxiliary-head weight; `camvid` is the CamVid data and schedule every CamVid
config uses (configs/camvid.py included). Each `configs/<dataset>_<model>.py` of a peer network
is a call or two here plus its own fields.
"""
from __future__ import annotations

import ml_collections

from jaxseg.config.base import base_config

SEMSEG_AUX_WEIGHT = 0.4  # semseg config/*/*.yaml aux_weight
TORCHVISION_AUX_WEIGHT = 0.5  # references/segmentation/train.py: loss + 0.5 * aux loss


def sgd_poly(model: str, *, crop_size: int,
             weight_decay: float = 1e-4) -> ml_collections.ConfigDict:
  """The recipe every peer shares, for `model` trained on `crop_size` square crops."""
  c = base_config()
  c.model.name = model
  c.data.crop_size = crop_size
  c.data.scale_min = 0.5
  c.data.scale_max = 2.0
  c.data.flip = True
  c.loss.name = "cross_entropy"
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = weight_decay
  c.schedule.name = "poly"
  c.schedule.power = 0.9
  c.schedule.granularity = "step"  # the peers' poly learning rate is per iteration
  c.eval.mode = "whole"
  return c


def semseg(model: str, *, crop_size: int) -> ml_collections.ConfigDict:
  """hszhao/semseg (PSPNet / PSANet): RandRotate [-10, 10], Gaussian blur, aux weight 0.4."""
  c = sgd_poly(model, crop_size=crop_size)
  c.data.rotate = 10.0
  c.data.gblur = True
  c.loss.aux_weight = SEMSEG_AUX_WEIGHT
  return c


def torchvision(model: str, *, crop_size: int) -> ml_collections.ConfigDict:
  """torchvision DeepLabV3: the FCN aux head on layer3, weighted 0.5."""
  c = sgd_poly(model, crop_size=crop_size)
  c.model.overrides.aux = True
  c.loss.aux_weight = TORCHVISION_AUX_WEIGHT
  return c


def camvid(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """CamVid with batch 8 for 100 epochs, evaluated and saved every 500 steps."""
  c.data.name = "camvid"
  c.train.batch_size = 8
  c.train.num_epochs = 100
  c.train.log_every = 20
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.batch_size = 8
  return c
