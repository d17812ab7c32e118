"""Normalisation layers selectable per model (`create_model(..., norm=...)`).

Every trunk and head asks `make_norm(channels, cfg)` for its normalisation, so one config field
swaps BatchNorm for another normaliser without touching the network code.
"""
from __future__ import annotations

from typing import Any

from flax import nnx

from jaxseg.models.layers import BatchNorm

NORM_TYPES = ("batch",)


def make_norm(channels: int, cfg: dict[str, Any]) -> nnx.Module:
  """The normalisation layer `cfg['norm']` over `channels` (NHWC, last axis)."""
  kind = cfg.get("norm", "batch")
  if kind == "batch":
    return BatchNorm(channels, groups=cfg["bn_groups"], dtype=cfg["dtype"],
                     param_dtype=cfg["param_dtype"])
  raise ValueError(f"norm={kind!r}: expected one of {NORM_TYPES}")
