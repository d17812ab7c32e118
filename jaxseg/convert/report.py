"""LoadReport: the one account of what loading torch weights into a jaxseg model did.

Every torch-weights loader returns it: `torch_layout.load_state_dict` /
`load_trunk_state_dict` (segmentation models), `sdcnet.torch_names.load_*_state_dict` (SDCNet,
FlowNet2) and both conversions behind `python -m jaxseg.convert` (`converter.convert_checkpoint`,
`sdcnet.convert_weights.convert_file`), which add the file, the output and the metadata. One
type, so a caller checks `ok`, prints `summary()` or calls `raise_if_incomplete()` the same way
whatever the model family, and the refusals read alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

_SHOWN = 10  # How many keys of one kind an error message names.


class ShapeMismatch(NamedTuple):
  """A tensor present on both sides with different torch shapes."""
  key: str
  expected: tuple[int, ...]  # The model's torch-layout shape.
  got: tuple[int, ...]  # The checkpoint's shape.


def _names(keys: list[Any], limit: int = _SHOWN) -> str:
  text = ", ".join(str(k) for k in keys[:limit])
  return text + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _mismatch_text(m: ShapeMismatch) -> str:
  return f"{m.key} has torch shape {m.got} in the checkpoint, {m.expected} in the model"


@dataclasses.dataclass
class LoadReport:
  """What a torch state-dict load (or a whole conversion) loaded, skipped and refused.

  Keys are torch keys without the stripped 'module.' prefix. The fields after `ignored` are
  set by the conversions (`src`, `out_path`, `meta`, ...) and by callers that know the source.
  """
  model: str = ""  # The model's name, e.g. 'DeepWV3Plus', 'SDCNet2DRecon', 'FlowNet2'.
  loaded: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)  # Model tensors the file lacks.
  unexpected: list[str] = dataclasses.field(default_factory=list)  # File tensors without a place.
  mismatched: list[ShapeMismatch] = dataclasses.field(default_factory=list)
  # Classifier tensors of another shape that kept (or got) a fresh initialisation.
  reinitialised: list[str] = dataclasses.field(default_factory=list)
  # Skipped on purpose: BatchNorm num_batches_tracked, an ImageNet file's classifier.
  ignored: list[str] = dataclasses.field(default_factory=list)
  src: str = ""  # The checkpoint file, when the loader knows it: errors name it.
  num_classes: int | None = None  # Segmentation conversions: the output's class count.
  trunk_only: bool = False  # An ImageNet trunk file: the head keeps its initialisation.
  left_at_init: list[str] = dataclasses.field(default_factory=list)  # The head, with trunk_only.
  non_finite: list[str] = dataclasses.field(default_factory=list)  # File tensors with NaN/Inf.
  out_path: str | None = None  # The written orbax step directory.
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # The file's scalar fields.

  @property
  def reinitialized(self) -> list[str]:
    """US spelling of `reinitialised`."""
    return self.reinitialised

  @property
  def ok(self) -> bool:
    """Every model tensor came from the file and every file tensor found its place."""
    return not (self.missing or self.unexpected or self.mismatched)

  def problems(self) -> list[str]:
    """One phrase per kind of refusal, naming the keys (empty when `ok`)."""
    parts = []
    if self.missing:
      parts.append(f"{len(self.missing)} model tensors missing from the checkpoint: "
                   + _names(self.missing))
    if self.unexpected:
      parts.append(f"{len(self.unexpected)} checkpoint tensors unknown to the model: "
                   + _names(self.unexpected))
    if self.mismatched:
      parts.append(f"{len(self.mismatched)} shape mismatches: "
                   + _names([_mismatch_text(m) for m in self.mismatched]))
    return parts

  def raise_if_incomplete(self, advice: str = "") -> None:
    """Raises ValueError (one line: the file, the model, the offending keys) unless `ok`.

    `advice` ends the message, e.g. which flag loads what matches anyway.
    """
    if self.ok:
      return
    source = self.src or "the state dict"
    weights = f"{self.model} weights" if self.model else "the model's weights"
    message = (f"{source} does not hold {weights} (loaded {len(self.loaded)} tensors): "
               + "; ".join(self.problems()))
    raise ValueError(message + (f". {advice}" if advice else ""))

  def summary(self) -> str:
    """Human-readable report: the counts on the first line, then every offending key by name."""
    details = []
    if self.num_classes is not None:
      details.append(f"num_classes={self.num_classes}")
    if self.trunk_only:
      details.append("trunk only")
    head = f"{self.src} -> {self.model}" if self.src else self.model or "state dict"
    head += f' ({", ".join(details)})' if details else ""
    lines = [f"{head}: loaded {len(self.loaded)} tensors"]
    if self.meta:
      lines.append("  checkpoint: " + ", ".join(f"{k}={v!r}" for k, v in self.meta.items()))
    if self.ignored:
      lines.append(f"  ignored {len(self.ignored)} entries (BatchNorm num_batches_tracked, "
                   "ImageNet classifier)")
    if self.left_at_init:
      lines.append(f"  {len(self.left_at_init)} head tensors keep their random initialisation")
    if self.reinitialised:
      count = f" for {self.num_classes} classes" if self.num_classes is not None else ""
      lines.append(f"  re-initialised classifier{count}: " + ", ".join(self.reinitialised))
    for title, keys in (("missing (left at initialisation)", self.missing),
                        ("unexpected (ignored)", self.unexpected),
                        ("non-finite values", self.non_finite)):
      if keys:
        lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
    for m in self.mismatched:
      lines.append(f"  shape mismatch: {_mismatch_text(m)}")
    if self.out_path:
      lines.append(f"  wrote {self.out_path}")
    return "\n".join(lines)
