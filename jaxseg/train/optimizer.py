"""The original's optimizers (torch SGD / Adam / AMSGrad) plus AdamW, and its learning-rate
schedules (plus cosine and a linear warm-up) on an epoch clock.

Optimizers (optimizer.name), as the original `optimizer.py` builds them from `net.parameters()`
(one group, weight decay on every parameter, BN and biases included):
  sgd      torch.optim.SGD(momentum, nesterov): d = g + wd*p; buf = m*buf + d; p -= lr*buf
  adam     torch.optim.Adam(betas, eps): g += wd*p (coupled L2, before the moments), then
           p -= lr * m_hat / (sqrt(v_hat) + eps)
  amsgrad  torch.optim.Adam(amsgrad=True): as adam with v replaced by its running maximum, taken
           on the raw v and bias-corrected with the current step (torch's form, not optax's)
  adamw    torch.optim.AdamW: the adam step, then the decoupled p -= lr*wd*p

The original (`optimizer.py`, `train.py`) builds a `LambdaLR` over epochs and calls
`scheduler.step()` at the START of every epoch, after the constructor already stepped once, so
epoch e trains at `lr * lambda(e + 1)` and the last epoch at lr 0. Here:

  x(s)  = epoch_of(s) + epoch_offset              schedule.granularity = 'epoch' (the original,
                                                  with epoch_offset = 1)
  x(s)  = epochs_done(s) + epoch_offset           schedule.granularity = 'step' (smooth decay)
  poly:      lambda(x) = (1 - x / max)^power
  scl-poly:  lambda(x) = (1 - x / max)^power                        x <  T
                         rescale * (1 - (x - T) / (max - T))^repoly  x >= T
  cosine:    lambda(x) = (1 + cos(pi * x / max)) / 2                 (torch CosineAnnealingLR)
  warmup(s)  = w0 + (1 - w0) * min(s / schedule.warmup_steps, 1)     (torch LinearLR; 1 if 0)
  lr(s) = optimizer.lr * lambda(x(s)) * warmup(s)

with s the 0-based update index, `max` the span of the run (`schedule_span`) and T =
schedule.rescale_epoch (-1: loss.rlx_off_epoch, as the original ties the warm restart to the end
of label relaxation) and w0 = schedule.warmup_start. The warm-up multiplies any schedule (poly
and scl-poly included) over the first warmup_steps updates, whatever the granularity. Epochs
are counted as the loader counts them (`EpochClock`): class-uniform epochs after
`max_cu_epoch` may have another size.

One rule sets `max`: the schedule spans the run length that ends training. train.num_steps > 0
ends training, so then `max` covers those steps even when train.num_epochs is set too (the
fractional epochs they make, or with granularity 'epoch' the epochs they reach into);
otherwise `max` = train.num_epochs. So the last update of every run trains at the schedule's
end: lr ~ 0 for poly, and for the original's per-epoch variant the last epoch at lambda(max).

The learning rate is a function of the train state's step, passed to the update as `step=`,
so an fp16 step skipped for overflow does not shift the schedule (torch's epoch scheduler does
not move on skipped steps either). With train.grad_accum_steps k one update is k micro-batches:
steps, epochs and the schedule count updates (see train_step).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[Any], jax.Array]
SCHEDULES = ("poly", "scl-poly", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam", "amsgrad", "adamw")
GRANULARITIES = ("epoch", "step")


@dataclasses.dataclass(frozen=True)
class EpochClock:
  """Update index -> epoch, as `input_pipeline`'s sampling plan lays out the batches.

  Epochs [0, cut_epoch) have `steps_per_epoch` steps, later ones `steps_per_cut_epoch` (the
  class-uniform pools shrink after `data.max_cu_epoch`); cut_epoch=None: all epochs alike.
  """
  steps_per_epoch: int
  steps_per_cut_epoch: int
  cut_epoch: int | None

  @classmethod
  def uniform(cls, steps_per_epoch: int) -> "EpochClock":
    return cls(int(steps_per_epoch), int(steps_per_epoch), None)

  @classmethod
  def from_plan(cls, plan: Any, data_cfg: ml_collections.ConfigDict) -> "EpochClock":
    """The clock of a training sampling plan (`jaxseg.data.make_plan`)."""
    s0 = plan.steps(0)
    if data_cfg.class_uniform_pct <= 0:
      return cls.uniform(s0)
    cut = int(data_cfg.max_cu_epoch) + 1
    return cls(int(s0), int(plan.steps(cut)), cut)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, global_batch_size: int
                  ) -> "EpochClock":
    """The clock of the run's data (lists the training split: a run that also loads data
    builds the plan once and calls from_plan)."""
    from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top (heavy)
    return cls.from_plan(data_lib.make_plan(config.data, global_batch_size, 0), config.data)

  @property
  def _cut_step(self) -> int:
    return self.steps_per_epoch * self.cut_epoch

  def epoch_of(self, step: int) -> int:
    """The (0-based) epoch that update `step` (0-based) belongs to."""
    step = int(step)
    if self.cut_epoch is None or step < self._cut_step:
      return step // self.steps_per_epoch
    return self.cut_epoch + (step - self._cut_step) // self.steps_per_cut_epoch

  def first_step(self, epoch: int) -> int:
    """Index of the first update of `epoch` (= the updates that `epoch` epochs take)."""
    epoch = int(epoch)
    if self.cut_epoch is None or epoch <= self.cut_epoch:
      return epoch * self.steps_per_epoch
    return self._cut_step + (epoch - self.cut_epoch) * self.steps_per_cut_epoch

  def epochs_done(self, step: Any) -> jax.Array:
    """Fractional epochs completed before update `step`; traceable (step may be an array)."""
    step = jnp.asarray(step, jnp.float32)
    early = step / self.steps_per_epoch
    if self.cut_epoch is None:
      return early
    late = self.cut_epoch + (step - self._cut_step) / self.steps_per_cut_epoch
    return jnp.where(step < self._cut_step, early, late)

  def epoch_index(self, step: Any) -> jax.Array:
    """`epoch_of` for traced steps (float32)."""
    step = jnp.asarray(step, jnp.int32)
    early = step // self.steps_per_epoch
    if self.cut_epoch is None:
      return early.astype(jnp.float32)
    late = self.cut_epoch + (step - self._cut_step) // self.steps_per_cut_epoch
    return jnp.where(step < self._cut_step, early, late).astype(jnp.float32)


def _poly(x: jax.Array, start: float, end: float, power: float) -> jax.Array:
  frac = jnp.clip(1.0 - (x - start) / max(end - start, 1e-12), 0.0, 1.0)
  return frac ** power


def _positive(config: ml_collections.ConfigDict, key: str) -> int:
  value = int(config.train.get(key, -1))
  return value if value > 0 else 0


def schedule_span(config: ml_collections.ConfigDict, total_steps: int,
                  clock: EpochClock | None = None) -> float:
  """`max` of the module docstring: the epochs the schedule spans, from the run that ends it.

  `total_steps` is the run length (train.num_steps when > 0, else the steps of
  train.num_epochs, see trainer.total_train_steps).
  """
  clock = clock or EpochClock.uniform(1)
  num_epochs = _positive(config, "num_epochs")
  granularity = config.schedule.get("granularity", "step")
  if num_epochs and not _positive(config, "num_steps"):
    return float(num_epochs)
  if granularity == "epoch" and not _positive(config, "num_steps") and clock.steps_per_epoch > 1:
    raise ValueError("config.schedule.granularity='epoch' needs config.train.num_epochs > 0 "
                     "(the original's --max_epoch) or config.train.num_steps > 0")
  if granularity == "epoch":
    return float(clock.epoch_of(max(int(total_steps), 1) - 1) + 1)  # epochs the run reaches
  return float(clock.epochs_done(total_steps))


def describe_schedule(config: ml_collections.ConfigDict, total_steps: int,
                      clock: EpochClock | None = None) -> str:
  """One line: the run length, what ends it and the epochs the lr schedule spans."""
  clock = clock or EpochClock.uniform(1)
  ended_by = ("train.num_steps" if _positive(config, "num_steps") or
              not _positive(config, "num_epochs") else "train.num_epochs")
  epochs = float(clock.epochs_done(total_steps))
  sched = config.schedule
  return (f"run: {total_steps} steps ({epochs:.2f} epochs of {clock.steps_per_epoch} steps), "
          f"ended by {ended_by}; lr schedule '{sched.name}' "
          f"({sched.get('granularity', 'step')} granularity) spans "
          f"{schedule_span(config, total_steps, clock):.2f} epochs")


def _warmup_of(sched: ml_collections.ConfigDict) -> tuple[int, float]:
  """(schedule.warmup_steps, schedule.warmup_start), checked."""
  steps, start = int(sched.get("warmup_steps", 0)), float(sched.get("warmup_start", 0.0))
  if steps < 0:
    raise ValueError(f"config.schedule.warmup_steps must be >= 0 (0 = no warm-up), got {steps}")
  if not 0.0 <= start <= 1.0:
    raise ValueError(f"config.schedule.warmup_start must be in [0, 1] (the lr factor of the "
                     f"first update), got {start}")
  return steps, start


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           clock: EpochClock | None = None) -> Schedule:
  """lr(step) for 0-based update indices (see the module docstring).

  Without a `clock` every step counts as one epoch (runs sized in steps, unit tests).
  """
  sched = config.schedule
  name = sched.name
  if name not in SCHEDULES:
    raise ValueError(f"config.schedule.name must be one of {SCHEDULES}, got '{name}'")
  granularity = sched.get("granularity", "step")
  if granularity not in GRANULARITIES:
    raise ValueError(f"config.schedule.granularity must be one of {GRANULARITIES}, "
                     f"got '{granularity}'")
  clock = clock or EpochClock.uniform(1)
  max_x = schedule_span(config, total_steps, clock)
  offset = float(sched.get("epoch_offset", 0.0))
  base_lr = float(config.optimizer.lr)
  power = float(sched.power)
  restart = float(sched.get("rescale_epoch", -1))
  if name == "scl-poly":
    if restart < 0:
      restart = float(config.loss.get("rlx_off_epoch", -1))
    if restart < 0:
      raise ValueError("config.schedule.name='scl-poly' needs config.schedule.rescale_epoch >= 0 "
                       "or config.loss.rlx_off_epoch >= 0 (the original raises 'Cannot Do Scale "
                       "Poly' without --rlx_off_epoch)")
    if restart >= max_x:
      raise ValueError(f"config.schedule: the scl-poly restart epoch {restart} must be before "
                       f"the end of the schedule at epoch {max_x:g} (the run's length)")
  rescale, repoly = float(sched.get("rescale", 1.0)), float(sched.get("repoly", 1.5))
  warmup, warmup_start = _warmup_of(sched)

  def schedule(step: Any) -> jax.Array:
    step = jnp.asarray(step)
    if granularity == "epoch":
      x = clock.epoch_index(step) + offset
    else:
      x = clock.epochs_done(step) + offset
    if name == "constant":
      factor = jnp.ones_like(x)
    elif name == "poly":
      factor = _poly(x, 0.0, max_x, power)
    elif name == "cosine":
      factor = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(x / max(max_x, 1e-12), 0.0, 1.0)))
    else:
      factor = jnp.where(x < restart, _poly(x, 0.0, max_x, power),
                         rescale * _poly(x, restart, max_x, repoly))
    if warmup > 0:
      ramp = jnp.minimum(step.astype(jnp.float32) / warmup, 1.0)
      factor = factor * (warmup_start + (1.0 - warmup_start) * ramp)
    return (base_lr * factor).astype(jnp.float32)

  # One compiled program: the trainer's logging calls it eagerly, op by op otherwise.
  return jax.jit(schedule)


class _EmptyState(NamedTuple):
  pass


def parse_lr_multipliers(text: str) -> dict[str, float]:
  """'ppm=10,cls=10' -> {'ppm': 10.0, 'cls': 10.0} (optimizer.lr_multipliers)."""
  out: dict[str, float] = {}
  for item in filter(None, (part.strip() for part in (text or "").split(","))):
    name, sep, value = item.partition("=")
    try:
      factor = float(value)
    except ValueError:
      factor = None
    if not sep or not name.strip() or factor is None or factor < 0:
      raise ValueError(f"config.optimizer.lr_multipliers: expected 'module=factor' items "
                       f"separated by commas (e.g. 'ppm=10,cls=10,aux=10'), got {item!r}")
    out[name.strip()] = factor
  return out


def _multiplier_of(key: Any, multipliers: dict[str, float]) -> float:
  # Flat parameter keys are 'module/index/.../leaf'; the top-level module names the group.
  return multipliers.get(str(key).split("/", 1)[0], 1.0)


def scale_by_step_schedule(schedule: Schedule, multipliers: dict[str, float] | None = None
                           ) -> optax.GradientTransformationExtraArgs:
  """updates * -lr(step) (* the parameter group's multiplier), `step` given by the train step.

  `multipliers` maps top-level module names to lr factors, as semseg trains its new layers
  (ppm/psa, cls, aux) at 10x the trunk's lr; it needs the flat string-keyed parameter dicts.
  """
  multipliers = dict(multipliers or {})

  def init(params):
    del params
    return _EmptyState()

  def update(updates, state, params=None, *, step=None, **extra):
    del params, extra
    if step is None:
      raise ValueError("this optimizer takes the learning-rate step from the train state: call "
                       "tx.update(grads, opt_state, params, step=state.step)")
    lr = schedule(step)
    if not multipliers:
      return jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates), state
    if not isinstance(updates, dict):
      raise ValueError("optimizer.lr_multipliers needs flat {key: array} parameter dicts")
    unknown = set(multipliers) - {str(k).split("/", 1)[0] for k in updates}
    if unknown:
      raise ValueError(f"config.optimizer.lr_multipliers names modules the model does not have: "
                       f"{sorted(unknown)}")
    return {k: (-lr * _multiplier_of(k, multipliers) * u).astype(u.dtype)
            for k, u in updates.items()}, state

  return optax.GradientTransformationExtraArgs(init, update)


class ScaleByTorchAmsgradState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                           ) -> optax.GradientTransformation:
  """torch.optim.Adam(amsgrad=True)'s direction: m_hat / (sqrt(max_t v_t) / sqrt(1-b2^t) + eps).

  torch keeps the running maximum of the raw second moment and bias-corrects it with the
  current step; optax.scale_by_amsgrad takes the maximum of the corrected moments, which
  differs while 1 - b2^t is far from 1 (the first thousands of steps at b2 = 0.999).
  """

  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return ScaleByTorchAmsgradState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

  def update(updates, state, params=None):
    del params
    count = state.count + 1
    t = count.astype(jnp.float32)
    mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * g * g, updates, state.nu)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    bc1, bc2_sqrt = 1.0 - b1 ** t, jnp.sqrt(1.0 - b2 ** t)
    out = jax.tree.map(lambda m, v: ((m / bc1) / (jnp.sqrt(v) / bc2_sqrt + eps)).astype(m.dtype),
                       mu, nu_max)
    return out, ScaleByTorchAmsgradState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init, update)


def _adam_hyperparameters(opt: ml_collections.ConfigDict) -> tuple[float, float, float]:
  """(beta1, beta2, eps) of the Adam family, checked (torch's defaults 0.9, 0.999, 1e-8)."""
  b1, b2 = float(opt.get("beta1", 0.9)), float(opt.get("beta2", 0.999))
  eps = float(opt.get("eps", 1e-8))
  for key, value in (("beta1", b1), ("beta2", b2)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f"config.optimizer.{key} must be in [0, 1), got {value}")
  if eps <= 0.0:
    raise ValueError(f"config.optimizer.eps must be > 0, got {eps}")
  return b1, b2, eps


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     clock: EpochClock | None = None
                     ) -> tuple[optax.GradientTransformationExtraArgs, Schedule]:
  """The optimizer.name of the module docstring, with the lr of `learning_rate_schedule`.

  Returns (tx, schedule). `tx.update` needs `step=` (the 0-based update index). Per-module
  lr multipliers scale the whole update, AdamW's decoupled decay included (as torch's param
  groups with their own lr do).
  """
  opt = config.optimizer
  name = opt.name
  if name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS} (sgd, adam and amsgrad "
                     f"as the original's --sgd / --adam / --adam --amsgrad), got '{name}'")
  schedule = learning_rate_schedule(config, total_steps, clock)
  decay = float(opt.weight_decay)
  parts = []
  if decay and name != "adamw":  # torch's coupled L2: the gradient gains wd * p first
    parts.append(optax.add_decayed_weights(decay))
  if name == "sgd":
    if opt.momentum:
      parts.append(optax.trace(decay=opt.momentum, nesterov=opt.nesterov))
  else:
    b1, b2, eps = _adam_hyperparameters(opt)
    if name == "amsgrad":
      parts.append(scale_by_torch_amsgrad(b1, b2, eps))
    else:  # optax's Adam direction is torch's: m_hat / (sqrt(v_hat) + eps)
      parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    if decay and name == "adamw":  # decoupled: p -= lr * wd * p, next to the Adam step
      parts.append(optax.add_decayed_weights(decay))
  multipliers = parse_lr_multipliers(opt.get("lr_multipliers", ""))
  parts.append(scale_by_step_schedule(schedule, multipliers))
  return optax.chain(*parts), schedule
