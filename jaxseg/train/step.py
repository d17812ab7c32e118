"""The train state and the jit-compiled, explicitly sharded train step.

Evaluation and predictions go through the inference engine (train/periodic_eval.py).

Gradient accumulation (train.grad_accum_steps k): the train step receives one batch of k x the
micro-batch and scans over its k micro-batches, averaging their gradients (each micro-batch
loss is a mean, so with equal valid-pixel counts this is the big batch's gradient) before one
optimizer update. BatchNorm normalises each micro-batch with that micro-batch's statistics and
updates its running statistics k times per update, as k torch forward passes would.

EMA (train.ema_decay d > 0): after every applied update, ema = d * ema + (1 - d) * new for the
parameters and the floating BN statistics alike (timm's ModelEmaV2 averages its buffers too),
starting from the initial (or init_from) weights. `model_vars()` is then the EMA: periodic
evaluation, predictions and the checkpoint's `model` item (what --mode eval / predict and
init_from read) use it, while `train_vars()` carries the online weights (`online`) for resume.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.nnx as nnx
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from jaxseg.models import preprocess
from jaxseg.models import registry
from jaxseg.runtime import health as health_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import precision as precision_lib
from jaxseg.runtime import variables

DEFAULT_FSDP_MIN_SIZE = 1 << 20
LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
TrainStepFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[Any, dict]]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs on device.

  health: {'nonfinite_steps': how many steps had a non-finite loss or gradient (skipped: their
  update was not applied), 'first_nonfinite_step': the 1-based step of the first one, or -1}.
  """
  step: jax.Array
  params: dict[str, jax.Array]
  batch_stats: dict[str, jax.Array]
  opt_state: Any
  loss_scale: dict[str, jax.Array]
  health: dict[str, jax.Array]
  # {'params', 'batch_stats'} averaged weights when train.ema_decay > 0, else {}.
  ema: dict[str, Any] = dataclasses.field(default_factory=dict)

  def model_vars(self) -> dict[str, Any]:
    """The weights to evaluate and to save as the `model` item: the EMA when it is on."""
    if self.ema:
      return {"params": self.ema["params"], "batch_stats": self.ema["batch_stats"]}
    return {"params": self.params, "batch_stats": self.batch_stats}

  def train_vars(self) -> dict[str, Any]:
    out = {"step": self.step, "opt_state": self.opt_state, "loss_scale": self.loss_scale,
           "health": self.health}
    if self.ema:  # the `model` item holds the EMA, so the online weights resume from here
      out["online"] = {"params": self.params, "batch_stats": self.batch_stats}
    return out

  def replace_from_checkpoint(self, model_vars: dict[str, Any],
                              train_vars: dict[str, Any]) -> "TrainState":
    train_vars = dict(train_vars)
    online = train_vars.pop("online", None)
    if online is None:
      return self.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                          **train_vars)
    return self.replace(params=online["params"], batch_stats=online["batch_stats"],
                        ema={"params": model_vars["params"],
                             "batch_stats": model_vars["batch_stats"]}, **train_vars)

  def with_model_vars(self, model_vars: dict[str, Any]) -> "TrainState":
    """Starts from `model_vars` (init_from): the online weights and, when on, the EMA."""
    # A copy: the train step donates the state, and one buffer cannot be donated twice.
    ema = (jax.tree.map(jnp.copy, {"params": model_vars["params"],
                                   "batch_stats": model_vars["batch_stats"]})
           if self.ema else {})
    return self.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                        ema=ema)


def grad_accum_steps(config: ml_collections.ConfigDict) -> int:
  """train.grad_accum_steps, checked: micro-batches per update (1 = no accumulation)."""
  k = int(config.train.get("grad_accum_steps", 1))
  if k < 1:
    raise ValueError(f"config.train.grad_accum_steps must be >= 1 (micro-batches per update), "
                     f"got {k}")
  return k


def ema_decay(config: ml_collections.ConfigDict) -> float:
  """train.ema_decay, checked: 0 = no EMA, else in (0, 1)."""
  decay = float(config.train.get("ema_decay", 0.0))
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"config.train.ema_decay must be in [0, 1) (0 = no weight EMA), got {decay}")
  return decay


