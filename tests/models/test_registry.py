"""Fast unit tests of jaxseg.models and jaxseg.convert.torch_layout (tiny widths)."""
import functools
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.convert import torch_layout
from jaxseg.models import conv_algorithms
from jaxseg.models import create_model
from jaxseg.models import interpolate
from jaxseg.models import layers
from jaxseg.models import list_models

TINY = 0.125
ALL = ["DeepWV3Plus", "DeepSRNX50V3PlusD_m1", "DeepSRNX101V3PlusD_m1", "DeepR50V3PlusD_m1",
       "DeepR101V3PlusD_m1", "DeepR18V3PlusD_m1"]


def _tiny(name="DeepR18V3PlusD_m1", seed=0, num_classes=5, **kw):
  return create_model(name, num_classes=num_classes, rngs=nnx.Rngs(seed), width_multiplier=TINY,
                      **kw)


@functools.lru_cache(maxsize=None)
def _jitted_apply(graphdef, train):
  @jax.jit
  def f(state, x, key):
    m = nnx.merge(graphdef, state)
    out = m(x, train=train, rngs=None if key is None else nnx.Rngs(dropout=key))
    return out, nnx.state(m)
  return f


def _forward(model, x, train=False, rngs=None):
  """jit forward returning logits (and writing back BN stats in train mode)."""
  graphdef, state = nnx.split(model)
  out, new_state = _jitted_apply(graphdef, train)(state, x, rngs)
  nnx.update(model, new_state)
  return out


# ------------------------------------------------------------------------------ registry
def test_list_models_has_every_network():
  assert set(ALL) <= set(list_models())


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError) as err:
    create_model("DeepNope", num_classes=3, rngs=nnx.Rngs(0))
  for name in ALL:
    assert name in str(err.value)


def test_unknown_override_is_rejected():
  with pytest.raises(ValueError, match="unknown overrides.*dilation"):
    create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0), dilation=2)


def test_wrn_rejects_output_stride_16():
  with pytest.raises(ValueError, match="output_stride"):
    _tiny("DeepWV3Plus", output_stride=16)


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("hw", [(37, 53), (3, 4)])
def test_logit_shapes_at_odd_sizes(name, hw):
  model = _tiny(name, num_classes=7)
  out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32))
  assert out.shape == (2, *hw, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", ["DeepWV3Plus", "DeepR50V3PlusD_m1"])
def test_one_pixel_input(name):
  model = _tiny(name)
  out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct((1, 1, 1, 3), jnp.float32))
  assert out.shape == (1, 1, 1, 5)


def test_forward_values_finite_and_deterministic():
  model = _tiny()
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 37, 53, 3)), jnp.float32)
  a = _forward(model, x)
  b = _forward(model, x)
  assert a.shape == (2, 37, 53, 5) and a.dtype == jnp.float32
  assert np.isfinite(np.asarray(a)).all()
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_width_multiplier_keeps_resnext_groups_divisible():
  model = _tiny("DeepSRNX50V3PlusD_m1")
  for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
    conv2 = layer[0].conv2
    assert conv2.in_channels % conv2.groups == 0 and conv2.groups > 1
  assert model.aspp.features[0][0].out_channels == 32  # 256 * 0.125
  assert model.bot_fine.out_channels == 6  # 48 * 0.125


def test_variant_d_dilations_and_output_stride_16():
  d8 = _tiny("DeepR50V3PlusD_m1")
  assert d8.layer3[0].conv2.dilation == (2, 2) and d8.layer3[0].conv2.stride == (1, 1)
  assert d8.layer4[1].conv2.dilation == (4, 4) and d8.layer4[0].downsample[0].stride == (1, 1)
  assert [f[0].dilation[0] for f in d8.aspp.features[1:]] == [12, 24, 36]
  d16 = _tiny("DeepR50V3PlusD_m1", output_stride=16, aspp_output_stride=16)
  assert d16.layer3[0].conv2.stride == (2, 2) and d16.layer3[0].conv2.dilation == (1, 1)
  assert d16.layer4[0].conv2.dilation == (2, 2)
  assert [f[0].dilation[0] for f in d16.aspp.features[1:]] == [6, 12, 18]
  srnx = _tiny("DeepSRNX50V3PlusD_m1")
  assert srnx.layer0.pool.ceil_mode and srnx.layer0.pool.padding == 0
  wrn = _tiny("DeepWV3Plus")
  assert wrn.mod4.block1.convs.conv1.stride == (2, 2)
  assert wrn.mod5.block1.convs.conv1.dilation == (2, 2)
  assert wrn.mod7.block1.convs.conv2.dilation == (4, 4)
  assert wrn.mod6.block1.convs.dropout.rate == 0.3 and wrn.mod7.block1.convs.dropout.rate == 0.5
  assert wrn.bot_fine.in_channels == wrn.mod2.block3.convs.conv2.out_channels  # skip from mod2


