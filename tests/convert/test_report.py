"""The one load-report type (jaxseg.convert.report.LoadReport): its checks and its messages, and
that no other report class has crept back in."""
import ast
import pathlib

import pytest

from jaxseg.convert.report import LoadReport
from jaxseg.convert.report import ShapeMismatch

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "jaxseg"


def _bad() -> LoadReport:
  return LoadReport(model="SDCNet2D", loaded=["conv2.0.weight"], missing=["conv1.0.bias"],
                    unexpected=["conv9.0.weight"],
                    mismatched=[ShapeMismatch("conv1.0.weight", (32, 8, 7, 7), (32, 13, 7, 7))],
                    src="/ckpt/sdc.pth")


def test_ok_and_the_us_spelling():
  report = LoadReport(model="M", loaded=["a.weight"], reinitialised=["final.6.weight"])
  assert report.ok and report.reinitialized == ["final.6.weight"]
  assert not _bad().ok
  assert not LoadReport(mismatched=[ShapeMismatch("k", (1,), (2,))]).ok


def test_raise_if_incomplete_names_the_file_the_model_and_every_key():
  LoadReport(model="M", loaded=["a"]).raise_if_incomplete()  # Complete: nothing raised.
  with pytest.raises(ValueError) as info:
    _bad().raise_if_incomplete("Check --model")
  message = str(info.value)
  assert message.startswith("/ckpt/sdc.pth does not hold SDCNet2D weights (loaded 1 tensors)")
  assert "1 model tensors missing from the checkpoint: conv1.0.bias" in message
  assert "1 checkpoint tensors unknown to the model: conv9.0.weight" in message
  assert ("conv1.0.weight has torch shape (32, 13, 7, 7) in the checkpoint, (32, 8, 7, 7) in "
          "the model") in message
  assert message.endswith(". Check --model") and "\n" not in message  # One line on the CLI.
  with pytest.raises(ValueError, match="^the state dict does not hold the model's weights"):
    LoadReport(missing=["x"]).raise_if_incomplete()


def test_long_key_lists_are_cut_with_the_count():
  report = LoadReport(model="M", missing=[f"layer{i}.weight" for i in range(30)])
  with pytest.raises(ValueError) as info:
    report.raise_if_incomplete()
  assert "layer9.weight, ... (30 in all)" in str(info.value)
  assert "layer10.weight" not in str(info.value)


def test_summary_counts_then_names():
  report = LoadReport(model="DeepWV3Plus", loaded=["a", "b"], ignored=["bn.num_batches_tracked"],
                      reinitialised=["final.6.weight"], num_classes=5, src="x.pth",
                      meta={"epoch": 3}, out_path="out/0", non_finite=["a"])
  lines = report.summary().splitlines()
  assert lines[0] == "x.pth -> DeepWV3Plus (num_classes=5): loaded 2 tensors"
  assert "  checkpoint: epoch=3" in lines
  assert "  re-initialised classifier for 5 classes: final.6.weight" in lines
  assert "  non-finite values (1): a" in lines and lines[-1] == "  wrote out/0"
  assert _bad().summary().splitlines()[0] == "/ckpt/sdc.pth -> SDCNet2D: loaded 1 tensors"
  assert LoadReport(model="FlowNet2").summary() == "FlowNet2: loaded 0 tensors"


def test_one_report_class_in_the_package():
  """torch_layout, converter and sdcnet/torch_names once had a report class each."""
  homes = []
  for path in PACKAGE.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ClassDef) and node.name in ("LoadReport", "ConversionReport"):
        homes.append(f"{path.relative_to(PACKAGE)}:{node.name}")
  assert homes == ["convert/report.py:LoadReport"]
