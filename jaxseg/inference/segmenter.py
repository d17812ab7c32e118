"""`jaxseg.Segmenter`: a checkpoint as a function from images to class ids.

    seg = jaxseg.Segmenter.from_checkpoint("ckpt/wrn38_cityscapes")  # or .from_pretrained(name)
    ids = seg("frame.png")                   # (H, W) uint8 train ids at the input size
    ids, probs = seg.predict(batch, return_probs=True)      # (N, H, W), (N, H, W, K)
    picture = seg.overlay("frame.png", ids)

A checkpoint names its model and class count in its `meta` item; a training run's checkpoint
also holds its whole config (dataset, model overrides, precision, eval settings), a converted
one (`python -m jaxseg.convert`) its model overrides. `from_checkpoint` rebuilds the config
from that, so no config file is needed; the class table is the run's dataset, else `dataset=`,
else the built-in table with the checkpoint's class count (19: Cityscapes, 11: CamVid, ...),
else generic names ("class 0", ...) with the PASCAL VOC palette.

Inference settings are `config.eval`'s fields, passed as keyword arguments of the same names
(`preset="original"`, `mode="sliding"`, `scales=(0.5, 1.0, 2.0)`, `flip=True`, `crop_size=`,
...; see jaxseg/inference/settings.py). A `preset` resets the fields it fixes to their
defaults first, so it wins over the eval settings stored with a training run.

Devices: a batch of N images is split over min(N, #devices) of the devices JAX has (padded to a
multiple of that), so one image runs on one device and a big batch on all of them.

`--mode predict` (train_lib/inference.predict_paths) segments through `Segmenter.dispatch` and
`Pending.result`, the very calls `predict` makes: the CLI and the API are one code path.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import data as data_lib
from jaxseg.data import datasets
from jaxseg.data import pictures
from jaxseg.data.class_table import IGNORE_INDEX
from jaxseg.data.datasets.tables import BUILTIN_TABLES
from jaxseg.data.datasets.voc import voc_palette
from jaxseg.inference import model as inference_model
from jaxseg.inference import settings as settings_lib
from jaxseg.inference import sliding
from jaxseg.inference import video as video_lib
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib

# Keyword arguments of from_checkpoint / from_pretrained that set config.eval fields.
SETTINGS = ("preset",) + settings_lib.FIELDS
ImageLike = Any  # a path (str / os.PathLike) or an (H, W, 3) uint8 RGB array


# ------------------------------------------------------------------------ config --
def _merge(node: ml_collections.ConfigDict, stored: dict[str, Any]) -> None:
  """Copies a stored (JSON) config into `node`, field by field; fields this version no longer
  has are skipped, so an older run's checkpoint still opens."""
  for key, value in stored.items():
    if key not in node:
      continue
    current = node[key]
    if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
      if key == "overrides":  # free-form registry keywords: take the run's set as it is
        node[key] = ml_collections.ConfigDict(value)
      else:
        _merge(current, value)
      continue
    if isinstance(value, list) and isinstance(current, tuple):
      value = tuple(value)
    with node.ignore_type():
      node[key] = value


def _dataset_for_classes(num_classes: int) -> str | None:
  """The first built-in class table with `num_classes` classes (kitti shares Cityscapes')."""
  for name, table in BUILTIN_TABLES.items():
    if table().num_classes == num_classes:
      return name
  return None


def _set_dataset(config: ml_collections.ConfigDict, dataset: str) -> None:
  """config.data for a dataset name, a built-in class table or a class-table JSON file."""
  if dataset in datasets.DATASET_NAMES:
    config.data.name = dataset
  elif dataset in BUILTIN_TABLES or dataset.endswith(".json"):
    config.data.name = "folder"
    config.data.class_table = dataset
  else:
    raise ValueError(f"Segmenter: dataset={dataset!r}; expected a dataset name "
                     f"{datasets.DATASET_NAMES}, a built-in class table "
                     f"{tuple(BUILTIN_TABLES)} or a class-table .json file")


