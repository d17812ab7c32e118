"""Command line: convert a published PyTorch checkpoint into a jaxseg orbax checkpoint.

    python -m jaxseg.convert --src cityscapes_best.pth --model DeepWV3Plus --out ckpt/wrn38
    python -m jaxseg.convert --src wider_resnet38.pth --model DeepWV3Plus --trunk-only
        --num-classes 19 --out ckpt/wrn38_imagenet     (one line)
    python -m jaxseg.convert --src sdc_cityscapes_vrec.pth.tar --model SDCNet2DRecon
        --out ckpt/sdc/sdcnet                          (one line; also SDCNet2D)
    python -m jaxseg.convert --src FlowNet2_checkpoint.pth.tar --model FlowNet2
        --out ckpt/sdc/flownet2                        (one line)

Registry models go to `convert.converter.convert_checkpoint`, SDCNet2D / SDCNet2DRecon /
FlowNet2 to `sdcnet.convert_weights.convert_file` (their --model-override keys:
sequence_length, rgb_max); both return the same `convert.report.LoadReport`. The choice is
made here, in the front door, because `convert/` may not import `sdcnet/` (docs/ARCHITECTURE.md).
`python -m jaxseg.main --mode convert` takes the same flags and runs `main` below, so both
print the same one-line errors and exit with the same status (1 for a refused file).
Multi-word flags also accept underscores (--num_classes), as absl spells them.
"""
from __future__ import annotations

import argparse
import ast
import sys
from typing import Any, Sequence

from jaxseg.convert.report import LoadReport


def _override(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value  # A bare word, e.g. precision=highest.


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.convert", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="PyTorch .pth checkpoint (legacy or zip)")
  parser.add_argument("--model", required=True,
                      help="registry model name, e.g. DeepWV3Plus, DeepSRNX50V3PlusD_m1; or "
                      "SDCNet2D, SDCNet2DRecon, FlowNet2")
  parser.add_argument("--out", required=True, help="output orbax checkpoint directory")
  parser.add_argument("--num-classes", "--num_classes", type=int, default=None,
                      help="classifier size (default: the checkpoint's); a different value "
                      "re-initialises the final classifier only")
  parser.add_argument("--trunk-only", "--trunk_only", action="store_true",
                      help="the file holds ImageNet trunk weights; the head stays random")
  parser.add_argument("--allow-partial", "--allow_partial", action="store_true",
                      help="load the matching tensors instead of refusing another model's file")
  parser.add_argument("--allow-non-finite", "--allow_non_finite", action="store_true",
                      help="convert even if tensors hold NaN/Inf (refused by default)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing converted checkpoint in --out")
  parser.add_argument("--seed", type=int, default=0,
                      help="initialisation seed for whatever the file does not provide")
  parser.add_argument("--model-override", "--model_override", type=_override, action="append",
                      default=[], metavar="KEY=VALUE",
                      help="create_model keyword, e.g. width_multiplier=0.5 (SDCNet: "
                      "sequence_length=2, rgb_max=255)")
  return parser


# Segmentation-only flags: an SDCNet / FlowNet2 file is loaded whole (nothing is initialised).
_SEGMENTATION_ONLY = (("num_classes", "--num-classes"), ("trunk_only", "--trunk-only"),
                      ("allow_partial", "--allow-partial"))


def convert(args: argparse.Namespace) -> LoadReport:
  """Runs the conversion the parsed flags ask for: segmentation or SDCNet / FlowNet2.

  Raises what the converters raise (OSError, ValueError) for `main` to print as one line.
  """
  from jaxseg.convert.converter import convert_checkpoint  # After parsing: --help stays fast.
  from jaxseg.models import registry
  from jaxseg.sdcnet import convert_weights
  if args.model in convert_weights.CONVERTIBLE:
    for name, flag in _SEGMENTATION_ONLY:
      if getattr(args, name):
        raise ValueError(f"{flag} does not apply to {args.model} (an SDCNet / FlowNet2 "
                         "checkpoint is converted whole)")
    return convert_weights.convert_file(
        args.src, args.model, out_dir=args.out, model_overrides=dict(args.model_override),
        overwrite=args.overwrite, allow_non_finite=args.allow_non_finite)
  if args.model not in registry.list_models():  # Before reading a possibly large file.
    raise ValueError(f"unknown model {args.model!r}; known models: "
                     f'{", ".join([*registry.list_models(), *convert_weights.CONVERTIBLE])}')
  return convert_checkpoint(args.src, args.model, out_dir=args.out,
                            num_classes=args.num_classes, trunk_only=args.trunk_only,
                            allow_partial=args.allow_partial, seed=args.seed,
                            model_overrides=dict(args.model_override), overwrite=args.overwrite,
                            allow_non_finite=args.allow_non_finite)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs one conversion; returns the exit status (argparse exits 2 itself on bad flags)."""
  args = build_parser().parse_args(argv)
  try:
    convert(args)
  # ValueError covers the reader's refusals (PthFormatError) and NonFiniteWeightsError.
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
