"""Command line of jaxseg.export: one checkpoint -> a StableHLO artifact + metadata JSON.

    python -m jaxseg.export --checkpoint ckpt/wrn38_cityscapes --out model.stablehlo \\
        --height 1024 --width 2048 [--batch N | --symbolic-batch] [--output logits|ids]
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jaxseg.config import base as config_base
from jaxseg.export import INPUT_DTYPES
from jaxseg.export import OUTPUTS
from jaxseg.export import check_options
from jaxseg.export import export_segmenter
from jaxseg.export import metadata_path
from jaxseg.inference.segmenter import Segmenter
from jaxseg.runtime import checkpoint


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.export", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  add = parser.add_argument
  add("--checkpoint", required=True, help="converted checkpoint, training workdir or step dir")
  add("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  add("--out", required=True, help="artifact path, e.g. model.stablehlo (+ .json beside it)")
  add("--height", type=int, required=True, help="image height of the exported program")
  add("--width", type=int, required=True, help="image width of the exported program")
  batch = parser.add_mutually_exclusive_group()
  batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
  batch.add_argument("--symbolic-batch", "--symbolic_batch", action="store_true",
                     help="any batch size at run time")
  add("--output", choices=OUTPUTS, default="logits", help="scores (default) or class ids")
  add("--input-dtype", "--input_dtype", choices=INPUT_DTYPES, default="uint8",
      help="uint8 (default) or float32 holding 0..255 RGB")
  add("--platforms", default="", help="comma list, e.g. cpu,cuda (default: this backend)")
  add("--config", default=None, help="a configs/*.py to use instead of the checkpoint's own")
  add("--dataset", default=None, help="class table: dataset / table name or .json")
  add("--precision", default=None, choices=("fp32", "bf16", "fp16"),
      help="compute precision (default: the checkpoint's run, else bf16)")
  add("--preset", default=None, help="eval preset: original, semseg, semseg_ss, ...")
  add("--mode", default=None, choices=("whole", "sliding", "pooling"))
  add("--scales", default=None, help="comma list, e.g. 0.5,1.0,2.0")
  add("--flip", default=None, action=argparse.BooleanOptionalAction,
      help="average with the mirrored image")
  add("--crop-size", "--crop_size", type=int, default=None, help="sliding tile side")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Exports one checkpoint; returns the exit status (argparse exits 2 itself on bad flags)."""
  args = build_parser().parse_args(argv)
  settings = {name: getattr(args, name) for name in ("preset", "mode", "scales", "flip",
                                                      "crop_size")
              if getattr(args, name) is not None}
  try:
    check_options(height=args.height, width=args.width, batch=args.batch,
                  symbolic_batch=args.symbolic_batch, output=args.output,
                  input_dtype=args.input_dtype)
    config = None
    if args.config:
      config = config_base.load_config_file(args.config)
    seg = Segmenter.from_checkpoint(args.checkpoint, step=args.step, config=config,
                                    dataset=args.dataset, precision=args.precision, **settings)
    platforms = [p for p in args.platforms.split(",") if p] or None
    path = export_segmenter(seg, args.out, height=args.height, width=args.width,
                            batch=args.batch, symbolic_batch=args.symbolic_batch,
                            output=args.output, input_dtype=args.input_dtype,
                            platforms=platforms)
  except (OSError, ValueError, checkpoint.DamagedCheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {metadata_path(path)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
