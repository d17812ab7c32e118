"""Tests of jaxseg.kernels: Resample2d, Correlation, ChannelNorm.

Checks against the original CUDA layers' fixtures (../shared/reference/sdcnet,
NCHW there), against independent numpy re-statements of the CUDA arithmetic,
Pallas (interpret mode) against XLA, custom_vjp gradients against autodiff,
and that the Pallas kernels lower to Triton for CUDA (no GPU needed).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import kernels
from jaxseg.kernels import pallas_resample
from jaxseg.kernels import pallas_triton
from jaxseg.kernels.resample2d import resample2d_xla

PALLAS_IMPLS = ["xla", "pallas"]  # 'pallas' runs interpreted on CPU.


def nchw_to_nhwc(x):
  return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def numpy_resample2d(image, flow, mode):
  """resample2d_kernel.cu forward, transcribed loop-free in numpy (NHWC).

  xf in float32, weights and products in float64 (the CUDA `1.` literals),
  each term rounded to float32 and summed in float32, as the kernel does.
  """
  image = np.asarray(image)
  n, h, w, c = image.shape
  xs = np.arange(w, dtype=np.float32)[None, None, :]
  ys = np.arange(h, dtype=np.float32)[None, :, None]
  xf = (xs + flow[..., 0].astype(np.float32)).astype(np.float32)
  yf = (ys + flow[..., 1].astype(np.float32)).astype(np.float32)
  b = np.arange(n)[:, None, None]

  def at(yi, xi):
    return image[b, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]

  if mode == "nearest":
    xn = np.floor(xf.astype(np.float64) + 0.5).astype(np.int64)
    yn = np.floor(yf.astype(np.float64) + 0.5).astype(np.int64)
    return at(yn, xn)
  x0 = np.floor(xf)
  y0 = np.floor(yf)
  alpha = (xf - x0).astype(np.float64)[..., None]
  beta = (yf - y0).astype(np.float64)[..., None]
  x0 = x0.astype(np.int64)
  y0 = y0.astype(np.int64)
  terms = [(1. - alpha) * (1. - beta) * at(y0, x0),
           alpha * (1. - beta) * at(y0, x0 + 1),
           (1. - alpha) * beta * at(y0 + 1, x0),
           alpha * beta * at(y0 + 1, x0 + 1)]
  val = np.zeros(image.shape, np.float32)
  for t in terms:
    val = val + t.astype(np.float32)
  return val


def random_case(seed, n=2, h=11, w=13, c=3):
  """Image in [0, 255); flow of batch 0 = quarter pixels in [-12, 12] (exact
  .5 ties, samples outside), other batches generic floats in [-20, 20]."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 255, (n, h, w, c)).astype(np.float32)
  flow = rng.uniform(-20, 20, (n, h, w, 2)).astype(np.float32)
  flow[0] = rng.integers(-48, 49, (h, w, 2)) / 4.0
  return image, flow


# ----------------------------------------------------------------------------
# Resample2d forward.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("impl", PALLAS_IMPLS)
def test_resample2d_fixture(reference_dir, impl):
  d = np.load(reference_dir / "sdcnet" / "resample2d.npz")
  image = nchw_to_nhwc(d["input"])
  flow = nchw_to_nhwc(d["flow"])
  bil = kernels.resample2d(image, flow, mode="bilinear", impl=impl)
  near = kernels.resample2d(image, flow, mode="nearest", impl=impl)
  assert np.abs(np.asarray(bil) - nchw_to_nhwc(d["bilinear"])).max() <= 1e-4
  np.testing.assert_array_equal(np.asarray(near), nchw_to_nhwc(d["nearest"]))


@pytest.mark.parametrize("impl", PALLAS_IMPLS)
def test_sdcnet_warps_of_flow_pred(reference_dir, impl):
  """SDCNet's final warps: frames[1] and the label by the fixture's flow."""
  sdc = reference_dir / "sdcnet"
  frame = nchw_to_nhwc(np.load(sdc / "frames.npy")[1])
  flow = nchw_to_nhwc(np.load(sdc / "flow_pred.npy"))
  label = nchw_to_nhwc(np.load(sdc / "label.npy"))
  image_pred = kernels.resample2d(frame, flow, mode="bilinear", impl=impl)
  ref = nchw_to_nhwc(np.load(sdc / "image_pred.npy"))
  assert np.abs(np.asarray(image_pred) - ref).max() <= 1e-3
  label_u8 = label.astype(np.uint8)
  label_pred = kernels.resample2d(label_u8, flow, mode="nearest", impl=impl)
  assert label_pred.dtype == jnp.uint8
  ref = nchw_to_nhwc(np.load(sdc / "label_pred.npy"))
  np.testing.assert_array_equal(np.asarray(label_pred), ref.astype(np.uint8))


