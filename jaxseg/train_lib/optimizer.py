"""SGD as torch.optim.SGD, and the original's learning-rate schedules on an epoch clock.

The original (`optimizer.py`, `train.py`) builds a `LambdaLR` over epochs and calls
`scheduler.step()` at the START of every epoch, after the constructor already stepped once, so
epoch e trains at `lr * lambda(e + 1)` and the last epoch at lr 0. Here:

  x(s)  = epoch_of(s) + epoch_offset              schedule.granularity = 'epoch' (the original,
                                                  with epoch_offset = 1)
  x(s)  = epochs_done(s) + epoch_offset           schedule.granularity = 'step' (smooth decay)
  poly:      lambda(x) = (1 - x / max)^power
  scl-poly:  lambda(x) = (1 - x / max)^power                        x <  T
                         rescale * (1 - (x - T) / (max - T))^repoly  x >= T
  lr(s) = optimizer.lr * lambda(x(s)) * warmup(s)

with s the 0-based update index, `max` = train.num_epochs (or the epochs that train.num_steps
cover) and T = schedule.rescale_epoch (-1: loss.rlx_off_epoch, as the original ties the warm
restart to the end of label relaxation). Epochs are counted as the loader counts them
(`EpochClock`): class-uniform epochs after `max_cu_epoch` may have another size.

The learning rate is a function of the train state's step, passed to the update as `step=`,
so an fp16 step skipped for overflow does not shift the schedule (torch's epoch scheduler does
not move on skipped steps either).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[Any], jax.Array]
SCHEDULES = ("poly", "scl-poly", "constant")
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
  def from_config(cls, config: ml_collections.ConfigDict, global_batch_size: int
                  ) -> "EpochClock":
    from jaxseg import input_pipeline  # pylint: disable=g-import-not-at-top (heavy)
    s0 = input_pipeline.steps_per_epoch(config.data, global_batch_size, 0)
    if config.data.class_uniform_pct <= 0:
      return cls.uniform(s0)
    cut = int(config.data.max_cu_epoch) + 1
    return cls(int(s0), int(input_pipeline.steps_per_epoch(config.data, global_batch_size, cut)),
               cut)

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
  num_epochs = int(config.train.num_epochs) if config.train.get("num_epochs", -1) > 0 else 0
  if granularity == "epoch" and num_epochs <= 0 and clock.steps_per_epoch > 1:
    raise ValueError("config.schedule.granularity='epoch' needs config.train.num_epochs > 0 "
                     "(the original's --max_epoch)")
  max_x = float(num_epochs) if num_epochs > 0 else float(clock.epochs_done(total_steps))
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
                       f"the last epoch {max_x}")
  rescale, repoly = float(sched.get("rescale", 1.0)), float(sched.get("repoly", 1.5))
  warmup = int(sched.get("warmup_steps", 0))

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
    else:
      factor = jnp.where(x < restart, _poly(x, 0.0, max_x, power),
                         rescale * _poly(x, restart, max_x, repoly))
    if warmup > 0:
      factor = factor * jnp.minimum(step.astype(jnp.float32) / warmup, 1.0)
    return (base_lr * factor).astype(jnp.float32)

  return schedule


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


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     clock: EpochClock | None = None
                     ) -> tuple[optax.GradientTransformationExtraArgs, Schedule]:
  """torch.optim.SGD semantics: d = g + wd*p; buf = m*buf + d (nesterov: d + m*buf); p -= lr*buf.

  Returns (tx, schedule). `tx.update` needs `step=` (the 0-based update index).
  """
  opt = config.optimizer
  if opt.name != "sgd":
    raise ValueError(f"config.optimizer.name must be 'sgd' (the recipes' --sgd), got '{opt.name}'")
  schedule = learning_rate_schedule(config, total_steps, clock)
  parts = [optax.add_decayed_weights(opt.weight_decay)] if opt.weight_decay else []
  if opt.momentum:
    parts.append(optax.trace(decay=opt.momentum, nesterov=opt.nesterov))
  multipliers = parse_lr_multipliers(opt.get("lr_multipliers", ""))
  parts.append(scale_by_step_schedule(schedule, multipliers))
  return optax.chain(*parts), schedule
