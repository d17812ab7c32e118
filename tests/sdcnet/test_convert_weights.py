"""SDCNet / FlowNet2 checkpoints through the one conversion front door, `python -m jaxseg.convert`
(= `python -m jaxseg.main --mode convert`), with the report and refusals of a segmentation
conversion."""
import os
import pathlib
import subprocess
import sys

from _testlib import ROOT
from _testlib import subprocess_env
from flax import nnx
import numpy as np
import pytest

from jaxseg.convert.__main__ import build_parser
from jaxseg.convert.__main__ import convert
from jaxseg.convert.__main__ import main
from jaxseg.convert.report import LoadReport
from jaxseg.runtime import checkpoint as ckpt_lib
from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import torch_names

_MODEL = "SDCNet2D"
_OWN_TENSORS = 2 * 17 + 3  # 17 conv / deconv layers (weight, bias) + 3 buffers


def _own_state_dict(bundle) -> dict[str, np.ndarray]:
  """SDCNet's own tensors in torch layout (FlowNet2 is abstract in the bundle)."""
  model = bundle.merge(bundle.params, bundle.buffers)
  return {k: np.array(torch_names.to_torch_value(v))
          for k, v in torch_names.torch_variables(model).items() if not k.startswith("flownet2.")}


def _save_sdcnet(torch, bundle, path: pathlib.Path, tamper=None) -> None:
  """`bundle` as sdcnet/main.py saves it: own keys only, DataParallel's 'module.' prefix."""
  sd = {"module." + k: torch.from_numpy(v) for k, v in _own_state_dict(bundle).items()}
  if tamper:
    tamper(sd)
  torch.save({"epoch": 4, "arch": bundle.name, "state_dict": sd}, path)


@pytest.fixture(scope="module")
def sdcnet2d(tmp_path_factory) -> tuple[pathlib.Path, convert_weights.SDCNetBundle]:
  """A torch-written SDCNet2D checkpoint (random weights) and the bundle it holds."""
  torch = pytest.importorskip("torch")
  bundle = convert_weights.build_sdcnet(_MODEL, random_init=True, seed=5)
  path = tmp_path_factory.mktemp("sdcnet") / "sdc_tiny.pth.tar"
  _save_sdcnet(torch, bundle, path)
  return path, bundle


def _assert_same_weights(step_dir: pathlib.Path, bundle) -> None:
  loaded = convert_weights.build_sdcnet(_MODEL, checkpoint=str(step_dir))
  assert sorted(loaded.params) == sorted(bundle.params)
  for want, got in ((bundle.params, loaded.params), (bundle.buffers, loaded.buffers)):
    for key, value in want.items():
      np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value), key)