@pytest.mark.parametrize("impl", PALLAS_IMPLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_resample2d_matches_cuda_arithmetic(impl, seed):
  image, flow = random_case(seed)
  for mode, tol in (("bilinear", 1e-4), ("nearest", 0.0)):
    got = np.asarray(kernels.resample2d(image, flow, mode=mode, impl=impl))
    want = numpy_resample2d(image, flow, mode)
    assert np.abs(got - want).max() <= tol, mode


@pytest.mark.parametrize("impl", PALLAS_IMPLS)
def test_nearest_ties_go_up(impl):
  w = 6
  image = np.arange(w, dtype=np.float32).reshape(1, 1, w, 1)
  dx = np.array([0.5, -0.5, 1.5, -0.25, -2.5, 9.5], np.float32)
  flow = np.stack([dx, np.zeros_like(dx)], -1).reshape(1, 1, w, 2)
  got = np.asarray(kernels.resample2d(image, flow, mode="nearest", impl=impl))
  # xf = 0.5, 0.5, 3.5, 2.75, 1.5, 14.5: ties up (not to even), clamp at 5.
  np.testing.assert_array_equal(got.ravel(), [1, 1, 4, 3, 2, 5])
  # xf = 0.5 - 2**-25 is below the tie, though xf + 0.5 rounds to 1.0 in
  # float32 (CUDA adds a double 0.5); xf = -0.5 ties up to 0.
  image = np.arange(2, dtype=np.float32).reshape(1, 1, 2, 1)
  flow = np.array([0.5 - 2.0**-25, 0.0, -1.5, 0.0],
                  np.float32).reshape(1, 1, 2, 2)
  got = np.asarray(kernels.resample2d(image, flow, mode="nearest", impl=impl))
  np.testing.assert_array_equal(got.ravel(), [0, 0])


@pytest.mark.parametrize("impl", PALLAS_IMPLS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_label_warp_exact(impl, dtype):
  image, flow = random_case(2, c=1)
  labels = np.random.default_rng(3).integers(0, 256, image.shape)
  labels = labels.astype(dtype)
  got = kernels.resample2d(labels, flow, mode="nearest", impl=impl)
  assert got.dtype == dtype
  np.testing.assert_array_equal(np.asarray(got),
                                numpy_resample2d(labels, flow, "nearest"))


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_pallas_interpret_matches_xla(channels):
  """Several programs per image with a ragged tail (tile of 16 pixels)."""
  image, flow = random_case(4 + channels, h=9, w=15, c=channels)
  image_i, flow_i = jnp.asarray(image), jnp.asarray(flow)
  for mode, tol in (("bilinear", 1e-4), ("nearest", 0.0)):
    got = pallas_resample.forward(image_i, flow_i, mode=mode, interpret=True,
                                  tile_elements=16 * channels)
    want = resample2d_xla(image_i, flow_i, mode=mode)
    assert got.dtype == want.dtype
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= tol, mode


def test_integer_and_bfloat16_images():
  image, flow = random_case(5)
  u8 = image.astype(np.uint8)
  for impl in PALLAS_IMPLS:
    out = kernels.resample2d(u8, flow, mode="bilinear", impl=impl)
    assert out.dtype == jnp.float32
    want = numpy_resample2d(u8.astype(np.float32), flow, "bilinear")
    assert np.abs(np.asarray(out) - want).max() <= 1e-4
    bf = kernels.resample2d(jnp.asarray(image, jnp.bfloat16), flow,
                            mode="bilinear", impl=impl)
    assert bf.dtype == jnp.bfloat16
    want = numpy_resample2d(
        np.asarray(jnp.asarray(image, jnp.bfloat16).astype(jnp.float32)),
        flow, "bilinear")
    assert np.abs(np.asarray(bf.astype(jnp.float32)) - want).max() <= 1.0


# ----------------------------------------------------------------------------
# Resample2d gradients, dispatch, lowering.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_custom_vjp_matches_autodiff(mode):
  image, flow = random_case(6, h=8, w=10)
  image = image / 255.0
  weights = np.random.default_rng(7).normal(size=image.shape)
  weights = weights.astype(np.float32)

  def loss(impl):
    return lambda im, fl: jnp.sum(
        weights * kernels.resample2d(im, fl, mode=mode, impl=impl))

  g_xla = jax.grad(loss("xla"), argnums=(0, 1))(image, flow)
  g_pal = jax.jit(jax.grad(loss("pallas"), argnums=(0, 1)))(image, flow)
  for a, b, name in zip(g_xla, g_pal, ("image", "flow")):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max()), name
  if mode == "bilinear":
    assert np.abs(np.asarray(g_xla[1])).max() > 0.1  # flow grads are real.


def test_flow_grad_of_integer_image():
  image, flow = random_case(8, h=7, w=9)
  labels = image.astype(np.uint8)
  grads = [jax.grad(lambda f, impl=impl: jnp.sum(kernels.resample2d(
      labels, f, mode="bilinear", impl=impl)))(flow) for impl in PALLAS_IMPLS]
  assert np.abs(np.asarray(grads[0]) - np.asarray(grads[1])).max() <= 1e-3


def test_bilinear_flow_grad_matches_finite_difference():
  image, flow = random_case(9, n=1, h=6, w=7, c=2)
  image = image.astype(np.float64) / 255.0
  flow = flow.astype(np.float64)
  flow[0] = np.random.default_rng(10).uniform(-3, 3, flow.shape[1:])
  with jax.enable_x64(True):
    f = jax.jit(lambda fl: jnp.sum(jnp.sin(kernels.resample2d(
        image, fl, mode="bilinear", impl="xla"))))
    g = np.asarray(jax.grad(f)(flow))
    eps = 1e-6
    for idx in [(0, 2, 3, 0), (0, 4, 1, 1), (0, 0, 6, 0)]:
      d = np.zeros_like(flow)
      d[idx] = eps
      fd = (f(flow + d) - f(flow - d)) / (2 * eps)
      assert abs(fd - g[idx]) <= 1e-5, idx


def test_pallas_under_vmap_and_jit():
  image, flow = random_case(16, n=2, h=5, w=6)
  image, flow = image.reshape(2, 1, 5, 6, 3), flow.reshape(2, 1, 5, 6, 2)
  got = jax.jit(jax.vmap(lambda i, f: kernels.resample2d(
      i, f, impl="pallas")))(image, flow)
  want = jax.vmap(lambda i, f: kernels.resample2d(i, f, impl="xla"))(image,
                                                                     flow)
  assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-4


def test_auto_uses_xla_on_cpu():
  image, flow = random_case(11, h=4, w=4)
  jaxpr = jax.make_jaxpr(lambda i, f: kernels.resample2d(i, f))(image, flow)
  assert "pallas_call" not in str(jaxpr)
  np.testing.assert_array_equal(
      np.asarray(kernels.resample2d(image, flow)),
      np.asarray(kernels.resample2d(image, flow, impl="xla")))


def test_bad_arguments_raise():
  image, flow = random_case(12, h=4, w=4)
  with pytest.raises(ValueError, match="mode"):
    kernels.resample2d(image, flow, mode="bicubic")
  with pytest.raises(ValueError, match="impl"):
    kernels.resample2d(image, flow, impl="cuda")
  with pytest.raises(ValueError, match="flow must have shape"):
    kernels.resample2d(image, flow[:, :3])
  with pytest.raises(ValueError, match="float32"):
    kernels.resample2d(image, flow.astype(np.float16), impl="pallas")


@pytest.mark.skipif(not pallas_triton.available(),
                    reason="jax.experimental.pallas.triton not importable")
@pytest.mark.parametrize("mode,dtype,channels", [
    ("bilinear", np.float32, 3), ("nearest", np.uint8, 1),
    ("nearest", np.int32, 1), ("bilinear", jnp.bfloat16, 19)])
def test_pallas_kernels_lower_to_triton(mode, dtype, channels):
  """Lowering for CUDA runs the Triton lowering on this CPU host."""
  image = jax.ShapeDtypeStruct((2, 24, 40, channels), dtype)
  flow = jax.ShapeDtypeStruct((2, 24, 40, 2), jnp.float32)
  text = pallas_triton.lower_for_cuda_text(
      lambda i, f: pallas_resample.forward(i, f, mode=mode), image, flow)
  assert "triton" in text
  if mode == "bilinear":
    text = pallas_triton.lower_for_cuda_text(
        pallas_resample.flow_grad, image, flow,
        jax.ShapeDtypeStruct(image.shape, dtype))
    assert "triton" in text


# ----------------------------------------------------------------------------
# Correlation and ChannelNorm.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("key,params", [
    ("out_flownetc", dict(pad_size=20, max_displacement=20, stride2=2)),
    ("out_small", dict(pad_size=3, max_displacement=3, stride2=1)),
])
def test_correlation_fixture(reference_dir, key, params):
  d = np.load(reference_dir / "sdcnet" / "correlation.npz")
  out = kernels.correlation(nchw_to_nhwc(d["input1"]),
                            nchw_to_nhwc(d["input2"]), kernel_size=1,
                            stride1=1, **params)
  want = nchw_to_nhwc(d[key])
  assert out.shape == want.shape
  assert np.abs(np.asarray(out) - want).max() <= 1e-5


