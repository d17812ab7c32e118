"""Scale: FSDP shardings, and 2 processes x 4 devices (local launcher and launch/slurm.sbatch)
training like 1 process x 8 devices."""
import io
import os
import pathlib
import socket
import subprocess
import sys

from _testlib import DEMO_ARGS
from _testlib import ROOT
from _testlib import load_module
from _testlib import read_checkpoint_params
from _testlib import subprocess_env
import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxseg.config import base as config_base
from jaxseg.config.base import base_config
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

NUM_CLASSES = 5
def _launcher():
  return load_module("launch/local_multiprocess.py")


# ------------------------------------------------------------------------------------ FSDP --
def test_param_spec_size_rule():
  assert mesh_lib.param_spec((3, 3, 64, 128), fsdp=4, min_size=1000) == P(None, None, None,
                                                                           "fsdp")
  assert mesh_lib.param_spec((512, 6), fsdp=4, min_size=1000) == P("fsdp")
  assert mesh_lib.param_spec((3, 3, 8, 8), fsdp=4, min_size=1000) == P()  # too small
  assert mesh_lib.param_spec((3, 3, 63, 125), fsdp=4, min_size=1000) == P()  # not divisible
  assert mesh_lib.param_spec((3, 3, 64, 128), fsdp=1, min_size=1000) == P()  # no fsdp axis


def _config(fsdp_min_size=256):
  c = base_config()
  c.precision = "fp32"
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.optimizer.lr = 0.05
  c.mesh.fsdp_min_size = fsdp_min_size
  return c


def _batch(seed, n=8, size=32):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, (n, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
  images = (labels[..., None] * 40 + rng.integers(0, 60, (n, size, size, 3))).astype(np.uint8)
  return {"image": images, "label": labels.astype(np.uint8)}


def _train(mesh_shape, steps=2):
  config = _config()
  mesh = mesh_lib.create_mesh(mesh_shape)
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=10)
  loss_cfg = config_base.loss_config()
  loss_cfg.num_classes = NUM_CLASSES
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=NUM_CLASSES, tx=tx,
                                       loss_fn=losses.make_loss_fn(loss_cfg))
  state = fns.init()
  for i in range(steps):
    state, _ = fns.train_step(state, mesh_lib.shard_batch(_batch(i), mesh), jax.random.key(0))
  return state


def test_fsdp_state_is_sharded_by_size_and_trains_like_data_parallel():
  fsdp = _train({"data": 2, "fsdp": 4})
  sharded = [k for k, v in fsdp.params.items() if v.sharding.spec != P()]
  assert sharded, "no parameter reached fsdp_min_size"
  for key, value in fsdp.params.items():
    want = mesh_lib.param_spec(value.shape, 4, 256)
    assert value.sharding.spec == want, key
    if want != P():  # really split: each device holds a quarter
      assert value.addressable_shards[0].data.size * 4 == value.size, key
  # Momentum is sharded exactly like its parameter.
  momentum = [leaf for leaf in jax.tree.leaves(fsdp.opt_state) if hasattr(leaf, "sharding")]
  by_shape = {v.shape: v.sharding.spec for v in fsdp.params.values()}
  assert momentum and all(m.sharding.spec == by_shape[m.shape] for m in momentum)
  assert all(v.sharding.spec == P() for v in fsdp.batch_stats.values())
  data = jax.device_get(_train({"data": 8}))
  fsdp = jax.device_get(fsdp)
  for key in data.params:
    np.testing.assert_allclose(fsdp.params[key], data.params[key], rtol=1e-4, atol=1e-6,
                               err_msg=key)


# ----------------------------------------------------------------------------- processes --
def _run(workdir, num_processes, devices_per_process, extra=(), env=None):
  log = io.StringIO()
  status = _launcher().launch(
      [*DEMO_ARGS, "--workdir", str(workdir), *extra], num_processes=num_processes,
      devices_per_process=devices_per_process, timeout=1500,
      extra_env={**subprocess_env(), **(env or {})}, sink=log)
  assert status == 0, log.getvalue()[-6000:]
  return log.getvalue()


# srun as SLURM runs a job step: its own options first, then the program, once per task with
# SLURM_PROCID / SLURM_LOCALID / SLURM_NODEID set; the first failing task's status is returned.
FAKE_SRUN = r"""#!/bin/bash
while [[ "${1:-}" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" > "${FAKE_SRUN_LOGS}/task$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid"; rc=$?
  if [[ $rc != 0 && $status == 0 ]]; then status=$rc; fi
done
exit $status
"""


def _job_id_with_free_port() -> int:
  """A job id whose coordinator port (jax: 61440 + id % 4096) is free on this machine."""
  for job_id in range(os.getpid() % 4096, os.getpid() % 4096 + 4096):
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", 61440 + job_id % 4096))
        return 100000 + job_id % 4096
      except OSError:
        continue
  raise RuntimeError("no free port in 61440-65535 for the fake SLURM coordinator")


