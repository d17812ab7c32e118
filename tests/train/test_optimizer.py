"""SGD, Adam, AMSGrad, AdamW and the learning-rate schedules against torch.optim (SGD + LambdaLR
as train.py drives them, Adam / AdamW, CosineAnnealingLR, LinearLR)."""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.config.base import base_config
from jaxseg.train import optimizer as optimizer_lib

torch = pytest.importorskip("torch")


def _config(name="poly", max_epoch=10, lr=0.01, **schedule):
  c = base_config()
  c.optimizer.lr = lr
  c.schedule.name = name
  c.train.num_epochs = max_epoch
  for key, value in schedule.items():
    c.schedule[key] = value
  return c


def _original_lambda(name, max_epoch, poly_exp=1.0, rescale_thresh=-1, rescale=1.0, repoly=1.5):
  """optimizer.py's lambda1 of the original, for 'poly' and 'scl-poly'."""
  if name == "poly":
    return lambda epoch: math.pow(1 - epoch / max_epoch, poly_exp)
  return lambda epoch: (math.pow(1 - epoch / max_epoch, poly_exp) if epoch < rescale_thresh else
                        rescale * math.pow(1 - (epoch - rescale_thresh) /
                                           (max_epoch - rescale_thresh), repoly))


def _torch_epoch_lrs(lr, lam, max_epoch):
  """The lr each epoch trains at: LambdaLR built, then scheduler.step() before every epoch."""
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=lr, momentum=0.9, weight_decay=1e-4)
  scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lam)
  lrs = []
  for _ in range(max_epoch):
    _step_quietly(scheduler)  # train.py steps the scheduler before training the epoch
    lrs.append(opt.param_groups[-1]["lr"])
  return lrs


def _step_quietly(scheduler):
  with warnings.catch_warnings():  # torch warns about stepping before optimizer.step()
    warnings.simplefilter("ignore")
    scheduler.step()


def test_epoch_poly_matches_original_lambdalr_with_its_offset():
  clock = optimizer_lib.EpochClock.uniform(7)
  config = _config("poly", max_epoch=12, lr=2e-2, granularity="epoch", epoch_offset=1.0)
  schedule = optimizer_lib.learning_rate_schedule(config, clock.first_step(12), clock)
  want = _torch_epoch_lrs(2e-2, _original_lambda("poly", 12), 12)
  for epoch in range(12):
    for step in (clock.first_step(epoch), clock.first_step(epoch + 1) - 1):  # constant in epoch
      np.testing.assert_allclose(float(schedule(step)), want[epoch], rtol=1e-6, atol=1e-12)
  assert want[-1] == 0.0  # the original's last epoch trains at lr 0 ...
  assert float(schedule(clock.first_step(12) - 1)) == 0.0  # ... and so does the reproduction


def test_scl_poly_matches_original_with_restart_at_rlx_off_epoch():
  clock = optimizer_lib.EpochClock(steps_per_epoch=5, steps_per_cut_epoch=3, cut_epoch=8)
  config = _config("scl-poly", max_epoch=20, lr=1e-3, granularity="epoch", epoch_offset=1.0,
                   repoly=1.5, rescale=0.7)
  config.loss.rlx_off_epoch = 11
  schedule = optimizer_lib.learning_rate_schedule(config, clock.first_step(20), clock)
  want = _torch_epoch_lrs(1e-3, _original_lambda("scl-poly", 20, 1.0, 11, 0.7, 1.5), 20)
  got = [float(schedule(clock.first_step(e))) for e in range(20)]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
  # An explicit restart epoch wins over loss.rlx_off_epoch.
  config.schedule.rescale_epoch = 4
  schedule = optimizer_lib.learning_rate_schedule(config, clock.first_step(20), clock)
  want = _torch_epoch_lrs(1e-3, _original_lambda("scl-poly", 20, 1.0, 4, 0.7, 1.5), 20)
  np.testing.assert_allclose([float(schedule(clock.first_step(e))) for e in range(20)], want,
                             rtol=1e-6, atol=1e-12)


