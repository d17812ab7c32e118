"""hszhao/semseg PSPNet / PSANet: PSA mask op, key layout, logit parity, converter, CamVid.

Parity fixtures: tests/fixtures/semseg/ (make_fixtures.py: a torch re-implementation of
semseg's modules with tests/fixtures/formula.py SEMSEG weights, eval mode, float32, input
1x3x65x65; psamask_loops.py: the PSA mask CPU kernel). Keys and shapes are compared at full
width; logits at width 0.25 (every channel count / 4): at full width the 50M formula weights
and the 200 MB .pth cost ~15 s per model on the 2-core machine on top of the compile, and the
arithmetic checked is the same.
"""
import importlib.util
import json
import sys

from _testlib import FIXTURES as TEST_FIXTURES
from _testlib import assert_loss_decreases
from _testlib import camvid_smoke_config
from _testlib import camvid_training_metrics
from _testlib import compile_fast
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.convert import torch_layout
from jaxseg.convert.__main__ import main as convert_main
from jaxseg.convert.converter import convert_checkpoint
from jaxseg.convert.converter import unwrap_checkpoint
from jaxseg.convert.pth_reader import load_pth
from jaxseg.models import create_model
from jaxseg.models import get_spec
from jaxseg.models.psa_mask import psa_mask
from jaxseg.models.pspnet import adaptive_pool_matrix

FIXTURES = TEST_FIXTURES / "semseg"
sys.path[:0] = [str(FIXTURES.parent), str(FIXTURES)]
import formula  # noqa: E402  (numpy only)
import psamask_loops  # noqa: E402  (numpy only)

TINY = 0.0625


# --- the PSA mask op ----------------------------------------------------------------------
@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("feature,mask", [((5, 5), (9, 9)),   # semseg default: 2h - 1
                                          ((4, 6), (5, 3)),   # window smaller than the map
                                          ((3, 2), (7, 9))])  # window larger than needed
def test_psa_mask_matches_cpu_kernel(psa_type, feature, mask):
  rng = np.random.default_rng(0)
  (fh, fw), (mh, mw) = feature, mask
  x = rng.standard_normal((2, mh * mw, fh, fw)).astype(np.float32)
  want = psamask_loops.forward(x, psa_type, mh, mw)
  op = jax.jit(lambda v: psa_mask(v, psa_type, (mh, mw)))
  got = np.asarray(op(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
  np.testing.assert_array_equal(got, want)
  # The gradient is the kernels' backward (a scatter of the output gradient).
  g = rng.standard_normal(want.shape).astype(np.float32)
  grad = jax.grad(lambda v: jnp.sum(psa_mask(v, psa_type, (mh, mw)) * g.transpose(0, 2, 3, 1)))(
      x.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(np.asarray(grad).transpose(0, 3, 1, 2),
                                psamask_loops.backward(g, psa_type, mh, mw))


def test_psa_mask_rejects_bad_shapes():
  with pytest.raises(ValueError, match="channels"):
    psa_mask(jnp.zeros((1, 3, 3, 24)), 0, (5, 5))
  with pytest.raises(ValueError, match="odd"):
    psa_mask(jnp.zeros((1, 3, 3, 16)), 1, (4, 4))
  with pytest.raises(ValueError, match="psa_type"):
    psa_mask(jnp.zeros((1, 3, 3, 25)), 2, (5, 5))


@pytest.mark.parametrize("size,bins", [(9, 6), (9, 3), (5, 6), (60, 6), (7, 2), (1, 3)])
def test_adaptive_pool_bins_are_torchs(size, bins):
  """floor(i * n / b) .. ceil((i + 1) * n / b), checked against torch when present."""
  weights = adaptive_pool_matrix(size, bins)
  for i in range(bins):
    lo, hi = int(np.floor(i * size / bins)), int(np.ceil((i + 1) * size / bins))
    np.testing.assert_allclose(weights[i, lo:hi], 1.0 / (hi - lo), rtol=1e-7)
    assert weights[i, :lo].sum() == 0 and weights[i, hi:].sum() == 0
  try:
    import torch
  except ImportError:
    return
  x = np.arange(size * 3, dtype=np.float32).reshape(1, 1, size, 3) ** 1.5
  want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (bins, 1)).numpy()
  np.testing.assert_allclose(weights @ x[0, 0].mean(-1, keepdims=True), want[0, 0], rtol=1e-6)


# --- key layout -----------------------------------------------------------------------------
def _manifest(name):
  return json.loads((FIXTURES / f"{name}.json").read_text())


def _overrides(manifest):
  settings = manifest["settings"]
  out = {k: settings[k] for k in ("psa_type", "shrink_factor", "mask_size") if k in settings}
  if "width" in manifest:
    out["width_multiplier"] = manifest["width"]
  return out


@pytest.mark.parametrize("name", ["PSPNetR50", "PSANetR50"])
def test_keys_and_shapes_equal_semseg_state_dict(name):
  manifest = _manifest(f"{name}_full")  # the published widths
  model = nnx.eval_shape(lambda: create_model(name, num_classes=manifest["num_classes"],
                                              rngs=nnx.Rngs(0), **_overrides(manifest)))
  got = torch_layout.model_state_shapes(model, include_num_batches_tracked=True)
  want = {k: tuple(s) for k, s in manifest["keys"]}
  assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
  assert got == want


def test_resnet152_depth_and_psanet_default_mask():
  model = nnx.eval_shape(lambda: create_model("PSPNetR152", num_classes=150, rngs=nnx.Rngs(0)))
  assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
  psa = nnx.eval_shape(lambda: create_model("PSANetR101", num_classes=150, rngs=nnx.Rngs(0)))
  # semseg's ADE20K crop 465 -> 59 x 59 offsets (tool/train.py).
  assert psa.psa.attention[3].kernel.get_value().shape == (1, 1, 512, 59 * 59)
  spec = get_spec("PSANetR50")
  assert spec.aux_heads == ("aux",) and spec.classifier_keys[0] == "cls.4.weight"


# --- parity with the semseg reference --------------------------------------------------------
def _semseg_checkpoint(sd):
  """semseg tool/train.py's train_epoch_*.pth layout (DataParallel 'module.' prefix)."""
  return {"epoch": 100, "state_dict": {"module." + k: v for k, v in sd.items()},
          "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "momentum": 0.9,
                                                       "params": [0, 1]}]}}


