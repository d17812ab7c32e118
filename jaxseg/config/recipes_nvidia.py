"""The paper's training recipes (NVIDIA/semantic-segmentation, branch sdcnet, scripts/train_*.sh).

Each `configs/<dataset>_<trunk>.py` is one call here. What every published script shares
(8 GPUs x --bs_mult 2, --syncbn, --sgd, --crop_size 896, --scale_min 0.5, --scale_max 2.0,
--color_aug 0.25, Gaussian blur (train.py's --gblur defaults to True), --class_uniform_pct 0.5,
--poly_exp 1.0, epoch-wise LambdaLR stepped before each epoch, validation after each epoch) is
in `_common`; the per-dataset functions add the rest, flag by flag.

Where the weights come from:
  Mapillary    ImageNet trunk (the original loads ./pretrained_models/wider_resnet38.pth.tar or
               the SE-ResNeXt model-zoo weights inside the network); convert it once with
               `python -m jaxseg.main --mode convert --trunk_only --src <pth> --model <name>
               --num_classes 65 --out pretrained_models/<name>_imagenet` (path below).
  Cityscapes   the Mapillary run (--snapshot YOUR_TRAINED_MAPILLARY_MODEL): its 65-class
               classifier is re-initialised for 19 classes (the original's forgiving restore).
  KITTI        the Cityscapes model (--snapshot pretrained_models/cityscapes_best.pth), e.g.
               converted from the published .pth.
Override with --config.init_from=PATH and point --config.data.root at the dataset.
"""
from __future__ import annotations

import ml_collections

from jaxseg.config.base import base_config

MODELS = {"wrn38": "DeepWV3Plus", "srnx50": "DeepSRNX50V3PlusD_m1"}
PAPER_GPUS = 8
PAPER_BS_MULT = 2
# Cityscapes train ids boosted with coarse centroids (--coarse_boost_classes) and the classes
# whose borders stay strict under label relaxation (--strict_bdr_cls).
COARSE_BOOST_CLASSES = (14, 15, 16, 3, 12, 17, 4)
STRICT_BORDER_CLASSES = (5, 6, 7, 11, 12, 17, 18)


def _model(trunk: str) -> str:
  if trunk not in MODELS:
    raise ValueError(f"recipe trunk '{trunk}' is not one of {sorted(MODELS)}")
  return MODELS[trunk]


def _common(dataset: str, trunk: str) -> ml_collections.ConfigDict:
  c = base_config()
  c.model.name = _model(trunk)
  c.data.name = dataset
  c.data.crop_size = 896
  c.data.scale_min = 0.5
  c.data.scale_max = 2.0
  c.data.color_aug = 0.25
  c.data.gblur = True
  c.data.class_uniform_pct = 0.5
  c.data.class_uniform_tile = 1024
  c.data.num_workers = 8
  c.syncbn = True  # --syncbn (apex SyncBatchNorm over the 8 GPUs)
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "poly"
  c.schedule.power = 1.0
  # LambdaLR over epochs, stepped at the start of each epoch: epoch e trains at lambda(e + 1).
  c.schedule.granularity = "epoch"
  c.schedule.epoch_offset = 1.0
  # The published global batch (2 images x 8 GPUs) on whatever devices there are.
  c.train.batch_size = PAPER_GPUS * PAPER_BS_MULT
  c.train.log_every = 20
  c.train.eval_every = 0
  c.train.eval_every_epochs = 1  # validate() after every train() epoch
  c.train.checkpoint_every = 200
  c.checkpoint.keep = 3
  c.checkpoint.best_metric = "miou"
  c.progress_bar = True
  return c


def mapillary(trunk: str) -> ml_collections.ConfigDict:
  """scripts/train_mapillary_{WideResNet38,SEResNeXt50}.sh: pre-training on Mapillary Vistas."""
  c = _common("mapillary", trunk)
  c.init_from = f"pretrained_models/{_model(trunk)}_imagenet"
  c.optimizer.lr = 2e-2
  c.train.num_epochs = 175
  c.loss.name = "image_based_ce"  # --img_wt_loss
  c.loss.upper_bound = 6.0  # --wt_bound 6.0
  # Validation: ResizeHeight(1536) + CenterCropPad(1536), 4 images per batch.
  c.data.eval_resize = "height_crop_pad"
  c.data.eval_size = 1536
  c.eval.batch_size = 4
  return c


def cityscapes(trunk: str, cv: int) -> ml_collections.ConfigDict:
  """scripts/train_cityscapes_{WideResNet38,SEResNeXt50}.sh: fine-tuning the Mapillary model."""
  c = _common("cityscapes", trunk)
  c.data.cv = cv
  c.init_from = f"pretrained_models/mapillary_{trunk}"  # YOUR_TRAINED_MAPILLARY_MODEL
  c.data.max_cu_epoch = 150
  c.data.coarse_boost_classes = COARSE_BOOST_CLASSES
  c.optimizer.lr = 1e-3
  c.schedule.name = "scl-poly"
  c.schedule.repoly = 1.5
  c.schedule.rescale = 1.0
  c.schedule.rescale_epoch = -1  # = loss.rlx_off_epoch, as cfg.REDUCE_BORDER_EPOCH
  c.train.num_epochs = 175
  c.loss.name = "label_relaxation"  # --jointwtborder
  c.loss.strict_border_classes = STRICT_BORDER_CLASSES
  c.loss.rlx_off_epoch = 100
  c.loss.upper_bound = 1.0  # --wt_bound 1.0
  c.eval.batch_size = PAPER_GPUS  # --bs_mult_val 1 per GPU
  return c


def kitti(trunk: str, cv: int) -> ml_collections.ConfigDict:
  """scripts/train_kitti_WideResNet38.sh: fine-tuning the Cityscapes model on KITTI."""
  c = _common("kitti", trunk)
  c.data.cv = cv
  c.init_from = "pretrained_models/cityscapes_best"  # converted cityscapes_best.pth
  c.data.class_uniform_tile = 300
  c.data.crop_size = 360
  c.data.scale_min = 1.0
  c.data.scale_max = 2.0
  c.optimizer.lr = 1e-3
  c.train.num_epochs = 90
  c.loss.name = "image_based_ce"  # --img_wt_loss
  c.loss.upper_bound = 1.0
  # The original validates on KITTI 'trainval' of the fold (train images included); the fold's
  # held-out 'val' images at the original's val size are the meaningful number.
  c.data.eval_split = "val"
  c.data.eval_resize = "fixed"
  c.data.eval_height = 376
  c.data.eval_width = 1242
  c.eval.batch_size = PAPER_GPUS
  return c
