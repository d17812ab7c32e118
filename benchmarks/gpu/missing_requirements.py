"""Prints pyproject.toml's [project] dependencies that this interpreter lacks, one per line.

A requirement is missing when its distribution is not installed or its version is outside the
range; benchmarks/gpu/run.sh installs exactly those from the carried .whl/ folder.
"""
from __future__ import annotations

from importlib import metadata
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def missing(requirements: list[str]) -> list[str]:
  """The requirements (PEP 508 strings) not satisfied by the installed distributions."""
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  out = []
  for text in requirements:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate():
      continue
    try:
      version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
      out.append(text)
      continue
    if not req.specifier.contains(version, prereleases=True):
      out.append(text)
  return out


def main() -> int:
  pyproject = ROOT / "pyproject.toml"
  deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
  for text in missing(deps):
    print(text.replace(" ", ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
