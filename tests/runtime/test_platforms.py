"""The GPU programs, checked on a CPU host: lowered for CUDA (no compile, no GPU).

Layers choose their algorithm while traced (jaxseg/runtime/platforms.py): a program lowered for CUDA
must hold plain convolutions, no CPU-only custom call (the native grouped conv), no CPU fusion
barriers, and the Pallas Triton warp kernel. The same programs lowered for the CPU are the
positive control: there the CPU paths must appear, so the checks can fail.
"""
import re
from unittest import mock

from _testlib import compile_fast
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import kernels
from jaxseg.config import base as config_base
from jaxseg.inference import sliding
from jaxseg.kernels import native
from jaxseg.kernels import pallas_triton
from jaxseg.models import conv_algorithms
from jaxseg.models import layers
from jaxseg.models import registry
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.resnet import BasicBlock
from jaxseg.models.seresnext import SEResNeXtBottleneck
from jaxseg.models.wider_resnet import IdentityResidualBlock
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import platforms
from jaxseg.runtime import variables
from jaxseg.sdcnet import warp_step
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

NUM_CLASSES = 5
CROP = 32
TRITON = "__gpu$xla.gpu.triton"


def custom_calls(text: str) -> list[str]:
  """Targets of every custom call in StableHLO text."""
  return re.findall(r"custom_call @([\w$.]+)", text)


def op_count(text: str, op: str) -> int:
  return len(re.findall(rf"stablehlo\.{op}\b", text))


def assert_gpu_program(text: str, num_convs: int) -> None:
  """CUDA program: no jaxseg CPU kernel, no CPU fusion barrier, every conv a convolution."""
  cpu_kernels = [t for t in custom_calls(text) if t.startswith("jaxseg_")]
  assert not cpu_kernels, f"CPU-only custom calls in the CUDA program: {set(cpu_kernels)}"
  assert op_count(text, "case") == 0, "block_output's CPU fusion barriers in the CUDA program"
  assert op_count(text, "convolution") >= num_convs


def test_target_platform_follows_lowering_for():
  assert platforms.target_platform() == "cpu"
  with platforms.lowering_for("cuda"):
    assert platforms.target_platform() == "cuda" and platforms.targets_gpu()
    assert not platforms.targets_host_backend()
  assert platforms.target_platform() == "cpu"
  with pytest.raises(ValueError, match="lowering_for: platform='gpu'"):
    with platforms.lowering_for("gpu"):
      pass


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree,
                      shardings)


@pytest.mark.parametrize("model", [
    "DeepWV3Plus",
    # ~13 s of CPU: tracing 16 blocks' train-mode BatchNorm dominates.
    pytest.param("DeepSRNX50V3PlusD_m1", marks=pytest.mark.slow)])
def test_train_step_lowers_for_cuda(model):
  """bf16 train step, tiny width, 2-device data-parallel mesh: the GPU program."""
  from jaxseg.config.base import base_config
  config = base_config()
  config.precision = "bf16"
  config.model.name = model
  config.model.overrides.width_multiplier = 0.0625
  mesh = mesh_lib.create_mesh({"data": 2}, devices=jax.devices()[:2])
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=10)
  loss_cfg = config_base.loss_config()
  loss_cfg.num_classes = NUM_CLASSES
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=NUM_CLASSES, tx=tx,
                                       loss_fn=losses.make_loss_fn(loss_cfg))
  batched = mesh_lib.batch_sharding(mesh)
  batch = {"image": jax.ShapeDtypeStruct((4, CROP, CROP, 3), jnp.uint8, sharding=batched),
           "label": jax.ShapeDtypeStruct((4, CROP, CROP), jnp.uint8, sharding=batched)}
  state = _abstract(fns.abstract_state, fns.state_sharding)
  key = jax.eval_shape(lambda: jax.random.key(0))
  text = platforms.lower_for(fns.train_step, "cuda", state, batch, key).as_text()
  num_convs = sum(key.endswith("kernel") for key in fns.abstract_state.params)
  # Forward, input gradient and kernel gradient of each conv (the stem has no input gradient).
  assert_gpu_program(text, 3 * num_convs - 1)
  assert "bf16" in text and "mhlo.num_partitions = 2" in text


def _segmenter_program(platform: str) -> str:
  """Sliding multi-scale + flip eval of fp32 SE-ResNeXt50 (tiny) on one device, one chunk."""
  model = registry.create_model("DeepSRNX50V3PlusD_m1", num_classes=NUM_CLASSES,
                                rngs=nnx.Rngs(0), width_multiplier=0.125)
  layout, params, stats = variables.split_model(model)
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])

  def apply_fn(model_vars, x):
    return layout.merge(model_vars["params"], model_vars["batch_stats"])(x)

  settings = sliding.InferenceSettings.of(mode="sliding", crop_size=CROP, scales=(0.5, 1.0),
                                       flip=True)
  seg = sliding.Segmenter(apply_fn, num_classes=NUM_CLASSES, mesh=mesh, settings=settings)
  plan = seg.plans(48, 64, 1)[-1]
  model_vars = jax.eval_shape(lambda: {"params": params, "batch_stats": stats})
  xs = jax.ShapeDtypeStruct((1, settings.num_variants, *plan.padded_hw, 3), jnp.float32)
  canvas = jax.ShapeDtypeStruct((1, settings.num_variants, *plan.padded_hw, NUM_CLASSES),
                                jnp.float32)
  # A single-device process is where Conv2d would pick the native kernel on the CPU.
  with mock.patch.object(conv_algorithms.jax, "device_count", return_value=1):
    chunk_fn = seg._chunk  # pylint: disable=protected-access
    lowered = platforms.lower_for(chunk_fn, platform, model_vars, xs, canvas, plan.items[0],
                                  plan.weights[0], plan.crop_hw)
  return lowered.as_text()


