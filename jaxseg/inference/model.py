"""The model as a pure inference function, optionally with a fixed-size ASPP image pool.

config.eval.mode='pooling' is the original eval.py `--fixed_aspp_pool`: the ASPP's image
pooling averages `config.eval.aspp_pool_size` x `aspp_pool_size` windows instead of the whole
map. That is an option of the DeepLabV3+ ASPP itself (`jaxseg.models.deeplabv3plus.ASPP
.image_pool_window`, set through the model's `set_image_pool_window`); variable paths, and
hence checkpoints, are the same either way.

A model trained on a universal taxonomy (data.name='multi') is evaluated in one dataset's
classes with `config.eval.taxonomy` + `config.eval.taxonomy_dataset`: the network is built with
the universal class count and its logits become, per dataset class, the log of the summed
probabilities of the universal classes mapped to it (`taxonomy.universal_to_dataset_log_probs`).
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable

from absl import logging
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg.data import taxonomy as taxonomy_lib
from jaxseg.inference import sliding
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import precision as precision_lib
from jaxseg.runtime import variables


def use_fixed_aspp_pool(model: nnx.Module, pool_size: int) -> nnx.Module:
  """Sets the model's ASPP image pooling to `pool_size` windows in place; returns `model`."""
  set_window = getattr(model, "set_image_pool_window", None)
  if not hasattr(model, "aspp") or set_window is None:
    raise ValueError(f"config.eval.mode='pooling' needs a model with an ASPP head "
                     f"(`aspp`); {type(model).__name__} has none")
  set_window(int(pool_size))
  return model


def eval_taxonomy_mapping(config: ml_collections.ConfigDict
                          ) -> taxonomy_lib.DatasetMapping | None:
  """The universal -> dataset mapping of config.eval.taxonomy / taxonomy_dataset, or None.

  The dataset classes are those of config.data (the evaluated dataset), checked against the
  mapping file `<taxonomy>/<taxonomy_dataset>.tsv`.
  """
  name = str(config.eval.get("taxonomy", "") or "")
  dataset = str(config.eval.get("taxonomy_dataset", "") or "")
  if not name and not dataset:
    return None
  if not (name and dataset):
    raise ValueError(f"config.eval.taxonomy={name!r} and config.eval.taxonomy_dataset="
                     f"{dataset!r}: set both (e.g. 'universal' and 'cityscapes') or neither")
  from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
  class_names = tuple(datasets.get_class_table(config.data).class_names)
  return _load_eval_mapping(name, dataset, class_names)


@functools.lru_cache(maxsize=8)
def _load_eval_mapping(name: str, dataset: str, class_names: tuple[str, ...]
                       ) -> taxonomy_lib.DatasetMapping:
  # Cached: restoring a checkpoint asks for the mapping twice (class count, then apply_fn).
  mapping = taxonomy_lib.load_mapping(name, dataset, class_names)
  if mapping.unrepresented:
    logging.warning("eval.taxonomy=%s: %s classes %s have no universal class; the model never "
                    "predicts them", name, dataset, list(mapping.unrepresented))
  return mapping


def model_num_classes(config: ml_collections.ConfigDict, dataset_num_classes: int) -> int:
  """Classes of the network itself: the universal count with config.eval.taxonomy, else the
  dataset's (what a checkpoint's meta `num_classes` must equal)."""
  mapping = eval_taxonomy_mapping(config)
  return dataset_num_classes if mapping is None else mapping.taxonomy.num_classes


