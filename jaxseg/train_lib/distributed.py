"""Multi-host start-up through JAX's own distributed runtime.

Set either the SLURM environment (srun, one task per host or per GPU) or the explicit
JAXSEG_COORDINATOR=host:port, JAXSEG_NUM_PROCESSES, JAXSEG_PROCESS_ID variables. With neither,
this is a single-process run and nothing happens. JAXSEG_NUM_CPU_DEVICES gives each process that
many virtual CPU devices (testing a mesh without accelerators).
"""
from __future__ import annotations

import os

import jax
from absl import logging


def maybe_initialize() -> None:
  cpu_devices = os.environ.get("JAXSEG_NUM_CPU_DEVICES")
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  coordinator = os.environ.get("JAXSEG_COORDINATOR")
  if coordinator:
    missing = [v for v in ("JAXSEG_NUM_PROCESSES", "JAXSEG_PROCESS_ID") if v not in os.environ]
    if missing:
      raise ValueError(f"JAXSEG_COORDINATOR={coordinator} is set but {missing} are not")
    if jax.config.jax_platforms == "cpu" or cpu_devices:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["JAXSEG_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAXSEG_PROCESS_ID"]))
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()  # reads SLURM_* itself
  else:
    return
  logging.info("process %d/%d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
