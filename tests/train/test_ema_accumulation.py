"""Gradient accumulation (train.grad_accum_steps) and the weight EMA (train.ema_decay).

Tiny test-only conv models (registered as tests/train/test_losses_aux_and_weights.py's
ToyAuxModel is) keep
every compile to a second: a BN-free one for the big-batch equality, one with a BatchNorm for
the micro-batch statistics, and the trainer end to end for EMA evaluation, saving and resume.
"""
from _testlib import compile_fast
from _testlib import read_checkpoint_params
from _testlib import tiny_demo_config
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxseg.config import base as config_base
from jaxseg.config.base import base_config
from jaxseg.evaluation import evaluate as evaluate_lib
from jaxseg.models import preprocess
from jaxseg.models import registry
from jaxseg.models.layers import BatchNorm
from jaxseg.models.layers import Conv2d
from jaxseg.models.spec import ModelSpec
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import loop as trainer
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

C = 3


class ToyConv(nnx.Module):
  """conv 3x3 -> (BatchNorm) -> relu -> conv 1x1: a model whose step compiles in a second."""

  def __init__(self, num_classes, *, cfg, rngs, bn=False):
    self.body = Conv2d(3, 8, 3, padding=1, rngs=rngs)
    self.norm = BatchNorm(8, groups=cfg.bn_groups) if bn else None
    self.cls = Conv2d(8, num_classes, 1, use_bias=True, rngs=rngs)

  def __call__(self, x, *, train=False, rngs=None):
    h = self.body(x)
    if self.norm is not None:
      h = self.norm(h, train=train)
    return self.cls(jax.nn.relu(h)).astype(jnp.float32)


@pytest.fixture
def toy_models(monkeypatch):
  for name, bn in (("ToyConv", False), ("ToyConvBN", True)):
    spec = ModelSpec(lambda n, *, cfg, rngs, bn=bn: ToyConv(n, cfg=cfg, rngs=rngs, bn=bn),
                     description="test-only conv model")
    monkeypatch.setitem(registry._REGISTRY, name, spec)


def _config(model: str, **train):
  c = base_config()
  c.precision = "fp32"
  c.model.name = model
  c.model.overrides = {}
  c.optimizer.lr = 0.1
  c.optimizer.weight_decay = 1e-3
  for key, value in train.items():
    c.train[key] = value
  return c


def _fns(config):
  mesh = _fns_mesh()
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=8)
  cfg = config_base.loss_config()
  cfg.num_classes = C
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=C, tx=tx,
                                       loss_fn=losses.make_loss_fn(cfg))
  return fns, mesh


def _fns_mesh():
  return mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])


def _batch(rows: int = 4):
  rng = np.random.default_rng(0)
  # No ignored pixels: every micro-batch's mean loss weighs as many pixels as the others.
  return {"image": rng.integers(0, 255, (rows, 8, 8, 3)).astype(np.uint8),
          "label": rng.integers(0, C, (rows, 8, 8)).astype(np.uint8)}


def _train(config, steps: int = 2):
  fns, mesh = _fns(config)
  state = fns.init()
  batch, key = mesh_lib.shard_batch(_batch(), mesh), jax.random.key(0)
  train_step = compile_fast(fns.train_step, state, batch, key)
  for _ in range(steps):
    state, metrics = train_step(state, batch, key)
  return fns, state, jax.device_get(metrics), train_step


def test_accumulated_update_equals_the_big_batch_update(toy_models):
  """2 micro-batches of 2 = one batch of 4, over two SGD + momentum + weight decay updates."""
  _, big, big_metrics, _ = _train(_config("ToyConv", grad_accum_steps=1))
  fns, acc, acc_metrics, _ = _train(_config("ToyConv", grad_accum_steps=2))
  init = jax.device_get(fns.init().params)
  for key, want in jax.device_get(big.params).items():
    assert not np.allclose(want, init[key]), key  # the updates moved every parameter
    np.testing.assert_allclose(np.asarray(acc.params[key]), want, rtol=1e-5, atol=1e-7,
                               err_msg=key)
  np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-6)
  np.testing.assert_allclose(acc_metrics["grad_norm"], big_metrics["grad_norm"], rtol=1e-5)
  assert int(acc.step) == 2  # one update per accumulated batch


def test_batchnorm_normalises_each_micro_batch(toy_models):
  """The running statistics are those of two train-mode forwards over the micro-batches."""
  fns, state, _, _ = _train(_config("ToyConvBN", grad_accum_steps=2), steps=1)
  start = fns.init()

  @jax.jit
  def stats_after(images, *micro):
    model = fns.layout.merge(start.params, start.batch_stats)
    for rows in micro:
      model(preprocess.normalize_images(images[rows], jnp.float32), train=True)
    return step_lib.variables.split_model(model)[2]

  images = jnp.asarray(_batch()["image"])
  # Micro-batch j holds rows j, j + 2 (train_step.micro_batches).
  want = stats_after(images, jnp.asarray([0, 2]), jnp.asarray([1, 3]))
  big_stats = stats_after(images, jnp.arange(4))
  for key, value in jax.device_get(state.batch_stats).items():
    np.testing.assert_allclose(value, np.asarray(want[key]), rtol=1e-5, atol=1e-7, err_msg=key)
    assert not np.allclose(value, np.asarray(big_stats[key])), key  # not one big-batch BN


