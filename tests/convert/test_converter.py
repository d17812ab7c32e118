"""Tests for the .pth -> orbax converter (jaxseg.convert)."""
import collections
import pathlib

from _testlib import SHARED
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.convert.converter import convert_checkpoint
from jaxseg.convert.converter import unwrap_checkpoint
from jaxseg.convert.pth_reader import load_pth

_MODEL = "DeepR18V3PlusD_m1"
_OVERRIDES = {"width_multiplier": 0.125}
_CLASSES = 3


# --- unwrap_checkpoint on the reference files (no model needed) ------------------------------


def _pth(reference_dir: pathlib.Path, name: str) -> pathlib.Path:
  path = reference_dir / "pth_formats" / name
  if not path.is_file():
    pytest.skip(f"{path} not found")
  return path


@pytest.mark.parametrize("name", ["seg_checkpoint_legacy.pth", "seg_checkpoint_zip.pth"])
def test_unwrap_segmentation_checkpoint(reference_dir, name):
  sd, meta = unwrap_checkpoint(load_pth(_pth(reference_dir, name)))
  assert list(sd) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                      "bn1.running_var", "bn1.num_batches_tracked", "final.weight", "final.bias"]
  assert meta["epoch"] == 87 and type(meta["mean_iu"]) is float
  assert meta["mean_iu"] == 0.8123456789 and meta["command"].startswith("python -m torch")
  assert "optimizer" not in meta


@pytest.mark.parametrize("name, want", [
    ("sdcnet_checkpoint_legacy.pth", {"epoch": 12, "arch": "SDCNet2DRecon"}),
    ("flownet2_checkpoint_legacy.pth", {"epoch": 0, "best_EPE": 1e10}),
    ("bare_state_dict_zip.pth", {}),
    ("bare_state_dict_legacy.pth", {}),
])
def test_unwrap_other_layouts(reference_dir, name, want):
  sd, meta = unwrap_checkpoint(load_pth(_pth(reference_dir, name)))
  assert meta == want
  assert sd["final.weight"].shape == (2, 4, 1, 1)
  assert sd["bn1.num_batches_tracked"].dtype == np.int64


def test_unwrap_rejects_non_checkpoints():
  with pytest.raises(ValueError, match="state_dict"):
    unwrap_checkpoint({"epoch": 3, "model": "x"})
  with pytest.raises(ValueError, match="not a tensor"):
    unwrap_checkpoint({"state_dict": {"a.weight": np.zeros(2), "b": "text"}})
  with pytest.raises(ValueError, match="list"):
    unwrap_checkpoint([np.zeros(2)])


# --- end to end with a tiny registry model ----------------------------------------------------


def _tiny_model(seed: int, num_classes: int = _CLASSES) -> nnx.Module:
  from jaxseg.models import registry
  return registry.create_model(_MODEL, num_classes=num_classes, rngs=nnx.Rngs(seed),
                               **_OVERRIDES)


def _randomize(model: nnx.Module, seed: int) -> None:
  """Non-trivial values everywhere, BN statistics included (fresh ones are 0/1)."""
  rng = np.random.default_rng(seed)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, (nnx.Param, nnx.BatchStat)):
      value = rng.normal(0.0, 0.2, np.shape(var.get_value())).astype(np.float32)
      if str(path[-1]).endswith("var"):  # BN running variance must stay positive.
        value = np.abs(value) + 0.5
      var.set_value(jnp.asarray(value))


def _logits(model: nnx.Module) -> np.ndarray:
  x = jax.random.normal(jax.random.key(1), (1, 24, 40, 3), jnp.float32)
  return np.asarray(model(x, train=False))


def _variables(model: nnx.Module) -> dict[str, np.ndarray]:
  return {"/".join(map(str, path)): np.asarray(var.get_value())
          for path, var in nnx.iter_graph(model)
          if isinstance(var, (nnx.Param, nnx.BatchStat))}


@pytest.fixture(scope="module")
def source_model() -> nnx.Module:
  pytest.importorskip("jaxseg.convert.torch_layout")
  model = _tiny_model(seed=0)
  _randomize(model, seed=0)
  return model


def _save_published(torch, model: nnx.Module, path: pathlib.Path, zip_format: bool) -> None:
  """Writes `model` as the published checkpoints are laid out (DataParallel prefix etc.)."""
  from jaxseg.convert import torch_layout
  sd = collections.OrderedDict(
      ("module." + k, torch.from_numpy(np.array(v))) for k, v in
      torch_layout.model_state_dict(model).items())
  checkpoint = {
      "state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
      "epoch": 7, "mean_iu": np.float64(0.5), "command": "python train.py --arch x"}
  torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)


