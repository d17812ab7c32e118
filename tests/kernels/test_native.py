"""The native CPU grouped-conv kernel (XLA FFI) against lax.conv, and its fallback."""
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.kernels import grouped_conv
from jaxseg.kernels.native import native_kernels_available
from jaxseg.models import conv_algorithms
from jaxseg.models import create_model
from jaxseg.models import layers

needs_kernels = pytest.mark.skipif(not native_kernels_available(),
                                   reason="native CPU kernels could not be built here")

CASES = [
    # (N, H, W, cin, cout, k, stride, padding, dilation, groups)
    (2, 9, 13, 32, 32, 3, 1, 1, 1, 8),        # 4 in / 4 out per group: merged pairs
    (1, 10, 11, 16, 24, 3, 2, 1, 1, 4),       # strided, 6 outputs per group (padded lanes)
    (1, 17, 15, 64, 64, 3, 1, 2, 2, 32),      # 2 per group: 4 groups merged
    (1, 8, 30, 64, 64, 3, 1, 4, 4, 2),        # 32 per group: two 16-lane chunks
    (1, 7, 7, 12, 6, 3, 2, 1, 1, 3),          # 2 outputs per group, groups not mergeable
    (1, 33, 29, 128, 128, 3, 1, 1, 1, 32),    # ResNeXt layer1 shape family
    (1, 12, 12, 96, 96, 1, 1, 0, 1, 32),      # grouped 1x1
    (1, 5, 6, 48, 96, 3, 1, 6, 6, 4),         # dilation past the input: only the centre tap
    (2, 14, 18, 64, 40, 3, 2, 2, 2, 8),       # strided + dilated, 5 outputs per group
    (1, 6, 40, 64, 64, 3, 1, 1, 1, 4),        # 16 per group: one chunk; rows of > 12 tiles
]


def _inputs(case, seed=0):
  n, h, w, cin, cout, k, _, _, _, g = case
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((k, k, cin // g, cout)), jnp.float32)
  return x, kernel


@needs_kernels
@pytest.mark.parametrize("case", CASES)
def test_native_grouped_conv_matches_lax_conv(case):
  *_, s, p, d, g = case
  x, kernel = _inputs(case)
  got = jax.jit(lambda a, b: grouped_conv.grouped_conv_native(a, b, (s, s), (p, p), (d, d), g))(
      x, kernel)
  want = grouped_conv.grouped_conv_reference(x, kernel, (s, s), (p, p), (d, d), g)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-5)


@needs_kernels
def test_native_grouped_conv_gradients_are_lax_convs():
  case = CASES[8]
  *_, s, p, d, g = case
  x, kernel = _inputs(case, seed=1)
  r = jnp.asarray(np.random.default_rng(2).standard_normal((2, 7, 9, 40)), jnp.float32)

  def grads(conv):
    return jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b, (s, s), (p, p), (d, d), g) * r),
                            argnums=(0, 1)))(x, kernel)

  with jax.default_matmul_precision("highest"):
    for got, want in zip(grads(grouped_conv.grouped_conv_native),
                         grads(grouped_conv.grouped_conv_reference)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_native_grouped_conv_rejects_other_dtypes_and_shapes():
  x, kernel = _inputs(CASES[0])
  with pytest.raises(TypeError, match="float32 only"):
    grouped_conv.grouped_conv_native(x.astype(jnp.bfloat16), kernel, (1, 1), (1, 1), (1, 1), 8)
  with pytest.raises(ValueError, match="groups=4"):
    grouped_conv.grouped_conv_native(x, kernel, (1, 1), (1, 1), (1, 1), 4)


def test_packed_kernel_is_block_diagonal_for_merged_groups():
  kernel = jnp.arange(3 * 3 * 4 * 16, dtype=jnp.float32).reshape(3, 3, 4, 16) + 1
  packed, out_per_group = grouped_conv.pack_grouped_kernel(kernel, groups=4)  # 4 out per group
  assert out_per_group == 8 and packed.shape == (2, 1, 3, 3, 8, 8)
  block = np.asarray(packed[0, 0, 1, 2])  # merged groups 0 and 1, tap (1, 2)
  np.testing.assert_array_equal(block[:4, :4], np.asarray(kernel[1, 2, :, 0:4]))
  np.testing.assert_array_equal(block[4:, 4:], np.asarray(kernel[1, 2, :, 4:8]))
  assert not block[:4, 4:].any() and not block[4:, :4].any()


@needs_kernels
def test_conv2d_uses_the_kernel_on_a_single_device(monkeypatch):
  args = ((1, 16, 16, 64), (3, 3, 2, 64), (2, 2), (1, 1), (1, 1), 32)
  assert conv_algorithms.conv_algorithm("auto", *args, backend="cpu") != "grouped_native"
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert conv_algorithms.conv_algorithm("auto", *args, backend="cpu") == "grouped_native"
  assert conv_algorithms.conv_algorithm("auto", *args, itemsize=2, backend="cpu") != \
      "grouped_native"
  assert conv_algorithms.conv_algorithm("xla", *args, backend="cpu") == "xla"


@needs_kernels
def test_seresnext_forward_on_the_kernel_equals_xla(monkeypatch):
  x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 32, 48, 3)), jnp.float32)
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  calls = []
  native = grouped_conv.grouped_conv_native
  monkeypatch.setattr(layers, "grouped_conv_native", lambda *a: calls.append(1) or native(*a))
  out = {}
  for impl in ("auto", "xla"):
    model = create_model("DeepSRNX50V3PlusD_m1", num_classes=5, rngs=nnx.Rngs(0),
                         width_multiplier=0.125, conv_impl=impl)
    graphdef, state = nnx.split(model)
    with jax.default_matmul_precision("highest"):
      out[impl] = np.asarray(jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x))
  assert len(calls) == 16  # traced once: every grouped 3x3 conv of the 3 + 4 + 6 + 3 blocks
  np.testing.assert_allclose(out["auto"], out["xla"], rtol=1e-4, atol=1e-4)


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
  code = ("import logging; logging.basicConfig();"
          "from jaxseg.kernels.native import native_kernels_available as a;"
          "from jaxseg.models import conv_algorithms as c;"
          "print('AVAILABLE', a(), a());"
          "print('ALGO', c.conv_algorithm('auto', (1, 8, 8, 64), (3, 3, 2, 64), (1, 1), (1, 1),"
          " (1, 1), 32, backend='cpu'))")
  env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"),
             JAXSEG_KERNEL_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  assert "AVAILABLE False False" in result.stdout
  assert "ALGO grouped_direct" in result.stdout
  assert result.stderr.count("native CPU kernels unavailable") == 1
  assert "no-such-compiler" in result.stderr