def test_ema_follows_the_applied_updates(toy_models):
  fns, state, _, train_step = _train(_config("ToyConv", ema_decay=0.75), steps=1)
  init = jax.device_get(fns.init().params)
  online = jax.device_get(state.params)
  ema = jax.device_get(state.model_vars()["params"])
  for key in init:
    np.testing.assert_allclose(ema[key], 0.75 * init[key] + 0.25 * online[key], rtol=1e-6,
                               atol=1e-7, err_msg=key)
  assert set(state.train_vars()["online"]) == {"params", "batch_stats"}
  # init_from's path: the EMA starts at the given weights, in buffers of its own (the step
  # donates the state: one buffer in two leaves would fail there).
  started = fns.init()
  started = started.with_model_vars({"params": started.params, "batch_stats": {}})
  started, _ = train_step(started, mesh_lib.shard_batch(_batch(), _fns_mesh()),
                              jax.random.key(0))
  np.testing.assert_allclose(jax.device_get(started.model_vars()["params"])["cls/kernel"],
                             ema["cls/kernel"], rtol=1e-6)


@pytest.mark.parametrize("key,value,match", [("grad_accum_steps", 0, "grad_accum_steps"),
                                             ("ema_decay", 1.0, "ema_decay")])
def test_errors_name_the_field(key, value, match):
  with pytest.raises(ValueError, match=f"config.train.{match}"):
    step_lib.create_step_functions(_config("ToyConv", **{key: value}), mesh=_fns_mesh(),
                                   num_classes=C, tx=None, loss_fn=None)


def _restore_train_item(step_dir):
  return ocp.PyTreeCheckpointer().restore(step_dir / "train")


def test_checkpoint_resumes_online_weights_and_ema(toy_models, tmp_path):
  """model item = EMA, train item's 'online' = trained weights; a resume continues both."""
  fns, state, _, train_step = _train(_config("ToyConv", ema_decay=0.75), steps=1)
  meta = {"model": "ToyConv", "num_classes": C}
  ckpt = checkpoint_lib.CheckpointManager(tmp_path, async_save=False)
  ckpt.save(1, model_vars=state.model_vars(), train_vars=state.train_vars(), data_state={},
            meta=meta)
  fresh = fns.init()
  step, restored = ckpt.restore_latest(meta=meta, model_vars=fresh.model_vars(),
                                       train_vars=fresh.train_vars())
  ckpt.close()
  resumed = fresh.replace_from_checkpoint(restored["model"], restored["train"])
  assert step == 1
  batch, key = mesh_lib.shard_batch(_batch(), _fns_mesh()), jax.random.key(0)
  want = jax.device_get(train_step(state, batch, key)[0])
  got = jax.device_get(train_step(resumed, batch, key)[0])
  for name, a, b in (("params", got.params, want.params), ("ema", got.ema, want.ema),
                     ("opt_state", got.opt_state, want.opt_state)):
    jax.tree.map(lambda x, y, name=name: np.testing.assert_array_equal(x, y, err_msg=name), a, b)


def test_trainer_evaluates_and_saves_the_ema(toy_models, tmp_path, monkeypatch):
  """A run with EMA and accumulation: eval sees the EMA, the `model` item is the EMA."""
  c = tiny_demo_config(num_steps=2)
  c.model.name = "ToyConv"
  c.model.overrides = {}
  c.train.ema_decay = 0.5
  c.train.grad_accum_steps = 2
  c.eval.write_predictions = False
  evaluated, batches = [], []
  real_evaluate, real_shard = evaluate_lib.evaluate, mesh_lib.shard_batch
  monkeypatch.setattr(evaluate_lib, "evaluate", lambda step_fn, model_vars, *a, **k: (
      evaluated.append(jax.device_get(model_vars["params"])), real_evaluate(
          step_fn, model_vars, *a, **k))[1])
  monkeypatch.setattr(mesh_lib, "shard_batch", lambda batch, mesh: (
      batches.append(len(batch["image"])), real_shard(batch, mesh))[1])
  trainer.train_and_evaluate(c, tmp_path)
  assert batches[0] == 2 * c.train.batch_size  # the loader batch holds both micro-batches
  step_dir = tmp_path / "checkpoints" / "2"
  saved = read_checkpoint_params(step_dir)
  online = _restore_train_item(step_dir)["online"]
  assert len(evaluated) == 1
  for key, value in saved["params"].items():
    np.testing.assert_array_equal(evaluated[0][key], value, err_msg=key)  # eval used the EMA
    assert not np.allclose(value, online["params"][key]), key
