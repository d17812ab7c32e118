"""Published checkpoints by name: the catalog's entries, the cache, download and conversion.

    entry = get_entry("nvidia/cityscapes-wrn38")
    raw = fetch(entry)      # CACHE/pretrained/downloads/nvidia/cityscapes-wrn38/cityscapes_best.pth
    ckpt = get(entry)       # CACHE/pretrained/converted/nvidia/cityscapes-wrn38/0 (orbax, step 0)

CACHE is $JAXSEG_CACHE, else $XDG_CACHE_HOME/jaxseg, else ~/.cache/jaxseg. A file the user
put at `fetch`'s path by hand (no network, or a Drive folder link) is verified and used.
Conversion runs through the restricted .pth reader (jaxseg.convert / jaxseg.sdcnet), into a
temporary folder renamed into place when complete, so an interrupted conversion is redone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import shutil
import sys
from typing import Any, Iterator

from jaxseg.pretrained import catalog
from jaxseg.pretrained import download
from jaxseg.runtime import files

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$")
DOWNLOADS = ("direct", "gdrive", "manual")
CONVERTERS = ("segmentation", "sdcnet", "flownet2")


class PretrainedError(RuntimeError):
  """A checkpoint that cannot be provided; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One published checkpoint (the fields are described in jaxseg/pretrained/catalog.py)."""
  name: str
  filename: str
  url: str
  download: str
  model: str
  source: str
  size_mb: float | None = None
  sha256: str = ""
  sha256_prefix: str = ""
  converter: str = "segmentation"
  num_classes: int | None = None
  class_table: str | None = None
  trunk_only: bool = False
  model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  folder_path: str = ""

  def __post_init__(self):
    where = f"jaxseg.pretrained entry {self.name!r}"
    if not _NAME.match(self.name):
      raise ValueError(f"{where}: the name must be 'publisher/model' in [a-z0-9._-]")
    if self.download not in DOWNLOADS or self.converter not in CONVERTERS:
      raise ValueError(f"{where}: download must be one of {DOWNLOADS} and converter one of "
                       f"{CONVERTERS}, got {self.download!r} / {self.converter!r}")
    if "/" in self.filename or not self.filename:
      raise ValueError(f"{where}: filename must be a plain file name, got {self.filename!r}")
    if self.trunk_only and not self.num_classes:
      raise ValueError(f"{where}: trunk_only needs num_classes (the new head's size)")

  @property
  def verification(self) -> str:
    """What a downloaded file is checked against."""
    if self.sha256:
      return "sha256"
    if self.sha256_prefix:
      return "sha256 prefix"
    return "size" if self.size_mb else "none"


def entries() -> list[Entry]:
  """Every catalog entry, in catalog order."""
  return [Entry(**fields) for fields in catalog.CATALOG]


def get_entry(name: str) -> Entry:
  """The entry called `name` (PretrainedError naming the known ones otherwise)."""
  for entry in entries():
    if entry.name == name:
      return entry
  known = ", ".join(e.name for e in entries())
  raise PretrainedError(f"unknown pretrained checkpoint {name!r}; known: {known}")


def _entry(name_or_entry: str | Entry) -> Entry:
  return name_or_entry if isinstance(name_or_entry, Entry) else get_entry(name_or_entry)


def cache_dir() -> pathlib.Path:
  """$JAXSEG_CACHE, else $XDG_CACHE_HOME/jaxseg, else ~/.cache/jaxseg (runtime/files.py)."""
  return files.cache_root()


def download_path(entry: str | Entry) -> pathlib.Path:
  """Where the published file is cached (and where a user puts it by hand)."""
  entry = _entry(entry)
  return cache_dir() / "pretrained" / "downloads" / entry.name / entry.filename


def converted_dir(entry: str | Entry) -> pathlib.Path:
  """The folder holding the converted orbax checkpoint(s) of `entry`."""
  return cache_dir() / "pretrained" / "converted" / _entry(entry).name


def checkpoint_path(entry: str | Entry) -> pathlib.Path:
  """The converted step directory `get` returns (usable as --checkpoint / init_from)."""
  entry = _entry(entry)
  sub = {"sdcnet": "sdcnet", "flownet2": "flownet2"}.get(entry.converter)
  root = converted_dir(entry)
  return (root / sub / "0") if sub else (root / "0")


def _part(dest: pathlib.Path) -> pathlib.Path:
  return dest.with_name(dest.name + ".part")  # download.download_file's name for it.


def _check(entry: Entry, path: str | os.PathLike) -> str | None:
  return download.verify(path, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix,
                         size_mb=entry.size_mb)


def _by_hand(entry: Entry, dest: pathlib.Path) -> str:
  dest.parent.mkdir(parents=True, exist_ok=True)  # The user only has to drop the file there.
  what = f"{entry.url} (file {entry.folder_path})" if entry.folder_path else entry.url
  return f"download {what} by hand and put it at {dest}"


def fetch(entry: str | Entry, *, progress: bool = True, retries: int = 3) -> pathlib.Path:
  """The verified published file of `entry`: cached, put there by hand, or downloaded."""
  entry = _entry(entry)
  dest = download_path(entry)
  if dest.is_file():
    problem = _check(entry, dest)
    if problem:
      raise PretrainedError(f"{dest}: {problem}; delete it or replace it with the file from "
                            f"{entry.url}")
    return dest
  if entry.download == "manual":
    raise PretrainedError(f"{entry.name}: the publisher links a Google Drive folder, not the "
                          f"file: {_by_hand(entry, dest)}")
  try:
    download.download_file(entry.url, dest, check=lambda p: _check(entry, p),
                           retries=retries, progress=progress)
  except download.ChecksumError as e:
    raise PretrainedError(f"{entry.name}: {e}") from e
  except download.DownloadError as e:
    resume = " (the partial download resumes on the next run)" if _part(dest).exists() else ""
    raise PretrainedError(f"{entry.name}: {e}. Without network, {_by_hand(entry, dest)}"
                          f"{resume}") from e
  return dest


@contextlib.contextmanager
def _staging(final: pathlib.Path) -> Iterator[pathlib.Path]:
  """A fresh temporary folder beside `final`, renamed to `final` when the block succeeds."""
  tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.parent.mkdir(parents=True, exist_ok=True)
  try:
    yield tmp
    shutil.rmtree(final, ignore_errors=True)  # Only an incomplete earlier conversion.
    os.replace(tmp, final)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _convert(entry: Entry, src: pathlib.Path, out: pathlib.Path, verbose: bool) -> None:
  if entry.converter == "segmentation":
    from jaxseg.convert.converter import convert_checkpoint  # Heavy (jax, orbax): import late.
    report = convert_checkpoint(src, entry.model, out_dir=out, trunk_only=entry.trunk_only,
                                num_classes=entry.num_classes if entry.trunk_only else None,
                                model_overrides=entry.model_overrides, verbose=verbose)
    if entry.num_classes and report.num_classes != entry.num_classes:
      print(f"warning: {entry.name}: the file has {report.num_classes} classes, the catalog "
            f"says {entry.num_classes} ({entry.class_table})", file=sys.stderr)
    return
  from jaxseg.sdcnet import convert_weights  # Heavy: import late.
  kind = {"sdcnet": "sdcnet", "flownet2": "flownet2"}[entry.converter]
  convert_weights.convert(out=str(out), **{kind: str(src)})


def get(entry: str | Entry, *, progress: bool = True, verbose: bool = True) -> pathlib.Path:
  """The converted orbax checkpoint of `entry` (downloaded and converted on first use).

  Returns the step directory, e.g. CACHE/pretrained/converted/nvidia/cityscapes-wrn38/0, to
  pass as `--checkpoint` or `config.init_from`.

  Raises:
    PretrainedError: unknown name, no network (the message says where to put the file by
      hand), or a file that is not the published one.
    ValueError: the file is not a checkpoint of the catalog's model (converter errors).
  """
  entry = _entry(entry)
  path = checkpoint_path(entry)
  if path.is_dir():
    return path
  src = fetch(entry, progress=progress)
  with _staging(converted_dir(entry)) as out:
    _convert(entry, src, out, verbose)
  if not path.is_dir():
    raise PretrainedError(f"{entry.name}: conversion wrote no checkpoint at {path}")
  return path