# ------------------------------------------------------------------------------ BatchNorm
def _np_bn_train(x, scale, bias, eps=1e-5):
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, x.var(axis=(0, 1, 2), ddof=1)


def test_batchnorm_train_uses_biased_var_and_updates_unbiased():
  rng = np.random.default_rng(1)
  x = (rng.standard_normal((4, 3, 5, 6)) * 3 + 2).astype(np.float32)
  bn = layers.BatchNorm(6)
  bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, 6), jnp.float32)
  bn.bias[...] = jnp.asarray(rng.uniform(-1, 1, 6), jnp.float32)
  y = bn(jnp.asarray(x), train=True)
  want, mean, unbiased = _np_bn_train(x, np.asarray(bn.scale[...]), np.asarray(bn.bias[...]))
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * unbiased, rtol=1e-5)
  # eval: running statistics, torch's formula.
  ye = bn(jnp.asarray(x))
  rm, rv = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
  want_e = (x - rm) / np.sqrt(rv + 1e-5) * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...])
  np.testing.assert_allclose(np.asarray(ye), want_e, rtol=1e-5, atol=1e-5)


def test_batchnorm_groups_normalise_per_group():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((4, 2, 3, 5)).astype(np.float32)
  x[2:] = x[2:] * 4 + 3  # very different statistics in the second group
  bn = layers.BatchNorm(5, groups=2)
  y = np.asarray(bn(jnp.asarray(x), train=True))
  y0, m0, v0 = _np_bn_train(x[:2], 1.0, 0.0)
  y1, m1, v1 = _np_bn_train(x[2:], 1.0, 0.0)
  np.testing.assert_allclose(y, np.concatenate([y0, y1]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * (m0 + m1) / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * (v0 + v1) / 2, rtol=1e-5)
  with pytest.raises(ValueError, match="bn_groups=2"):
    bn(jnp.asarray(x[:3]), train=True)


def test_sharded_batch_gives_global_batchnorm():
  """bn_groups=1 under jit with the batch sharded over devices = synchronised BN."""
  if len(jax.devices()) < 2:
    pytest.skip("needs several (virtual) devices")
  n = len(jax.devices())
  x = jnp.asarray(np.random.default_rng(11).standard_normal((n, 17, 19, 3)), jnp.float32)
  x = x * jnp.arange(1, n + 1, dtype=jnp.float32)[:, None, None, None]  # per-device stats differ
  ref, sharded = _tiny(), _tiny()
  want = _forward(ref, x, train=True)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
  got = _forward(sharded, jax.device_put(x, spec), train=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(np.asarray(sharded.layer1[0].bn1.var[...]),
                             np.asarray(ref.layer1[0].bn1.var[...]), rtol=1e-5)


def test_model_bn_groups_reach_every_batchnorm():
  model = _tiny(bn_groups=2)
  groups = {m.groups for _, m in nnx.iter_modules(model) if isinstance(m, layers.BatchNorm)}
  assert groups == {2}


# ------------------------------------------------------------------------------ dtypes / train
def test_bf16_compute_keeps_fp32_params_stats_and_logits():
  f32 = _tiny()
  bf16 = _tiny(dtype=jnp.bfloat16)
  nnx.update(bf16, nnx.state(f32))
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 33, 41, 3)), jnp.float32)
  a, b = np.asarray(_forward(f32, x)), _forward(bf16, x)
  assert b.dtype == jnp.float32
  assert np.linalg.norm(np.asarray(b) - a) / np.linalg.norm(a) < 5e-2
  assert bf16.layer1[0].conv1.kernel[...].dtype == jnp.float32
  _forward(bf16, x, train=True)
  assert bf16.layer1[0].bn1.var[...].dtype == jnp.float32
  assert not np.allclose(np.asarray(bf16.layer1[0].bn1.var[...]), 1.0)