def build_apply_fn(config: ml_collections.ConfigDict, num_classes: int, *,
                   aspp_pool_size: int | None = None
                   ) -> tuple[variables.ModelLayout, Callable[[dict[str, Any], jax.Array],
                                                               jax.Array]]:
  """(layout, apply_fn): `apply_fn(model_vars, x_normalised) -> float32 logits` (eval mode).

  `model_vars` = {'params', 'batch_stats'} flat dicts, as restored from a checkpoint.
  `num_classes` is the class count of the outputs (the evaluated dataset's). With
  config.eval.taxonomy the network predicts the universal classes and apply_fn returns the
  dataset classes' log-probabilities (see the module docstring).
  """
  mapping = eval_taxonomy_mapping(config)
  net_classes = num_classes if mapping is None else mapping.taxonomy.num_classes
  if mapping is not None and len(mapping.dataset_classes) != num_classes:
    raise ValueError(f"config.eval.taxonomy_dataset={mapping.dataset!r} has "
                     f"{len(mapping.dataset_classes)} classes but {num_classes} are evaluated")

  def make():
    model = registry.from_config(config, net_classes, rngs=nnx.Rngs(0))
    if aspp_pool_size:
      use_fixed_aspp_pool(model, aspp_pool_size)
    return model

  layout, _, _ = variables.split_model(nnx.eval_shape(make))
  eval_matrix = None if mapping is None else jnp.asarray(mapping.eval_matrix())

  def apply_fn(model_vars: dict[str, Any], x: jax.Array) -> jax.Array:
    model = layout.merge(model_vars["params"], model_vars["batch_stats"])
    logits = model(x, train=False).astype(jnp.float32)
    if eval_matrix is not None:
      logits = taxonomy_lib.universal_to_dataset_log_probs(logits, eval_matrix)
    return logits

  return layout, apply_fn


def checked_num_classes(config: ml_collections.ConfigDict, step_dir: pathlib.Path,
                        meta: dict[str, Any], info: Any) -> int:
  """The network's class count: the dataset's, or the universal one with eval.taxonomy.

  Raises ValueError when the checkpoint's stored class count or config.model.num_classes
  disagrees with the classes `info` describes.
  """
  num_classes = model_num_classes(config, info.num_classes)
  what = (f"dataset '{info.name}'" if num_classes == info.num_classes
          else f"taxonomy '{config.eval.taxonomy}'")
  stored = int(meta.get("num_classes") or 0)
  if stored and stored != num_classes:
    raise ValueError(f"checkpoint {step_dir} predicts {stored} classes (model "
                     f"'{meta.get('model')}') but {what} has {num_classes}: pass the --config "
                     "the checkpoint was trained with (and eval.taxonomy for a universal model)")
  wanted = int(config.model.num_classes)
  if wanted > 0 and wanted != num_classes:
    raise ValueError(f"config.model.num_classes={wanted} but {what} has {num_classes} classes")
  return num_classes


def restore_variables(config: ml_collections.ConfigDict, step_dir: pathlib.Path, info: Any
                      ) -> dict[str, Any]:
  """Host copies {'params', 'batch_stats'} of a step's model variables, after checking the
  model name, the class count against `info` (a DatasetInfo) and that every value is finite."""
  meta = checkpoint_lib.read_model_meta(step_dir, config.model.name)
  num_classes = checked_num_classes(config, step_dir, meta, info)
  # The model's shapes only (nnx.eval_shape): no weight is initialised just to be overwritten.
  _, params, stats = variables.split_model(
      nnx.eval_shape(lambda: registry.from_config(config, num_classes, rngs=nnx.Rngs(0))))
  restored = checkpoint_lib.restore_model_item(step_dir, {"params": params, "batch_stats": stats})
  variables.require_finite(restored["params"], restored["batch_stats"],
                           where=f"checkpoint {step_dir}")
  return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def build_engine(config: ml_collections.ConfigDict, info: Any, mesh: Any,
                 settings: sliding.InferenceSettings | None = None, *,
                 apply_fn: Callable[[dict[str, Any], jax.Array], jax.Array] | None = None
                 ) -> sliding.Segmenter:
  """The tiled / multi-scale inference engine of `settings` (default: config.eval's) for the
  classes of `info`, on `mesh` (None: unsharded, for export). `apply_fn` (from build_apply_fn
  with the same settings) saves building the model layout again."""
  if settings is None:
    settings = sliding.InferenceSettings.from_config(config.eval, config.data)
  if apply_fn is None:
    pool = settings.aspp_pool_size if settings.mode == "pooling" else None
    _, apply_fn = build_apply_fn(config, info.num_classes, aspp_pool_size=pool)
  return sliding.Segmenter(apply_fn, num_classes=info.num_classes, mesh=mesh, settings=settings,
                           dtype=precision_lib.compute_dtype(config.precision),
                           ignore_index=info.ignore_index)
