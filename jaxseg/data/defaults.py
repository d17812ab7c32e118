"""Default data configuration: every field the input pipeline reads.

`configs/*.py` start from `data_config()` and override the recipe fields. The
defaults follow the original code's defaults (train.py argparse) where it has
one; the published recipes then set e.g. `color_aug=0.25`, `gblur=True`,
`class_uniform_pct=0.5`, `crop_size=896`.
"""
import ml_collections
from ml_collections import config_dict

# Eval-time resize policies (see transforms.eval_resize).
EVAL_RESIZE_POLICIES = ("none", "height_crop_pad", "fixed")
ON_BAD_INPUT = ("error", "skip")


def data_config() -> ml_collections.ConfigDict:
  """Returns the type-safe data ConfigDict with every field and its default."""
  c = ml_collections.ConfigDict()

  # --- Which data. -----------------------------------------------------------
  c.name = "cityscapes"  # A dataset of jaxseg.data.datasets.SPECS.
  c.root = config_dict.placeholder(str)  # Dataset root folder.
  c.train_split = "train"
  c.eval_split = "val"
  c.cv = 0  # Cross-validation split (original --cv; 0 = official split).
  # Cityscapes: coarse annotations (leftImg8bit_trainextra + gtCoarse).
  c.include_coarse = False  # Add coarse images to the training list.
  c.coarse_root = config_dict.placeholder(str)  # Default: root.
  # Classes whose coarse centroids are added to the class-uniform pools
  # (original --coarse_boost_classes, recipe: (14, 15, 16, 3, 12, 17, 4)).
  c.coarse_boost_classes = ()
  # SDCNet-propagated labels (original --maxSkip / CITYSCAPES_AUG_DIR).
  c.sdc_root = config_dict.placeholder(str)
  # Use only the frames exactly sdc_max_skip before/after each annotated frame
  # (original --maxSkip); 0 = every propagated pair under sdc_root.
  c.sdc_max_skip = 0
  c.camvid_layout = "segnet"  # 'segnet' or 'original' (LargeScale/CamVid).
  c.mapillary_version = "v1.2"  # Label set of Mapillary Vistas.
  # 'folder' dataset: an image folder, a label folder and a class table.
  c.image_dir = config_dict.placeholder(str)
  c.label_dir = config_dict.placeholder(str)
  c.class_table = config_dict.placeholder(str)  # JSON file or built-in name.
  c.label_suffix = ""  # Label file = image stem + label_suffix + '.png'.
  # name='tfds': Cityscapes from TensorFlow Datasets (optional packages).
  c.tfds_name = "cityscapes/semantic_segmentation"
  c.tfds_data_dir = config_dict.placeholder(str)
  c.on_bad_input = "error"  # 'error' or 'skip' (replace + count + warn).

  # --- Training augmentation (order as the original's setup_loaders). --------
  c.crop_size = 720  # Square crop side (original default; recipes 896).
  c.pre_size = 0  # Resize shorter edge to this before scaling (0 = off).
  c.scale_min = 0.5
  c.scale_max = 2.0
  c.flip = True  # Random horizontal flip, p = 0.5.
  c.color_aug = 0.0  # ColorJitter brightness/contrast/saturation/hue.
  c.gblur = False  # Random Gaussian blur, sigma in [0.15, 1.3].
  # Random rotation in [-rotate, rotate] degrees (0 = off), before the crop,
  # as semseg / MSeg's RandRotate (their recipes: rotate=10).
  c.rotate = 0.0
  c.rotate_prob = 0.5  # Share of rotated samples (semseg's p).
  # Image fill of the rotated-in corners, RGB 0..255 (default: the ImageNet
  # mean, as semseg / MSeg); labels are filled with 255.
  c.rotate_pad_value = (123.675, 116.28, 103.53)
  c.pad_image_value = 0  # Image fill when padding a crop (labels: 255).

  # --- Sample mixing, after the augmentation (mixing.py, copy_blob.py). ------
  # The partner of a sample is another position of the same epoch, drawn from
  # (seed, epoch, position) and augmented as it is there: resume stays exact.
  # CutMix: paste a box of the partner (area share ~ Beta(alpha, alpha)).
  c.cutmix_prob = 0.0
  c.cutmix_alpha = 1.0
  # CopyBlob: paste connected blobs of rare classes of the partner whose
  # bottom edge lands on an allowed context class. copyblob_rules: a built-in
  # rule table ('cityscapes', 'camvid'), a JSON file {"wall": ["sidewalk"]}
  # (class names of the dataset's class table), or '' = the dataset's own
  # built-in table (cityscapes, kitti, tfds, camvid).
  c.copyblob_prob = 0.0
  c.copyblob_rules = ""
  c.copyblob_max_blobs = 3  # Blobs pasted per sample at most.
  c.copyblob_min_pixels = 50  # Smaller blobs (fragments) are not pasted.
  # Share of a blob's bottom-edge pixels that must land on context.
  c.copyblob_support = 0.9

  # --- Evaluation size. ------------------------------------------------------
  # 'none': native size; 'height_crop_pad': resize to height eval_size then
  # centre crop/pad to eval_size x eval_size (original Mapillary val);
  # 'fixed': resize to eval_height x eval_width.
  c.eval_resize = "none"
  c.eval_size = 0
  c.eval_height = 0
  c.eval_width = 0
  # With 'none', pad every eval image to this size (0 = all images must share
  # one size), e.g. KITTI whose images differ by a few pixels.
  c.eval_pad_height = 0
  c.eval_pad_width = 0

  # --- Class-uniform sampling (datasets/uniform.py). -------------------------
  c.class_uniform_pct = 0.0  # Share of class-centred crops (recipes 0.5).
  c.class_uniform_tile = 1024
  # Epochs after this one rebuild with cut=True: the plain part is fine-only
  # (SDC samples dropped), as the original's build_epoch(cut=True).
  c.max_cu_epoch = 100000
  c.uniform_cache_dir = config_dict.placeholder(str)  # Default: next to data.
  c.uniform_num_workers = 0  # Centroid pool size (0 = all cores).

  # --- Loader. ---------------------------------------------------------------
  c.num_workers = 0  # Worker processes (grain mp_prefetch); 0 = in-process.
  c.worker_buffer_size = 2  # Batches buffered per worker process.
  c.read_num_threads = 8  # grain.ReadOptions threads per process.
  c.read_prefetch_buffer_size = 16  # grain.ReadOptions buffer, in batches.
  c.eval_num_threads = 4
  c.eval_prefetch_buffer_size = 4

  # --- Synthetic data (name='synthetic'). ------------------------------------
  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.num_train = 16
  c.synthetic.num_val = 4
  c.synthetic.height = 64
  c.synthetic.width = 128
  c.synthetic.seed = 0

  # --- PASCAL VOC / Context, multi-dataset (datasets/voc.py, pascal_context.py, multi.py).
  c.voc_aug_source = "auto"  # train_aug SBD labels: 'auto' | 'png' | 'sbd' (.mat)
  c.sbd_root = config_dict.placeholder(str)  # SBD benchmark_RELEASE (voc_aug_source='sbd')
  c.pascal_context_classes = 59  # 59 (background ignored) or 60
  c.multi = ml_collections.ConfigDict()
  c.multi.taxonomy = "universal"  # taxonomies/<name>/ or a folder path
  c.multi.sources = ml_collections.ConfigDict()  # {key: {root, repeat, weight, ...}}
  return c


