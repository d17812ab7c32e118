"""The command line: unknown config fields and missing flags are clear errors."""
import subprocess
import sys

from _testlib import ROOT

from jaxseg import main

DEMO = str(ROOT / "configs" / "demo.py")


def test_unknown_config_field_is_named_with_a_suggestion():
  problems = main.unknown_config_overrides(
      ["jaxseg.main", "--config", DEMO, "--config.train.batchsize=3", "--config.seed=1"])
  assert len(problems) == 1
  assert "--config.train.batchsize" in problems[0] and "batch_size" in problems[0]


def test_unknown_section_and_known_fields():
  assert main.unknown_config_overrides(["x", f"--config={DEMO}", "--config.data.crop_size=64",
                                        "--config.model.overrides.width_multiplier=0.5"]) == []
  (problem,) = main.unknown_config_overrides(["x", f"--config={DEMO}", "--config.optim.lr=1"])
  assert "'optim'" in problem and "optimizer" in problem


def test_cli_exits_with_the_message():
  result = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", "--config", DEMO, "--workdir", "/tmp/unused",
       "--config.data.nme=camvid"], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode != 0
  assert "unknown config field 'nme'" in result.stderr and "'name'" in result.stderr
