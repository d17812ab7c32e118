"""launch/slurm.sbatch really starts a multi-process run: the script itself, run by bash with
SLURM's environment faked for 2 local tasks (a stand-in `srun` on PATH starts them on
127.0.0.1, 4 virtual CPU devices each), trains like 1 process of 8 devices."""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from _testlib import DEMO_ARGS, ROOT, read_checkpoint_params, subprocess_env

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
EXTRA = ["--config.train.num_steps=2", "--config.train.eval_every=2",
         "--config.train.checkpoint_every=2", "--config.checkpoint.async_save=False"]


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


def _sbatch(tmp: pathlib.Path, name: str, ntasks: int,
            devices_per_task: int) -> tuple[pathlib.Path, str]:
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
                         *overrides, *EXTRA], env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  task_logs = "".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))
  assert proc.returncode == 0, f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}{task_logs}"
  return workdir, task_logs


@pytest.mark.slow  # two cold jaxseg.main runs: ~3 CPU-minutes
def test_sbatch_two_tasks_train_like_one_process(tmp_path):
  multi, logs = _sbatch(tmp_path, "multi", ntasks=2, devices_per_task=4)
  # Both tasks joined one job through the SLURM-derived coordinator: 8 global devices.
  assert "process 0/2: 4 local / 8 global devices" in logs, logs[-3000:]
  single, _ = _sbatch(tmp_path, "single", ntasks=1, devices_per_task=8)
  a = read_checkpoint_params(multi / "checkpoints" / "2")
  b = read_checkpoint_params(single / "checkpoints" / "2")
  for group in ("params", "batch_stats"):
    assert sorted(a[group]) == sorted(b[group])
    for key in a[group]:
      # As in tests/test_multiprocess.py: equal up to the cross-process all-reduce order.
      np.testing.assert_allclose(a[group][key], b[group][key], rtol=1e-4, atol=5e-6,
                                 err_msg=f"{group}/{key}")
