"""SGD with momentum and weight decay, and the learning-rate schedules of the original."""
from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`poly`: lr * (1 - step/total)^power, optionally after a linear warm-up; `constant`."""
  name = config.schedule.name
  base_lr = config.optimizer.lr
  warmup = int(config.schedule.warmup_steps)
  if name == "poly":
    decay = optax.polynomial_schedule(init_value=base_lr, end_value=0.0,
                                      power=config.schedule.power,
                                      transition_steps=max(total_steps - warmup, 1))
  elif name == "constant":
    decay = optax.constant_schedule(base_lr)
  else:
    raise ValueError(f"config.schedule.name must be 'poly' or 'constant', got '{name}'")
  if warmup <= 0:
    return decay
  ramp = optax.linear_schedule(0.0, base_lr, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


def create_optimizer(config: ml_collections.ConfigDict,
                     total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """torch.optim.SGD semantics: d = g + wd*p; buf = m*buf + d; p -= lr*buf."""
  opt = config.optimizer
  if opt.name != "sgd":
    raise ValueError(f"config.optimizer.name must be 'sgd', got '{opt.name}'")
  schedule = learning_rate_schedule(config, total_steps)
  tx = optax.chain(
      optax.add_decayed_weights(opt.weight_decay),
      optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov),
  )
  return tx, schedule
