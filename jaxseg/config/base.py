"""The full configuration tree every `configs/*.py` starts from.

Every field exists here with its default, and the returned ConfigDict is locked, so a typo in a
config file or in a `--config.x=y` override fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from jaxseg.data import defaults as data_defaults


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.precision = "bf16"  # 'bf16' | 'fp16' (dynamic loss scaling) | 'fp32'
  c.syncbn = True  # global BatchNorm statistics over all devices; False = per device
  c.progress_bar = True
  # JAX's persistent compile cache (runtime/compile_cache.py): 'auto' =
  # <cache root>/jax_compile (runtime/files.py), a folder, or 'off'; env JAXSEG_COMPILE_CACHE wins.
  c.compile_cache = "auto"
  # Model checkpoint (a jaxseg run, a converted .pth, an ImageNet trunk converted with
  # --trunk_only) to start a fresh run from; variables whose shape differs (the classifier of
  # another class count) keep their initialisation and the run lists them. Resuming the run's
  # own checkpoints takes precedence.
  c.init_from = ""

  c.model = ml_collections.ConfigDict()
  c.model.name = "DeepR50V3PlusD_m1"
  c.model.num_classes = -1  # -1: from the dataset's class table
  # Keyword overrides of the registry constructor (`jaxseg.models.get_spec(name).overrides`
  # lists a family's own, e.g. width_multiplier, psa_type); every model takes `norm` ('batch' |
  # 'group' | 'instance' | 'evonorm_s0'), `norm_groups` (group / EvoNorm groups), `conv_impl`
  # and `conv_precision` (lax conv precision, e.g. 'highest'; the dtype policy is c.precision).
  c.model.overrides = ml_collections.ConfigDict(
      {"width_multiplier": 1.0, "norm": "batch", "norm_groups": 32})

  c.data = data_defaults.data_config()
  c.loss = loss_config()
  c.loss.num_classes = -1  # set from the model at run time
  # Label relaxation switches off for epochs > rlx_off_epoch (original --rlx_off_epoch; the
  # train step is rebuilt then); -1 = never. Also the default scl-poly restart epoch.
  c.loss.rlx_off_epoch = -1

  c.optimizer = ml_collections.ConfigDict()
  # 'sgd' | 'adam' | 'amsgrad' (torch's, weight decay coupled as the original's --adam
  # [--amsgrad]) | 'adamw' (decoupled decay); see train/optimizer.py.
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9  # sgd only
  c.optimizer.weight_decay = 1e-4
  c.optimizer.nesterov = False  # sgd only
  c.optimizer.beta1 = 0.9  # adam / amsgrad / adamw (torch's defaults)
  c.optimizer.beta2 = 0.999
  c.optimizer.eps = 1e-8
  # Per top-level module lr factors, e.g. 'ppm=10,cls=10,aux=10' (semseg's 10x new layers).
  c.optimizer.lr_multipliers = ""

  # Learning rate (see train/optimizer.py): lr * lambda(x), x the epoch position.
  c.schedule = ml_collections.ConfigDict()
  # 'poly' | 'scl-poly' (original --lr_schedule) | 'cosine' (to 0 at the end) | 'constant'
  c.schedule.name = "poly"
  c.schedule.power = 1.0  # original --poly_exp
  # 'step': x = fractional epochs done (smooth); 'epoch': x = epoch index (the original's
  # per-epoch LambdaLR; needs train.num_epochs).
  c.schedule.granularity = "step"
  # Added to x. The original steps its scheduler before each epoch: epoch e trains at
  # lambda(e + 1), i.e. granularity='epoch' with epoch_offset=1 (the last epoch at lr 0).
  c.schedule.epoch_offset = 0.0
  c.schedule.rescale_epoch = -1  # scl-poly restart epoch T; -1: loss.rlx_off_epoch
  c.schedule.rescale = 1.0  # scl-poly: lr ratio after the restart (original --rescale)
  c.schedule.repoly = 1.5  # scl-poly: poly exponent after the restart (original --repoly)
  # Linear warm-up multiplying any schedule: factor warmup_start + (1 - warmup_start) *
  # min(step / warmup_steps, 1) (0 = none).
  c.schedule.warmup_steps = 0
  c.schedule.warmup_start = 0.0  # lr factor of the first update (torch LinearLR start_factor)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8  # global, over all devices and hosts
  # >0: the global batch is bs_mult x devices on the batch axes (original --bs_mult, images
  # per GPU), overriding batch_size. The recipes keep batch_size = 16 (= 2 x 8 GPUs) instead,
  # so they train the published batch on any device count.
  c.train.bs_mult = 0
  c.train.num_steps = -1  # >0 ends training, even with num_epochs; the lr schedule spans it
  c.train.num_epochs = -1
  c.train.log_every = 50
  c.train.eval_every = 1000  # steps (0 = only at the end / per eval_every_epochs)
  c.train.eval_every_epochs = 0  # >0: also evaluate after every N-th epoch (original: 1)
  c.train.checkpoint_every = 1000
  c.train.stop_at_step = 0  # >0: save and exit at this step (time-sliced jobs); resume later
  # Multi-process runs agree on a SIGTERM every N steps (a checkpoint is collective).
  c.train.preemption_sync_every = 10
  # 'block': each residual block recomputes its activations in the backward pass (less memory,
  # ~one more trunk forward per step); 'none' keeps them. See benchmarks/RESULTS.md "Memory".
  c.train.remat = "none"
  # k > 1: each update averages the gradients of k micro-batches of batch_size (one batch of
  # k x batch_size; BatchNorm normalises each micro-batch with its own statistics).
  c.train.grad_accum_steps = 1
  # > 0: keep an exponential moving average of the weights and BN statistics, updated after
  # every applied update; evaluation and the checkpoint's `model` item use it (0 = off).
  c.train.ema_decay = 0.0
  # Periodic evaluation and the end-of-run predictions (train/periodic_eval.py): 'whole' =
  # whole image, scale 1, no flip (the original train.py validate; cheap) | 'config' = the
  # inference settings of config.eval below (mode, scales, flip, preset ...), as --mode eval.
  c.train.eval_protocol = "whole"

  # fp16 dynamic loss scaling (apex amp's defaults).
  c.loss_scale = ml_collections.ConfigDict()
  c.loss_scale.initial_scale = 2.0 ** 16
  c.loss_scale.growth_interval = 2000
  c.loss_scale.factor = 2.0
  c.loss_scale.min_scale = 1.0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8  # per process (each host evaluates its own slice of the split)
  c.eval.max_batches = 0  # 0 = the whole split
  c.eval.write_predictions = True
  c.eval.num_prediction_images = 8
  c.eval.num_tensorboard_images = 4  # eval images in TensorBoard's overlay grid
  # --mode eval / predict inference (the original eval.py; see inference/sliding.py).
  c.eval.mode = "sliding"  # 'whole' | 'sliding' (original default) | 'pooling'
  c.eval.crop_size = 1024  # sliding tile side at scales <= 1 (x scale above 1)
  c.eval.overlap = 1 / 3  # sliding tile overlap (original --sliding_overlap)
  c.eval.scales = "1.0"  # comma list, e.g. "0.5,1.0,2.0" (original --scales)
  c.eval.flip = False  # average with the mirrored image (the original's default: True)
  c.eval.crop_budget_mpix = 8.0  # crop megapixels per device per model call (memory knob)
  # Overlapping tiles: 'pixel' = mean per pixel; 'original' = eval.py's divisor, bug included.
  c.eval.tile_average = "pixel"
  c.eval.aspp_pool_size = 105  # pooling mode: ASPP image pooling window (original: 105)
  # Named protocol filling the fields above (inference/settings.py): '' (manual) |
  # 'original' (NVIDIA eval.py) | 'semseg' | 'semseg_ss' (hszhao/semseg) | 'deeplab_tutorial'.
  c.eval.preset = ""
  c.eval.resize = "scale"  # 'scale' (NVIDIA, PIL) | 'long_side' (semseg) | 'align_corners' (TF)
  c.eval.base_size = 0  # resize='long_side': longer side at scale 1 (0: from the preset)
  c.eval.tiling = "nvidia"  # sliding tiles: 'nvidia' (eval.py) | 'semseg' (tool/test.py)
  c.eval.average = "logits"  # averaged: 'logits' | 'softmax' (semseg) | 'softmax_resized' (TF)
  c.eval.dump_images = False  # rgb/ pred/ compose/ diff/ pictures (original --dump_images)
  c.eval.output_dir = ""  # --mode eval outputs; "" = WORKDIR/eval_restored
  c.eval.overlay_alpha = 0.5  # mask weight of overlays / compose pictures
  c.eval.video_fourcc = "mp4v"  # --mode predict on a video: codec of the output videos
  # Evaluate a universal-taxonomy model in a dataset's classes (taxonomy.py): both set, or "".
  c.eval.taxonomy = ""  # e.g. "universal"
  c.eval.taxonomy_dataset = ""  # mapping file, e.g. "cityscapes"

  c.mesh = ml_collections.ConfigDict()
  # Axes 'data' (first) and optionally 'fsdp': e.g. {"data": -1, "fsdp": 8} splits every
  # parameter of >= fsdp_min_size elements (and its momentum) over groups of 8 devices; the
  # batch is split over both axes. syncbn=False makes one BN ghost batch per device.
  c.mesh.shape = ml_collections.ConfigDict({"data": -1})
  c.mesh.fsdp_min_size = 1 << 20

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True
  c.checkpoint.best_metric = "miou"

  # --mode preview: the first augmented training samples as PNGs in WORKDIR/preview.
  c.preview = ml_collections.ConfigDict()
  c.preview.num_samples = 8

  c.predict = ml_collections.ConfigDict()
  c.predict.input = config_dict.placeholder(str)
  c.predict.output = config_dict.placeholder(str)
  return c


def loss_config() -> ml_collections.ConfigDict:
  """The `loss` section: the original's defaults (plain cross entropy; train/losses.py)."""
  cfg = ml_collections.ConfigDict()
  # "cross_entropy" | "focal" | "image_based_ce" | "label_relaxation"
  cfg.name = "cross_entropy"
  cfg.num_classes = 19
  cfg.ignore_index = 255
  cfg.upper_bound = 1.0  # --wt_bound
  cfg.border_window = 1  # cfg.BORDER_WINDOW
  cfg.strict_border_classes = ()  # cfg.STRICTBORDERCLASS (() = None)
  # Label relaxation border weights: "original" (whole-batch broadcast quirk)
  # or "per_image". See label_relaxation_loss.
  cfg.batch_weighting = "original"
  # cfg.BATCH_WEIGHTING: class weights from the whole batch instead of per
  # image (image_based_ce and label_relaxation).
  cfg.batch_class_weights = False
  cfg.rlx_off = False  # the trainer sets it once epoch > rlx_off_epoch
  # Static class weights of cross_entropy (torch `weight=`) and focal (alpha):
  # "" | "inverse_log" | "median_frequency" | "inverse_sqrt" | "1,2.5,..."
  # (see train/class_weights.py; frequencies are counted once over the
  # training labels and cached as JSON next to the data).
  cfg.class_weights = ""
  cfg.class_frequency_file = ""  # cache file override ("" = next to the data)
  cfg.focal_gamma = 2.0  # name="focal": (1 - p_t)^gamma
  # Weight of every auxiliary head's cross entropy (models whose ModelSpec
  # lists aux_heads; semseg PSPNet 0.4, torchvision 0.5). 0 = heads unused.
  cfg.aux_weight = 0.4
  return cfg


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """Runs a `configs/*.py` file's `get_config()`, as `--config` does."""
  spec = importlib.util.spec_from_file_location("_jaxseg_config", os.fspath(path))
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"cannot load config file {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
