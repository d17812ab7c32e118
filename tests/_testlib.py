"""Shared test helpers: loading configs/scripts by path and the tiny demo configuration."""
import importlib.util
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMPILE_CACHE = os.environ.get("JAXSEG_TEST_COMPILE_CACHE",
                               str(pathlib.Path.home() / ".cache" / "jaxseg_jax_compile"))


def load_module(relpath: str):
  """Imports a repository file that is not in a package (launch/, benchmarks/)."""
  path = ROOT / relpath
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(relpath: str, **dotted_overrides):
  """`configs/<name>.py` with overrides given as {'section.field': value}."""
  from jaxseg.config_base import load_config_file
  config = load_config_file(ROOT / relpath)
  for key, value in dotted_overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def tiny_demo_config(num_steps: int = 4):
  """configs/demo.py shrunk to seconds: 1/16 widths, 48x64 scenes, 32x32 crops, one device."""
  c = load_config("configs/demo.py")
  c.model.overrides.width_multiplier = 0.0625
  c.data.synthetic.num_train = 16
  c.data.synthetic.num_val = 8
  c.data.synthetic.height = 48
  c.data.synthetic.width = 64
  c.data.crop_size = 32
  c.train.num_steps = num_steps
  c.train.log_every = 1
  c.train.eval_every = num_steps
  c.train.checkpoint_every = 2
  c.checkpoint.async_save = False
  c.eval.num_prediction_images = 3
  c.progress_bar = False
  c.mesh.shape = {"data": 1}
  return c


def subprocess_env() -> dict[str, str]:
  """Subprocesses share the tests' persistent compile cache (compiling dominates them)."""
  return {"JAX_COMPILATION_CACHE_DIR": COMPILE_CACHE,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


# tiny_demo_config as command-line overrides of configs/demo.py (for subprocess runs).
DEMO_ARGS = [
    "--config", str(ROOT / "configs" / "demo.py"),
    "--config.model.overrides.width_multiplier=0.0625",
    "--config.data.synthetic.num_train=16", "--config.data.synthetic.num_val=8",
    "--config.data.synthetic.height=48", "--config.data.synthetic.width=64",
    "--config.data.crop_size=32", "--config.data.read_num_threads=1",
    "--config.train.log_every=1", "--config.eval.num_prediction_images=2",
    "--config.progress_bar=False",
]


def read_checkpoint_params(step_dir: pathlib.Path) -> dict:
  """{'params', 'batch_stats'} of a checkpoint as numpy, whatever topology wrote it."""
  import jax  # imported here: conftest imports this module before configuring JAX
  import numpy as np
  import orbax.checkpoint as ocp
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(step_dir / "model")
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(tree))
  return checkpointer.restore(step_dir / "model", args=ocp.args.PyTreeRestore(restore_args=args))
