"""Shared test helpers: loading configs/scripts by path, the tiny demo configuration, fast
XLA:CPU compiles of one-off programs and a few real CamVid training steps."""
import contextlib
import importlib.metadata
import importlib.util
import os
import pathlib
import signal
import struct
import zlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared"  # beside the checkout (not in a user's clone)
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
  from jaxseg.config.base import load_config_file
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


# XLA:CPU options for the tests' big one-off programs (a train step run 8 times, a parity
# forward run once): backend optimisation level 0 and the classic emitters take a third to half
# of the default compile time. Only code generation differs: the parity logits agree with the
# default pipeline's to ~1e-6 relative L2, far inside the tolerances. (The GPU compiler the
# library targets is not exercised by the tests either way.)
FAST_COMPILE = {"xla_backend_optimization_level": 0}
# jaxlib 0.11 dropped the emitter choice, and XLA aborts on an unknown XLA_FLAGS entry.
if tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
  FAST_COMPILE["xla_cpu_use_fusion_emitters"] = False
FAST_XLA_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())


def compile_fast(jitted, *args):
  """The jitted function compiled for `args` with FAST_COMPILE (call it with the same args)."""
  return jitted.lower(*args).compile(compiler_options=FAST_COMPILE)


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


# --- CamVid smoke training: a few real train steps on one loader batch ----------------------
CAMVID_CLASSES = 11


def camvid_smoke_config(data_root: pathlib.Path, model: str, *, recipe: str | None = None,
                        lr: float = 0.05, width: float = 0.0625, crop_size: int = 64,
                        **model_overrides):
  """A CamVid training config shrunk to seconds: `model` at `width`, fp32, `crop_size` crops.

  `recipe` (a configs/ file) supplies the rest (augmentation, optimizer, aux weight), else
  base_config's defaults; `lr` replaces the recipe's (a few steps must show progress).
  """
  from jaxseg.config.base import base_config
  c = load_config(recipe) if recipe else base_config()
  c.precision = "fp32"
  c.model.name = model
  with c.unlocked():
    c.model.overrides.width_multiplier = width
    for key, value in model_overrides.items():
      c.model.overrides[key] = value
  c.data.name = "camvid"
  c.data.root = str(data_root)
  c.data.crop_size = crop_size
  c.data.read_num_threads = 2
  c.optimizer.lr = lr
  c.loss.num_classes = CAMVID_CLASSES
  return c


def camvid_training_metrics(config, *, steps: int = 8, batch_size: int = 4,
                            build_model=None) -> list[dict[str, float]]:
  """The scalar metrics of `steps` train steps on the first batch of `config`'s train loader.

  The real path on one device: create_optimizer, make_loss_fn(config.loss) (aux heads included),
  create_step_functions, fns.init(), its train step (compiled with FAST_COMPILE) on the same
  batch and key. `build_model(config, num_classes,
  *, rngs, bn_groups)` replaces the registry constructor (e.g. a shallower network whose full
  depth would compile for minutes).
  """
  import contextlib
  from unittest import mock

  import jax
  import numpy as np

  from jaxseg import data as data_lib
  from jaxseg.models import registry
  from jaxseg.runtime import mesh as mesh_lib
  from jaxseg.train import losses
  from jaxseg.train import optimizer as optimizer_lib
  from jaxseg.train import step as step_lib
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=100)
  patch = (mock.patch.object(registry, "from_config", build_model) if build_model
           else contextlib.nullcontext())
  with patch:  # create_step_functions and init() construct the model
    fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=CAMVID_CLASSES, tx=tx,
                                         loss_fn=losses.make_loss_fn(config.loss))
    state = fns.init()
  loader = data_lib.build_train_loader(config.data, global_batch_size=batch_size, seed=0)
  batch = mesh_lib.shard_batch(next(loader), mesh)
  key = jax.random.key(0)
  train_step = compile_fast(fns.train_step, state, batch, key)
  seen = []
  for _ in range(steps):
    state, metrics = train_step(state, batch, key)
    seen.append({k: float(v) for k, v in metrics.items() if np.ndim(v) == 0})
  return seen


def assert_loss_decreases(seen: list[dict[str, float]], key: str = "loss",
                          factor: float = 0.9) -> None:
  """Every metric finite; `key` at the last step below `factor` x its first value."""
  import numpy as np
  assert np.isfinite([v for s in seen for v in s.values()]).all(), seen
  assert seen[-1][key] < factor * seen[0][key], [s[key] for s in seen]


def _chunk(ctype: bytes, body: bytes) -> bytes:
  return struct.pack(">I", len(body)) + ctype + body + struct.pack(
      ">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def write_palette_png(path, indices, palette):
  """8-bit palette PNG written by hand (no PIL), filter type 0 on every row."""
  h, w = indices.shape
  raw = b"".join(b"\x00" + indices[y].astype(np.uint8).tobytes() for y in range(h))
  data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
          + _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).ravel()))
          + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


@contextlib.contextmanager
def no_keyboard_interrupt():
  """A Ctrl-C that escapes the handler under test fails the test instead of ending the pytest
  session."""
  import pytest  # imported here: conftest imports this module first
  try:
    yield
  except KeyboardInterrupt:
    pytest.fail("SIGINT raised KeyboardInterrupt instead of being handled")


def sigint_on_call(n: int, function):
  """`function`, sending this process SIGINT (a Ctrl-C) at its n-th call (e.g. the n-th
  training step's shard_batch)."""
  calls = []

  def wrapped(*args, **kwargs):
    calls.append(1)
    if len(calls) == n:
      os.kill(os.getpid(), signal.SIGINT)
    return function(*args, **kwargs)
  return wrapped


def disk_full_at_step(step: int):
  """Patches orbax's CheckpointManager.save to fail with ENOSPC (a full disk) when it writes
  checkpoint `step`; other steps save as usual. Use as a context manager."""
  import errno  # pylint: disable=import-outside-toplevel
  from unittest import mock  # pylint: disable=import-outside-toplevel

  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel  (imports jax)
  real_save = ocp.CheckpointManager.save

  def save(self, at_step, *args, **kwargs):
    if at_step == step:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, at_step, *args, **kwargs)
  return mock.patch.object(ocp.CheckpointManager, "save", save)
