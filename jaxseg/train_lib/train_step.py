"""The train state and the jit-compiled, explicitly sharded train and eval steps."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.nnx as nnx
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from jaxseg.models import registry
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import metrics as metrics_lib
from jaxseg.train_lib import precision as precision_lib
from jaxseg.train_lib import variables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict[str, jax.Array]
  batch_stats: dict[str, jax.Array]
  opt_state: Any
  loss_scale: dict[str, jax.Array]

  def model_vars(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}

  def train_vars(self) -> dict[str, Any]:
    return {"step": self.step, "opt_state": self.opt_state, "loss_scale": self.loss_scale}

  def replace_from_checkpoint(self, model_vars: dict[str, Any],
                              train_vars: dict[str, Any]) -> "TrainState":
    return self.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                        **train_vars)


def normalize_images(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """uint8 RGB -> ImageNet-normalised float, on device (the host ships 4x fewer bytes)."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
  std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def build_model(config: ml_collections.ConfigDict, num_classes: int, *, rngs: nnx.Rngs,
                bn_groups: int = 1) -> nnx.Module:
  dtype = precision_lib.compute_dtype(config.precision)
  overrides = dict(config.model.overrides) if config.model.get("overrides") else {}
  return registry.create_model(config.model.name, num_classes=num_classes, rngs=rngs, dtype=dtype,
                               param_dtype=jnp.float32, bn_groups=bn_groups, **overrides)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """Everything compiled for one run: the model layout, the state shardings and the steps."""
  layout: variables.ModelLayout
  state_sharding: Any
  init: Callable[[], TrainState]
  train_step: Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]
  eval_step: Callable[[dict[str, Any], dict[str, jax.Array]], jax.Array]
  predict_step: Callable[[dict[str, Any], jax.Array], jax.Array]


def create_step_functions(config: ml_collections.ConfigDict, *, mesh: Mesh, num_classes: int,
                          tx: optax.GradientTransformation | None, loss_fn: LossFn | None,
                          ignore_index: int = 255) -> StepFunctions:
  if tx is None:  # evaluation/prediction only
    tx = optax.identity()
  if loss_fn is None:
    loss_fn = lambda logits, labels: (jnp.zeros((), jnp.float32), {})
  dtype = precision_lib.compute_dtype(config.precision)
  bn_groups = 1 if config.syncbn else mesh_lib.data_parallel_size(mesh)
  use_loss_scale = config.precision == "fp16"
  scale_cfg = precision_lib.LossScaleConfig()
  seed = int(config.seed)

  def init() -> TrainState:
    model = build_model(config, num_classes, rngs=nnx.Rngs(seed), bn_groups=bn_groups)
    _, params, stats = variables.split_model(model)
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=stats,
                      opt_state=tx.init(params), loss_scale=precision_lib.initial_loss_scale(scale_cfg))

  abstract_model = nnx.eval_shape(
      lambda: build_model(config, num_classes, rngs=nnx.Rngs(seed), bn_groups=bn_groups))
  layout, _, _ = variables.split_model(abstract_model)
  replicated = mesh_lib.replicated(mesh)
  batched = mesh_lib.batch_sharding(mesh)
  abstract_state = jax.eval_shape(init)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    images = normalize_images(batch["image"], dtype)
    labels = batch["label"]
    dropout_rng = jax.random.fold_in(rng, state.step)
    scale = state.loss_scale["scale"] if use_loss_scale else jnp.asarray(1.0, jnp.float32)

    def objective(params):
      model = layout.merge(params, state.batch_stats)
      logits = model(images, train=True, rngs=nnx.Rngs(dropout=dropout_rng))
      loss, aux = loss_fn(logits, labels)
      _, _, new_stats = variables.split_model(model)
      return loss * scale, (loss, aux, new_stats)

    grads, (loss, aux, new_stats) = jax.grad(objective, has_aux=True)(state.params)
    grads = jax.tree.map(lambda g: g / scale, grads)
    finite = precision_lib.all_finite(grads) & jnp.isfinite(loss)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if use_loss_scale:
      # A non-finite fp16 step is skipped: parameters, statistics and momentum stay as they were.
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      new_params = keep(new_params, state.params)
      new_opt_state = keep(new_opt_state, state.opt_state)
      new_stats = keep(new_stats, state.batch_stats)
      loss_scale = precision_lib.update_loss_scale(state.loss_scale, finite, scale_cfg)
    else:
      loss_scale = state.loss_scale
    new_state = state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                              opt_state=new_opt_state, loss_scale=loss_scale)
    out = {"loss": loss, "grad_norm": optax.global_norm(grads), "finite": finite,
           "loss_scale": loss_scale["scale"], **aux}
    return new_state, out

  def predict_logits(model_vars: dict[str, Any], images: jax.Array) -> jax.Array:
    model = layout.merge(model_vars["params"], model_vars["batch_stats"])
    return model(normalize_images(images, dtype), train=False)

  def eval_step(model_vars: dict[str, Any], batch: dict[str, jax.Array]) -> jax.Array:
    preds = jnp.argmax(predict_logits(model_vars, batch["image"]), axis=-1)
    return metrics_lib.confusion_matrix(batch["label"], preds, num_classes,
                                        ignore_index=ignore_index, valid=batch.get("valid"))

  def predict_step(model_vars: dict[str, Any], images: jax.Array) -> jax.Array:
    return jnp.argmax(predict_logits(model_vars, images), axis=-1).astype(jnp.uint8)

  model_sharding = {"params": state_sharding.params, "batch_stats": state_sharding.batch_stats}
  return StepFunctions(
      layout=layout,
      state_sharding=state_sharding,
      init=jax.jit(init, out_shardings=state_sharding),
      train_step=jax.jit(train_step, in_shardings=(state_sharding, batched, replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=0),
      eval_step=jax.jit(eval_step, in_shardings=(model_sharding, batched),
                        out_shardings=replicated),
      predict_step=jax.jit(predict_step, in_shardings=(model_sharding, batched),
                           out_shardings=batched),
  )
