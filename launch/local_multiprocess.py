r"""Runs a jaxseg command as N cooperating processes on this machine (JAX distributed runtime).

Each process gets JAXSEG_COORDINATOR / JAXSEG_NUM_PROCESSES / JAXSEG_PROCESS_ID (read by
jaxseg.runtime.distributed) and, on CPU, JAXSEG_NUM_CPU_DEVICES virtual devices with gloo
collectives: a multi-host job in miniature, e.g. 2 processes x 4 devices for the demo config

  python launch/local_multiprocess.py --num_processes 2 --devices_per_process 4 -- \
      --config configs/demo.py --workdir /tmp/demo_mp

Everything after `--` goes to `python -m jaxseg.main`. Output lines are prefixed with the
process id. If one process fails the others are terminated; the exit status is the first
non-zero one. `--gpus_per_process K` instead assigns CUDA_VISIBLE_DEVICES slices (one process
per GPU group on a single host).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _pump(stream, prefix: str, sink) -> None:
  for line in iter(stream.readline, b""):
    sink.write(f"{prefix}{line.decode(errors='replace')}")
    sink.flush()


def process_env(process_id: int, num_processes: int, port: int, *, devices_per_process: int,
                gpus_per_process: int = 0, base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of one process of the group."""
  env = dict(os.environ if base is None else base)
  for name in ("JAXSEG_COORDINATOR", "JAXSEG_NUM_PROCESSES", "JAXSEG_PROCESS_ID"):
    env.pop(name, None)
  if num_processes > 1:  # one process is a plain run, without the distributed runtime
    env.update(JAXSEG_COORDINATOR=f"localhost:{port}", JAXSEG_NUM_PROCESSES=str(num_processes),
               JAXSEG_PROCESS_ID=str(process_id))
  if gpus_per_process > 0:
    first = process_id * gpus_per_process
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(gpus_per_process))
  else:
    env["JAX_PLATFORMS"] = "cpu"
    env["JAXSEG_NUM_CPU_DEVICES"] = str(devices_per_process)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
  return env


def launch(args: list[str], *, num_processes: int, devices_per_process: int = 1,
           gpus_per_process: int = 0, module: str = "jaxseg.main", port: int = 0,
           timeout: float | None = None, extra_env: dict[str, str] | None = None,
           sink=None) -> int:
  """Starts the group, streams its output (to `sink`, default stdout) and returns the first
  non-zero exit status, 124 on timeout, else 0."""
  port = port or free_port()
  sink = sink or sys.stdout
  procs, pumps = [], []
  for pid in range(num_processes):
    env = process_env(pid, num_processes, port, devices_per_process=devices_per_process,
                      gpus_per_process=gpus_per_process)
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pumps.append(threading.Thread(target=_pump, args=(proc.stdout, f"[{pid}] ", sink),
                                  daemon=True))
    pumps[-1].start()
    procs.append(proc)
  deadline = None if timeout is None else time.monotonic() + timeout
  status = 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
      if failed or (deadline is not None and time.monotonic() > deadline):
        status = failed[0] if failed else 124
        break
      time.sleep(0.2)
  finally:
    for p in procs:  # stop the rest of the group (only processes started here)
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    for p in procs:
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for t in pumps:
      t.join(timeout=5)
  return status or next((p.returncode for p in procs if p.returncode), 0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4,
                      help="virtual CPU devices per process (CPU runs)")
  parser.add_argument("--gpus_per_process", type=int, default=0,
                      help=">0: give each process this many GPUs (CUDA_VISIBLE_DEVICES)")
  parser.add_argument("--module", default="jaxseg.main")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
  parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the module's arguments")
  ns = parser.parse_args()
  rest = ns.rest[1:] if ns.rest[:1] == ["--"] else ns.rest
  sys.exit(launch(rest, num_processes=ns.num_processes,
                  devices_per_process=ns.devices_per_process,
                  gpus_per_process=ns.gpus_per_process, module=ns.module, port=ns.port,
                  timeout=ns.timeout))


if __name__ == "__main__":
  main()
