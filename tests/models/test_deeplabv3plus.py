"""DeepLabV3+'s ASPP image pooling window (config.eval.mode='pooling', eval.py's
`--fixed_aspp_pool`): an option of the ASPP itself, numerically the former
`inference/model.FixedPoolASPP` (the expected numbers below were computed with it)."""
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.inference import model as inference_model
from jaxseg.models import create_model
from jaxseg.models.deeplabv3plus import ASPP
from jaxseg.models.layer_cfg import LayerCfg
from jaxseg.models.layers import apply_layers

# Image-branch channel sums of the tiny model's ASPP at rows ::5, columns ::6 of sample 0
# (FixedPoolASPP(aspp, window) on `_aspp_input()`, before the option moved into the ASPP).
FIXED_POOL_3 = [[3.1501303, 1.7712514, 2.904603], [5.7006054, 2.0798783, 4.314519],
                [2.602385, 2.7184615, 2.488123]]
FIXED_POOL_5 = [[1.9343693, 1.3810338, 0.8276981], [2.0719662, 1.6108248, 1.1496835],
                [2.2095633, 1.8406161, 1.4716688]]
GLOBAL_POOL = 0.6400931
# Logits [0, ::31, ::39, k] of the whole tiny model with window 3 on `_image()`.
MODEL_POOL_3 = {
    0: [[3.7010016, 6.5953712, 1.0873749], [5.5935860, 4.5210447, 6.7878838],
        [6.5368805, 8.0541000, 3.4680064]],
    4: [[-4.9275479, -12.482958, -3.9262462], [-9.3313408, -8.0634594, -8.1534014],
        [-7.0548768, -10.922115, -4.2139626]],
}


def _model():
  return create_model("DeepR18V3PlusD_m1", num_classes=5, rngs=nnx.Rngs(2),
                      width_multiplier=0.0625)


def _aspp_input(aspp):
  channels = aspp.img_conv[0].kernel.shape[2]
  return jnp.asarray(np.random.default_rng(1).normal(size=(2, 11, 13, channels)), jnp.float32)


def _image_branch_sums(aspp, x):
  out = np.asarray(aspp(x))
  red = out.shape[-1] // 5
  return out, out[..., :red].sum(-1)[0, ::5, ::6]


def test_aspp_pool_window_is_the_former_fixed_pool_aspp():
  """The option changes the image branch only, to the old numbers; None is global pooling."""
  aspp = _model().aspp
  x = _aspp_input(aspp)
  assert aspp.image_pool_window is None
  plain, sums = _image_branch_sums(aspp, x)
  np.testing.assert_allclose(sums, np.full((3, 3), GLOBAL_POOL), rtol=1e-5)
  for window, want in ((3, FIXED_POOL_3), (5, FIXED_POOL_5)):
    aspp.image_pool_window = window
    out, sums = _image_branch_sums(aspp, x)
    np.testing.assert_allclose(sums, want, rtol=1e-5, err_msg=f"window {window}")
    red = out.shape[-1] // 5
    np.testing.assert_array_equal(out[..., red:], plain[..., red:])  # other branches unchanged
    assert np.abs(out[..., :red] - plain[..., :red]).max() > 0.1
  # A window as large as the map (the window shrinks to it) is the global pooling.
  aspp.image_pool_window = 105
  np.testing.assert_allclose(np.asarray(aspp(x)), plain, rtol=1e-6, atol=1e-6)


def test_aspp_pool_window_averages_windows_then_upsamples_align_corners():
  aspp = _model().aspp
  x = _aspp_input(aspp)
  aspp.image_pool_window = 3
  out = np.asarray(aspp(x))
  red = out.shape[-1] // 5

  def branch(win):
    pooled = win.mean((1, 2), keepdims=True)
    return np.asarray(apply_layers(aspp.img_conv, pooled, train=False, rngs=None))[:, 0, 0]

  # 11 x 13 map, window 3 (stride 3, no padding): 3 x 4 windows; the corners are the corner
  # windows' values (align_corners=True), the last row / column read the last full window.
  np.testing.assert_allclose(out[:, 0, 0, :red], branch(x[:, :3, :3]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[:, -1, -1, :red], branch(x[:, 6:9, 9:12]), rtol=1e-5,
                             atol=1e-6)


def test_aspp_pool_window_at_construction_and_validation():
  cfg = LayerCfg()
  built = ASPP(8, 4, output_stride=16, cfg=cfg, rngs=nnx.Rngs(0), image_pool_window=3)
  later = ASPP(8, 4, output_stride=16, cfg=cfg, rngs=nnx.Rngs(0))
  later.image_pool_window = 3
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 7, 8, 8)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(built(x)), np.asarray(later(x)))
  for bad in (0, -1, 2.5, "3", True):
    with pytest.raises(ValueError, match="image_pool_window"):
      ASPP(8, 4, output_stride=16, cfg=cfg, rngs=nnx.Rngs(0), image_pool_window=bad)
  later.image_pool_window = 0
  with pytest.raises(ValueError, match="image_pool_window"):
    later(x)


def test_model_set_image_pool_window_changes_logits_to_the_former_numbers():
  """The model-level switch reaches the ASPP: on a feature map larger than the window the
  logits leave global pooling's and equal FixedPoolASPP's; None restores global pooling."""
  model = _model()
  image = jnp.asarray(np.random.default_rng(2).normal(size=(1, 64, 80, 3)), jnp.float32)
  plain = np.asarray(model(image))
  model.set_image_pool_window(3)
  assert model.aspp.image_pool_window == 3
  fixed = np.asarray(model(image))
  assert np.abs(fixed - plain).max() > 1.0
  for k, want in MODEL_POOL_3.items():
    np.testing.assert_allclose(fixed[0, ::31, ::39, k], want, rtol=1e-5, atol=1e-5)
  model.set_image_pool_window(None)
  np.testing.assert_array_equal(np.asarray(model(image)), plain)


@pytest.mark.parametrize("name", ["DeepWV3Plus", "DeepSRNX50V3PlusD_m1"])
def test_every_deeplabv3plus_takes_the_pool_window(name):
  model = nnx.eval_shape(lambda: create_model(name, num_classes=3, rngs=nnx.Rngs(0),
                                              width_multiplier=0.0625))
  assert inference_model.use_fixed_aspp_pool(model, 105) is model
  assert model.aspp.image_pool_window == 105


@pytest.mark.parametrize("name", ["DeepLabV3R50", "PSPNetR50", "HRNetW48"])
def test_pooling_mode_without_a_deeplabv3plus_aspp_names_the_setting(name):
  model = nnx.eval_shape(lambda: create_model(name, num_classes=3, rngs=nnx.Rngs(0),
                                              width_multiplier=0.0625))
  with pytest.raises(ValueError, match=r"config.eval.mode='pooling' needs a model with an ASPP"):
    inference_model.use_fixed_aspp_pool(model, 105)
