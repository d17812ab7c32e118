"""torchvision DeepLabV3 (ResNet-50/101) and MSeg HRNet-W48: layout, parity, aux contract, CamVid.

Fixtures: tests/fixtures/torchvision_mseg/ (make_fixtures.py: a torch re-implementation of the
original modules run with tests/fixtures/formula.py TORCHVISION_MSEG weights). The parity tests
need no torch: with torch they write the formula weights as real .pth files in the published
layouts (torchvision: a bare state dict; MSeg: {'state_dict': ...} with DataParallel's 'module.'
prefix) and read them back with jaxseg's own reader; without it the numpy state dict goes
straight to the converter's unwrapping.

Widths: DeepLabV3R50 is compared at full width (6 s of XLA compile at 65x65). HRNetW48 at
width 0.25 (widths 12/24/48/96): its compile time (~20 s) is the same at any width, but the
full-width weights (66M values) would add ~15 s of formula, .pth writing and reading; the
full-width layout is checked key by key against the original's state dict instead.
"""
import json
import sys

from _testlib import FIXTURES as TEST_FIXTURES
from _testlib import assert_loss_decreases
from _testlib import camvid_smoke_config
from _testlib import camvid_training_metrics
from _testlib import compile_fast
from flax import nnx
import jax
import numpy as np
import pytest

from jaxseg.convert import torch_layout
from jaxseg.convert.converter import unwrap_checkpoint
from jaxseg.convert.pth_reader import load_pth
from jaxseg.models import create_model
from jaxseg.models import registry
from jaxseg.models.interpolate import resize_bilinear_half_pixel
from jaxseg.models.layers import BatchNorm
from jaxseg.models.tv_deeplabv3 import Dropout

FIXTURES = TEST_FIXTURES / "torchvision_mseg"
sys.path.insert(0, str(FIXTURES.parent))
import formula  # noqa: E402  (numpy only)

TINY = 0.0625


def _manifest(name: str) -> dict:
  with open(FIXTURES / f"{name}.json") as f:
    m = json.load(f)
  m["shapes"] = {k: tuple(s) for k, s in m["entries"]}
  return m


