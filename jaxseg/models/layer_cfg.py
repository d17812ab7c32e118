"""The layer settings every family builds with: `LayerCfg`, one frozen value per model.

The registry (`registry.create_model`) makes one from a run's dtype policy and the model
overrides and hands it down unchanged through the trunk and the head to `adapter.conv`,
`adapter.conv_bn_relu` and `norms.make_norm`. It is frozen so that no family can change the
settings of another's layers by accident; a family that needs a variant (HRNet's BatchNorm
momentum) builds one with `dataclasses.replace(cfg, ...)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.models.layers import check_remat

DEFAULT_NORM_GROUPS = 32
DEFAULT_BN_MOMENTUM = 0.1  # torch BatchNorm2d's


@dataclasses.dataclass(frozen=True)
class LayerCfg:
  """How a model's layers compute; not what they are (no field changes a variable's shape).

  dtype: compute dtype of convs and norm outputs (bf16 / fp16 under a reduced precision
    policy); norm statistics and logits stay float32 whatever it is.
  param_dtype: dtype of the parameters.
  bn_groups: BatchNorm statistic groups along the batch axis (1 = global BN).
  conv_precision: `jax.lax` precision of every conv (None: the backend default; 'highest'
    for float32 parity). Not the run's dtype policy, which is `config.precision`.
  conv_impl: 'auto' (GEMM-based convs where faster on the CPU backend) | 'xla' (lax.conv).
  norm: 'batch' | 'group' | 'instance' | 'evonorm_s0' (`norms.NORM_TYPES`).
  norm_groups: group count of 'group' / 'evonorm_s0' (a channel count it does not divide uses
    the largest divisor below it).
  bn_momentum: running-statistics momentum of 'batch', torch's convention.
  remat: 'none' | 'block' (residual blocks recompute their activations in the backward pass).
  """
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_groups: int = 1
  conv_precision: jax.lax.PrecisionLike = None
  conv_impl: str = "auto"
  norm: str = "batch"
  norm_groups: int = DEFAULT_NORM_GROUPS
  bn_momentum: float = DEFAULT_BN_MOMENTUM
  remat: str = "none"

  def __post_init__(self):
    check_remat(self.remat)