def validate(data_cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when a data option is out of range."""
  def bad(key, expected):
    raise ValueError(f"data config: {key}={data_cfg[key]!r}; expected "
                     f"{expected}.")
  if data_cfg.on_bad_input not in ON_BAD_INPUT:
    bad("on_bad_input", f"one of {ON_BAD_INPUT}")
  if data_cfg.eval_resize not in EVAL_RESIZE_POLICIES:
    bad("eval_resize", f"one of {EVAL_RESIZE_POLICIES}")
  if data_cfg.eval_resize == "height_crop_pad" and data_cfg.eval_size <= 0:
    bad("eval_size", "> 0 with eval_resize='height_crop_pad'")
  if data_cfg.eval_resize == "fixed" and (data_cfg.eval_height <= 0 or
                                          data_cfg.eval_width <= 0):
    bad("eval_height", "eval_height and eval_width > 0 with "
        "eval_resize='fixed'")
  if data_cfg.crop_size <= 0:
    bad("crop_size", "> 0")
  if not 0 < data_cfg.scale_min <= data_cfg.scale_max:
    bad("scale_min", f"0 < scale_min <= scale_max ({data_cfg.scale_max})")
  if not 0.0 <= data_cfg.class_uniform_pct <= 1.0:
    bad("class_uniform_pct", "in [0, 1]")
  if data_cfg.class_uniform_tile <= 0:
    bad("class_uniform_tile", "> 0")
  if not 0.0 <= data_cfg.color_aug <= 0.5:
    # The hue factor is drawn from [-color_aug, color_aug] and must stay in
    # [-0.5, 0.5] (torchvision's adjust_hue contract, as in the original).
    bad("color_aug", "in [0, 0.5]")
  if data_cfg.rotate < 0:
    bad("rotate", ">= 0 degrees")
  if not 0.0 <= data_cfg.rotate_prob <= 1.0:
    bad("rotate_prob", "in [0, 1]")
  pad = data_cfg.rotate_pad_value
  if (not isinstance(pad, (tuple, list)) or len(pad) != 3 or
      not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in pad)):
    bad("rotate_pad_value", "an (R, G, B) triple of numbers in [0, 255]")
  for key in ("cutmix_prob", "copyblob_prob"):
    if not 0.0 <= data_cfg[key] <= 1.0:
      bad(key, "in [0, 1]")
  if data_cfg.cutmix_alpha <= 0:
    bad("cutmix_alpha", "> 0 (the Beta distribution parameter)")
  if data_cfg.copyblob_max_blobs < 1:
    bad("copyblob_max_blobs", ">= 1")
  if data_cfg.copyblob_min_pixels < 1:
    bad("copyblob_min_pixels", ">= 1")
  if not 0.0 < data_cfg.copyblob_support <= 1.0:
    bad("copyblob_support", "in (0, 1]")
  if data_cfg.copyblob_prob > 0:
    # Only the rule table's form here; its class names are checked against
    # the dataset's class table when the train loader is built.
    from jaxseg.data import copy_blob  # pylint: disable=g-import-not-at-top
    try:
      copy_blob.load_rule_names(copy_blob.rules_spec(
          str(data_cfg.copyblob_rules), str(data_cfg.name)))
    except ValueError as e:
      raise ValueError(f"data config: copyblob_rules: {e}") from None
  if data_cfg.num_workers < 0:
    bad("num_workers", ">= 0")
