"""Multi-dataset taxonomies (MSeg-style): a universal class list and per-dataset mappings.

A taxonomy is a folder (`jaxseg/data/taxonomies/<name>/`, or any path) holding

* `classes.tsv`: the universal classes, one per line: ``name<TAB>r,g,b[<TAB>description]``
  (universal id = line order; names must not contain commas);
* `<dataset>.tsv`, one per dataset, a row for EVERY class of that dataset's class table::

    dataset class<TAB>universal classes<TAB>training target (optional)

  The universal column is one class, several joined by commas (the dataset class covers all of
  them, e.g. CamVid 'Car' = car, truck, bus), `ignore` (no universal counterpart) or `@rest`
  (every universal class no other row of the file names, e.g. VOC 'background'). The training
  target is what the class's pixels become when the dataset is relabelled for training: by
  default the universal class itself when there is exactly one, else `ignore`; an explicit
  third column picks one of the listed classes (or `ignore`).

Lines starting with '#' and blank lines are skipped. Errors name the file, the line and the
class: unknown or duplicate dataset classes, dataset classes without a row, unknown universal
classes, bad training targets.

Training (datasets/multi.py) relabels a dataset's train ids through `DatasetMapping.train_lut`.
Evaluation in a dataset's own taxonomy uses `universal_to_dataset_log_probs`: for each dataset
class the log of the summed probabilities of its universal classes.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import os

import numpy as np

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.class_table import identity_table

TAXONOMY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "taxonomies")
IGNORE = "ignore"
REST = "@rest"
CLASSES_FILE = "classes.tsv"


class TaxonomyError(ValueError):
  """A taxonomy file is malformed; the message names the file, the line and the class."""


@dataclasses.dataclass(frozen=True)
class Taxonomy:
  """A universal class list.

  Attributes:
    name: taxonomy name (its folder name).
    directory: folder holding classes.tsv and the dataset mappings.
    class_names: universal class names, index = universal id.
    colors: (U, 3) uint8 RGB.
    descriptions: one free-text description per class ('' when absent).
  """
  name: str
  directory: str
  class_names: tuple[str, ...]
  colors: np.ndarray
  descriptions: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def index(self) -> dict[str, int]:
    return {n: i for i, n in enumerate(self.class_names)}

  def class_table(self) -> table_lib.ClassTable:
    """Table of universal labels: raw ids 0..U-1 are the classes, 255 is ignore."""
    return identity_table(f"universal:{self.name}", self.class_names, self.colors)

  def datasets(self) -> list[str]:
    """Names of the datasets this taxonomy has a mapping file for."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(self.directory)
                  if f.endswith(".tsv") and f != CLASSES_FILE)


@dataclasses.dataclass(frozen=True)
class DatasetMapping:
  """How one dataset's classes map to a taxonomy's universal classes.

  Attributes:
    taxonomy: the universal taxonomy.
    dataset: mapping name (the file stem, e.g. 'cityscapes').
    source: the mapping file.
    dataset_classes: the dataset's class names, index = dataset train id.
    targets: per dataset class, the universal ids it covers (empty = no universal class).
    train_targets: per dataset class, the universal id its pixels are trained as, or None
      (ignored in training).
  """
  taxonomy: Taxonomy
  dataset: str
  source: str
  dataset_classes: tuple[str, ...]
  targets: tuple[tuple[int, ...], ...]
  train_targets: tuple[int | None, ...]

  @property
  def unrepresented(self) -> tuple[str, ...]:
    """Dataset classes with no universal class: a universal model never predicts them."""
    return tuple(n for n, t in zip(self.dataset_classes, self.targets) if not t)

  def train_lut(self) -> np.ndarray:
    """(256,) uint8: dataset train id -> universal id (255 = ignore; 255 stays 255)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for k, t in enumerate(self.train_targets):
      if t is not None:
        lut[k] = t
    return lut

  def eval_matrix(self) -> np.ndarray:
    """(U, K) float32 0/1 matrix: column k marks the universal classes of dataset class k."""
    m = np.zeros((self.taxonomy.num_classes, len(self.dataset_classes)), np.float32)
    for k, t in enumerate(self.targets):
      m[list(t), k] = 1.0
    return m


def resolve_dir(taxonomy: str) -> str:
  """A taxonomy name (a folder under TAXONOMY_DIR) or a path to a taxonomy folder."""
  candidates = [taxonomy, os.path.join(TAXONOMY_DIR, taxonomy)]
  for c in candidates:
    if os.path.isfile(os.path.join(os.path.expanduser(c), CLASSES_FILE)):
      return os.path.abspath(os.path.expanduser(c))
  known = sorted(d for d in os.listdir(TAXONOMY_DIR)
                 if os.path.isfile(os.path.join(TAXONOMY_DIR, d, CLASSES_FILE)))
  raise FileNotFoundError(f'taxonomy {taxonomy!r} not found (no {CLASSES_FILE} in '
                          f'{" or ".join(candidates)}); built-in taxonomies: {known}')


def _rows(path: str):
  """(line number, tab-separated fields) of the non-comment lines of a TSV file."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise TaxonomyError(f"cannot read taxonomy file {path}: {e}") from None
  for no, line in enumerate(lines, 1):
    if line.strip() and not line.lstrip().startswith("#"):
      yield no, [x.strip() for x in line.split("\t")]