def _state_dict_file(tmp_path, sd: dict, layout: str):
  """The checkpoint object as jaxseg reads it back: from a real .pth when torch is there."""
  obj = ({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
         if layout == "mseg" else dict(sd))
  try:
    import torch
  except ImportError:
    return obj
  to_t = lambda v: torch.from_numpy(np.array(v))  # noqa: E731
  tobj = ({"state_dict": {k: to_t(v) for k, v in obj["state_dict"].items()}, "epoch": 3}
          if layout == "mseg" else {k: to_t(v) for k, v in obj.items()})
  path = tmp_path / f"{layout}.pth"
  torch.save(tobj, path)
  return load_pth(path)


def _load_and_check_keys(model, obj, manifest):
  state_dict, _ = unwrap_checkpoint(obj)
  report = torch_layout.load_state_dict(model, state_dict)
  assert report.ok and not report.reinitialised
  # Every tensor of the original's state dict is consumed, and none is invented.
  assert set(report.loaded) | set(report.ignored) == set(manifest["shapes"])
  assert all(k.endswith("num_batches_tracked") for k in report.ignored)
  assert len(report.loaded) == len(manifest["shapes"]) - len(report.ignored)


def _forward(model, x, **kw):
  graphdef, state = nnx.split(model)
  with jax.default_matmul_precision("highest"):
    fn = compile_fast(jax.jit(lambda s, v: nnx.merge(graphdef, s)(v, **kw)), state, x)
  return jax.tree.map(np.asarray, fn(state, x))


def _assert_close(out, ref, what):
  assert out.shape == ref.shape and out.dtype == np.float32, what
  rel_l2 = np.linalg.norm(out - ref) / np.linalg.norm(ref)
  argmax = (out.argmax(-1) == ref.argmax(-1)).mean()
  print(f"{what}: rel L2 {rel_l2:.3g}, argmax agreement {argmax:.6f}")
  assert rel_l2 <= 1e-4, what
  assert argmax >= 0.999, what


# --- layout of the published checkpoints --------------------------------------------------------

@pytest.mark.parametrize("name, manifest, num_params", [
    ("DeepLabV3R50", "deeplabv3_r50_keys", 42_004_074),  # torchvision's meta num_params
    ("DeepLabV3R101", "deeplabv3_r101_keys", 60_996_202),
    ("HRNetW48", "hrnet_w48_keys", None),
])
def test_full_width_state_dict_layout_equals_original(name, manifest, num_params):
  m = _manifest(manifest)
  model = nnx.eval_shape(lambda: create_model(name, num_classes=m["classes"], rngs=nnx.Rngs(0)))
  got = torch_layout.model_state_shapes(model, include_num_batches_tracked=True)
  assert sorted(set(m["shapes"]) - set(got)) == [], "original entries the model lacks"
  assert sorted(set(got) - set(m["shapes"])) == [], "model entries the original lacks"
  assert {k: got[k] for k in m["shapes"]} == m["shapes"]
  if num_params is not None:
    params = nnx.state(model, nnx.Param)
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == num_params
  spec = registry.get_spec(name)
  assert spec.classifier_keys[0] in m["shapes"]
  assert m["shapes"][spec.classifier_keys[0]][0] == m["classes"]


# --- parity with the original forward ----------------------------------------------------------

def test_deeplabv3_r50_logits_match_torchvision(tmp_path):
  m = _manifest("deeplabv3_r50")
  sd = formula.state_dict(m["shapes"], formula.TORCHVISION_MSEG)
  obj = _state_dict_file(tmp_path, sd, "torchvision")
  del sd
  model = nnx.eval_shape(lambda: create_model("DeepLabV3R50", num_classes=m["classes"],
                                              rngs=nnx.Rngs(0), width_multiplier=m["width"]))
  _load_and_check_keys(model, obj, m)
  del obj
  with np.load(FIXTURES / "deeplabv3_r50.npz") as f:
    x, ref, ref_aux = f["input"], f["logits"], f["aux"]
  out, aux = _forward(model, x, return_aux=True)
  _assert_close(out, ref, "DeepLabV3R50 out")
  _assert_close(aux["aux"], ref_aux, "DeepLabV3R50 aux")


def test_hrnet_w48_logits_match_mseg(tmp_path):
  m = _manifest("hrnet_w48")
  obj = _state_dict_file(tmp_path, formula.state_dict(m["shapes"], formula.TORCHVISION_MSEG),
                         "mseg")
  # A concrete model: its numpy initialisers take half the time of nnx.eval_shape's trace.
  model = create_model("HRNetW48", num_classes=m["classes"], rngs=nnx.Rngs(0),
                       width_multiplier=m["width"])
  _load_and_check_keys(model, obj, m)
  momenta = {n.momentum for _, n in nnx.iter_modules(model) if isinstance(n, BatchNorm)}
  assert momenta == {0.01}  # MSeg's BN_MOMENTUM, through the norm cfg
  with np.load(FIXTURES / "hrnet_w48.npz") as f:
    x, ref = f["input"], f["logits"]
  _assert_close(_forward(model, x), ref, "HRNetW48")


def test_resize_half_pixel_matches_torch():
  torch = pytest.importorskip("torch")
  x = np.asarray(formula.splitmix_uniform("resize", 2 * 7 * 5 * 3), np.float32).reshape(2, 7, 5, 3)
  sizes = [(13, 11), (3, 2), (7, 9), (1, 1), (20, 5)]
  got = jax.jit(lambda v: [resize_bilinear_half_pixel(v, s) for s in sizes])(x)  # one compile
  for size, g in zip(sizes, got):
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size,
                                           mode="bilinear", align_corners=False)
    np.testing.assert_allclose(np.asarray(g), want.numpy().transpose(0, 2, 3, 1), rtol=0,
                               atol=1e-6)
  one = x[:, :1, :1]  # a 1x1 map (ASPP pooling) becomes a constant image
  np.testing.assert_array_equal(np.asarray(resize_bilinear_half_pixel(one, (4, 3))),
                                np.broadcast_to(one, (2, 4, 3, 3)))


# --- converter command line on the two published layouts --------------------------------------

@pytest.mark.parametrize("name, layout, classifier", [
    ("DeepLabV3R50", "torchvision", "classifier.4.weight"),
    ("HRNetW48", "mseg", "last_layer.3.weight"),
])
def test_convert_command_line(tmp_path, name, layout, classifier):
  torch = pytest.importorskip("torch")
  from _testlib import read_checkpoint_params

  from jaxseg.convert.__main__ import main
  model = create_model(name, num_classes=7, rngs=nnx.Rngs(1), width_multiplier=TINY)
  sd = torch_layout.model_state_dict(model, include_num_batches_tracked=True)
  tsd = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
  src = tmp_path / "weights.pth"
  # deeplabv3_resnet50_coco-*.pth is a bare state dict; mseg-3m.pth wraps a DataParallel one.
  torch.save({"state_dict": {"module." + k: v for k, v in tsd.items()}} if layout == "mseg"
             else tsd, src)
  out = tmp_path / "converted"
  assert main(["--src", str(src), "--model", name, "--out", str(out),
               "--model-override", f"width_multiplier={TINY}"]) == 0
  params = read_checkpoint_params(out / "0")["params"]  # flat: 'classifier/4/kernel'
  kernel = params[classifier.rsplit(".", 1)[0].replace(".", "/") + "/kernel"]
  assert kernel.shape[-1] == 7  # the class count inferred from the classifier
  np.testing.assert_array_equal(kernel, sd[classifier].transpose(2, 3, 1, 0))


# --- the auxiliary-output contract -------------------------------------------------------------

