"""`InferenceSettings`: the validated `config.eval` fields that say how an image becomes scores.

The fields combine into the protocols of sliding.py (NVIDIA eval.py, hszhao/semseg, TF
DeepLab); `eval_presets.py` names those combinations. Validation happens here, once, so that a
bad config fails before any checkpoint is restored.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from jaxseg.train_lib import eval_presets
from jaxseg.train_lib.resize_policy import RESIZES
from jaxseg.train_lib.tiling import TILE_AVERAGES, TILINGS

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


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
  """How one image becomes logits (see config.eval in jaxseg/config_base.py)."""
  mode: str = "sliding"
  crop_size: int = 1024
  overlap: float = 1 / 3
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  crop_budget_mpix: float = 8.0
  aspp_pool_size: int = 105
  tile_average: str = "pixel"
  resize: str = "scale"  # how scale s sizes and resizes the image (see resize_policy.py)
  base_size: int = 0  # resize='long_side': the longer side at scale 1
  tiling: str = "nvidia"  # sliding tiles: 'nvidia' (eval.py) | 'semseg' (tool/test.py)
  average: str = "logits"  # what is averaged over tiles, flips and scales

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
  def from_config(cls, eval_cfg: Any, data_cfg: Any = None) -> "InferenceSettings":
    """Settings of `config.eval`, its `preset` applied (`data_cfg` fills dataset-derived
    preset values: semseg's base size and train crop)."""
    f = eval_presets.resolve(eval_cfg, data_cfg)
    return cls(mode=str(f["mode"]), crop_size=int(f["crop_size"]), overlap=float(f["overlap"]),
               scales=parse_scales(f["scales"]), flip=bool(f["flip"]),
               crop_budget_mpix=float(f["crop_budget_mpix"]),
               aspp_pool_size=int(f["aspp_pool_size"]), tile_average=str(f["tile_average"]),
               resize=str(f["resize"]), base_size=int(f["base_size"]),
               tiling=str(f["tiling"]), average=str(f["average"]))

  @property
  def num_variants(self) -> int:
    return 2 if self.flip else 1
