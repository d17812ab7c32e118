"""`InferenceSettings`: the validated `config.eval` fields that say how an image becomes scores.

The fields combine into the protocols of sliding.py (NVIDIA eval.py, hszhao/semseg, TF
DeepLab); the presets below name those combinations. Validation happens here, once, so that a
bad config fails before any checkpoint is restored.

Presets: Named evaluation protocols (`config.eval.preset`) and their resolution into settings.

A preset fixes the protocol fields of `config.eval` (mode, scales, flip, overlap, resize,
tiling, average, tile_average, crop_size where the protocol has one). A field left at its
`config_base` default takes the preset's value; a field set to another value than the
preset's is a conflict and raises. Dataset-dependent values (semseg's `base_size` and crop)
are the preset's defaults only: set them in `config.eval` to override.

  ''                  manual: the fields as configured (the default).
  'original'          NVIDIA eval.py defaults: sliding 1024 tiles, overlap 1/3, scales
                      0.5,1.0,2.0, flip, logits averaged, its tile divisor (bug included).
  'semseg'            hszhao/semseg tool/test.py multi-scale: longer side = base_size x
                      (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), sliding crops of the train crop
                      (stride 2/3, mean padding), per-tile flip, softmax averaged.
  'semseg_ss'         the same at scale 1.0 (semseg's yaml default, `scales: [1.0]`).
  'deeplab_tutorial'  TensorFlow DeepLab (tensorflow/models research/deeplab
                      g3doc/model_zoo.md, the "[0.5:0.25:1.75]" + left-right flip rows, as
                      run by `eval.py --eval_scales=... --add_flipped_images`):
                      whole image at 0.5..1.75 step 0.25 (6 scales; the published recipe
                      has no 8-scale variant), flipped too, align-corners resizes, the
                      softmax of the logits resized to the image averaged
                      (model.predict_labels_multi_scale).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from jaxseg.config import base as config_base
from jaxseg.data import datasets
from jaxseg.inference.resize import RESIZES
from jaxseg.inference.tiling import TILE_AVERAGES
from jaxseg.inference.tiling import TILINGS

MODES = ("whole", "sliding", "pooling")
AVERAGES = ("logits", "softmax", "softmax_resized")


def parse_scales(scales: str | float | Sequence[float]) -> tuple[float, ...]:
  """'0.5,1.0,2.0' (the original --scales), a number or a sequence -> positive floats."""
  if isinstance(scales, str):
    parts = [p for p in scales.replace(" ", "").split(",") if p]
    try:
      values = tuple(float(p) for p in parts)
    except ValueError:
      raise ValueError(f"config.eval.scales={scales!r}: expected comma-separated numbers, "
                       "e.g. '0.5,1.0,2.0'") from None
  elif isinstance(scales, (int, float)):
    values = (float(scales),)
  else:
    values = tuple(float(s) for s in scales)
  if not values or any(not s > 0 for s in values):
    raise ValueError(f"config.eval.scales={scales!r}: expected one or more positive scales")
  return values


# ----------------------------------------------------------------------- presets --
PRESETS: dict[str, dict[str, Any]] = {
    "original": dict(mode="sliding", scales="0.5,1.0,2.0", flip=True, crop_size=1024,
                     overlap=1 / 3, resize="scale", tiling="nvidia", average="logits",
                     tile_average="original"),
    "semseg": dict(mode="sliding", scales="0.5,0.75,1.0,1.25,1.5,1.75", flip=True,
                   overlap=1 / 3, resize="long_side", tiling="semseg", average="softmax",
                   tile_average="pixel"),
    "semseg_ss": dict(mode="sliding", scales="1.0", flip=True, overlap=1 / 3,
                      resize="long_side", tiling="semseg", average="softmax",
                      tile_average="pixel"),
    "deeplab_tutorial": dict(mode="whole", scales="0.5,0.75,1.0,1.25,1.5,1.75", flip=True,
                             resize="align_corners", tiling="nvidia",
                             average="softmax_resized",
                             tile_average="pixel"),
}
FIELDS = ("mode", "crop_size", "overlap", "scales", "flip", "crop_budget_mpix",
          "aspp_pool_size", "tile_average", "resize", "base_size", "tiling", "average")


def eval_defaults() -> Any:
  """The base config's `eval` section: the values a preset may fill (and the API resets)."""
  return config_base.base_config().eval


def _same(name: str, a: Any, b: Any) -> bool:
  if name == "scales":
    return parse_scales(a) == parse_scales(b)
  if isinstance(a, float) or isinstance(b, float):
    return math.isclose(float(a), float(b), rel_tol=1e-9)
  return a == b


def resolve(eval_cfg: Any, data_cfg: Any = None) -> dict[str, Any]:
  """The InferenceSettings fields of `eval_cfg` with its preset applied.

  Raises ValueError naming the preset and field when a field set in the config contradicts
  the preset, or when a dataset-dependent value is missing.
  """
  defaults = eval_defaults()
  get = lambda name: eval_cfg.get(name, defaults.get(name))
  fields = {name: get(name) for name in FIELDS}
  preset = str(eval_cfg.get("preset", "") or "")
  if not preset:
    return fields
  if preset not in PRESETS:
    raise ValueError(f"config.eval.preset={preset!r}; expected '' or one of "
                     f"{tuple(PRESETS)}")
  for name, value in PRESETS[preset].items():
    if _same(name, fields[name], defaults[name]) or _same(name, fields[name], value):
      fields[name] = value
      continue
    raise ValueError(f"config.eval.preset={preset!r} sets eval.{name}={value!r} but the "
                     f"config sets eval.{name}={fields[name]!r}: drop one of them (or use "
                     "preset='' and set every field)")
  if fields["tiling"] == "semseg":
    _fill_semseg(fields, defaults, preset, data_cfg)
  return fields