def test_python_m_jaxseg_convert_converts_sdcnet(sdcnet2d, tmp_path):
  src, bundle = sdcnet2d
  out = tmp_path / "sdcnet"
  result = subprocess.run(
      [sys.executable, "-m", "jaxseg.convert", "--src", str(src), "--model", _MODEL,
       "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS="cpu", **subprocess_env()))
  assert result.returncode == 0, result.stderr
  assert f"{src} -> {_MODEL}: loaded {_OWN_TENSORS} tensors" in result.stdout
  assert f"wrote {out / '0'}" in result.stdout
  _assert_same_weights(out / "0", bundle)
  meta = ckpt_lib.read_meta(out / "0")
  assert meta["model"] == _MODEL and meta["sequence_length"] == 2
  assert meta["source_meta"] == {"epoch": 4, "arch": _MODEL}
  assert meta["converted_by"] == "jaxseg.convert" and len(meta["source_sha256"]) == 64


def test_refusals_read_like_a_segmentation_conversion(sdcnet2d, tmp_path, capsys):
  src, _ = sdcnet2d
  out = tmp_path / "o"
  args = ["--src", str(src), "--out", str(out)]
  assert main([*args, "--model", _MODEL]) == 0
  assert main([*args, "--model", _MODEL]) == 1
  assert "already exists" in capsys.readouterr().err
  assert main([*args, "--model", _MODEL, "--overwrite"]) == 0
  capsys.readouterr()
  # Another SDCNet: conv1 takes 8 input channels in SDCNet2D, 13 in SDCNet2DRecon.
  assert main([*args, "--model", "SDCNet2DRecon", "--overwrite"]) == 1
  err = capsys.readouterr().err.splitlines()[-1]  # After the progress bar.
  assert err.startswith(f"error: {src} does not hold SDCNet2DRecon weights")
  assert "conv1.0.weight has torch shape (32, 8, 7, 7) in the checkpoint" in err
  for flags, said in ((["--trunk-only"], "--trunk-only does not apply to SDCNet2D"),
                      (["--num-classes", "3"], "--num-classes does not apply"),
                      (["--model-override", "width_multiplier=0.5"],
                       "SDCNet2D takes only sequence_length, rgb_max")):
    assert main([*args, "--model", _MODEL, "--overwrite", *flags]) == 1
    assert said in capsys.readouterr().err
  assert main([*args, "--model", "SDCNet3D"]) == 1
  err = capsys.readouterr().err
  assert "unknown model 'SDCNet3D'" in err and "DeepWV3Plus" in err and "FlowNet2" in err
  assert main(["--src", str(tmp_path / "none.pth"), "--out", str(tmp_path / "n"),
               "--model", _MODEL]) == 1
  assert "none.pth: not a file" in capsys.readouterr().err


def test_non_finite_weights_are_refused_unless_allowed(sdcnet2d, tmp_path):
  torch = pytest.importorskip("torch")
  _, bundle = sdcnet2d

  def poison(sd):
    sd["module.conv3.0.bias"] = sd["module.conv3.0.bias"].clone()
    sd["module.conv3.0.bias"][2] = float("nan")

  src = tmp_path / "diverged.pth"
  _save_sdcnet(torch, bundle, src, tamper=poison)
  with pytest.raises(ValueError, match=r"tensor 'conv3\.0\.bias' holds 1 NaN and 0 Inf"):
    convert_weights.convert_file(src, _MODEL, out_dir=tmp_path / "refused", verbose=False)
  assert not (tmp_path / "refused").exists()
  report = convert_weights.convert_file(src, _MODEL, out_dir=tmp_path / "allowed",
                                        allow_non_finite=True, verbose=False)
  assert report.non_finite == ["conv3.0.bias"] and report.out_path


def test_flownet2_file_of_another_network_is_refused(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  src = tmp_path / "flownet2_partial.pth"
  torch.save({"state_dict": {"flownetc.conv1.0.weight": torch.zeros(64, 3, 7, 7),
                             "fc.weight": torch.zeros(2, 2)}, "best_EPE": 1.5}, src)
  assert main(["--src", str(src), "--model", "FlowNet2", "--out", str(tmp_path / "f")]) == 1
  err = capsys.readouterr().err.splitlines()[-1]  # After the progress bar.
  assert err.startswith(f"error: {src} does not hold FlowNet2 weights (loaded 1 tensors)")
  assert "model tensors missing from the checkpoint: flownetc.conv1.0.bias" in err
  assert "1 checkpoint tensors unknown to the model: fc.weight" in err
  assert not (tmp_path / "f").exists()


def test_both_conversions_return_the_one_report_type(sdcnet2d, tmp_path):
  """Segmentation and SDCNet files through the same front-door function: one LoadReport, as
  the loaders below them return."""
  torch = pytest.importorskip("torch")
  from jaxseg.convert import torch_layout
  from jaxseg.models import registry
  seg = registry.create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0),
                              width_multiplier=0.125)
  seg_src = tmp_path / "seg.pth"
  torch.save({"state_dict": {"module." + k: torch.from_numpy(np.array(v))
                             for k, v in torch_layout.model_state_dict(seg).items()}}, seg_src)
  parser = build_parser()
  seg_report = convert(parser.parse_args(
      ["--src", str(seg_src), "--model", "DeepR18V3PlusD_m1", "--out", str(tmp_path / "seg"),
       "--model-override", "width_multiplier=0.125"]))
  sdc_report = convert(parser.parse_args(
      ["--src", str(sdcnet2d[0]), "--model", _MODEL, "--out", str(tmp_path / "sdc")]))
  assert type(seg_report) is type(sdc_report) is LoadReport
  assert seg_report.ok and sdc_report.ok and len(sdc_report.loaded) == _OWN_TENSORS
  assert seg_report.out_path and sdc_report.out_path == str(tmp_path / "sdc" / "0")
  assert type(torch_layout.load_state_dict(seg, torch_layout.model_state_dict(seg))) is LoadReport
  net = convert_weights.abstract_sdcnet(_MODEL)
  report = torch_names.load_sdcnet_state_dict(net, _own_state_dict(sdcnet2d[1]))
  assert type(report) is LoadReport and report.model == _MODEL
