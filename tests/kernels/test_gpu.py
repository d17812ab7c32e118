"""GPU checks (marker `gpu`): the Pallas warp against XLA, a bf16 train step and an eval run.

Skipped without a GPU. benchmarks/gpu/run.sh runs them on one (JAXSEG_TEST_PLATFORMS=auto lets
tests/conftest.py keep the GPU); its CPU dry run sets JAXSEG_GPU_TESTS_ON_CPU=1, which runs the
same bodies on CPU with the Pallas kernels interpreted, so they are known to work beforehand.
Sizes are tiny either way: these prove execution and agreement, benchmarks/ measure speed.
"""
import os

from _testlib import load_module
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.kernels import pallas_triton
from jaxseg.kernels.resample2d import resample2d

pytestmark = pytest.mark.gpu
# The dry run's tiny demo model; benchmarks/gpu/suite.py --dry-run times the same programs.
TINY = {"model": "DeepR18V3PlusD_m1", "width": 0.0625, "crop": 32, "batch": 2}


@pytest.fixture(scope="module")
def on_gpu() -> bool:
  if pallas_triton.gpu_backend():
    return True
  if os.environ.get("JAXSEG_GPU_TESTS_ON_CPU") == "1":
    return False
  pytest.skip("needs a GPU (JAXSEG_GPU_TESTS_ON_CPU=1 runs these on CPU, Pallas interpreted)")


def _warp_case(seed: int, dtype, channels: int, n: int = 2, h: int = 37, w: int = 45):
  """Non-integer flows up to 20 px (many samples outside the image, no floor ties)."""
  rng = np.random.default_rng(seed)
  flow = rng.uniform(-20, 20, (n, h, w, 2)).astype(np.float32)
  flow += 0.37 * (np.abs(flow - np.round(flow)) < 1e-3)
  if np.issubdtype(dtype, np.integer):
    image = rng.integers(0, 19, (n, h, w, channels)).astype(dtype)
  else:
    image = rng.uniform(0, 255, (n, h, w, channels)).astype(dtype)
  return jnp.asarray(image), jnp.asarray(flow)


WARP_CASES = [("bilinear", np.float32, 3), ("bilinear", np.float32, 20),
              ("nearest", np.uint8, 1), ("nearest", np.int32, 1), ("nearest", np.float32, 3)]


@pytest.mark.parametrize("mode,dtype,channels", WARP_CASES)
def test_pallas_warp_forward_equals_xla(on_gpu, mode, dtype, channels):
  image, flow = _warp_case(0, dtype, channels)
  xla = jax.jit(lambda i, f: resample2d(i, f, mode=mode, impl="xla"))(image, flow)
  pallas = jax.jit(lambda i, f: resample2d(i, f, mode=mode, impl="pallas",
                                           interpret=not on_gpu))(image, flow)
  assert pallas.dtype == xla.dtype and pallas.shape == xla.shape
  if mode == "nearest":
    np.testing.assert_array_equal(np.asarray(pallas), np.asarray(xla))
  else:  # same arithmetic; only contraction (FMA) order may differ, on values up to 255
    np.testing.assert_allclose(np.asarray(pallas), np.asarray(xla), rtol=1e-5, atol=1e-3)


def test_pallas_warp_backward_equals_xla(on_gpu):
  image, flow = _warp_case(1, np.float32, 3)
  cot = jnp.asarray(np.random.default_rng(2).normal(size=image.shape).astype(np.float32))

  def grads(impl: str, **kw):
    loss = lambda i, f: jnp.sum(resample2d(i, f, mode="bilinear", impl=impl, **kw) * cot)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(image, flow)

  xla = grads("xla")
  pallas = grads("pallas", interpret=not on_gpu)
  for name, a, b in zip(("image", "flow"), pallas, xla):
    a, b = np.asarray(a), np.asarray(b)
    # Image grads scatter-add in any order; flow grads sum 4 taps x C channels of values ~255.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


def test_pallas_warp_is_a_triton_kernel_on_gpu(on_gpu):
  if not on_gpu:
    pytest.skip("a Triton kernel exists only on a GPU backend")
  image, flow = _warp_case(3, np.float32, 3)
  hlo = jax.jit(lambda i, f: resample2d(i, f, impl="pallas")).lower(image, flow).as_text()
  assert "triton" in hlo.lower(), "impl='pallas' did not lower to a Triton custom call"
  auto = jax.jit(lambda i, f: resample2d(i, f, impl="auto")).lower(image, flow).as_text()
  assert "triton" in auto.lower(), "impl='auto' did not choose the Pallas kernel on the GPU"


def test_bf16_train_step(on_gpu):
  """The timed program of benchmarks/train_step.py, bf16, a few steps: finite and learning."""
  bench = load_module("benchmarks/train_step.py")
  from _testlib import load_config
  config = load_config("configs/demo.py")
  config.precision = "bf16"
  config.model.overrides.width_multiplier = TINY["width"]
  config.data.crop_size = TINY["crop"]
  config.train.batch_size = TINY["batch"]
  config.train.bs_mult = 0
  config.mesh.shape = {"data": 1}
  result = bench.benchmark(config, steps=1, warmup=1, num_classes=19)
  assert result["precision"] == "bf16" and np.isfinite(result["final_loss"])
  assert result["platform"] == ("gpu" if on_gpu else "cpu")
  if on_gpu:
    assert result["peak_memory_source"] == "memory_stats.peak_bytes_in_use"
    assert result["flops_per_step"] and result["mfu"] is not None


def test_eval_multiscale_flip_sliding(on_gpu):
  """benchmarks/eval.py's one-image protocol: multi-scale + flip sliding, bf16."""
  bench = load_module("benchmarks/eval.py")
  args = bench.parse_args(["--width-multiplier", str(TINY["width"]), "--height", "32",
                           "--width", "64", "--repeats", "1", "--scales", "0.5,1.0,2.0"])
  row = bench.run_one(TINY["model"], "bf16", "ms_flip_sliding", args)
  assert row["flip"] and row["scales"] == [0.5, 1.0, 2.0]
  assert row["crops"] >= 6 and row["seconds_per_image"] > 0
  assert row["peak_kind"] == ("device" if on_gpu else "host_rss")