def _restore(step_dir: str, num_classes: int = _CLASSES, seed: int = 123) -> nnx.Module:
  from jaxseg.runtime.checkpoint import restore_model_variables
  model = _tiny_model(seed=seed, num_classes=num_classes)
  meta = restore_model_variables(step_dir, model, expected_model=_MODEL)
  assert meta["model"] == _MODEL and meta["num_classes"] == num_classes
  assert meta["model_overrides"] == _OVERRIDES
  return model


@pytest.mark.parametrize("zip_format", [True, False])
def test_convert_round_trip_logits(source_model, tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  src = tmp_path / "published.pth"
  _save_published(torch, source_model, src, zip_format)
  report = convert_checkpoint(src, _MODEL, out_dir=tmp_path / "out", model_overrides=_OVERRIDES,
                              verbose=False)
  assert report.num_classes == _CLASSES  # Inferred from the file's classifier.
  assert not (report.missing or report.unexpected or report.mismatched or report.reinitialized)
  assert report.meta == {"epoch": 7, "mean_iu": 0.5, "command": "python train.py --arch x"}
  restored = _restore(report.out_path)
  want = _logits(source_model)
  assert np.abs(want).max() > 1e-3  # The comparison below is not trivially 0 == 0.
  np.testing.assert_array_equal(_logits(restored), want)
  original, got = _variables(source_model), _variables(restored)
  assert got.keys() == original.keys()
  for key in original:
    np.testing.assert_array_equal(got[key], original[key], err_msg=key)


def test_num_classes_change_reinitializes_only_classifier(source_model, tmp_path, capsys):
  torch = pytest.importorskip("torch")
  src = tmp_path / "published.pth"
  _save_published(torch, source_model, src, zip_format=True)
  report = convert_checkpoint(src, _MODEL, out_dir=tmp_path / "out5", num_classes=5,
                              model_overrides=_OVERRIDES, verbose=True)
  # The original classifier `final.6` is a bias-free 1x1 conv.
  classifier = sorted(k for k in report.loaded + report.reinitialized if k.startswith("final.6."))
  assert sorted(report.reinitialized) == classifier == ["final.6.weight"]
  assert not (report.missing or report.unexpected or report.mismatched)
  assert "re-initialised classifier for 5 classes" in capsys.readouterr().out
  restored = _restore(report.out_path, num_classes=5)
  original, got = _variables(source_model), _variables(restored)
  assert got.keys() == original.keys()
  for key in original:
    if key.startswith("final/6/"):
      assert got[key].shape[-1] == 5 and original[key].shape[-1] == _CLASSES
    else:
      np.testing.assert_array_equal(got[key], original[key], err_msg=key)
  assert _logits(restored).shape == (1, 24, 40, 5)


def test_wrong_model_is_refused(source_model, tmp_path):
  torch = pytest.importorskip("torch")
  src = tmp_path / "r18.pth"
  _save_published(torch, source_model, src, zip_format=True)
  with pytest.raises(ValueError) as info:
    convert_checkpoint(src, "DeepWV3Plus", out_dir=tmp_path / "wrong",
                       model_overrides=_OVERRIDES, verbose=False)
  message = str(info.value)
  assert "DeepWV3Plus" in message and str(src) in message
  assert "mod1." in message and "layer0." in message  # Keys of both networks are named.
  assert not (tmp_path / "wrong").exists()


def test_cli(source_model, tmp_path, capsys):
  torch = pytest.importorskip("torch")
  from jaxseg.convert.__main__ import main
  src = tmp_path / "published.pth"
  _save_published(torch, source_model, src, zip_format=False)
  out = tmp_path / "cli"
  assert main(["--src", str(src), "--model", _MODEL, "--out", str(out),
               "--model-override", "width_multiplier=0.125"]) == 0
  assert "loaded" in capsys.readouterr().out
  np.testing.assert_array_equal(_logits(_restore(str(out / "0"))), _logits(source_model))
  argv = ["--src", str(src), "--model", _MODEL, "--out", str(out), "--model-override",
          "width_multiplier=0.125", "--num-classes", "4"]
  assert main(argv) == 1  # Refuses to replace the first conversion...
  assert "already exists" in capsys.readouterr().err
  assert main(argv + ["--overwrite"]) == 0  # ...unless asked to.
  _restore(str(out / "0"), num_classes=4)
  assert main(["--src", str(tmp_path / "missing.pth"), "--model", _MODEL,
               "--out", str(tmp_path / "other")]) == 1
  assert "missing.pth" in capsys.readouterr().err


def test_trunk_only(source_model, tmp_path):
  torch = pytest.importorskip("torch")
  from jaxseg.convert import torch_layout
  # An ImageNet (torchvision) ResNet file: conv1/bn1 for layer0, layer1..4, an unused fc.
  trunk = collections.OrderedDict()
  for key, value in torch_layout.model_state_dict(source_model).items():
    if key.startswith("layer0.0."):
      key = "conv1." + key[len("layer0.0."):]
    elif key.startswith("layer0.1."):
      key = "bn1." + key[len("layer0.1."):]
    elif not key.startswith("layer"):
      continue
    trunk[key] = torch.from_numpy(np.array(value))
  trunk["fc.weight"], trunk["fc.bias"] = torch.zeros(10, 4), torch.zeros(10)
  src = tmp_path / "imagenet.pth"
  torch.save(trunk, src)
  with pytest.raises(ValueError, match="--num-classes is required"):
    convert_checkpoint(src, _MODEL, out_dir=tmp_path / "x", trunk_only=True,
                       model_overrides=_OVERRIDES, verbose=False)
  report = convert_checkpoint(src, _MODEL, out_dir=tmp_path / "trunk", trunk_only=True,
                              num_classes=4, model_overrides=_OVERRIDES, verbose=False)
  assert not (report.missing or report.unexpected or report.mismatched)
  assert {"fc.weight", "fc.bias"} <= set(report.ignored)
  assert "final.6.weight" in report.left_at_init and "aspp.img_conv.0.weight" in report.left_at_init
  assert not any(k.startswith("layer") for k in report.left_at_init)
  restored = _restore(report.out_path, num_classes=4)
  original, got = _variables(source_model), _variables(restored)
  for key in original:
    if key.startswith("layer"):
      np.testing.assert_array_equal(got[key], original[key], err_msg=key)
    elif key.startswith("bot_aspp"):  # Head: random initialisation, not the source's values.
      assert not np.array_equal(got[key], original[key]), key


def test_trunk_only_torchvision_resnet_into_deeplabv3(tmp_path, capsys):
  """torchvision's resnet50-*.pth (conv1, bn1, layer1..4, fc) into DeepLabV3R50: the model's
  own keys place it under `backbone.`; ASPP, classifier and aux head keep their init."""
  torch = pytest.importorskip("torch")
  from jaxseg.convert import torch_layout
  from jaxseg.convert.__main__ import main
  from jaxseg.models import registry
  from jaxseg.runtime.checkpoint import restore_model_variables
  build = lambda seed: registry.create_model("DeepLabV3R50", num_classes=21,  # noqa: E731
                                             rngs=nnx.Rngs(seed), width_multiplier=0.0625)
  rng = np.random.default_rng(0)
  trunk = collections.OrderedDict()
  for key, shape in torch_layout.model_state_shapes(
      nnx.eval_shape(lambda: build(0)), include_num_batches_tracked=True).items():
    if key.startswith("backbone."):
      value = (np.zeros(shape, np.int64) if key.endswith("num_batches_tracked") else
               np.abs(rng.normal(0.0, 0.2, shape)).astype(np.float32) + 0.5)
      trunk[key[len("backbone."):]] = value
  trunk["fc.weight"] = np.zeros((1000, trunk["layer4.2.bn3.weight"].shape[0]), np.float32)
  trunk["fc.bias"] = np.zeros((1000,), np.float32)
  assert torch_layout.detect_trunk_format(trunk) == "torchvision_resnet"
  src, out = tmp_path / "resnet50.pth", tmp_path / "converted"
  torch.save({k: torch.from_numpy(v) for k, v in trunk.items()}, src)
  # = python -m jaxseg.convert --src resnet50.pth --model DeepLabV3R50 --trunk-only
  #       --num-classes 21 --out DIR
  assert main(["--src", str(src), "--model", "DeepLabV3R50", "--trunk-only", "--num-classes",
               "21", "--out", str(out), "--model-override", "width_multiplier=0.0625"]) == 0
  printed = capsys.readouterr().out
  assert "missing" not in printed and "unexpected" not in printed, printed
  model = build(1)
  meta = restore_model_variables(out / "0", model, expected_model="DeepLabV3R50")
  assert meta["trunk_only"] and not meta["missing"] and not meta["unexpected"]
  got, init = torch_layout.model_state_dict(model), torch_layout.model_state_dict(build(0))
  for key, value in trunk.items():
    if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(got["backbone." + key], value, err_msg=key)
  for key in ("classifier.4.weight", "aux_classifier.4.weight"):  # the converter's seed 0
    np.testing.assert_array_equal(got[key], init[key], err_msg=key)


# --- full-size published layouts from the reference fixtures (slow) ----------------------------


def _reference_state_dict(reference_dir: pathlib.Path, name: str) -> collections.OrderedDict:
  """The fixture's torch state dict ('module.' keys, manifest order) of a full model."""
  import importlib.util
  import json
  spec = importlib.util.spec_from_file_location("_ref_weights", reference_dir / "weights.py")
  weights = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(weights)
  manifest = json.loads((reference_dir / "manifests" / f"{name}.json").read_text())
  sd = weights.state_dict(manifest["entries"], salt=0,
                          transposed_prefixes=manifest["transposed_prefixes"])
  sd.update(np.load(reference_dir / name / "buffers.npz"))
  return collections.OrderedDict((e["key"], sd[e["key"]]) for e in manifest["entries"])


@pytest.mark.slow
def test_published_checkpoint_parity(reference_dir, tmp_path):
  """Published layout (legacy file, DataParallel keys) -> orbax -> logits of the original."""
  torch = pytest.importorskip("torch")
  from jaxseg.models import registry
  from jaxseg.runtime.checkpoint import restore_model_variables
  name = "DeepR50V3PlusD_m1"
  sd = _reference_state_dict(reference_dir, name)
  tensors = collections.OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items())
  checkpoint = {"state_dict": tensors,
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 175,
                "mean_iu": np.float64(0.79), "command": "python train.py"}
  src = tmp_path / "published.pth"
  torch.save(checkpoint, src, _use_new_zipfile_serialization=False)
  report = convert_checkpoint(src, name, out_dir=tmp_path / "out", verbose=False)
  assert report.num_classes == 19 and len(report.loaded) + len(report.ignored) == len(sd)
  model = nnx.eval_shape(lambda: registry.create_model(name, num_classes=19, rngs=nnx.Rngs(0)))
  restore_model_variables(report.out_path, model, expected_model=name)
  x = np.load(reference_dir / name / "input.npy").transpose(0, 2, 3, 1)
  want = np.load(reference_dir / name / "logits.npy").transpose(0, 2, 3, 1)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(nnx.jit(lambda m, v: m(v, train=False))(model, jnp.asarray(x)))
  rel_l2 = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert rel_l2 <= 5e-4, rel_l2  # README bounds for DeepR50V3PlusD_m1.
  assert np.abs(got - want).max() / want.std() <= 2.8e-3
  assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.998
  _predict_real_cityscapes_image(report.out_path, name, tmp_path)