def ema_update(ema: dict[str, Any], new: dict[str, Any], decay: float) -> dict[str, Any]:
  """decay * ema + (1 - decay) * new on floating leaves; others (counters) take `new`."""
  def mix(old, value):
    if not jnp.issubdtype(value.dtype, jnp.floating):
      return value
    return (decay * old + (1.0 - decay) * value).astype(value.dtype)
  return jax.tree.map(mix, ema, new)


def micro_batches(x: jax.Array, k: int) -> jax.Array:
  """(k * B, ...) -> (k, B, ...): micro-batch j holds rows j, k + j, 2k + j, ...

  Every device's contiguous rows of the batch keep their micro-batch share on that device
  (B is a multiple of the devices), so the split moves no data.
  """
  if x.shape[0] % k:
    raise ValueError(f"a train batch of {x.shape[0]} rows does not split into "
                     f"config.train.grad_accum_steps={k} micro-batches")
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """Everything compiled for one run: the model layout, the state shardings, the train step.

  `make_train_step(loss_fn)` jits a train step for another loss (e.g. label relaxation
  switching off at `loss.rlx_off_epoch`) with the same shardings. The layout, shardings and
  shapes come from the first state `init()` builds, or, asked for before any, from an abstract
  build (`jax.eval_shape`): a run that starts with `init()` builds its model once.
  """
  init: Callable[[], TrainState]
  make_train_step: Callable[[LossFn | None], TrainStepFn]
  _structure: Callable[[], "_Structure"]
  _loss_fn: LossFn | None

  @property
  def layout(self) -> variables.ModelLayout:
    return self._structure().layout

  @property
  def state_sharding(self) -> Any:
    return self._structure().state_sharding

  @property
  def abstract_state(self) -> TrainState:
    """Shapes and dtypes (jax.ShapeDtypeStruct leaves)."""
    return self._structure().abstract_state

  @functools.cached_property
  def train_step(self) -> TrainStepFn:
    """The train step of the loss given to create_step_functions."""
    return self.make_train_step(self._loss_fn)


@dataclasses.dataclass(frozen=True)
class _Structure:
  layout: variables.ModelLayout
  abstract_state: TrainState
  state_sharding: Any


def _place(tree: Any, shardings: Any) -> Any:
  """Puts host-built values on their (possibly multi-process) shardings.

  The state is built eagerly: the initialisers draw concrete values with numpy (see
  layers.he_normal), which compiles nothing, while a jitted construction of a big trunk
  (HRNet-W48, WRN38: ~1000 traced random initialisers) costs minutes of XLA compile. Every
  process builds the same values from the seed, so each fills its own shards.
  """
  def put(value, sharding):
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, tree, shardings)


def _aux_loss_of(loss_fn: LossFn, model_name: str, aux_heads: tuple[str, ...]
                 ) -> tuple[float, Callable[[jax.Array, jax.Array], jax.Array] | None]:
  """(aux_weight, per-head loss) for a model's aux heads; (0, None) = plain path.

  The aux loss comes from losses.SegmentationLoss (`aux_loss`, `aux_weight`); a plain loss
  function, `aux_weight == 0` or a model without aux heads train the main output only.
  """
  aux_weight = float(getattr(loss_fn, "aux_weight", 0.0))
  if not aux_heads or aux_weight == 0.0:
    return 0.0, None
  aux_loss_fn = getattr(loss_fn, "aux_loss", None)
  if aux_loss_fn is None:
    name = getattr(loss_fn, "name", type(loss_fn).__name__)
    raise ValueError(
        f"model {model_name!r} has auxiliary heads {aux_heads} and loss.aux_weight="
        f"{aux_weight}, but loss.name={name!r} has no auxiliary-head form (label relaxation "
        "is defined for the main output only). Set loss.aux_weight=0 to leave the aux heads "
        "untrained, or use loss.name='cross_entropy' / 'focal'.")
  return aux_weight, aux_loss_fn


