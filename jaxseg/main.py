r"""jaxseg command line: train, evaluate, predict and convert.

  python -m jaxseg.main --config configs/demo.py --workdir /tmp/demo
  python -m jaxseg.main --config configs/demo.py --workdir /tmp/demo --mode eval
  python -m jaxseg.main --config configs/demo.py --workdir /tmp/demo --mode preview
  python -m jaxseg.main --config configs/demo.py --workdir /tmp/demo --mode predict \
      --input some/image_or_folder --output /tmp/demo/pred
  python -m jaxseg.main --mode convert --src cityscapes_best.pth --model DeepWV3Plus --out DIR
  python -m jaxseg.main --mode convert --src sdc_cityscapes_vrec.pth.tar --model SDCNet2DRecon \
      --out DIR    # also SDCNet2D, FlowNet2 (FlowNet2_checkpoint.pth.tar)
  python -m jaxseg.main --config configs/sdcnet_cityscapes.py --workdir /tmp/sdc --mode propagate
  python -m jaxseg.main --config configs/sdcnet_cityscapes.py --workdir /tmp/sdc   # SDCNet training
"""
from __future__ import annotations

import difflib
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train",
                          ["train", "eval", "predict", "convert", "propagate", "preview"],
                          "What to run (preview: augmented training samples as PNGs).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "eval/predict: a checkpoint step dir or workdir (default: --workdir).")
_STEP = flags.DEFINE_integer("step", None, "eval/predict: checkpoint step (default: latest).")
_INPUT = flags.DEFINE_string(
    "input", None, "predict: an image file, a folder of images (recursive) or a video file.")
_OUTPUT = flags.DEFINE_string("output", None, "predict: output folder (default WORKDIR/predict).")
# --mode convert: the flags of `python -m jaxseg.convert`, spelt alike (underscores also work).
_SRC = flags.DEFINE_string("src", None, "convert: the PyTorch .pth file.")
_MODEL = flags.DEFINE_string(
    "model", None, "convert: registry model name, or SDCNet2D / SDCNet2DRecon / FlowNet2.")
_OUT = flags.DEFINE_string("out", None, "convert: output checkpoint directory.")
_NUM_CLASSES = flags.DEFINE_integer("num-classes", None, "convert: classes of the output model.")
_TRUNK_ONLY = flags.DEFINE_bool("trunk-only", False, "convert: an ImageNet trunk file.")
_ALLOW_PARTIAL = flags.DEFINE_bool("allow-partial", False, "convert: load what matches.")
_ALLOW_NON_FINITE = flags.DEFINE_bool("allow-non-finite", False,
                                      "convert: convert even if tensors hold NaN/Inf.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "convert: replace an existing conversion.")
_SEED = flags.DEFINE_integer("seed", 0, "convert: initialisation seed of what the file lacks.")
_MODEL_OVERRIDE = flags.DEFINE_multi_string("model-override", [],
                                            "convert: KEY=VALUE create_model keyword.")
for _dashed in ("num-classes", "trunk-only", "allow-partial", "allow-non-finite",
                "model-override"):
  flags.DEFINE_alias(_dashed.replace("-", "_"), _dashed)


def _require(flag, mode: str) -> str:
  if not flag.value:
    raise app.UsageError(f"--{flag.name} is required with --mode {mode}")
  return flag.value


def convert_argv() -> list[str]:
  """The --mode convert flags as `python -m jaxseg.convert` arguments."""
  valued = (_SRC, _MODEL, _OUT, _NUM_CLASSES, _SEED)
  argv = [f"--{f.name}={f.value}" for f in valued if f.value is not None]
  argv += [f"--{f.name}" for f in (_TRUNK_ONLY, _ALLOW_PARTIAL, _ALLOW_NON_FINITE, _OVERWRITE)
           if f.value]
  return argv + [f"--model-override={o}" for o in _MODEL_OVERRIDE.value]


def _convert() -> None:
  # The very function behind `python -m jaxseg.convert`: same one-line errors, same status.
  from jaxseg.convert.__main__ import main as convert_main
  status = convert_main(convert_argv())
  if status:
    sys.exit(status)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MODE.value == "convert":
    _convert()
    return
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/demo.py")
  workdir = _require(_WORKDIR, _MODE.value)
  from jaxseg.runtime import compile_cache
  from jaxseg.runtime import distributed
  compile_cache.enable(config.get("compile_cache", "auto"))
  distributed.maybe_initialize()
  if _MODE.value == "propagate":
    from jaxseg.sdcnet import propagate
    propagate.run_propagation(config, workdir)
  elif _MODE.value == "preview":
    from jaxseg.data import preview
    print("\n".join(str(p) for p in preview.write_preview(config, workdir)), flush=True)
  elif _MODE.value == "train" and "sdcnet" in config:
    from jaxseg.sdcnet import train as sdcnet_train
    sdcnet_train.train_sdcnet(config, workdir)
  elif _MODE.value == "train":
    from jaxseg.train import loop as trainer
    trainer.train_and_evaluate(config, workdir)
  elif _MODE.value == "eval":
    from jaxseg.inference import commands as inference
    inference.evaluate_checkpoint(config, workdir, checkpoint=_CHECKPOINT.value or workdir,
                                  step=_STEP.value)
  elif _MODE.value == "predict":
    from jaxseg.inference import commands as inference
    try:
      inference.predict_paths(config, checkpoint=_CHECKPOINT.value or workdir, step=_STEP.value,
                              input_path=_require(_INPUT, "predict"),
                              output_dir=_OUTPUT.value or os.path.join(workdir, "predict"))
    except inference.PartialInputError as e:
      # The good outputs are written; the message lists the bad inputs. Exit status 1.
      sys.exit(f"error: {e}")


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_config_overrides(argv: list[str]) -> list[str]:
  """The `--config.a.b=v` overrides whose field does not exist in the config file."""
  path = _config_path(argv)
  if not path:
    return []
  from jaxseg.config.base import load_config_file
  config = load_config_file(path.split(":")[0])
  unknown = []
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node = config
    field = arg[len("--config."):].split("=", 1)[0]
    for part in field.split("."):
      if not hasattr(node, "keys") or part not in node.keys():
        close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, "keys") else [])
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a section)"
        unknown.append(f"--config.{field}: unknown config field '{part}'{hint} "
                       f"(known here: {known})")
        break
      node = node[part]
  return unknown


def _user_errors() -> tuple[type[BaseException], ...]:
  """Errors about the user's input (files, flags, config, checkpoints): printed as one line."""
  from jaxseg.runtime import checkpoint
  return (ValueError, FileNotFoundError, NotADirectoryError, checkpoint.DamagedCheckpointError)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parse; a bad `--config.x=y` is named with a suggestion. Only on that error is
  the config file run a second time (config_flags ran it once while parsing)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError) as e:  # config_flags raises all three
    problems = unknown_config_overrides(argv)
    sys.exit("error: " + ("\n".join(problems) if problems else str(e)))


def run() -> None:
  logging.set_verbosity(logging.WARNING)
  try:
    app.run(main, argv=sys.argv, flags_parser=_parse_flags)
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get("JAXSEG_TRACEBACK") or not isinstance(e, _user_errors()):
      raise
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  run()
