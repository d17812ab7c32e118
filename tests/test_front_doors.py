"""NaN/Inf weights are refused by convert and by eval/predict restore; both convert front doors
(`python -m jaxseg.convert`, `python -m jaxseg.main --mode convert`) behave the same, for
segmentation and SDCNet / FlowNet2 models alike."""
import os
import pathlib
import subprocess
import sys
import zipfile

from _testlib import ROOT
from _testlib import subprocess_env
from _testlib import tiny_demo_config
import cv2
from flax import nnx
import numpy as np
import pytest

from jaxseg.convert.converter import NonFiniteWeightsError
from jaxseg.convert.converter import convert_checkpoint
from jaxseg.runtime import variables

_MODEL = "DeepR18V3PlusD_m1"
_INF_KEY = "layer1.0.conv1.weight"  # Comes first in the file: the one the error must name.
_NAN_KEY = "layer3.0.bn2.running_var"  # A BatchNorm statistic.


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> tuple[pathlib.Path, str]:
  """A published-layout .pth of the tiny demo model with one Inf weight and one NaN BN stat,
  and the nnx variable name of the Inf weight."""
  torch = pytest.importorskip("torch")
  from jaxseg import data as data_lib
  from jaxseg.convert import torch_layout
  from jaxseg.models import registry
  config = tiny_demo_config()
  num_classes = data_lib.dataset_info(config.data).num_classes
  model = registry.create_model(_MODEL, num_classes=num_classes, rngs=nnx.Rngs(0),
                                **dict(config.model.overrides))
  sd = torch_layout.model_state_dict(model)
  sd[_INF_KEY] = sd[_INF_KEY].copy()
  sd[_INF_KEY].flat[3] = np.inf
  sd[_NAN_KEY] = np.full_like(sd[_NAN_KEY], np.nan)
  path = tmp_path_factory.mktemp("poisoned") / "diverged.pth"
  tensors = {"module." + k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
  torch.save({"state_dict": tensors}, path)
  params = nnx.state(model, nnx.Param)
  (name,) = [variables.path_key(p) for p, _ in nnx.to_flat_state(params)
             if torch_layout.torch_key_for_path(p) == _INF_KEY]
  return path, name


@pytest.fixture(scope="module")
def converted(poisoned, tmp_path_factory):
  """The poisoned file converted with allow_non_finite=True."""
  return convert_checkpoint(poisoned[0], _MODEL, out_dir=tmp_path_factory.mktemp("allowed"),
                            model_overrides=dict(tiny_demo_config().model.overrides),
                            allow_non_finite=True, verbose=False)


def test_convert_refuses_non_finite_unless_allowed(poisoned, converted, tmp_path):
  src, _ = poisoned
  with pytest.raises(NonFiniteWeightsError) as info:
    convert_checkpoint(src, _MODEL, out_dir=tmp_path / "refused", verbose=False,
                       model_overrides=dict(tiny_demo_config().model.overrides))
  message = str(info.value)
  assert f"tensor '{_INF_KEY}' holds 0 NaN and 1 Inf" in message and str(src) in message
  assert _NAN_KEY in message and "--allow-non-finite" in message and "\n" not in message
  assert not (tmp_path / "refused").exists()
  assert converted.non_finite == [_INF_KEY, _NAN_KEY]


def test_predict_refuses_a_non_finite_checkpoint(poisoned, converted, tmp_path):
  from jaxseg.inference import commands as inference
  image = tmp_path / "street.png"
  cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
  with pytest.raises(ValueError) as info:
    inference.predict_paths(tiny_demo_config(), checkpoint=converted.out_path, step=None,
                            input_path=image, output_dir=tmp_path / "pred")
  message = str(info.value)
  assert f"variable 'params/{poisoned[1]}' holds NaN/Inf (1 of " in message
  assert converted.out_path in message and "--step" in message
  assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_first_non_finite_checks_batch_stats_too():
  params = {"a/kernel": np.ones((2, 2), np.float32), "steps": np.array([3], np.int64)}
  stats = {"bn/mean": np.zeros(3, np.float32), "bn/var": np.array([1.0, np.nan], np.float32)}
  assert variables.first_non_finite(params, stats) == ("batch_stats/bn/var", 1, 2)
  assert variables.first_non_finite(params, {}) is None
  with pytest.raises(ValueError, match=r"checkpoint X: variable 'batch_stats/bn/var'"):
    variables.require_finite(params, stats, where="checkpoint X")


def _refused_pickle(path: pathlib.Path) -> pathlib.Path:
  with zipfile.ZipFile(path, "w") as z:  # builtins.eval('1'): must not even be looked up.
    z.writestr("archive/data.pkl", b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.")
  return path


def test_both_front_doors_print_the_same_line(tmp_path, capsys):
  from jaxseg.convert.__main__ import main as convert_main
  src = _refused_pickle(tmp_path / "evil.pth")
  args = ["--src", str(src), "--model", _MODEL, "--out", str(tmp_path / "out")]
  assert convert_main(args) == 1
  direct = capsys.readouterr().err
  assert direct.startswith("error: ") and direct.count("\n") == 1
  assert "builtins.eval" in direct and "nothing was executed" in direct
  result = subprocess.run([sys.executable, "-m", "jaxseg.main", "--mode", "convert", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", **subprocess_env()))
  assert result.returncode == 1, result.stderr
  assert result.stderr == direct  # One line, no traceback.
  assert not (tmp_path / "out").exists()


def test_both_front_doors_convert_sdcnet_models(tmp_path, capsys):
  """`--mode convert` hands SDCNet / FlowNet2 names to the same converter as `python -m
  jaxseg.convert` (tests/sdcnet/test_convert_weights.py converts a file): same refusal line."""
  from jaxseg.convert.__main__ import main as convert_main
  args = ["--src", str(tmp_path / "sdc.pth"), "--model", "SDCNet2DRecon", "--trunk-only",
          "--out", str(tmp_path / "out")]
  assert convert_main(args) == 1
  direct = capsys.readouterr().err
  assert direct == ("error: --trunk-only does not apply to SDCNet2DRecon (an SDCNet / FlowNet2 "
                    "checkpoint is converted whole)\n")
  result = subprocess.run([sys.executable, "-m", "jaxseg.main", "--mode", "convert", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", **subprocess_env()))
  assert result.returncode == 1 and result.stderr == direct
  assert not (tmp_path / "out").exists()


def test_main_convert_flags_match_the_convert_parser():
  from absl import flags

  from jaxseg import main
  from jaxseg.convert.__main__ import build_parser
  parser = build_parser()
  names = {o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")}
  assert names - {"help"} <= set(flags.FLAGS)  # Every convert flag, both spellings.
  argv = ["jaxseg.main", "--mode=convert", "--src=a.pth", "--model", _MODEL, "--out=o",
          "--num_classes=5", "--allow-non-finite", "--trunk-only", "--model-override=a=1",
          "--model_override", "b=x"]
  try:
    flags.FLAGS(argv)
    got = parser.parse_args(main.convert_argv())
  finally:
    flags.FLAGS.unparse_flags()
  want = parser.parse_args(argv[2:])
  assert vars(got) == vars(want)
  assert got.allow_non_finite and got.trunk_only and got.num_classes == 5
  assert got.model_override == [("a", 1), ("b", "x")]