def create_step_functions(config: ml_collections.ConfigDict, *, mesh: Mesh, num_classes: int,
                          tx: optax.GradientTransformation | None, loss_fn: LossFn | None
                          ) -> StepFunctions:
  """Builds the sharded init and train functions of `config` on `mesh`.

  `tx` (from optimizer.create_optimizer) receives `step=` (the 0-based update index) in its
  update; plain optax transformations ignore it. None: no update (the state and its layout).
  Evaluation is not here: it runs the inference engine (train/periodic_eval.py).
  For a model whose ModelSpec lists `aux_heads`, a `losses.SegmentationLoss` with
  `aux_weight > 0` trains them: loss = main + aux_weight * sum over heads of aux_loss(head
  logits, labels); the metrics add `main_loss` and `aux_loss/<head>` (unweighted).
  """
  tx = optax.with_extra_args_support(tx if tx is not None else optax.identity())
  dtype = precision_lib.compute_dtype(config.precision)
  bn_groups = 1 if config.syncbn else mesh_lib.data_parallel_size(mesh)
  use_loss_scale = config.precision == "fp16"
  scale_cfg = precision_lib.LossScaleConfig.from_config(config)
  seed = int(config.seed)
  fsdp_min_size = int(config.mesh.get("fsdp_min_size", DEFAULT_FSDP_MIN_SIZE))
  accum = grad_accum_steps(config)
  decay = ema_decay(config)

  layouts = []  # the model's graph, from the first build (abstract or concrete)

  def host_init() -> TrainState:
    model = registry.from_config(config, num_classes, rngs=nnx.Rngs(seed), bn_groups=bn_groups)
    graph, params, stats = variables.split_model(model)
    layouts.append(graph)
    ema = {"params": dict(params), "batch_stats": dict(stats)} if decay > 0 else {}
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=stats,
                      opt_state=tx.init(params),
                      loss_scale=precision_lib.initial_loss_scale(scale_cfg),
                      health=health_lib.initial_counters(), ema=ema)

  replicated = mesh_lib.replicated(mesh)
  batched = mesh_lib.batch_sharding(mesh)
  structures: list[_Structure] = []

  def structure(built: TrainState | None = None) -> _Structure:
    """The layout and shardings, from `built` (a host state) or else an abstract build."""
    if not structures:
      abstract_state = (jax.eval_shape(host_init) if built is None else
                        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), built))
      # Parameters and optimizer state follow the FSDP size rule (replicated without an
      # `fsdp` axis); BN statistics and counters are small and replicated.
      state_sharding = jax.tree.map(lambda _: replicated, abstract_state).replace(
          params=mesh_lib.tree_shardings(abstract_state.params, mesh, fsdp_min_size),
          opt_state=mesh_lib.tree_shardings(abstract_state.opt_state, mesh, fsdp_min_size))
      if decay > 0:  # the averaged parameters are sharded as the parameters are
        state_sharding = state_sharding.replace(ema=dict(
            state_sharding.ema,
            params=mesh_lib.tree_shardings(abstract_state.ema["params"], mesh, fsdp_min_size)))
      structures.append(_Structure(layouts[0], abstract_state, state_sharding))
    return structures[0]

  def init() -> TrainState:
    built = host_init()
    return _place(built, structure(built).state_sharding)

  # Micro-batches (k, B, ...) keep the batch split on their second axis.
  micro_sharding = NamedSharding(mesh, P(None, *batched.spec))

  aux_heads = tuple(registry.get_spec(config.model.name).aux_heads)

  def train_step_for(loss_fn: LossFn | None):
    layout, state_sharding = structure().layout, structure().state_sharding
    if loss_fn is None:
      loss_fn = lambda logits, labels: (jnp.zeros((), jnp.float32), {})
    aux_weight, aux_loss_fn = _aux_loss_of(loss_fn, config.model.name, aux_heads)

    def model_loss(model, images, labels, rngs):
      """(loss, metrics): the main loss, plus aux_weight x each aux head's loss."""
      if aux_loss_fn is None:  # the plain path: no aux outputs are computed
        return loss_fn(model(images, train=True, rngs=rngs), labels)
      logits, aux_logits = model(images, train=True, rngs=rngs, return_aux=True)
      missing = [h for h in aux_heads if h not in aux_logits]
      if missing:
        raise ValueError(f"model {config.model.name!r} lists aux_heads {aux_heads} but "
                         f"return_aux=True gave {sorted(aux_logits)} (missing {missing})")
      loss, metrics = loss_fn(logits, labels)
      metrics = dict(metrics, main_loss=loss)
      for head in aux_heads:
        head_loss = aux_loss_fn(aux_logits[head], labels)
        metrics[f"aux_loss/{head}"] = head_loss
        loss = loss + aux_weight * head_loss
      return loss, metrics

    def grads_of(params, batch_stats, images, labels, dropout_rng, scale):
      """(scaled grads, loss, metrics, new BN statistics) of one (micro-)batch."""
      def objective(params):
        model = layout.merge(params, batch_stats)
        loss, aux = model_loss(model, preprocess.normalize_images(images, dtype), labels,
                               nnx.Rngs(dropout=dropout_rng))
        _, _, new_stats = variables.split_model(model)
        return loss * scale, (loss, aux, new_stats)

      grads, (loss, aux, new_stats) = jax.grad(objective, has_aux=True)(params)
      return grads, loss, aux, new_stats

    def accumulated_grads(state, batch, dropout_rng, scale):
      """grads_of over train.grad_accum_steps micro-batches: mean grads, loss and metrics."""
      if accum == 1:
        return grads_of(state.params, state.batch_stats, batch["image"], batch["label"],
                        dropout_rng, scale)
      split = lambda x: jax.lax.with_sharding_constraint(micro_batches(x, accum), micro_sharding)

      def body(carry, xs):
        grad_sum, stats = carry
        images, labels, index = xs
        grads, loss, aux, stats = grads_of(state.params, stats, images, labels,
                                           jax.random.fold_in(dropout_rng, index), scale)
        return (jax.tree.map(jnp.add, grad_sum, grads), stats), (loss, aux)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grad_sum, new_stats), (losses, aux) = jax.lax.scan(
          body, (zeros, state.batch_stats),
          (split(batch["image"]), split(batch["label"]), jnp.arange(accum)))
      mean = lambda x: jnp.mean(x, axis=0)
      return (jax.tree.map(lambda g: g / accum, grad_sum), mean(losses),
              jax.tree.map(mean, aux), new_stats)

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
      dropout_rng = jax.random.fold_in(rng, state.step)
      scale = state.loss_scale["scale"] if use_loss_scale else jnp.asarray(1.0, jnp.float32)
      grads, loss, aux, new_stats = accumulated_grads(state, batch, dropout_rng, scale)
      grads = jax.tree.map(lambda g: g / scale, grads)
      updates, new_opt_state = tx.update(grads, state.opt_state, state.params, step=state.step)
      new_params = optax.apply_updates(state.params, updates)
      # Finite gradients can still overflow the parameters (a huge learning rate).
      finite = (health_lib.all_finite(grads) & jnp.isfinite(loss) &
                health_lib.all_finite(new_params))
      # A non-finite step is never applied: parameters, statistics and momentum stay as they
      # were. fp16 expects these (loss-scale overflow); otherwise the trainer stops on them,
      # and no NaN ever reaches the state or a checkpoint.
      new_params = health_lib.select_if_finite(finite, new_params, state.params)
      new_opt_state = health_lib.select_if_finite(finite, new_opt_state, state.opt_state)
      new_stats = health_lib.select_if_finite(finite, new_stats, state.batch_stats)
      if use_loss_scale:
        loss_scale = precision_lib.update_loss_scale(state.loss_scale, finite, scale_cfg)
      else:
        loss_scale = state.loss_scale
      step = state.step + 1
      health = health_lib.count_nonfinite(state.health, finite, step)
      ema = state.ema
      if decay > 0:  # a skipped step leaves the average as it was, too
        ema = health_lib.select_if_finite(
            finite, ema_update(ema, {"params": new_params, "batch_stats": new_stats}, decay), ema)
      new_state = state.replace(step=step, params=new_params, batch_stats=new_stats,
                                opt_state=new_opt_state, loss_scale=loss_scale, health=health,
                                ema=ema)
      out = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite,
             "loss_scale": loss_scale["scale"], **aux}
      return new_state, out

    return jax.jit(train_step, in_shardings=(state_sharding, batched, replicated),
                   out_shardings=(state_sharding, replicated), donate_argnums=0)

  return StepFunctions(init=init, make_train_step=train_step_for, _structure=structure,
                       _loss_fn=loss_fn)
