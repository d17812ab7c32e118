"""Multi-host start-up through JAX's own distributed runtime.

Set either the SLURM environment (srun, one task per host, or per GPU) or the explicit
JAXSEG_COORDINATOR=host:port, JAXSEG_NUM_PROCESSES, JAXSEG_PROCESS_ID variables (launch/ has
examples for both). With neither, this is a single-process run and nothing happens.
JAXSEG_NUM_CPU_DEVICES gives each process that many virtual CPU devices (testing a mesh without
accelerators; CPU collectives then go through gloo).

Every process runs the same program on its own slice of each batch; only process 0 writes
TensorBoard, eval reports and predictions, and the others log errors only.
"""
from __future__ import annotations

import itertools
import os

from absl import logging
import jax

_ENV = ("JAXSEG_COORDINATOR", "JAXSEG_NUM_PROCESSES", "JAXSEG_PROCESS_ID")
_BARRIER_IDS = itertools.count()


def _slurm_tasks() -> int:
  return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def maybe_initialize() -> None:
  """Initialises jax.distributed when the environment describes a multi-process job.

  Must run before anything touches a JAX device (the CPU device count and the collectives
  implementation are start-up options).
  """
  cpu_devices = os.environ.get("JAXSEG_NUM_CPU_DEVICES")
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  coordinator = os.environ.get("JAXSEG_COORDINATOR")
  if coordinator:
    missing = [v for v in _ENV[1:] if v not in os.environ]
    if missing:
      raise ValueError(f"JAXSEG_COORDINATOR={coordinator} is set but {missing} are not")
    if cpu_devices or os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["JAXSEG_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAXSEG_PROCESS_ID"]))
  elif _slurm_tasks() > 1:
    jax.distributed.initialize()  # reads SLURM_* (coordinator = first node of the job)
  else:
    return
  logging.warning("process %d/%d: %d local / %d global devices", jax.process_index(),
                  jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.ERROR)  # one log per job, from process 0


def barrier(name: str, timeout_s: float = 3600.0) -> None:
  """Waits until every process reaches `name`, through the coordination service (no device
  collectives); a no-op in single-process runs.

  Call it before the first collective of a newly compiled program: a new communicator waits
  only 30 s for its peers on CPU (gloo), so a process still compiling (or starved of CPU)
  would fail the others; once the communicator exists, collectives wait as long as needed.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client  # what orbax's own barriers use
  if client is None:
    return
  client.wait_at_barrier(f"jaxseg_{name}_{next(_BARRIER_IDS)}", int(timeout_s * 1000))