def _write_pth(obj, path):
  torch = pytest.importorskip("torch")
  as_torch = lambda v: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v  # noqa
  obj = dict(obj, state_dict={k: as_torch(v) for k, v in obj["state_dict"].items()})
  torch.save(obj, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PSPNetR50", "PSANetR50"])
def test_logits_match_semseg(name, tmp_path):
  manifest = _manifest(name)
  sd = formula.state_dict(dict(manifest["keys"]), formula.SEMSEG)
  state_dict = sd
  if importlib.util.find_spec("torch") is not None:
    # A real train_epoch .pth through the torch-free reader when torch is installed.
    path = tmp_path / "train_epoch_100.pth"
    _write_pth(_semseg_checkpoint(sd), path)
    state_dict, meta = unwrap_checkpoint(load_pth(path))
    assert meta["epoch"] == 100
  del sd
  model = nnx.eval_shape(lambda: create_model(name, num_classes=manifest["num_classes"],
                                              rngs=nnx.Rngs(0), **_overrides(manifest)))
  report = torch_layout.load_state_dict(model, state_dict)
  assert report.ok and not report.reinitialised
  assert set(report.loaded) | set(report.ignored) == {k for k, _ in manifest["keys"]}
  assert all(k.endswith("num_batches_tracked") for k in report.ignored)
  del state_dict

  x = formula.semseg_input(manifest["input_shape"]).transpose(0, 2, 3, 1)
  graphdef, state = nnx.split(model)
  with jax.default_matmul_precision("highest"):
    forward = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v, return_aux=True))
    out, aux = compile_fast(forward, state, x)(state, x)
  ref = np.load(FIXTURES / f"{name}.npz")
  for got, want in ((out, ref["logits"]), (aux["aux"], ref["aux"])):
    got, want = np.asarray(got), want.transpose(0, 2, 3, 1)
    assert got.shape == want.shape and got.dtype == np.float32
    diff = got - want
    rel_l2 = np.linalg.norm(diff) / np.linalg.norm(want)
    # Also without the per-class offsets, which dominate these formula logits.
    centred = want - want.mean(axis=(1, 2), keepdims=True)
    rel_l2_centred = np.linalg.norm(diff - diff.mean(axis=(1, 2), keepdims=True)) / (
        np.linalg.norm(centred))
    argmax = (got.argmax(-1) == want.argmax(-1)).mean()
    print(f"{name}: rel L2 {rel_l2:.3g} (centred {rel_l2_centred:.3g}), argmax {argmax:.5f}")
    assert rel_l2 <= 1e-4 and rel_l2_centred <= 1e-4 and argmax >= 0.999


# --- converter: train_epoch_*.pth and the ImageNet trunk file ---------------------------------
def _tiny_state_dict(name, **overrides):
  model = nnx.eval_shape(lambda: create_model(name, num_classes=5, rngs=nnx.Rngs(0),
                                              width_multiplier=TINY, **overrides))
  shapes = torch_layout.model_state_shapes(model, include_num_batches_tracked=True)
  return formula.state_dict(shapes, formula.SEMSEG)


