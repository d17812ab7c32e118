"""jaxseg: semantic segmentation in JAX / Flax NNX (NVIDIA semantic-segmentation and peers).

    import jaxseg
    seg = jaxseg.Segmenter.from_checkpoint("ckpt/wrn38_cityscapes")
    ids = seg("frame.png")          # (H, W) class ids at the input size

`import jaxseg` loads nothing heavy: `Segmenter` (with JAX, Flax and orbax) and the
subpackages are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from jaxseg.inference.segmenter import Segmenter

__all__ = ["Segmenter"]
# Name -> (module, attribute or None for the module itself), imported on first access.
_LAZY = {
    "Segmenter": ("jaxseg.inference.segmenter", "Segmenter"),
    "export": ("jaxseg.export", None),
    "pretrained": ("jaxseg.pretrained", None),
}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value  # later look-ups skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
