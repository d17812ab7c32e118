"""jaxseg.models.norms: GroupNorm / InstanceNorm parity with torch, EvoNorm-S0 with a numpy
reference, the torch key map of the new parameters, and one train + eval step of a tiny
DeepLabV3+ with every normaliser."""
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.convert import torch_layout
from jaxseg.models import create_model
from jaxseg.models import layers
from jaxseg.models import norms
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

NUM_CLASSES = 4


def _cfg(norm, groups=32, dtype=jnp.float32):
  return LayerCfg(dtype=dtype, param_dtype=jnp.float32, bn_groups=1, norm=norm, norm_groups=groups)


def _input(shape=(2, 5, 7, 24), seed=0):
  rng = np.random.default_rng(seed)
  # A large common offset: a one-pass E[x^2] - E[x]^2 variance would lose digits here.
  return (rng.standard_normal(shape) * 2.5 + 7.0).astype(np.float32)


def _affine(layer, channels, seed=1):
  """Sets non-trivial per-channel parameters; returns them as numpy."""
  rng = np.random.default_rng(seed)
  values = {name: rng.uniform(-1.5, 1.5, channels).astype(np.float32)
            for name in ("scale", "bias", "v") if hasattr(layer, name)}
  for name, value in values.items():
    getattr(layer, name)[...] = jnp.asarray(value)
  return values


def _to_nchw(x):
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _to_nhwc(x):
  return x.transpose(0, 2, 3, 1)


# ------------------------------------------------------------------ torch / numpy parity
@pytest.mark.parametrize("cfg_groups,want_groups", [(8, 8), (32, 24), (5, 4)])
def test_group_norm_matches_torch(cfg_groups, want_groups):
  torch = pytest.importorskip("torch")
  x = _input()
  layer = norms.make_norm(24, _cfg("group", cfg_groups))
  assert isinstance(layer, norms.GroupNorm) and layer.num_groups == want_groups
  params = _affine(layer, 24)
  ref = torch.nn.GroupNorm(want_groups, 24, eps=1e-5, affine=True)
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(params["scale"]))
    ref.bias.copy_(torch.from_numpy(params["bias"]))
    want = _to_nhwc(ref(torch.from_numpy(_to_nchw(x))).numpy())
  for train in (False, True):  # no statistics: the same function in both modes
    got = np.asarray(layer(jnp.asarray(x), train=train))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_instance_norm_matches_torch_in_train_and_eval():
  torch = pytest.importorskip("torch")
  x = _input((3, 6, 4, 10))
  layer = norms.make_norm(10, _cfg("instance"))
  assert isinstance(layer, norms.InstanceNorm)
  params = _affine(layer, 10)
  ref = torch.nn.InstanceNorm2d(10, eps=1e-5, affine=True, track_running_stats=False)
  assert set(ref.state_dict()) == {"weight", "bias"}
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(params["scale"]))
    ref.bias.copy_(torch.from_numpy(params["bias"]))
  for train in (False, True):
    ref.train(train)
    with torch.no_grad():
      want = _to_nhwc(ref(torch.from_numpy(_to_nchw(x))).numpy())
    got = np.asarray(layer(jnp.asarray(x), train=train))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def _evonorm_s0_reference(x, v, weight, bias, groups, eps=1e-5):
  """float64 numpy EvoNorm-S0 in NCHW, as timm EvoNorm2dS0.forward / group_std."""
  x = _to_nchw(x).astype(np.float64)
  n, c, h, w = x.shape
  grouped = x.reshape(n, groups, c // groups, h, w)
  std = np.sqrt(grouped.var(axis=(2, 3, 4), keepdims=True) + eps)  # biased variance
  std = np.broadcast_to(std, grouped.shape).reshape(x.shape)
  shape = (1, c, 1, 1)
  y = x * (1 / (1 + np.exp(-(x * v.reshape(shape))))) / std
  return _to_nhwc(y * weight.reshape(shape) + bias.reshape(shape))


@pytest.mark.parametrize("channels,cfg_groups,want_groups", [(24, 8, 8), (12, 32, 12)])
def test_evonorm_s0_matches_numpy_reference(channels, cfg_groups, want_groups):
  x = _input((2, 5, 7, channels)) - 7.0  # both signs: the sigmoid gate matters
  layer = norms.make_norm(channels, _cfg("evonorm_s0", cfg_groups))
  assert isinstance(layer, norms.EvoNormS0) and layer.num_groups == want_groups
  p = _affine(layer, channels)
  want = _evonorm_s0_reference(x, p["v"], p["scale"], p["bias"], want_groups)
  got = np.asarray(layer(jnp.asarray(x), train=True))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "instance", "evonorm_s0"])
