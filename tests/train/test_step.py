"""The sharded train step equals the single-device step; fp16 loss scaling skips bad steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config import base as config_base
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

NUM_CLASSES = 5


def _config(precision="fp32", syncbn=True):
  from jaxseg.config.base import base_config
  c = base_config()
  c.precision = precision
  c.syncbn = syncbn
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.optimizer.lr = 0.05
  return c


def _functions(config, devices):
  mesh = mesh_lib.create_mesh({"data": len(devices)}, devices=devices)
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=10)
  loss_cfg = config_base.loss_config()
  loss_cfg.num_classes = NUM_CLASSES
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=NUM_CLASSES, tx=tx,
                                       loss_fn=losses.make_loss_fn(loss_cfg))
  return mesh, fns


def _batch(seed=0, n=8, size=32):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, (n, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
  labels[:, :2] = 255
  images = (labels[..., None] * 40 + rng.integers(0, 60, (n, size, size, 3))).astype(np.uint8)
  return {"image": images, "label": labels.astype(np.uint8)}


def _run(config, devices, steps=2):
  mesh, fns = _functions(config, devices)
  state = fns.init()
  rng = jax.random.key(0)
  losses_seen = []
  for i in range(steps):
    batch = mesh_lib.shard_batch(_batch(i), mesh)
    state, metrics = fns.train_step(state, batch, rng)
    losses_seen.append(float(metrics["loss"]))
  return jax.device_get(state), losses_seen


def _assert_close_trees(a, b, rtol, atol):
  for key in a:
    np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=rtol, atol=atol,
                               err_msg=key)


def test_sharded_step_equals_single_device():
  assert jax.device_count() == 8
  config = _config()
  one, losses_one = _run(config, jax.devices()[:1])
  eight, losses_eight = _run(config, jax.devices())
  np.testing.assert_allclose(losses_one, losses_eight, rtol=1e-5)
  _assert_close_trees(one.params, eight.params, rtol=1e-4, atol=1e-6)
  _assert_close_trees(one.batch_stats, eight.batch_stats, rtol=1e-4, atol=1e-6)
  assert int(eight.step) == 2


def test_per_device_batchnorm_differs_from_global():
  sync, _ = _run(_config(), jax.devices(), steps=1)
  local, _ = _run(_config(syncbn=False), jax.devices(), steps=1)
  key = next(k for k in sync.batch_stats if k.endswith("mean"))
  assert not np.allclose(sync.batch_stats[key], local.batch_stats[key])


def test_training_lowers_loss_on_fixed_batch():
  _, seen = _run(_config(), jax.devices()[:1], steps=6)
  assert seen[-1] < seen[0]


def test_fp16_step_skips_non_finite_and_halves_scale():
  config = _config("fp16")
  mesh, fns = _functions(config, jax.devices()[:1])
  state = fns.init()
  batch = _batch()
  batch["image"] = batch["image"]
  sharded = mesh_lib.shard_batch(batch, mesh)
  # An absurd loss scale overflows fp16 gradients: the step must leave parameters untouched.
  state = state.replace(loss_scale={"scale": jnp.asarray(1e38, jnp.float32),
                                    "good_steps": jnp.asarray(0, jnp.int32)})
  before = jax.device_get(state.params)
  state, metrics = fns.train_step(state, sharded, jax.random.key(0))
  assert not bool(metrics["finite"])
  assert float(state.loss_scale["scale"]) == pytest.approx(5e37, rel=1e-6)
  _assert_close_trees(before, jax.device_get(state.params), rtol=0, atol=0)


def test_a_run_builds_its_model_once_and_its_shapes_match_an_abstract_build(monkeypatch):
  """init() gives the layout, shardings and shapes (no abstract build beforehand); asked for
  first, they come from jax.eval_shape, and both ways agree."""
  builds = []
  real_from_config = step_lib.registry.from_config
  monkeypatch.setattr(step_lib.registry, "from_config",
                      lambda *a, **k: (builds.append(1), real_from_config(*a, **k))[1])
  config = _config()
  _, fns = _functions(config, jax.devices()[:2])
  state = fns.init()
  _ = fns.train_step  # jitting the step uses the layout init() gave: no build of its own
  assert len(builds) == 1
  _, abstract_first = _functions(config, jax.devices()[:2])
  spec = lambda tree: jax.tree.map(lambda x: (x.shape, str(x.dtype)), tree)
  assert spec(abstract_first.abstract_state) == spec(fns.abstract_state) == spec(state)
  assert abstract_first.state_sharding == fns.state_sharding
  assert len(builds) == 2  # the abstract build