def test_wrn_train_dropout_needs_rngs_and_is_keyed():
  model = _tiny("DeepWV3Plus")
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 17, 19, 3)), jnp.float32)
  with pytest.raises(ValueError, match="dropout"):
    nnx.eval_shape(lambda m, x: m(x, train=True), model, x)
  state = nnx.state(model)
  a = _forward(model, x, train=True, rngs=jax.random.key(0))
  nnx.update(model, state)
  b = _forward(model, x, train=True, rngs=jax.random.key(0))
  nnx.update(model, state)
  c = _forward(model, x, train=True, rngs=jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))


# ------------------------------------------------------------------------------ primitives
def test_upsample_matches_torch_align_corners():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(5)
  for (h, w), (oh, ow) in [((1, 1), (5, 7)), ((4, 6), (9, 13)), ((7, 5), (3, 2)),
                           ((16, 32), (128, 256)), ((5, 5), (1, 1)), ((3, 8), (3, 17))]:
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bilinear",
                                           align_corners=True).numpy()
    resize = jax.jit(interpolate.resize_bilinear_align_corners, static_argnums=1)
    got = resize(jnp.asarray(x.transpose(0, 2, 3, 1)), (oh, ow))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-6, atol=1e-6)


def test_maxpool_and_conv_match_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(6)
  for size in range(2, 10):
    x = rng.standard_normal((1, 2, size, size + 1)).astype(np.float32)
    for pool, tpool in [(layers.MaxPool2d(3, 2, 0, ceil_mode=True),
                         torch.nn.MaxPool2d(3, 2, ceil_mode=True)),
                        (layers.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, padding=1))]:
      want = tpool(torch.from_numpy(x)).numpy()
      got = np.asarray(pool(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
      np.testing.assert_array_equal(got, want)
  x = rng.standard_normal((1, 8, 11, 13)).astype(np.float32)
  for k, s, p, d, g in [(7, 2, 3, 1, 1), (3, 1, 4, 4, 1), (3, 2, 1, 1, 4), (1, 2, 0, 1, 1)]:
    conv = layers.Conv2d(8, 12, k, stride=s, padding=p, dilation=d, groups=g, use_bias=True,
                         rngs=nnx.Rngs(0))
    tconv = torch.nn.Conv2d(8, 12, k, stride=s, padding=p, dilation=d, groups=g)
    sd = torch_layout.model_state_dict(conv)
    tconv.load_state_dict({k_: torch.from_numpy(np.array(v)) for k_, v in sd.items()})
    with torch.no_grad():
      want = tconv(torch.from_numpy(x)).numpy()
    got = np.asarray(conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_block_output_is_identity_with_identity_gradient():
  x = jnp.asarray(np.random.default_rng(10).standard_normal((2, 3, 4, 5)), jnp.float32)
  x = x.at[0, 0, 0, 0].set(jnp.nan)  # the always-true predicate must hold for NaN too
  r = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
  y, g = jax.jit(lambda v: (layers.block_output(v),
                            jax.grad(lambda u: jnp.sum(layers.block_output(u) * r))(v)))(x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


@pytest.mark.parametrize("case", [
    # (H, W, cin, cout, k, stride, padding, dilation, groups): expected CPU algorithm
    ((9, 7, 16, 8, 1, 1, 0, 1, 1), "gemm_1x1"),
    ((9, 7, 16, 8, 1, 2, 0, 1, 1), "gemm_1x1"),
    ((9, 6, 1024, 4, 3, 1, 4, 4, 1), "gemm_taps"),
    ((4, 5, 1024, 4, 3, 1, 24, 24, 1), "gemm_taps"),  # off-centre taps only see padding
    ((9, 7, 256, 256, 3, 1, 1, 1, 1), "winograd"),
    ((8, 8, 256, 256, 3, 1, 1, 1, 1), "winograd"),
    ((11, 6, 256, 256, 3, 1, 2, 2, 1), "winograd"),
    ((13, 10, 256, 256, 3, 1, 4, 4, 1), "winograd"),
    ((1, 1, 256, 256, 3, 1, 4, 4, 1), "winograd"),
    ((8, 11, 32, 32, 3, 1, 2, 2, 8), "grouped_direct"),
    ((8, 11, 64, 128, 3, 1, 3, 3, 4), "grouped_gemm"),
    ((8, 11, 64, 64, 3, 2, 1, 1, 8), "xla"),
    ((9, 12, 256, 8, 3, 2, 1, 1, 1), "gemm_taps_strided"),
    ((9, 12, 256, 8, 3, 2, 2, 2, 1), "gemm_taps_strided"),
    ((8, 11, 8, 16, 3, 1, 1, 1, 1), "xla"),
])
def test_cpu_conv_algorithms_match_lax_conv(case):
  (h, w, cin, cout, k, s, p, d, g), algo = case
  args = ((2, h, w, cin), (k, k, cin // g, cout), (s, s), (p, p), (d, d), g)
  assert conv_algorithms.conv_algorithm("auto", *args, backend="cpu") == algo
  assert conv_algorithms.conv_algorithm("xla", *args, backend="cpu") == "xla"
  assert conv_algorithms.conv_algorithm("auto", *args, backend="gpu") == "xla"
  x = jnp.asarray(np.random.default_rng(8).standard_normal((2, h, w, cin)), jnp.float32)
  kw = dict(stride=s, padding=p, dilation=d, groups=g)
  auto = layers.Conv2d(cin, cout, k, rngs=nnx.Rngs(0), **kw)
  ref = layers.Conv2d(cin, cout, k, impl="xla", rngs=nnx.Rngs(0), **kw)
  with jax.default_matmul_precision("highest"):
    got, want = jax.jit(lambda v: (auto(v), ref(v)))(x)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # Gradients (training on CPU goes through the same code paths).
  r = jnp.asarray(np.random.default_rng(9).standard_normal(want.shape), jnp.float32)

  def grads(conv):
    graphdef, params = nnx.split(conv)
    loss = lambda p, v: jnp.sum(nnx.merge(graphdef, p)(v) * r)  # noqa: E731
    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    return np.asarray(g_params["kernel"][...]), np.asarray(g_x)

  with jax.default_matmul_precision("highest"):
    for g_auto, g_ref in zip(grads(auto), grads(ref)):
      np.testing.assert_allclose(g_auto, g_ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ torch layout
def test_key_path_mapping():
  assert torch_layout.torch_key_for_path(("layer1", 0, "conv1", "kernel")) == \
      "layer1.0.conv1.weight"
  assert torch_layout.torch_key_for_path(("final", 1, "mean")) == "final.1.running_mean"
  assert torch_layout.torch_key_for_path(("mod2", "block1", "bn1", 0, "scale")) == \
      "mod2.block1.bn1.0.weight"
  assert torch_layout.path_for_torch_key("final.4.weight", 1) == ("final", 4, "scale")
  assert torch_layout.path_for_torch_key("aspp.features.1.0.weight", 4) == \
      ("aspp", "features", 1, 0, "kernel")
  assert torch_layout.path_for_torch_key("x.running_var", 1) == ("x", "var")
  w = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
  k = torch_layout.torch_to_nnx_array("kernel", w)
  assert k.shape == (5, 7, 3, 2) and k[4, 6, 2, 1] == w[1, 2, 4, 6]
  np.testing.assert_array_equal(torch_layout.nnx_to_torch_array("kernel", k), w)
  lin = np.arange(6, dtype=np.float32).reshape(2, 3)
  np.testing.assert_array_equal(torch_layout.torch_to_nnx_array("kernel", lin), lin.T)


def test_state_dict_round_trip_and_strict_errors():
  src, dst = _tiny(seed=0), _tiny(seed=1)
  x = jnp.asarray(np.random.default_rng(7).standard_normal((2, 21, 27, 3)), jnp.float32)
  _forward(src, x, train=True)  # non-trivial running statistics
  sd = torch_layout.model_state_dict(src, prefix="module.", include_num_batches_tracked=True)
  assert sd["module.final.6.weight"].shape == (5, 32, 1, 1)  # 256 * 0.125 inputs
  assert sd["module.layer0.1.num_batches_tracked"].dtype == np.int64
  report = torch_layout.load_state_dict(dst, sd)
  assert report.ok and not report.reinitialised
  assert "layer0.1.num_batches_tracked" in report.ignored
  back = torch_layout.model_state_dict(dst)
  for key, value in torch_layout.model_state_dict(src).items():
    np.testing.assert_array_equal(back[key], value)
  np.testing.assert_array_equal(np.asarray(_forward(src, x)), np.asarray(_forward(dst, x)))

  bad = dict(sd)
  del bad["module.layer1.0.conv1.weight"]
  bad["module.layer9.weight"] = np.zeros(3, np.float32)
  bad["module.final.0.weight"] = np.zeros((1, 2, 3, 3), np.float32)
  with pytest.raises(ValueError) as err:
    torch_layout.load_state_dict(_tiny(), bad)
  msg = str(err.value)
  for key in ("layer1.0.conv1.weight", "layer9.weight", "final.0.weight"):
    assert key in msg
  report = torch_layout.load_state_dict(_tiny(), bad, strict=False)
  assert report.missing == ["layer1.0.conv1.weight"]
  assert report.unexpected == ["layer9.weight"]
  assert report.mismatched == [("final.0.weight", (32, 38, 3, 3), (1, 2, 3, 3))]


def test_reinit_classifier_on_mismatch():
  sd = torch_layout.model_state_dict(_tiny(num_classes=5))
  with pytest.raises(ValueError, match=re.escape("final.6.weight")):
    torch_layout.load_state_dict(_tiny(num_classes=7), sd)
  dst = _tiny(num_classes=7, seed=3)
  before = np.asarray(dst.final[6].kernel[...])
  report = torch_layout.load_state_dict(dst, sd, reinit_classifier_on_mismatch=True)
  assert report.reinitialised == ["final.6.weight"] and report.reinitialized == report.reinitialised
  assert not report.missing and not report.mismatched
  np.testing.assert_array_equal(np.asarray(dst.final[6].kernel[...]), before)
  np.testing.assert_array_equal(np.asarray(dst.final[3].kernel[...]),
                                sd["final.3.weight"].transpose(2, 3, 1, 0))
  # Abstract models get a fresh classifier drawn from reinit_seed.
  abstract = nnx.eval_shape(lambda: _tiny(num_classes=7))
  torch_layout.load_state_dict(abstract, sd, reinit_classifier_on_mismatch=True)
  assert isinstance(abstract.final[6].kernel.get_value(), jax.Array)


def _head_snapshot(model):
  return {k: v for k, v in torch_layout.model_state_dict(model).items()
          if not k.startswith(("layer", "mod"))}


def test_trunk_loading_torchvision_and_cadene_layouts():
  # torchvision resnet: conv1/bn1 at the top level, fc unused.
  src = _tiny("DeepR18V3PlusD_m1", seed=0)
  tv = {}
  for k, v in torch_layout.model_state_dict(src, include_num_batches_tracked=True).items():
    if k.startswith("layer0.0."):
      tv["conv1." + k[len("layer0.0."):]] = v
    elif k.startswith("layer0.1."):
      tv["bn1." + k[len("layer0.1."):]] = v
    elif k.startswith("layer"):
      tv[k] = v
  tv["fc.weight"], tv["fc.bias"] = np.zeros((1000, 64), np.float32), np.zeros(1000, np.float32)
  dst = _tiny("DeepR18V3PlusD_m1", seed=1)
  head = _head_snapshot(dst)
  report = torch_layout.load_trunk_state_dict(dst, tv, trunk_format="auto")
  assert report.ok and {"fc.weight", "fc.bias"} <= set(report.ignored)
  got = torch_layout.model_state_dict(dst)
  np.testing.assert_array_equal(got["layer0.0.weight"], tv["conv1.weight"])
  np.testing.assert_array_equal(got["layer4.1.bn2.running_var"], tv["layer4.1.bn2.running_var"])
  for k, v in head.items():
    np.testing.assert_array_equal(got[k], v)
  # Cadene se_resnext: identity layout, last_linear unused.
  src = _tiny("DeepSRNX50V3PlusD_m1", seed=0)
  cad = {k: v for k, v in torch_layout.model_state_dict(src).items() if k.startswith("layer")}
  cad["last_linear.weight"] = np.zeros((1000, 256), np.float32)
  dst = _tiny("DeepSRNX50V3PlusD_m1", seed=1)
  report = torch_layout.load_trunk_state_dict(dst, cad, trunk_format="cadene_se_resnext")
  assert report.ok and report.ignored == ["last_linear.weight"]
  assert len(report.loaded) == len(cad) - 1
  del cad["layer2.0.conv1.weight"]
  with pytest.raises(ValueError, match="layer2.0.conv1.weight"):
    torch_layout.load_trunk_state_dict(_tiny("DeepSRNX50V3PlusD_m1"), cad,
                                       trunk_format="cadene_se_resnext")
  with pytest.raises(ValueError, match="trunk_format"):
    torch_layout.load_trunk_state_dict(dst, cad, trunk_format="vgg")