def test_bf16_compute_keeps_float32_statistics(norm):
  x = _input()
  f32 = norms.make_norm(24, _cfg(norm, 8))
  bf16 = norms.make_norm(24, _cfg(norm, 8, dtype=jnp.bfloat16))
  got = bf16(jnp.asarray(x, jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(f32(jnp.asarray(x))),
                             rtol=0.05, atol=0.05)


def test_unknown_norm_and_bad_groups_are_rejected():
  with pytest.raises(ValueError, match="norm='layer'.*evonorm_s0"):
    norms.make_norm(8, _cfg("layer"))
  with pytest.raises(ValueError, match="not divisible"):
    norms.GroupNorm(10, num_groups=4)
  with pytest.raises(ValueError, match="norm_groups"):
    norms.make_norm(8, _cfg("group", 0))


def test_batch_norm_momentum_from_cfg():
  """torch's convention and default (0.1); a cfg's bn_momentum (HRNet: MSeg's 0.01) is used."""
  assert norms.make_norm(8, _cfg("batch")).momentum == 0.1
  bn = norms.make_norm(8, dataclasses.replace(_cfg("batch"), bn_momentum=0.01))
  assert isinstance(bn, layers.BatchNorm) and bn.momentum == 0.01
  x = _input((4, 3, 3, 8))
  bn(x, train=True)  # running = (1 - m) * running + m * batch (unbiased variance)
  want = 0.01 * x.reshape(-1, 8).mean(0)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), want, rtol=1e-5)


# ------------------------------------------------------------------ torch key map
def _tiny(norm, seed=0, **kw):
  return create_model("DeepR18V3PlusD_m1", num_classes=NUM_CLASSES, rngs=nnx.Rngs(seed),
                      width_multiplier=0.0625, norm=norm, **kw)


@pytest.mark.parametrize("norm,leaves", [("group", {"weight", "bias"}),
                                         ("instance", {"weight", "bias"}),
                                         ("evonorm_s0", {"weight", "bias", "v"})])
def test_state_dict_keys_and_round_trip(norm, leaves):
  model = _tiny(norm, norm_groups=4)
  sd = torch_layout.model_state_dict(model, include_num_batches_tracked=True)
  # layer0.1 is the stem's normaliser: exactly the torch module's keys, no running stats.
  assert {k.split(".")[-1] for k in sd if k.startswith("layer0.1.")} == leaves
  assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in sd)
  if norm == "group":
    assert model.layer0[1].num_groups == 4
  rng = np.random.default_rng(3)
  sd = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in sd.items()}
  other = _tiny(norm, seed=1, norm_groups=4)
  report = torch_layout.load_state_dict(other, sd, strict=True)
  assert sorted(report.loaded) == sorted(sd) and not report.ignored
  back = torch_layout.model_state_dict(other)
  for k, v in sd.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


# ------------------------------------------------------------------ train + eval step
def _batch(n=2, size=32):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, NUM_CLASSES, (n, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
  labels[:, :3] = 255
  images = rng.standard_normal((n, size, size, 3)).astype(np.float32) + labels[..., None] % 3
  return jnp.asarray(images), jnp.asarray(labels.astype(np.int32))


def _param_paths(model):
  return {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("norm", ["group", "instance", "evonorm_s0"])
def test_tiny_deeplab_train_step_and_eval(norm):
  model = _tiny(norm)
  bn_model = nnx.eval_shape(lambda: _tiny("batch"))
  # The normaliser's parameters replace BN's: the same convs, other norm leaves, no stats.
  assert not nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
  paths, bn_paths = _param_paths(model), _param_paths(bn_model)
  assert {p for p in paths if p.endswith("kernel")} == {p for p in bn_paths if p.endswith("kernel")}
  assert {p for p in paths if p.startswith("layer0/1/")} == (
      {"layer0/1/scale", "layer0/1/bias"} | ({"layer0/1/v"} if norm == "evonorm_s0" else set()))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  images, labels = _batch()

  @jax.jit
  def train_then_eval(params):
    """One SGD step on the cross entropy (train mode), then eval-mode logits."""
    def loss_fn(p):
      logits = nnx.merge(graphdef, p, rest)(images, train=True, rngs=nnx.Rngs(dropout=0))
      return losses.cross_entropy(logits, labels)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    new = jax.tree.map(lambda a, g: a - 0.1 * g, params, grads)
    return loss, new, nnx.merge(graphdef, new, rest)(images, train=False)

  loss, new_params, logits = train_then_eval(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert logits.shape == (2, 32, 32, NUM_CLASSES) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))
  before = {"/".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(params)}
  after = {"/".join(map(str, p)): np.asarray(v.get_value())
           for p, v in nnx.to_flat_state(new_params)}
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert {"layer0/1/scale", "layer0/1/bias", "final/6/kernel"} <= changed
  if norm == "evonorm_s0":
    assert "layer0/1/v" in changed


def test_step_functions_state_has_no_batch_stats():
  """The sharded train state of a BN-free model (traced only: nothing is compiled)."""
  from jaxseg.config.base import base_config
  c = base_config()
  c.precision = "fp32"
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides = {"width_multiplier": 0.0625, "norm": "evonorm_s0", "norm_groups": 2}
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optimizer_lib.create_optimizer(c, total_steps=4)
  fns = step_lib.create_step_functions(c, mesh=mesh, num_classes=NUM_CLASSES, tx=tx,
                                       loss_fn=None)
  state = fns.abstract_state
  assert state.batch_stats == {}
  assert "layer0/1/v" in state.params and state.params["layer0/1/v"].shape == (4,)
