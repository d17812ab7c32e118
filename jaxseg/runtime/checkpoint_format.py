"""A checkpoint step on disk: its items, and the one-line errors of a step that cannot be read
(damaged) or written (full disk), recognised in orbax / TensorStore failures of any wrapping.
"""
from __future__ import annotations

import errno
import json
import logging as py_logging
import pathlib
import re

MODEL, TRAIN, DATA_ITER, META = "model", "train", "data_iter", "meta"
ITEMS = (MODEL, TRAIN, DATA_ITER, META)
DAMAGED_SUFFIX = "_damaged"  # <checkpoints>_damaged/<step>: steps a resume could not read
# TensorStore/orbax wording of a read that failed on the files themselves.
_READ_FAILURE = re.compile(
    r"(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|FAILED_PRECONDITION|INVALID_ARGUMENT|UNKNOWN): "
    r"Error (reading|opening)|Truncated|corrupt|Encountered error while reading", re.I)
_TS_READ = re.compile(r'([A-Z_]+): Error (?:reading|opening) "([^"]+)"')


class DamagedCheckpointError(RuntimeError):
  """A checkpoint step whose files cannot be read back (truncated, deleted or corrupt)."""

  def __init__(self, step_dir: pathlib.Path, detail: str):
    self.step_dir = pathlib.Path(step_dir)
    self.detail = detail
    super().__init__(f"checkpoint step {self.step_dir.name} under {self.step_dir.parent} is "
                     f"damaged: {detail}")


class NoSpaceError(OSError):
  """ENOSPC while writing a checkpoint (the partial step directory has been removed)."""

  def __init__(self, step: int, directory: pathlib.Path):
    super().__init__(errno.ENOSPC, f"no space left on device while writing checkpoint {step} "
                     f"under {directory}")
    self.step = step
    self.directory = directory

  def __str__(self) -> str:
    return str(self.strerror)


# ------------------------------------------------------------------------------ log noise --
class _ExpectedOrbaxNoise(py_logging.Filter):
  """Drops orbax log records that are expected here, and only those.

  * 'Metadata file does not exist: <item>/_CHECKPOINT_METADATA': orbax looks for step metadata
    inside item directories, which never have it (a missing one at step level still shows).
  * orbax's background-thread and asyncio records of a failed write for lack of disk space:
    the save that failed is reported once, in one line, by NoSpaceError.
  * orbax's record of a KeyboardInterrupt (a second Ctrl-C) that landed in its wait for a
    save: the trainer reports the interruption itself.
  """

  _ITEM_METADATA = re.compile(r"/(%s)/_CHECKPOINT_METADATA$" % "|".join(ITEMS))

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.msg == "Metadata file does not exist: %s" and record.args:
      return not self._ITEM_METADATA.search(str(record.args[0]))
    from_orbax = "orbax" in record.pathname or record.name == "asyncio"
    if from_orbax and record.levelno >= py_logging.ERROR:
      if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
        return False  # a second Ctrl-C inside orbax's wait: the trainer reports it
      text = record.getMessage()
      if record.exc_info and record.exc_info[1] is not None:
        text += " " + " ".join(str(e) for e in exception_chain(record.exc_info[1]))
      return not mentions_no_space(text)
    return True


def _install_log_filter() -> None:
  for name in ("absl", "asyncio"):
    logger = py_logging.getLogger(name)
    if not any(isinstance(f, _ExpectedOrbaxNoise) for f in logger.filters):
      logger.addFilter(_ExpectedOrbaxNoise())


_install_log_filter()


# ------------------------------------------------------------------------ error helpers --
def exception_chain(exc: BaseException) -> list[BaseException]:
  seen: list[BaseException] = []
  while exc is not None and exc not in seen:
    seen.append(exc)
    exc = exc.__cause__ or exc.__context__
  return seen


def mentions_no_space(text: str) -> bool:
  return "No space left on device" in text or "os_error_code='28'" in text


def is_no_space(exc: BaseException) -> bool:
  """Whether `exc` (or what it wraps) is ENOSPC, as an OSError or a TensorStore status."""
  return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or mentions_no_space(str(e))
             for e in exception_chain(exc))


def read_failure(exc: BaseException, item_dir: pathlib.Path) -> str | None:
  """A one-line account of `exc` when it is a failed read of the files in `item_dir`, else
  None (an error that is not about the files, e.g. out of memory, is no sign of damage)."""
  chain = exception_chain(exc)
  for e in chain:
    if isinstance(e, json.JSONDecodeError):
      return f"{item_dir / 'metadata'} is not valid JSON ({e.msg} at byte {e.pos})"
    if isinstance(e, (FileNotFoundError, UnicodeDecodeError)):
      return f"{getattr(e, 'filename', None) or item_dir}: {e}"
  messages = [str(e).splitlines()[0] for e in chain if str(e)]
  # The innermost TensorStore status names the variable and the file; orbax's wrapper does not.
  for message in sorted(messages, key=lambda m: not _TS_READ.match(m)):
    if not _READ_FAILURE.search(message):
      continue
    status = _TS_READ.match(message)
    if not status:
      return f"reading {item_dir} failed ({shorten(message)})"
    where = re.search(r'local file "([^"]+)"', message)
    reason = message.rsplit('": ', 1)[-1]
    variable = re.sub(r"/[\d.]+$", "", status.group(2))  # drop the chunk index
    return (f"reading {variable} from {where.group(1) if where else item_dir} failed "
            f"({status.group(1)}: {shorten(reason)})")
  return None


def unreadable_layout(item_dir: pathlib.Path) -> str:
  """Why orbax found no arrays in `item_dir`: the first missing or broken index file."""
  if not item_dir.is_dir():
    return f"{item_dir} is missing"
  metadata = item_dir / "_METADATA"
  try:
    json.loads(metadata.read_text())
  except (OSError, ValueError):
    return f"{metadata} is missing or not valid JSON"
  for name in ("manifest.ocdbt", "d"):
    if not (item_dir / name).exists():
      return f"{item_dir / name} is missing"
  return f"the array index under {item_dir} (manifest.ocdbt, d/) cannot be read"


def shorten(text: str, limit: int = 160) -> str:
  return text if len(text) <= limit else text[:limit - 3] + "..."


def available_steps(step_dir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in step_dir.parent.iterdir()
                if p.name.isdigit() and p != step_dir and (p / MODEL).is_dir())


def with_other_steps(err: DamagedCheckpointError) -> DamagedCheckpointError:
  """The damage, plus the steps `--step` could pick instead."""
  others = available_steps(err.step_dir)
  hint = (f"; pass --step with another step ({', '.join(map(str, others))})" if others
          else "; no other step is available in that directory")
  return DamagedCheckpointError(err.step_dir, err.detail + hint)