def test_step_granularity_is_smooth_poly_over_steps():
  config = _config("poly", max_epoch=-1, lr=0.1, power=0.9)
  config.train.num_steps = 40
  schedule = optimizer_lib.learning_rate_schedule(config, 40)  # no clock: steps are epochs
  steps = np.arange(40)
  np.testing.assert_allclose([float(schedule(s)) for s in steps],
                             0.1 * (1 - steps / 40) ** 0.9, rtol=1e-5)
  # With a clock and num_epochs, x is the fractional epoch, so the same curve over 4 epochs.
  config = _config("poly", max_epoch=4, lr=0.1, power=0.9)
  schedule = optimizer_lib.learning_rate_schedule(config, 40,
                                                  optimizer_lib.EpochClock.uniform(10))
  np.testing.assert_allclose([float(schedule(s)) for s in steps],
                             0.1 * (1 - steps / 40) ** 0.9, rtol=1e-5)


def test_num_steps_ends_the_run_and_its_schedule_even_with_num_epochs(caplog):
  """configs/camvid.py --config.train.num_steps=400: 46 steps an epoch, num_epochs=100."""
  from jaxseg.train import loop as trainer
  clock = optimizer_lib.EpochClock.uniform(46)
  config = _config("poly", max_epoch=100, lr=0.02)
  config.train.num_steps = 400
  with caplog.at_level("INFO", logger="absl"):
    total = trainer.total_train_steps(config, clock)
  assert total == 400
  assert "num_steps=400 ends training instead of config.train.num_epochs=100 (4600 steps)" in (
      caplog.text)
  assert "run: 400 steps (8.70 epochs of 46 steps), ended by train.num_steps" in caplog.text
  assert "spans 8.70 epochs" in caplog.text
  schedule = optimizer_lib.learning_rate_schedule(config, total, clock)
  np.testing.assert_allclose(float(schedule(200)), 0.01, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(399)), 0.02 / 400, rtol=1e-3)  # last update: ~0
  assert float(schedule(400)) == 0.0
  # The per-epoch variant spans the 9 epochs the 400 steps reach: the same lr as a 9-epoch run
  # at every step, so the original's offset trains the last (partial) epoch at lr 0.
  config.schedule.granularity = "epoch"
  config.schedule.epoch_offset = 1.0
  schedule = optimizer_lib.learning_rate_schedule(config, total, clock)
  nine = _config("poly", max_epoch=9, lr=0.02, granularity="epoch", epoch_offset=1.0)
  nine_epochs = optimizer_lib.learning_rate_schedule(nine, clock.first_step(9), clock)
  steps = jnp.arange(400)
  np.testing.assert_allclose(np.asarray(schedule(steps)), np.asarray(nine_epochs(steps)))
  assert float(schedule(399)) == 0.0 and float(schedule(368)) == 0.0
  assert float(schedule(367)) == pytest.approx(0.02 / 9, rel=1e-5)
  # Without num_steps, num_epochs sets both; nothing is warned.
  config.train.num_steps = -1
  caplog.clear()
  with caplog.at_level("INFO", logger="absl"):
    assert trainer.total_train_steps(config, clock) == 4600
  assert "ends training instead" not in caplog.text and "ended by train.num_epochs" in caplog.text


def test_epoch_clock_steps_and_cut_epochs():
  clock = optimizer_lib.EpochClock(steps_per_epoch=4, steps_per_cut_epoch=2, cut_epoch=3)
  assert [clock.epoch_of(s) for s in range(16)] == [0] * 4 + [1] * 4 + [2] * 4 + [3, 3, 4, 4]
  assert [clock.first_step(e) for e in range(6)] == [0, 4, 8, 12, 14, 16]
  np.testing.assert_allclose(np.asarray(clock.epochs_done(jnp.arange(16))),
                             [0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3, 3.5,
                              4, 4.5])
  np.testing.assert_array_equal(np.asarray(clock.epoch_index(jnp.arange(16))),
                                [clock.epoch_of(s) for s in range(16)])


def test_epoch_clock_agrees_with_the_loader_plan():
  from jaxseg.data import sampling
  c = base_config()
  c.data.name = "synthetic"
  c.data.synthetic.num_train = 12
  c.data.synthetic.height = 32
  c.data.synthetic.width = 48
  c.data.class_uniform_pct = 0.5
  c.data.class_uniform_tile = 16
  c.data.max_cu_epoch = 1
  clock = optimizer_lib.EpochClock.from_config(c, 2)
  plan = sampling.make_plan(c.data, 2, 0)
  for step in range(4 * clock.steps_per_epoch):
    assert clock.epoch_of(step) == plan.locate(step)[0], step