def test_deeplabv3_aux_output_contract():
  """Shapes and types by abstract evaluation (the train-mode values: the CamVid test below)."""
  assert registry.get_spec("DeepLabV3R50").aux_heads == ("aux",)
  assert registry.get_spec("HRNetW48").aux_heads == ()
  model = create_model("DeepLabV3R50", num_classes=3, rngs=nnx.Rngs(0), width_multiplier=TINY)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((2, 33, 41, 3), np.float32)

  def train_forward(state, x):
    return nnx.merge(graphdef, state)(x, train=True, rngs=nnx.Rngs(dropout=0), return_aux=True)

  logits, aux = jax.eval_shape(train_forward, state, x)
  assert set(aux) == {"aux"}
  plain = jax.eval_shape(lambda s, v: nnx.merge(graphdef, s)(v), state, x)  # logits only
  for y in (logits, aux["aux"], plain):
    assert y.shape == (2, 33, 41, 3) and y.dtype == np.float32
  no_aux = nnx.eval_shape(lambda: create_model("DeepLabV3R50", num_classes=3, rngs=nnx.Rngs(0),
                                               width_multiplier=TINY, aux=False))
  assert no_aux.aux_classifier is None
  assert not any(k.startswith("aux_classifier") for k in torch_layout.model_state_shapes(no_aux))
  with pytest.raises(ValueError, match="aux=False"):
    no_aux(x, return_aux=True)


def test_dropout_is_elementwise_and_keyed_at_call_time():
  """torchvision's heads use nn.Dropout (element-wise), not Dropout2d."""
  drop = Dropout(0.5)
  x = np.ones((1, 8, 8, 16), np.float32)
  np.testing.assert_array_equal(drop(x), x)  # eval: identity
  a = np.asarray(drop(x, train=True, rngs=nnx.Rngs(dropout=0)))
  b = np.asarray(drop(x, train=True, rngs=nnx.Rngs(dropout=1)))
  assert set(np.unique(a)) == {0.0, 2.0} and not np.array_equal(a, b)
  assert 0 < (a[0, :, :, 0] == 0).mean() < 1  # not whole channels
  with pytest.raises(ValueError, match="dropout"):
    drop(x, train=True)


# --- CamVid: a few training steps lower the loss -----------------------------------------------

def test_camvid_deeplabv3_training_steps_lower_the_loss(shared_data):
  """configs/camvid_deeplabv3_r50.py at 1/16 width: main + 0.5 x aux, both reported."""
  config = camvid_smoke_config(shared_data / "camvid", "DeepLabV3R50",
                               recipe="configs/camvid_deeplabv3_r50.py")
  seen = camvid_training_metrics(config)
  assert_loss_decreases(seen)
  last = seen[-1]
  assert last["loss"] == pytest.approx(last["main_loss"] + 0.5 * last["aux_loss/aux"], rel=1e-5)


def test_camvid_hrnet_training_steps_lower_the_loss(shared_data):
  """HRNet's modules (transitions, fusions, concat head) trained on CamVid crops.

  Two stages of one module of one block per branch (2 then 3 branches: every transition and
  fusion kind) instead of W48's 1/4/3 modules of 4 blocks over 3 stages: the full depth's train
  step alone compiles for minutes on a 2-core CPU (the same code runs once per module; the full
  W48 forward is checked against MSeg above).
  """
  from jaxseg.models.hrnet import HRNet
  from jaxseg.models.hrnet import w48_stages
  from jaxseg.models.layer_cfg import LayerCfg
  stages = [dict(s, num_modules=1, num_blocks=(1,) * len(s["channels"]))
            for s in w48_stages()[:2]]

  def build_model(config, num_classes, *, rngs, bn_groups=1):
    return HRNet(num_classes, stages=stages, cfg=LayerCfg(bn_groups=bn_groups), rngs=rngs,
                 width_multiplier=config.model.overrides.width_multiplier)

  config = camvid_smoke_config(shared_data / "camvid", "HRNetW48",
                               recipe="configs/camvid_hrnet_w48.py")
  assert_loss_decreases(camvid_training_metrics(config, build_model=build_model))


@pytest.mark.parametrize("path, name", [("configs/voc_deeplabv3_r101.py", "DeepLabV3R101"),
                                        ("configs/camvid_deeplabv3_r50.py", "DeepLabV3R50"),
                                        ("configs/camvid_hrnet_w48.py", "HRNetW48")])
def test_recipes_name_registered_models_and_accepted_overrides(path, name):
  from _testlib import load_config
  c = load_config(path)
  assert c.model.name == name
  accepted = set(registry.get_spec(name).overrides) | {"conv_precision", "conv_impl", "norm",
                                                        "norm_groups"}
  assert set(c.model.overrides) <= accepted
  if registry.get_spec(name).aux_heads:
    assert c.loss.aux_weight == 0.5  # torchvision's aux loss weight