def _sbatch(tmp: pathlib.Path, name: str, ntasks: int, devices_per_task: int,
            extra: list[str]) -> tuple[pathlib.Path, str]:
  """Runs launch/slurm.sbatch under a faked allocation of `ntasks` tasks: (WORKDIR, logs)."""
  bin_dir, logs, workdir = tmp / "bin", tmp / f"logs_{name}", tmp / name
  bin_dir.mkdir(exist_ok=True)
  logs.mkdir()
  (bin_dir / "srun").write_text(FAKE_SRUN)
  (bin_dir / "srun").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAXSEG_"))}
  env.update(subprocess_env())
  env.update(
      PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHON=sys.executable, FAKE_SRUN_LOGS=str(logs),
      PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
      JAX_PLATFORMS="cpu", JAXSEG_NUM_CPU_DEVICES=str(devices_per_task),
      SLURM_JOB_ID=str(_job_id_with_free_port()), SLURM_NTASKS=str(ntasks),
      SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_NNODES="1", SLURM_JOB_NUM_NODES="1",
      SLURM_STEP_NUM_NODES="1", SLURM_NODELIST="127.0.0.1", SLURM_STEP_NODELIST="127.0.0.1",
      SLURM_JOB_NODELIST="127.0.0.1", SLURM_SUBMIT_DIR=str(ROOT), SLURM_TASKS_PER_NODE=str(ntasks))
  config, *overrides = DEMO_ARGS[1:]  # DEMO_ARGS = ["--config", CONFIG, overrides...]
  proc = subprocess.run(["bash", str(ROOT / "launch" / "slurm.sbatch"), config, str(workdir),
                         *overrides, *extra], env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  task_logs = "".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))
  assert proc.returncode == 0, f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}{task_logs}"
  return workdir, task_logs


# launch/slurm.sbatch adds this flag; the launcher runs get it too, so all three runs share
# one compile cache key and the SLURM run compiles nothing new.
SBATCH_XLA_FLAGS = "--xla_gpu_enable_latency_hiding_scheduler=true"


def test_two_processes_equal_one_process_through_the_launcher_and_slurm(tmp_path):
  """2 processes x 4 devices (local launcher, and launch/slurm.sbatch under a faked 2-task SLURM
  allocation) train like 1 process x 8 devices.

  Tolerance: the runs differ only in how the gradient and BN-statistics sums are split over
  devices and processes (gloo's all-reduce order). That noise floor, measured with 1 process of
  8 vs 4 vs 2 devices (same math, other reduction trees), reaches max|a - b| = 2.1e-5 x max|b|
  of a tensor after these 3 steps (2 x 4 vs 1 x 8: 2.6e-5; elementwise up to 7e-3 relative on
  near-zero entries, so an elementwise rtol does not fit); the bound is 2e-4 x max|b| per
  tensor. A wrong batch split, per-process BN statistics or a missing all-reduce moves a tensor
  by > 1e-3 of its scale.
  """
  extra = ["--config.train.num_steps=3", "--config.train.eval_every=3",
           "--config.train.checkpoint_every=2", "--config.checkpoint.async_save=False",
           "--config.train.preemption_sync_every=1"]  # the SIGTERM agreement runs every step
  flags = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {SBATCH_XLA_FLAGS}"}
  _run(tmp_path / "single", 1, 8, extra, env=flags)
  multi = _run(tmp_path / "multi", 2, 4, extra, env=flags)
  assert "[1] " in multi and "process 1/2" in multi  # both processes ran, in one job
  slurm, logs = _sbatch(tmp_path, "slurm", ntasks=2, devices_per_task=4, extra=extra)
  # Both SLURM tasks joined one job through the SLURM-derived coordinator: 8 global devices.
  assert "process 0/2: 4 local / 8 global devices" in logs, logs[-3000:]
  for run in ("multi", "single", "slurm"):
    assert sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir()) == ["2", "3"]
  b = read_checkpoint_params(tmp_path / "single" / "checkpoints" / "3")
  for run in ("multi", "slurm"):
    a = read_checkpoint_params(tmp_path / run / "checkpoints" / "3")
    for group in ("params", "batch_stats"):
      assert sorted(a[group]) == sorted(b[group])
      for key in a[group]:
        scale = float(np.abs(b[group][key]).max())
        np.testing.assert_allclose(a[group][key], b[group][key], rtol=0, atol=2e-4 * scale,
                                   err_msg=f"{run}: {group}/{key}")
  # The same pixels evaluated once each; predictions equal but for near-ties of the untrained
  # tiny model's logits, which the weight differences above can flip.
  conf = [np.load(tmp_path / r / "eval" / "confusion.npy") for r in ("multi", "single")]
  assert conf[0].sum() == conf[1].sum() and conf[0].sum(axis=1).tolist() == conf[1].sum(
      axis=1).tolist()
  assert np.abs(conf[0] - conf[1]).sum() <= 1e-3 * conf[1].sum()
  # Process 0 alone writes TensorBoard and predictions.
  assert len(list((tmp_path / "multi" / "tensorboard").iterdir())) == 1
  assert len(list((tmp_path / "multi" / "predictions").glob("*_color.png"))) == 2