def numpy_correlation(a, b, pad, k, md, s1, s2):
  """correlation_cuda_kernel.cu by loops (out-of-buffer taps read zero)."""
  n, h, w, c = a.shape
  kr, r = (k - 1) // 2, md // s2
  e = pad + kr
  widths = ((0, 0), (e, e), (e, e), (0, 0))
  ap = np.pad(a, widths).astype(np.float64)
  bp = np.pad(b, widths).astype(np.float64)
  ho = -(-(h + 2 * pad - 2 * (kr + md)) // s1)
  wo = -(-(w + 2 * pad - 2 * (kr + md)) // s1)
  out = np.zeros((n, ho, wo, (2 * r + 1)**2))
  for oy in range(ho):
    for ox in range(wo):
      y1, x1 = oy * s1 + md + kr, ox * s1 + md + kr
      for tj in range(-r, r + 1):
        for ti in range(-r, r + 1):
          s = 0.0
          for j in range(-kr, kr + 1):
            for i in range(-kr, kr + 1):
              s = s + np.sum(ap[:, y1 + j, x1 + i] *
                             bp[:, y1 + j + tj * s2, x1 + i + ti * s2], -1)
          out[:, oy, ox, (tj + r) * (2 * r + 1) + ti + r] = s / (k * k * c)
  return out


@pytest.mark.parametrize("pad,k,md,s1,s2", [(2, 3, 2, 2, 1), (4, 1, 4, 1, 2),
                                            (1, 3, 1, 1, 1), (0, 1, 2, 3, 2)])
def test_correlation_general_parameters(pad, k, md, s1, s2):
  rng = np.random.default_rng(13)
  a = rng.normal(size=(1, 7, 9, 5)).astype(np.float32)
  b = rng.normal(size=(1, 7, 9, 5)).astype(np.float32)
  out = kernels.correlation(a, b, pad_size=pad, kernel_size=k,
                            max_displacement=md, stride1=s1, stride2=s2)
  want = numpy_correlation(a, b, pad, k, md, s1, s2)
  assert out.shape == want.shape
  assert np.abs(np.asarray(out) - want).max() <= 1e-5


def test_correlation_gradients_match_dense_formula():
  rng = np.random.default_rng(14)
  a = rng.normal(size=(1, 6, 8, 4)).astype(np.float32)
  b = rng.normal(size=(1, 6, 8, 4)).astype(np.float32)
  weights = rng.normal(size=(1, 6, 8, 25)).astype(np.float32)

  def dense(a, b):  # All displacements materialised: fine at this size.
    bp = jnp.pad(b, ((0, 0), (4, 4), (4, 4), (0, 0)))
    outs = [jnp.sum(a * bp[:, 4 + dy:10 + dy, 4 + dx:12 + dx], -1)
            for dy in range(-4, 5, 2) for dx in range(-4, 5, 2)]
    return jnp.stack(outs, -1) / 4.0

  def ours(a, b):
    return kernels.correlation(a, b, pad_size=4, max_displacement=4,
                               stride2=2)

  np.testing.assert_allclose(ours(a, b), dense(a, b), atol=1e-6)
  for fn_a, fn_b in zip(
      jax.grad(lambda a, b: jnp.sum(weights * ours(a, b)), (0, 1))(a, b),
      jax.grad(lambda a, b: jnp.sum(weights * dense(a, b)), (0, 1))(a, b)):
    np.testing.assert_allclose(fn_a, fn_b, atol=1e-5)


def test_correlation_bad_arguments():
  a = np.zeros((1, 4, 4, 2), np.float32)
  with pytest.raises(ValueError, match="kernel_size"):
    kernels.correlation(a, a, pad_size=1, kernel_size=2, max_displacement=1)
  with pytest.raises(ValueError, match="equal shape"):
    kernels.correlation(a, a[:, :3], pad_size=1, max_displacement=1)
  with pytest.raises(ValueError, match="empty output"):
    kernels.correlation(a, a, pad_size=0, max_displacement=3)


def test_channel_norm():
  x = np.random.default_rng(15).normal(size=(2, 3, 5, 7)).astype(np.float32)
  out = kernels.channel_norm(x)
  assert out.shape == (2, 3, 5, 1)
  np.testing.assert_allclose(out, np.sqrt((x.astype(np.float64)**2).sum(
      -1, keepdims=True)), rtol=1e-6)