def test_eval_segmenter_lowers_for_cuda():
  text = _segmenter_program("cuda")
  assert_gpu_program(text, 1)
  cpu_text = _segmenter_program("cpu")  # the positive control
  cpu_paths = op_count(cpu_text, "dot_general") + op_count(cpu_text, "case")
  assert cpu_paths > 0 and op_count(cpu_text, "convolution") < op_count(text, "convolution")
  if native.native_kernels_available():
    assert "jaxseg_grouped_conv" in custom_calls(cpu_text)


@pytest.mark.skipif(not pallas_triton.available(),
                    reason="jax.experimental.pallas.triton not importable")
def test_sdcnet_warp_lowers_to_triton_for_cuda():
  """Propagation's warp (bilinear image + nearest label) and the SDCNet training gradient."""
  flow = jax.ShapeDtypeStruct((1, 40, 64, 2), jnp.float32)
  image = jax.ShapeDtypeStruct((1, 40, 64, 3), jnp.float32)
  label = jax.ShapeDtypeStruct((1, 40, 64), jnp.float32)
  warp = jax.jit(warp_step._warp, static_argnames="bilinear")  # pylint: disable=protected-access
  for bilinear in (True, False):
    text = platforms.lower_for(warp, "cuda", flow, image, label, bilinear=bilinear).as_text()
    assert custom_calls(text).count(TRITON) == 2, (bilinear, custom_calls(text))
    cpu_text = platforms.lower_for(warp, "cpu", flow, image, label, bilinear=bilinear).as_text()
    assert TRITON not in custom_calls(cpu_text)

  grad = jax.jit(jax.value_and_grad(lambda i, f: jnp.sum(kernels.resample2d(i, f)),
                                    argnums=(0, 1)))
  text = platforms.lower_for(grad, "cuda", image, flow).as_text()
  # The forward kernel and the flow-gradient kernel; the image gradient is XLA's scatter-add.
  assert custom_calls(text).count(TRITON) == 2
  assert op_count(text, "scatter") >= 1


# --------------------------------------------------------------------- remat --
def _block_objective(make_block, x, remat: str):
  """(objective, params): loss with parameter gradients, new BN statistics and the output of
  one block in train mode (dropout drawn from a fixed key)."""
  block = make_block(LayerCfg(remat=remat))
  layout, params, stats = variables.split_model(block)

  def objective(p):
    live = layout.merge(p, stats)
    y = live(x, train=True, rngs=nnx.Rngs(dropout=3))
    return jnp.sum(jnp.sin(y)), (variables.split_model(live)[2], y)

  return jax.value_and_grad(objective, has_aux=True), params


BLOCKS = {
    "wider_resnet": lambda cfg: IdentityResidualBlock(8, (8, 8, 16), dilation=2, dropout=0.5,
                                                      cfg=cfg, rngs=nnx.Rngs(0)),
    "seresnext": lambda cfg: SEResNeXtBottleneck(
        8, 8, 2, 16, reduction=4, stride=2, dilation=1, cfg=cfg, rngs=nnx.Rngs(0),
        downsample=nnx.List([layers.Conv2d(8, 16, 1, stride=2, rngs=nnx.Rngs(1)),
                             layers.BatchNorm(16)])),
    "resnet_basic": lambda cfg: BasicBlock(8, 8, 8, stride=1, dilation=1, downsample=None,
                                           cfg=cfg, rngs=nnx.Rngs(0)),
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_remat_block_equals_none(kind):
  """train.remat='block' changes what is stored, not what is computed: same loss, gradients,
  BN statistics and dropout masks."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 8)), jnp.float32)
  plain, p_plain = _block_objective(BLOCKS[kind], x, "none")
  remat, p_remat = _block_objective(BLOCKS[kind], x, "block")
  both = jax.jit(lambda a, b: (plain(a), remat(b)))  # one compilation for both
  got_plain, got_remat = compile_fast(both, p_plain, p_remat)(p_plain, p_remat)
  for a, b in zip(jax.tree.leaves(got_plain), jax.tree.leaves(got_remat)):
    # Recomputation may fuse differently: equal up to float32 rounding.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_train_remat_reaches_every_block():
  """config.train.remat='block' checkpoints each residual block of the trained model."""
  from jaxseg.config.base import base_config
  config = base_config()
  config.model.name = "DeepR18V3PlusD_m1"
  config.model.overrides.width_multiplier = 0.0625
  config.train.remat = "block"
  model = registry.from_config(config, NUM_CLASSES, rngs=nnx.Rngs(0))
  blocks = [m for _, m in nnx.iter_graph(model) if hasattr(m, "remat")]
  assert len(blocks) == 8 and all(b.remat for b in blocks)
  layout, params, stats = variables.split_model(model)
  x = jnp.zeros((2, CROP, CROP, 3))
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda p: jnp.sum(layout.merge(p, stats)(x, train=True))))(params)
  assert str(jaxpr).count("remat") == 8
  config.train.remat = "layer"
  with pytest.raises(ValueError, match="train.remat='layer'"):
    registry.from_config(config, NUM_CLASSES, rngs=nnx.Rngs(0))