def _set_settings(config: ml_collections.ConfigDict, settings: dict[str, Any]) -> None:
  """Writes inference keyword arguments into config.eval (a preset first resets its fields)."""
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    raise TypeError(f"Segmenter: unknown inference setting(s) {unknown}; expected "
                    f"{', '.join(SETTINGS)}")
  preset = settings.get("preset")
  if preset:
    defaults = settings_lib.eval_defaults()
    for name in settings_lib.PRESETS.get(preset, {}):
      if name not in settings:
        config.eval[name] = defaults[name]
  for name, value in settings.items():
    if name == "scales":
      value = ",".join(repr(s) for s in sliding.parse_scales(value))
    try:
      config.eval[name] = value
    except TypeError:
      raise ValueError(f"Segmenter: {name}={value!r}; expected a "
                       f"{type(config.eval[name]).__name__} (config.eval.{name})") from None


def config_for_checkpoint(meta: dict[str, Any], *, dataset: str | None = None
                          ) -> ml_collections.ConfigDict:
  """The config a checkpoint's `meta` describes: the run's own, else model + overrides."""
  from jaxseg.config.base import base_config  # pylint: disable=g-import-not-at-top
  config = base_config()
  if isinstance(meta.get("config"), dict):
    _merge(config, meta["config"])
  elif meta.get("model"):
    config.model.name = str(meta["model"])
    config.model.overrides = ml_collections.ConfigDict(
        {**config.model.overrides.to_dict(), **dict(meta.get("model_overrides") or {})})
  dataset = dataset or meta.get("dataset") or meta.get("class_table")
  if not dataset and not isinstance(meta.get("config"), dict):
    dataset = _dataset_for_classes(int(meta.get("num_classes") or 0))
    if dataset is None:
      config.data.name = "folder"  # no dataset: generic classes (see _info)
      return config
  if dataset:
    _set_dataset(config, str(dataset))
  return config


def _info(config: ml_collections.ConfigDict, meta: dict[str, Any]) -> Any:
  """The DatasetInfo of config.data; generic names and the VOC palette for a converted
  checkpoint whose class count matches no built-in table."""
  if config.data.name == "folder" and not config.data.get("class_table"):
    k = int(meta.get("num_classes") or 0)
    if k <= 0:
      raise ValueError("Segmenter: the checkpoint's meta has no num_classes and no dataset: "
                       "pass dataset= (a dataset or class-table name) or config=")
    return data_lib.DatasetInfo(f"{k} classes", k, tuple(f"class {i}" for i in range(k)),
                                      voc_palette(k), IGNORE_INDEX)
  return data_lib.dataset_info(config.data)


# ----------------------------------------------------------------------- inputs --
def _describe(where: str) -> str:
  return f"image {where}" if where else "image"


def load_image(image: ImageLike, where: str = "") -> np.ndarray:
  """(H, W, 3) uint8 RGB from a path or an array; one-line ValueError / FileNotFoundError."""
  if isinstance(image, (str, os.PathLike)):
    path = pathlib.Path(image)
    if not path.is_file():
      raise FileNotFoundError(f"Segmenter: {_describe(where)} file {path} does not exist")
    return datasets.read_image(str(path))
  if isinstance(image, jax.Array):
    image = np.asarray(image)
  if not isinstance(image, np.ndarray):
    raise ValueError(f"Segmenter: {_describe(where)} is a {type(image).__name__!r} object; "
                     "expected a file path or an (H, W, 3) uint8 RGB array")
  if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
    raise ValueError(f"Segmenter: {_describe(where)} has shape {image.shape}; expected "
                     "(H, W, 3) RGB")
  if image.dtype != np.uint8:
    raise ValueError(f"Segmenter: {_describe(where)} is a {image.dtype} array; expected uint8 "
                     "RGB 0..255 (e.g. np.clip(x * 255, 0, 255).astype(np.uint8))")
  return image