def test_convert_cli_reads_semseg_train_epoch_checkpoint(tmp_path, capsys):
  sd = _tiny_state_dict("PSPNetR50")
  src = tmp_path / "train_epoch_100.pth"
  _write_pth(_semseg_checkpoint(sd), src)
  out = tmp_path / "converted"
  # = python -m jaxseg.convert --src train_epoch_100.pth --model PSPNetR50 --out DIR
  assert convert_main(["--src", str(src), "--model", "PSPNetR50", "--out", str(out),
                       "--model-override", f"width_multiplier={TINY}"]) == 0
  printed = capsys.readouterr().out
  assert "num_classes=5" in printed and "missing" not in printed, printed
  from jaxseg.runtime.checkpoint import restore_model_variables
  model = create_model("PSPNetR50", num_classes=5, rngs=nnx.Rngs(3), width_multiplier=TINY)
  meta = restore_model_variables(out / "0", model, expected_model="PSPNetR50")
  assert meta["num_classes"] == 5 and meta["source_meta"]["epoch"] == 100
  restored = torch_layout.model_state_dict(model)
  for key in ("layer0.3.weight", "ppm.features.3.1.weight", "cls.4.bias", "aux.1.running_var"):
    np.testing.assert_array_equal(restored[key], sd[key])
  # Another class count re-initialises exactly cls.4 and aux.4.
  report = convert_checkpoint(src, "PSPNetR50", out_dir=tmp_path / "k7", num_classes=7,
                              model_overrides={"width_multiplier": TINY}, verbose=False)
  assert sorted(report.reinitialized) == sorted(get_spec("PSPNetR50").classifier_keys)
  assert not report.missing and not report.unexpected


def test_semseg_imagenet_trunk_layout_initialises_trunk():
  """resnet50_v2.pth keys (conv1/bn1/conv2/bn2/conv3/bn3, layer1..4, fc) -> layer0..layer4."""
  sd = _tiny_state_dict("PSANetR50", mask_size=9)
  stem = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
  trunk = {}
  for k, v in sd.items():
    if k.startswith("layer0."):
      _, idx, leaf = k.split(".", 2)
      trunk[f"{stem[idx]}.{leaf}"] = v
    elif k.startswith(("layer1.", "layer2.", "layer3.", "layer4.")):
      trunk[k] = v
  trunk["fc.weight"] = np.zeros((1000, 128), np.float32)
  trunk["fc.bias"] = np.zeros((1000,), np.float32)
  assert torch_layout.detect_trunk_format(trunk) == "semseg_resnet"
  model = nnx.eval_shape(lambda: create_model("PSANetR50", num_classes=5, rngs=nnx.Rngs(0),
                                              width_multiplier=TINY, mask_size=9))
  report = torch_layout.load_trunk_state_dict(model, trunk)
  assert report.ok
  assert set(report.loaded) == {k for k in sd if k.startswith("layer")
                                and not k.endswith("num_batches_tracked")}
  assert {"fc.weight", "fc.bias"} <= set(report.ignored)
  np.testing.assert_array_equal(np.asarray(model.layer0[6].kernel[...]),
                                trunk["conv3.weight"].transpose(2, 3, 1, 0))


# --- aux output contract, any input size -----------------------------------------------------
def test_aux_contract_and_any_input_size():
  """Train-mode aux logits at input size (float32, bf16 compute too); sizes semseg refuses."""
  model = create_model("PSANetR50", num_classes=5, rngs=nnx.Rngs(0), width_multiplier=TINY,
                       crop_size=65, dtype=jnp.bfloat16)
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, x, key):
    m = nnx.merge(graphdef, state)
    logits, aux = m(x, train=True, rngs=nnx.Rngs(dropout=key), return_aux=True)
    return logits, aux, m(x)

  x = np.asarray(formula.semseg_input((2, 3, 50, 70))).transpose(0, 2, 3, 1)  # (H-1) % 8 != 0
  key = jax.random.key(1)
  logits, aux, eval_logits = compile_fast(run, state, x, key)(state, x, key)
  assert set(aux) == set(get_spec("PSANetR50").aux_heads)
  for out in (logits, aux["aux"], eval_logits):
    assert out.shape == (2, 50, 70, 5) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
  assert not np.allclose(np.asarray(logits), np.asarray(aux["aux"]))


# --- CamVid smoke: the real loader and train step, main + 0.4 x aux ---------------------------
def test_camvid_pspnet_training_steps_lower_the_loss(shared_data):
  """configs/camvid_pspnet50.py at 1/16 width on 64x64 crops: both heads learn."""
  config = camvid_smoke_config(shared_data / "camvid", "PSPNetR50",
                               recipe="configs/camvid_pspnet50.py", lr=0.02)
  assert config.loss.aux_weight == 0.4  # semseg's aux_weight
  seen = camvid_training_metrics(config)
  first = seen[0]
  np.testing.assert_allclose(first["loss"], first["main_loss"] + 0.4 * first["aux_loss/aux"],
                             rtol=1e-5)
  assert_loss_decreases(seen)
  assert_loss_decreases(seen, "aux_loss/aux", factor=1.0)


def test_camvid_psanet_training_steps_lower_the_loss(shared_data):
  """semseg's PSA settings (bi-direction, shrink 2, the default 59x59 window, clipped to the
  8x8 feature map) on CamVid 64x64 crops."""
  config = camvid_smoke_config(shared_data / "camvid", "PSANetR50",
                               recipe="configs/camvid_pspnet50.py", lr=0.02, psa_type=2,
                               shrink_factor=2)
  seen = camvid_training_metrics(config)
  np.testing.assert_allclose(seen[0]["loss"],
                             seen[0]["main_loss"] + 0.4 * seen[0]["aux_loss/aux"], rtol=1e-5)
  assert_loss_decreases(seen)
