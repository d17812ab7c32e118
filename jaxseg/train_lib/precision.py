"""Precision policies: bf16 / fp16 compute with fp32 parameters, and dynamic loss scaling."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_COMPUTE_DTYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}


def compute_dtype(precision: str) -> jnp.dtype:
  if precision not in _COMPUTE_DTYPES:
    raise ValueError(f"config.precision must be one of {sorted(_COMPUTE_DTYPES)}, got '{precision}'")
  return _COMPUTE_DTYPES[precision]


@dataclasses.dataclass(frozen=True)
class LossScaleConfig:
  initial_scale: float = 2.0 ** 15
  growth_interval: int = 2000
  factor: float = 2.0
  min_scale: float = 1.0


def initial_loss_scale(cfg: LossScaleConfig) -> dict[str, jax.Array]:
  return {"scale": jnp.asarray(cfg.initial_scale, jnp.float32),
          "good_steps": jnp.asarray(0, jnp.int32)}


def all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def update_loss_scale(state: dict[str, jax.Array], finite: jax.Array,
                      cfg: LossScaleConfig) -> dict[str, jax.Array]:
  """Halve on overflow (the step is skipped), double after `growth_interval` good steps."""
  good = jnp.where(finite, state["good_steps"] + 1, 0)
  grow = good >= cfg.growth_interval
  scale = jnp.where(finite, jnp.where(grow, state["scale"] * cfg.factor, state["scale"]),
                    jnp.maximum(state["scale"] / cfg.factor, cfg.min_scale))
  return {"scale": scale, "good_steps": jnp.where(grow, 0, good).astype(jnp.int32)}