def _batches(images: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
  """Consecutive images of one shape stacked, at most `size` at a time."""
  group: list[np.ndarray] = []
  for image in images:
    if group and (len(group) == size or image.shape != group[0].shape):
      yield np.stack(group)
      group = []
    group.append(image)
  if group:
    yield np.stack(group)


def pad_batch(images: np.ndarray, devices: int) -> np.ndarray:
  """`images` with its last image repeated up to a multiple of `devices` (each device of the
  batch axis must get as many images as the others)."""
  pad = -len(images) % devices
  return np.concatenate([images, np.repeat(images[-1:], pad, axis=0)]) if pad else images


@dataclasses.dataclass(frozen=True)
class Pending:
  """A batch in flight on the devices: `result()` waits for it."""
  ids: jax.Array
  probs: jax.Array | None
  count: int  # images of the batch (the rest is padding to the device count)

  def result(self) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, H, W) uint8 ids and (N, H, W, K) float32 probabilities (None unless asked)."""
    ids = np.asarray(jax.device_get(self.ids))[:self.count]
    probs = None if self.probs is None else np.asarray(jax.device_get(self.probs))[:self.count]
    return ids, probs


# -------------------------------------------------------------------- segmenter --
class Segmenter:
  """A restored model with its inference settings and class table; see the module docstring.

  Attributes: `config` (the full config), `info` (classes: names, colours, ignore index),
  `settings` (InferenceSettings), `step_dir` (the checkpoint step, or None).
  """

  def __init__(self, config: ml_collections.ConfigDict, model_vars: dict[str, Any], info: Any,
               *, step_dir: pathlib.Path | None = None,
               devices: Sequence[jax.Device] | None = None):
    self.config = config
    self.info = info
    self.step_dir = step_dir
    self.settings = sliding.InferenceSettings.from_config(config.eval, config.data)
    pool = self.settings.aspp_pool_size if self.settings.mode == "pooling" else None
    _, self._apply_fn = inference_model.build_apply_fn(config, info.num_classes,
                                                       aspp_pool_size=pool)
    # Host copies: each device set gets its own replicated copy (see _engine), export closes
    # over these.
    self._host_vars = jax.device_get(model_vars)
    self._devices = tuple(jax.local_devices() if devices is None else devices)
    if not self._devices:
      raise ValueError("Segmenter: devices=[] ; expected at least one device")
    self._engines: dict[int, tuple[sliding.Segmenter, Any]] = {}

  # --------------------------------------------------------------- constructors --
  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, checkpoint: str | os.PathLike,
                  *, step: int | None = None,
                  devices: Sequence[jax.Device] | None = None) -> "Segmenter":
    """`checkpoint` (workdir, checkpoints dir or step dir) under exactly `config`, as
    `--mode predict` runs it. Fails on a model / class-count mismatch before restoring."""
    sliding.InferenceSettings.from_config(config.eval, config.data)  # bad settings fail first
    step_dir = checkpoint_lib.resolve_checkpoint(checkpoint, step)
    info = data_lib.dataset_info(config.data)
    return cls._restore(config, step_dir, info, devices)

  @classmethod
  def _restore(cls, config: ml_collections.ConfigDict, step_dir: pathlib.Path, info: Any,
               devices: Sequence[jax.Device] | None) -> "Segmenter":
    model_vars = inference_model.restore_variables(config, step_dir, info)
    seg = cls(config, model_vars, info, step_dir=step_dir, devices=devices)
    logging.info("restored %s (%s, %d classes); inference %s", step_dir, config.model.name,
                 info.num_classes, seg.settings)
    return seg

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, *, step: int | None = None,
                      config: ml_collections.ConfigDict | None = None,
                      dataset: str | None = None, precision: str | None = None,
                      devices: Sequence[jax.Device] | None = None,
                      **settings: Any) -> "Segmenter":
    """A segmenter of a checkpoint, no config file needed.

    Args:
      path: a converted checkpoint, a training workdir, its checkpoints dir or a step dir.
      step: the step to restore (default: the latest).
      config: a config to use instead of the checkpoint's own (copied, not modified).
      dataset: the class table: a dataset name ('cityscapes'), a built-in table name
        ('pascal_context60') or a class-table .json (default: see the module docstring).
      precision: 'fp32' | 'bf16' | 'fp16' (default: the run's, else config_base's).
      devices: the devices to run on (default: jax.local_devices()).
      **settings: config.eval inference fields: preset, mode, scales, flip, crop_size, ...
    """
    step_dir = checkpoint_lib.resolve_checkpoint(path, step)
    meta = checkpoint_lib.read_meta(step_dir)
    if config is None:
      config = config_for_checkpoint(meta, dataset=dataset)
    else:
      config = copy.deepcopy(config)
      if dataset:
        _set_dataset(config, dataset)
    if precision is not None:
      config.precision = precision
    _set_settings(config, settings)
    sliding.InferenceSettings.from_config(config.eval, config.data)  # bad settings fail first
    return cls._restore(config, step_dir, _info(config, meta), devices)

  @classmethod
  def from_pretrained(cls, name: str, **kwargs: Any) -> "Segmenter":
    """A published checkpoint by name (`python -m jaxseg.pretrained list`), downloaded and
    converted on first use; keyword arguments as `from_checkpoint`."""
    from jaxseg import pretrained  # pylint: disable=g-import-not-at-top
    entry = pretrained.get_entry(name)
    if not entry.num_classes or entry.trunk_only:
      what = "an ImageNet trunk (its head is random)" if entry.trunk_only else (
          f"a {entry.model} checkpoint, not a segmentation network")
      raise ValueError(f"Segmenter.from_pretrained: {name!r} is {what}; pick a segmentation "
                       "checkpoint from `python -m jaxseg.pretrained list`")
    table = entry.class_table
    if table in datasets.DATASET_NAMES or table in BUILTIN_TABLES:
      kwargs.setdefault("dataset", table)
    return cls.from_checkpoint(pretrained.get(entry), **kwargs)

  # ----------------------------------------------------------------- properties --
  @property
  def num_classes(self) -> int:
    return int(self.info.num_classes)

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.info.class_names)

  @property
  def palette(self) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class."""
    return np.asarray(self.info.colors, np.uint8)

  @property
  def model_name(self) -> str:
    return str(self.config.model.name)

  def __repr__(self) -> str:
    s = self.settings
    return (f"Segmenter({self.model_name}, {self.num_classes} classes ({self.info.name}), "
            f"{self.config.precision}, {s.mode} scales={list(s.scales)} flip={s.flip}, "
            f"{len(self._devices)} device(s), checkpoint={self.step_dir})")

  # ------------------------------------------------------------------ inference --
  def _engine(self, count: int) -> tuple[sliding.Segmenter, Any]:
    """The engine on the first `count` devices and the variables replicated over them."""
    if count not in self._engines:
      mesh = mesh_lib.create_mesh({"data": count}, devices=list(self._devices[:count]))
      engine = inference_model.build_engine(self.config, self.info, mesh, self.settings,
                                            apply_fn=self._apply_fn)
      self._engines[count] = (engine,
                              jax.device_put(self._host_vars, mesh_lib.replicated(mesh)))
    return self._engines[count]

  def dispatch(self, images: np.ndarray, *, probs: bool = False) -> Pending:
    """Starts segmenting an (N, H, W, 3) uint8 batch; returns without waiting for it."""
    n = len(images)
    count = min(n, len(self._devices))
    images = pad_batch(images, count)
    engine, model_vars = self._engine(count)
    x = jax.device_put(images, mesh_lib.batch_sharding(engine.mesh))
    if probs:
      return Pending(*engine.predict_with_probs(model_vars, x), count=n)
    return Pending(engine.predict(model_vars, x), None, count=n)

  def predict(self, images: ImageLike | np.ndarray | Sequence[ImageLike], *,
              return_probs: bool = False, batch_size: int | None = None) -> Any:
    """Class ids (uint8 train ids) at the input size, and probabilities if asked.

    `images`: one image (a path or an (H, W, 3) uint8 array) -> (H, W); an (N, H, W, 3) array
    -> (N, H, W); a list of images (any sizes) -> a list of (H, W). With return_probs, a pair
    (ids, probs), probs (..., K) float32 summing to 1 over K. Batches of `batch_size` (default:
    the device count) images of one size run together.
    """
    size = int(batch_size or len(self._devices))
    if size <= 0:
      raise ValueError(f"Segmenter.predict: batch_size={batch_size}; expected > 0")
    if isinstance(images, (str, os.PathLike)) or (
        isinstance(images, (np.ndarray, jax.Array)) and images.ndim == 3):
      ids, probs = self.dispatch(load_image(images)[None], probs=return_probs).result()
      return (ids[0], probs[0]) if return_probs else ids[0]
    if isinstance(images, (np.ndarray, jax.Array)):
      if images.ndim != 4:
        raise ValueError(f"Segmenter.predict: an array of shape {images.shape}; expected "
                         "(H, W, 3) or (N, H, W, 3) uint8 RGB")
      batch = np.asarray(images)
      if len(batch):
        load_image(batch[0], "batch[0]")  # dtype / channels, once for the batch
      items, stacked = list(batch), True
    elif isinstance(images, (list, tuple)):
      items, stacked = list(images), False
    else:
      raise ValueError(f"Segmenter.predict: got a {type(images).__name__!r} object; expected "
                       "an image path, an (H, W, 3) / (N, H, W, 3) uint8 array or a list")
    if not items:
      raise ValueError("Segmenter.predict: no images given")
    results: list[tuple[np.ndarray, np.ndarray | None]] = []
    loaded = (load_image(image, f"#{i}") for i, image in enumerate(items))
    video_lib.pipelined(_batches(loaded, size),
                        lambda batch: self.dispatch(batch, probs=return_probs),
                        lambda batch, pending: results.append(pending.result()))
    ids = [row for part, _ in results for row in part]
    probs = [row for _, part in results for row in (part if part is not None else ())]
    if stacked:
      ids, probs = np.stack(ids), (np.stack(probs) if return_probs else None)
    return (ids, probs) if return_probs else ids

  __call__ = predict

  # -------------------------------------------------------------------- pictures --
  def colorize(self, ids: np.ndarray) -> np.ndarray:
    """(..., H, W) class ids -> (..., H, W, 3) uint8 RGB in the class palette."""
    return pictures.colorize(np.asarray(ids), self.palette)

  def overlay(self, image: ImageLike, ids: np.ndarray | None = None, *,
              alpha: float | None = None) -> np.ndarray:
    """`image` blended with its coloured ids (segmented here if not given); alpha is the
    mask's weight (default config.eval.overlay_alpha)."""
    rgb = load_image(image)
    ids = self.predict(rgb) if ids is None else np.asarray(ids)
    if ids.shape != rgb.shape[:2]:
      raise ValueError(f"Segmenter.overlay: ids of shape {ids.shape} for an image of "
                       f"{rgb.shape[:2]}; expected the image's (H, W)")
    weight = float(self.config.eval.overlay_alpha if alpha is None else alpha)
    return pictures.blend(rgb, self.colorize(ids), weight)

  # ---------------------------------------------------------------------- export --
  def traceable(self, output: str = "logits") -> Callable[[jax.Array], jax.Array]:
    """A pure function (N, H, W, 3) uint8 -> (N, H, W, K) float32 scores ('logits': averaged
    logits, or probabilities under a softmax average) or (N, H, W) uint8 ids ('ids'), with
    the weights as constants and no sharding: what jaxseg/export.py serialises. Each image
    goes through the same settings and plan as a batch of one here."""
    if output not in ("logits", "ids"):
      raise ValueError(f"Segmenter: output={output!r}; expected 'logits' or 'ids'")
    engine = inference_model.build_engine(self.config, self.info, None, self.settings,
                                          apply_fn=self._apply_fn)
    model_vars = self._host_vars

    def one(image: jax.Array) -> jax.Array:
      scores = engine.logits(model_vars, image[None])[0]
      return scores if output == "logits" else jnp.argmax(scores, axis=-1).astype(jnp.uint8)

    return jax.vmap(one)

  def export(self, path: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
    """Writes a jax.export artifact and its metadata JSON (see jaxseg/export.py)."""
    from jaxseg import export as export_lib  # pylint: disable=g-import-not-at-top
    return export_lib.export_segmenter(self, path, **kwargs)