@functools.cache
def _load_taxonomy(directory: str) -> Taxonomy:
  path = os.path.join(directory, CLASSES_FILE)
  names, colors, descriptions, seen = [], [], [], {}
  for no, fields in _rows(path):
    where = f"{path}:{no}"
    if len(fields) < 2:
      raise TaxonomyError(f'{where}: expected "name<TAB>r,g,b[<TAB>description]", got '
                          f'{fields!r}')
    name = fields[0]
    if not name or "," in name or name in (IGNORE, REST):
      raise TaxonomyError(f"{where}: bad universal class name {name!r} (no commas, not "
                          f"{IGNORE!r} or {REST!r})")
    if name in seen:
      raise TaxonomyError(f"{where}: universal class {name!r} is listed twice (first on line "
                          f"{seen[name]})")
    try:
      rgb = [int(v) for v in fields[1].split(",")]
    except ValueError:
      rgb = []
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
      raise TaxonomyError(f"{where}: colour of universal class {name!r} is {fields[1]!r}; "
                          f"expected r,g,b in 0..255")
    seen[name] = no
    names.append(name)
    colors.append(rgb)
    descriptions.append(fields[2] if len(fields) > 2 else "")
  if not 0 < len(names) <= table_lib.MAX_CLASSES:
    raise TaxonomyError(f"{path}: {len(names)} universal classes; expected 1.."
                        f"{table_lib.MAX_CLASSES}")
  return Taxonomy(os.path.basename(directory), directory, tuple(names),
                  np.asarray(colors, np.uint8), tuple(descriptions))


def load_taxonomy(taxonomy: str) -> Taxonomy:
  """Reads and validates `<taxonomy>/classes.tsv` (a built-in name or a folder path)."""
  return _load_taxonomy(resolve_dir(taxonomy))


def load_mapping(taxonomy: str | Taxonomy, dataset: str,
                 dataset_classes: Sequence[str]) -> DatasetMapping:
  """Reads and validates `<taxonomy>/<dataset>.tsv` against the dataset's class names."""
  tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
  path = os.path.join(tax.directory, f"{dataset}.tsv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"taxonomy {tax.name!r} has no mapping for dataset {dataset!r}: "
                            f"{path} not found; mappings: {tax.datasets()}")
  return _parse_mapping(tax, dataset, path, tuple(dataset_classes))


