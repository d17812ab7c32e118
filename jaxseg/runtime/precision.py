"""Precision policies: bf16 / fp16 compute with fp32 parameters, and dynamic loss scaling.

fp16 mirrors apex amp's dynamic loss scaler (the original's --fp16): the loss is multiplied by
the scale before the backward pass; a step whose gradients overflow is skipped (parameters,
momentum and BN statistics unchanged) and halves the scale; `growth_interval` clean steps in a
row double it.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

_COMPUTE_DTYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}


def compute_dtype(precision: str) -> jnp.dtype:
  if precision not in _COMPUTE_DTYPES:
    raise ValueError(f"config.precision must be one of {sorted(_COMPUTE_DTYPES)}, "
                     f"got '{precision}'")
  return _COMPUTE_DTYPES[precision]


@dataclasses.dataclass(frozen=True)
class LossScaleConfig:
  initial_scale: float = 2.0 ** 16  # apex amp's default
  growth_interval: int = 2000
  factor: float = 2.0
  min_scale: float = 1.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LossScaleConfig":
    """From `config.loss_scale` (defaults when the section is absent)."""
    section = config.get("loss_scale")
    if not section:
      return cls()
    out = cls(initial_scale=float(section.initial_scale),
              growth_interval=int(section.growth_interval), factor=float(section.factor),
              min_scale=float(section.min_scale))
    if out.initial_scale <= 0 or out.factor <= 1 or out.growth_interval <= 0:
      raise ValueError("config.loss_scale: expected initial_scale > 0, factor > 1 and "
                       f"growth_interval > 0, got {section.to_dict()}")
    return out


def initial_loss_scale(cfg: LossScaleConfig) -> dict[str, jax.Array]:
  return {"scale": jnp.asarray(cfg.initial_scale, jnp.float32),
          "good_steps": jnp.asarray(0, jnp.int32)}


def update_loss_scale(state: dict[str, jax.Array], finite: jax.Array,
                      cfg: LossScaleConfig) -> dict[str, jax.Array]:
  """Halve on overflow (the step is skipped), double after `growth_interval` good steps."""
  good = jnp.where(finite, state["good_steps"] + 1, 0)
  grow = good >= cfg.growth_interval
  scale = jnp.where(finite, jnp.where(grow, state["scale"] * cfg.factor, state["scale"]),
                    jnp.maximum(state["scale"] / cfg.factor, cfg.min_scale))
  return {"scale": scale, "good_steps": jnp.where(grow, 0, good).astype(jnp.int32)}