def test_errors_name_the_option():
  config = _config("scl-poly", max_epoch=10)
  with pytest.raises(ValueError, match="rlx_off_epoch"):
    optimizer_lib.learning_rate_schedule(config, 100, optimizer_lib.EpochClock.uniform(10))
  config = _config("poly", max_epoch=-1, granularity="epoch")  # neither run length set
  with pytest.raises(ValueError, match="num_epochs > 0 .* or config.train.num_steps"):
    optimizer_lib.learning_rate_schedule(config, 100, optimizer_lib.EpochClock.uniform(10))
  with pytest.raises(ValueError, match="granularity"):
    optimizer_lib.learning_rate_schedule(_config(granularity="iteration"), 10)
  config = _config()
  config.optimizer.name = "lamb"
  with pytest.raises(ValueError, match="config.optimizer.name must be one of .*'adamw'"):
    optimizer_lib.create_optimizer(config, 10)
  config.optimizer.name = "adam"
  config.optimizer.beta2 = 1.0
  with pytest.raises(ValueError, match="config.optimizer.beta2 must be in"):
    optimizer_lib.create_optimizer(config, 10)
  for key, value in (("warmup_start", 1.5), ("warmup_steps", -1)):
    with pytest.raises(ValueError, match=f"config.schedule.{key}"):
      optimizer_lib.learning_rate_schedule(_config(**{key: value}), 10)


def _run_side_by_side(tx, opt, init, grads, before_step=None):
  """The same gradients through optax `tx` and a torch optimizer `opt` built over
  torch Parameters of `init`: (jax params, torch params) after every step. `before_step(step)`
  runs first at each step (e.g. a scheduler's epoch step)."""
  tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
  opt = opt(list(tparams.values()))
  params = jax.tree.map(jnp.asarray, init)
  state = tx.init(params)
  update = jax.jit(lambda g, s, p, step: tx.update(g, s, p, step=step))
  for step, g in enumerate(grads):
    if before_step is not None:
      before_step(opt, step)
    for k, p in tparams.items():
      p.grad = torch.tensor(g[k])
    opt.step()
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params, jnp.asarray(step))
    params = optax.apply_updates(params, updates)
  return params, {k: v.detach().numpy() for k, v in tparams.items()}


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_equals_torch_sgd_with_lambdalr(nesterov):
  clock = optimizer_lib.EpochClock.uniform(2)
  config = _config("poly", max_epoch=3, lr=0.05, granularity="epoch", epoch_offset=1.0)
  config.optimizer.nesterov = nesterov
  config.optimizer.weight_decay = 1e-2
  tx, _ = optimizer_lib.create_optimizer(config, clock.first_step(3), clock)
  rng = np.random.default_rng(0)
  init = {"w": rng.normal(size=(3, 4)).astype(np.float32),
          "b": rng.normal(size=(4,)).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()}
           for _ in range(6)]

  schedulers = {}

  def new_epoch(opt, step):
    if step % 2 == 0:  # the original steps its LambdaLR before each epoch
      if not schedulers:
        schedulers["lr"] = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda=_original_lambda("poly", 3))
      _step_quietly(schedulers["lr"])

  params, want = _run_side_by_side(
      tx, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2,
                                     nesterov=nesterov), init, grads, new_epoch)
  for k in init:
    np.testing.assert_allclose(np.asarray(params[k]), want[k], rtol=2e-6, atol=1e-7, err_msg=k)


def test_update_without_step_is_refused():
  tx, _ = optimizer_lib.create_optimizer(_config(max_epoch=-1), 10)
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="step="):
    tx.update(params, tx.init(params), params)