def _parse_mapping(tax: Taxonomy, dataset: str, path: str,
                   classes: tuple[str, ...]) -> DatasetMapping:
  cls_index = {n: k for k, n in enumerate(classes)}
  if len(cls_index) != len(classes):
    raise TaxonomyError(f"{path}: the dataset {dataset!r} has duplicate class names")
  uni = tax.index()
  rows: dict[int, tuple[int, str, list[str], str | None]] = {}
  for no, fields in _rows(path):
    where = f"{path}:{no}"
    if len(fields) not in (2, 3):
      raise TaxonomyError(f'{where}: expected "dataset class<TAB>universal classes[<TAB>'
                          f'training target]", got {len(fields)} field(s): {fields!r}')
    name = fields[0]
    if name not in cls_index:
      raise TaxonomyError(f"{where}: {name!r} is not a class of dataset {dataset!r}; its "
                          f"classes are {list(classes)}")
    k = cls_index[name]
    if k in rows:
      raise TaxonomyError(f"{where}: dataset class {name!r} is mapped twice (first on line "
                          f"{rows[k][0]})")
    targets = [t.strip() for t in fields[1].split(",")]
    special = [t for t in targets if t in (IGNORE, REST)]
    if special and len(targets) > 1:
      raise TaxonomyError(f"{where}: dataset class {name!r}: {special[0]!r} must stand alone, "
                          f"got {fields[1]!r}")
    for t in targets:
      if t not in (IGNORE, REST) and t not in uni:
        raise TaxonomyError(f"{where}: dataset class {name!r} maps to unknown universal class "
                            f"{t!r} (not in {os.path.join(tax.directory, CLASSES_FILE)})")
    if len(set(targets)) != len(targets):
      raise TaxonomyError(f"{where}: dataset class {name!r} lists a universal class twice")
    train = fields[2] if len(fields) == 3 and fields[2] else None
    if train is not None and train != IGNORE and (train not in targets or train == REST):
      raise TaxonomyError(f"{where}: dataset class {name!r}: training target {train!r} must be "
                          f"{IGNORE!r} or one of its universal classes {targets}")
    rows[k] = (no, name, targets, train)
  missing = [n for k, n in enumerate(classes) if k not in rows]
  if missing:
    raise TaxonomyError(f"{path}: dataset {dataset!r} classes without a row: {missing} (map "
                        f"each to a universal class or to {IGNORE!r})")
  rest_rows = [r for r in rows.values() if r[2] == [REST]]
  if len(rest_rows) > 1:
    raise TaxonomyError(f"{path}:{rest_rows[1][0]}: {REST!r} is used twice (first on line "
                        f"{rest_rows[0][0]})")
  named = {uni[t] for r in rows.values() for t in r[2] if t not in (IGNORE, REST)}
  rest = tuple(u for u in range(tax.num_classes) if u not in named)
  targets, train_targets = [], []
  for k in range(len(classes)):
    _, _, tgt, train = rows[k]
    ids = () if tgt == [IGNORE] else rest if tgt == [REST] else tuple(uni[t] for t in tgt)
    targets.append(ids)
    if train is None:
      train_targets.append(ids[0] if len(ids) == 1 and tgt != [REST] else None)
    else:
      train_targets.append(None if train == IGNORE else uni[train])
  return DatasetMapping(tax, dataset, path, classes, tuple(targets), tuple(train_targets))


def relabel(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
  """uint8 train-id map -> uint8 universal-id map through a (256,) uint8 look-up table."""
  label = np.asarray(label)
  if label.dtype != np.uint8:
    raise ValueError(f"relabel expects uint8 train ids, got {label.dtype}")
  return np.asarray(lut, np.uint8)[label]


def universal_to_dataset_log_probs(logits, eval_matrix, axis: int = -1):
  """Universal logits -> log-probabilities of a dataset's classes (pure, jnp).

  For dataset class k: log(sum of softmax(logits) over the universal classes of column k of
  `eval_matrix` (U, K)), i.e. logsumexp(logits[S_k]) - logsumexp(logits). The sums are taken
  after shifting by the best *mapped* universal class, so the ranking of the dataset classes
  stays exact even when an unmapped universal class dominates by far. Classes with no universal
  class (all-zero columns), and classes more than ~87 nats below the best mapped class, get
  log(float32 tiny) relative to it instead of -inf, so averages over tiles/flips/scales stay
  finite.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  z = jnp.moveaxis(jnp.asarray(logits, jnp.float32), axis, -1)
  m = jnp.asarray(eval_matrix, jnp.float32)
  if z.shape[-1] != m.shape[0]:
    raise ValueError(f"logits have {z.shape[-1]} channels but the mapping has {m.shape[0]} "
                     "universal classes")
  mapped = m.sum(axis=1) > 0
  shifted = jnp.where(mapped, z, -jnp.inf)
  c = jax.lax.stop_gradient(jnp.max(shifted, axis=-1, keepdims=True))
  c = jnp.where(jnp.isfinite(c), c, 0.0)  # a mapping without any universal class
  summed = jnp.einsum("...u,uk->...k", jnp.exp(shifted - c), m, precision="highest")
  tiny = jnp.finfo(jnp.float32).tiny
  out = jnp.log(jnp.maximum(summed, tiny)) + c - jax.nn.logsumexp(z, axis=-1, keepdims=True)
  return jnp.moveaxis(out, -1, axis)
