"""Command line: list the published checkpoints, or fetch and convert one by name.

    python -m jaxseg.pretrained list
    python -m jaxseg.pretrained get nvidia/cityscapes-wrn38      # prints the checkpoint path
    python -m jaxseg.main --config configs/cityscapes_wrn38.py --workdir runs/x --mode eval \\
        --checkpoint "$(python -m jaxseg.pretrained get nvidia/cityscapes-wrn38)"

`get` prints only the path on stdout (progress, the conversion report and errors go to stderr);
`get --download-only` prints the verified downloaded file instead. The cache is $JAXSEG_CACHE,
else $XDG_CACHE_HOME/jaxseg, else ~/.cache/jaxseg.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence

from jaxseg.pretrained import hub


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.pretrained", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", required=True)
  commands.add_parser("list", help="the catalog: name, model, classes, size, check, cached?")
  get = commands.add_parser("get", help="download (cached, resumable, verified) and convert")
  get.add_argument("name", help="a name from `list`, e.g. nvidia/cityscapes-wrn38")
  get.add_argument("--download-only", action="store_true",
                   help="stop after the verified download and print the file's path")
  get.add_argument("--quiet", action="store_true", help="no progress bar or report")
  return parser


def _size(entry: hub.Entry) -> str:
  return f"{entry.size_mb:g} MB" if entry.size_mb else "?"


def _status(entry: hub.Entry) -> str:
  if hub.checkpoint_path(entry).is_dir():
    return "converted"
  return "downloaded" if hub.download_path(entry).is_file() else "-"


def list_table() -> str:
  """The catalog as an aligned text table."""
  rows = [("name", "model", "classes", "size", "check", "source", "cached")]
  for e in hub.entries():
    classes = f"{e.num_classes} {e.class_table}" if e.num_classes else "-"
    if e.trunk_only:
      classes += " (trunk only)"
    rows.append((e.name, e.model, classes, _size(e), e.verification,
                 "by hand" if e.download == "manual" else e.download, _status(e)))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  return "\n".join(lines + [f"cache: {hub.cache_dir() / 'pretrained'}"])


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.command == "list":
    print(list_table())
    return 0
  try:
    # stdout carries only the path, so `$(python -m jaxseg.pretrained get NAME)` works.
    with contextlib.redirect_stdout(sys.stderr):
      if args.download_only:
        path = hub.fetch(args.name, progress=not args.quiet)
      else:
        path = hub.get(args.name, progress=not args.quiet, verbose=not args.quiet)
  except (hub.PretrainedError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