def _predict_real_cityscapes_image(checkpoint, name, tmp_path):
  """--mode predict plumbing on a real Cityscapes frame with the converted checkpoint."""
  import cv2

  from jaxseg.config.base import base_config
  from jaxseg.data.datasets.cityscapes import cityscapes_table
  from jaxseg.inference import commands as inference
  data = SHARED / "data" / "cityscapes"
  images = sorted((data / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
  if not images:
    pytest.skip(f"no Cityscapes val image under {data}")
  config = base_config()
  config.model.name = name
  config.precision = "fp32"
  config.progress_bar = False
  config.data.name = "cityscapes"
  config.data.root = str(data)
  written = inference.predict_paths(config, checkpoint=checkpoint, step=None,
                                    input_path=images[0], output_dir=tmp_path / "predict")
  masks = [p for p in written if str(p).endswith("_color.png")]
  assert len(masks) == 1
  mask = cv2.cvtColor(cv2.imread(str(masks[0])), cv2.COLOR_BGR2RGB)
  source = cv2.imread(str(images[0]))
  assert mask.shape == source.shape
  palette = {tuple(c) for c in cityscapes_table().colors.tolist()}
  assert {tuple(c) for c in np.unique(mask.reshape(-1, 3), axis=0).tolist()} <= palette


@pytest.mark.slow
def test_seresnext_weights_refused_for_wider_resnet(reference_dir, tmp_path):
  torch = pytest.importorskip("torch")
  sd = _reference_state_dict(reference_dir, "DeepSRNX50V3PlusD_m1")
  src = tmp_path / "srnx50.pth"
  torch.save({"state_dict": collections.OrderedDict(
      (k, torch.from_numpy(v)) for k, v in sd.items())}, src)
  with pytest.raises(ValueError) as info:
    convert_checkpoint(src, "DeepWV3Plus", out_dir=tmp_path / "out", verbose=False)
  message = str(info.value)
  assert "does not hold DeepWV3Plus weights" in message
  assert "mod1." in message and "layer0." in message
