"""What the registry knows about a model family member, besides how to build it."""
from __future__ import annotations

from collections.abc import Callable
import dataclasses

from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered network.

  build: `build(num_classes, *, cfg, rngs, **overrides) -> nnx.Module`; `cfg` is the model's
    `layer_cfg.LayerCfg` (dtype, param_dtype, bn_groups, conv_precision, conv_impl, norm, ...).
  overrides: keyword overrides `build` accepts (besides the cfg ones the registry handles).
  classifier_keys: torch state-dict keys of the final classifier(s); a checkpoint for another
    class count re-initialises exactly these (the original's forgiving restore). The first key
    is the main classifier's weight: its out-channels give the checkpoint's class count.
  aux_heads: names of auxiliary outputs. A model with aux heads returns
    `(logits, {name: aux_logits})` when called with `return_aux=True` (train mode), every aux
    logit float32 at the input resolution, like the main logits.
  """
  build: Callable[..., nnx.Module]
  overrides: tuple[str, ...] = ()
  classifier_keys: tuple[str, ...] = ("final.6.weight", "final.6.bias")
  aux_heads: tuple[str, ...] = ()
  description: str = ""