def _fill_semseg(fields: dict[str, Any], defaults: Any, preset: str, data_cfg: Any) -> None:
  """semseg's base size and crop (test_h = the train crop) from the dataset unless set."""
  name = str(data_cfg.get("name", "")) if data_cfg is not None else ""
  if fields["base_size"] == defaults["base_size"]:
    known = {n: s.semseg_base_size for n, s in datasets.SPECS.items() if s.semseg_base_size}
    if name not in known:
      raise ValueError(f"config.eval.preset={preset!r} needs eval.base_size (the longer "
                       f"side at scale 1; semseg uses {known}); dataset "
                       f"{name or '(unknown)'!r} has no semseg value")
    fields["base_size"] = known[name]
  if fields["crop_size"] == defaults["crop_size"]:
    crop = int(data_cfg.get("crop_size", 0)) if data_cfg is not None else 0
    if crop <= 0:
      raise ValueError(f"config.eval.preset={preset!r} slides crops of the training crop "
                       "size: set eval.crop_size (semseg: 713 Cityscapes, 473 ADE20K / VOC) "
                       "or pass the data config")
    fields["crop_size"] = crop


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
  """How one image becomes logits: the fields of config.eval (jaxseg/config/base.py holds
  their defaults; `of(**fields)` starts from those, `from_config` reads a run's)."""
  mode: str  # 'whole' | 'sliding' | 'pooling'
  crop_size: int
  overlap: float
  scales: tuple[float, ...]
  flip: bool
  crop_budget_mpix: float
  aspp_pool_size: int
  tile_average: str
  resize: str  # how scale s sizes and resizes the image (see resize.py)
  base_size: int  # resize='long_side': the longer side at scale 1
  tiling: str  # sliding tiles: 'nvidia' (eval.py) | 'semseg' (tool/test.py)
  average: str  # what is averaged over tiles, flips and scales

  def __post_init__(self):
    for name, allowed in (("tile_average", TILE_AVERAGES), ("resize", RESIZES),
                          ("tiling", TILINGS), ("average", AVERAGES)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"config.eval.{name}={getattr(self, name)!r}; expected one of "
                         f"{allowed}")
    if self.resize == "long_side" and self.base_size <= 0:
      raise ValueError(f"config.eval.base_size={self.base_size}: resize='long_side' needs the "
                       "longer side at scale 1 (semseg: 2048 Cityscapes, 512 ADE20K / VOC)")
    if self.tiling == "semseg" and self.tile_average == "original":
      raise ValueError("config.eval.tile_average='original' reproduces NVIDIA eval.py's "
                       "divisor; it does not combine with tiling='semseg'")
    if self.mode not in MODES:
      raise ValueError(f"config.eval.mode={self.mode!r}; expected one of {MODES}")
    if self.crop_size <= 0:
      raise ValueError(f"config.eval.crop_size={self.crop_size}; expected > 0")
    if not 0.0 <= self.overlap < 1.0:
      raise ValueError(f"config.eval.overlap={self.overlap}; expected in [0, 1)")
    if self.crop_budget_mpix <= 0:
      raise ValueError(f"config.eval.crop_budget_mpix={self.crop_budget_mpix}; expected > 0")
    if self.mode == "pooling" and self.aspp_pool_size <= 0:
      raise ValueError(f"config.eval.aspp_pool_size={self.aspp_pool_size}; pooling mode needs "
                       "a positive pool size (the original uses 105)")
    object.__setattr__(self, "scales", parse_scales(self.scales))

  @classmethod
  def of(cls, **fields: Any) -> "InferenceSettings":
    """The base config's eval settings with `fields` replaced (no preset applied)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
      raise TypeError(f"InferenceSettings.of: unknown fields {unknown}; expected some of "
                      f"{FIELDS}")
    defaults = eval_defaults()
    return cls(**{name: fields.get(name, defaults[name]) for name in FIELDS})

  @classmethod
  def from_config(cls, eval_cfg: Any, data_cfg: Any = None) -> "InferenceSettings":
    """Settings of `config.eval`, its `preset` applied (`data_cfg` fills dataset-derived
    preset values: semseg's base size and train crop)."""
    f = resolve(eval_cfg, data_cfg)
    return cls(mode=str(f["mode"]), crop_size=int(f["crop_size"]), overlap=float(f["overlap"]),
               scales=parse_scales(f["scales"]), flip=bool(f["flip"]),
               crop_budget_mpix=float(f["crop_budget_mpix"]),
               aspp_pool_size=int(f["aspp_pool_size"]), tile_average=str(f["tile_average"]),
               resize=str(f["resize"]), base_size=int(f["base_size"]),
               tiling=str(f["tiling"]), average=str(f["average"]))

  @property
  def num_variants(self) -> int:
    return 2 if self.flip else 1