def test_lr_multipliers_match_torch_param_groups():
  """semseg's two groups: trunk at lr, new layers at 10 x lr (same momentum / weight decay)."""
  c = _config(name="constant", max_epoch=-1)
  c.optimizer.lr_multipliers = "cls=10,aux=10"
  tx, _ = optimizer_lib.create_optimizer(c, 10)
  rng = np.random.default_rng(0)
  init = {k: rng.standard_normal(4).astype(np.float32)
          for k in ("layer1/0/kernel", "cls/4/kernel", "aux/4/bias")}
  tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
  opt = torch.optim.SGD([{"params": [tparams["layer1/0/kernel"]], "lr": 0.01},
                         {"params": [tparams["cls/4/kernel"], tparams["aux/4/bias"]],
                          "lr": 0.1}], lr=0.01, momentum=0.9, weight_decay=1e-4)
  params = jax.tree.map(jnp.asarray, init)
  state = tx.init(params)
  for step in range(3):
    g = {k: rng.standard_normal(4).astype(np.float32) for k in init}
    opt.zero_grad()
    for k, p in tparams.items():
      p.grad = torch.tensor(g[k])
    opt.step()
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params, step=step)
    params = optax.apply_updates(params, updates)
  for k in init:
    np.testing.assert_allclose(np.asarray(params[k]), tparams[k].detach().numpy(), rtol=2e-6,
                               atol=1e-7, err_msg=k)


@pytest.mark.parametrize("text,match", [("cls:10", "module=factor"), ("cls=x", "module=factor"),
                                        ("nope=10", "does not have")])
def test_lr_multipliers_errors(text, match):
  c = _config(name="constant", max_epoch=-1)
  c.optimizer.lr_multipliers = text
  params = {"cls/4/kernel": jnp.ones(3)}
  if match == "module=factor":
    with pytest.raises(ValueError, match=match):
      optimizer_lib.create_optimizer(c, 10)
    return
  tx, _ = optimizer_lib.create_optimizer(c, 10)
  with pytest.raises(ValueError, match=match):
    tx.update(params, tx.init(params), params, step=0)


# ------------------------------------------------------------- Adam family, cosine, warm-up
def _torch_adam(name, params, lr, wd):
  if name == "adamw":
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
  # The original's get_optimizer: optim.Adam(params, lr, weight_decay, amsgrad=args.amsgrad).
  return torch.optim.Adam(params, lr=lr, weight_decay=wd, amsgrad=name == "amsgrad")


@pytest.mark.parametrize("name", ["adam", "amsgrad", "adamw"])
def test_adam_family_equals_torch_with_weight_decay(name):
  c = _config(name="constant", max_epoch=-1, lr=0.05)
  c.optimizer.name = name
  c.optimizer.weight_decay = 0.1  # large, so coupled vs decoupled decay tells apart
  tx, _ = optimizer_lib.create_optimizer(c, 10)
  rng = np.random.default_rng(1)
  init = {"w": rng.normal(size=(3, 4)).astype(np.float32),
          "b": rng.normal(size=(4,)).astype(np.float32)}
  # Shrinking gradients: AMSGrad's max(v) then differs from v (and from optax's corrected max).
  grads = [{k: (rng.normal(size=v.shape) * 4.0 ** -i).astype(np.float32)
            for k, v in init.items()} for i in range(6)]
  params, want = _run_side_by_side(tx, lambda ps: _torch_adam(name, ps, 0.05, 0.1), init, grads)
  for k in init:
    np.testing.assert_allclose(np.asarray(params[k]), want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _torch_lrs(make_scheduler, steps, lr=0.1):
  """The lr of each update under a per-update torch scheduler."""
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
  scheduler = make_scheduler(opt)
  lrs = []
  for _ in range(steps):
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    scheduler.step()
  return np.asarray(lrs)


def test_cosine_equals_torch_cosine_annealing():
  schedule = optimizer_lib.learning_rate_schedule(_config("cosine", max_epoch=-1, lr=0.1), 12)
  want = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12), 12)
  got = np.asarray([schedule(s) for s in range(12)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_linear_warmup_equals_torch_linear_lr_and_multiplies_poly():
  c = _config("constant", max_epoch=-1, lr=0.1, warmup_steps=5, warmup_start=0.25)
  schedule = optimizer_lib.learning_rate_schedule(c, 10)
  want = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(
      o, start_factor=0.25, end_factor=1.0, total_iters=5), 10)
  np.testing.assert_allclose([schedule(s) for s in range(10)], want, rtol=1e-6)
  clock = optimizer_lib.EpochClock.uniform(4)
  poly = _config("poly", max_epoch=3, lr=0.1, power=0.9, warmup_steps=6)
  sched = optimizer_lib.learning_rate_schedule(poly, clock.first_step(3), clock)
  for step in (0, 3, 6, 11):
    want = 0.1 * (1 - step / 12) ** 0.9 * min(step / 6, 1.0)
    np.testing.assert_allclose(float(sched(step)), want, rtol=1e-5, err_msg=step)
