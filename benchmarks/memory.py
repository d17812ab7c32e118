r"""Memory budget of the train step on paper: XLA's compiled memory analysis, no GPU needed.

  python benchmarks/memory.py --out benchmarks/results/memory_cpu_896.json
  python benchmarks/memory.py --models DeepWV3Plus --precisions bf16 --crops 448,640 \
      --remat none,block --out /tmp/memory.json

For each model x precision x remat x crop, the train step of the paper's Cityscapes recipe
(configs/cityscapes_wrn38.py / cityscapes_srnx50.py: label relaxation loss, SGD with momentum;
crop `--crops`, `--batch-per-device` images) is traced FOR A GPU
(jaxseg.runtime.platforms.lowering_for: lax.conv everywhere, none of the CPU-only conv
algorithms or fusion barriers), compiled by this host's XLA and its `memory_analysis()` read:
arguments (parameters, BN statistics, momentum, the batch), outputs (the new state, aliased
to the donated arguments), temporaries (the
activations kept for the backward pass, gradients, workspace). Peak = arguments + outputs +
temporaries - aliased, the live set of one device of a data-parallel run (the per-device
program of a data-parallel step differs only by the gradient all-reduce). It is an estimate
of the GPU's: XLA:GPU fuses and schedules differently and cuDNN adds workspace.

Each row is compiled in a child process (a failure or the memory of one compile does not
affect the others); rows that fail say why. `fits` compares the peak with the listed devices'
capacity as a whole and at JAX's default 75% preallocation (XLA_PYTHON_CLIENT_MEM_FRACTION).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {"DeepWV3Plus": "configs/cityscapes_wrn38.py",
           "DeepSRNX50V3PlusD_m1": "configs/cityscapes_srnx50.py"}
# Device memory as nvidia-smi reports it (MiB): H100 SXM 80 GB, H200 141 GB.
DEVICES_MIB = {"H100 80GB": 81559, "H200 141GB": 143771}
DEFAULT_MEM_FRACTION = 0.75  # JAX's default preallocation on GPUs
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(RECIPES))
  p.add_argument("--precisions", default="bf16,fp16")
  p.add_argument("--remat", default="none", help="comma list of train.remat values")
  p.add_argument("--crops", default="896", help="comma list of square crop sizes")
  p.add_argument("--batch-per-device", type=int, default=2)
  p.add_argument("--num-classes", type=int, default=19)
  p.add_argument("--width", type=float, default=1.0, help="model width_multiplier (tests)")
  p.add_argument("--timeout", type=float, default=3600.0, help="seconds per row")
  p.add_argument("--out", default=None, help="JSON output path (default: print only)")
  p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # child process: one row
  return p.parse_args(argv)


def _config(model: str, precision: str, remat: str, crop: int, batch: int, width: float):
  from jaxseg.config.base import load_config_file
  config = load_config_file(ROOT / RECIPES[model])
  config.precision = precision
  config.train.remat = remat
  config.data.crop_size = crop
  config.train.batch_size = batch
  config.train.bs_mult = 0
  config.mesh.shape = {"data": 1}
  if width != 1.0:
    config.model.overrides.width_multiplier = width
  return config


def measure_row(model: str, precision: str, remat: str, crop: int, batch: int,
                num_classes: int, width: float = 1.0) -> dict[str, Any]:
  """Compiles one train step (one device, `batch` images) and returns its memory analysis."""
  import jax
  import jax.numpy as jnp

  from jaxseg.runtime import mesh as mesh_lib
  from jaxseg.runtime import platforms
  from jaxseg.train import loop as trainer
  from jaxseg.train import optimizer as optimizer_lib
  from jaxseg.train import step as step_lib

  config = _config(model, precision, remat, crop, batch, width)
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optimizer_lib.create_optimizer(config, total_steps=1000)
  t0 = time.perf_counter()
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=tx,
                                       loss_fn=trainer.make_loss(config, num_classes, False))
  batched = mesh_lib.batch_sharding(mesh)
  batch_avals = {
      "image": jax.ShapeDtypeStruct((batch, crop, crop, 3), jnp.uint8, sharding=batched),
      "label": jax.ShapeDtypeStruct((batch, crop, crop), jnp.uint8, sharding=batched)}
  state_avals = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             fns.abstract_state, fns.state_sharding)
  key = jax.eval_shape(lambda: jax.random.key(0))
  # Traced for a GPU (lax.conv, no CPU fusion barriers), compiled by this host's XLA: the GPU
  # program's buffers as this compiler assigns them.
  with platforms.lowering_for("cuda"):
    traced = fns.train_step.trace(state_avals, batch_avals, key)
  lowered = traced.lower()
  trace_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  params = sum(int(x.size) for x in jax.tree.leaves(fns.abstract_state.params))
  arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
  peak = arg + out + temp - alias
  return {
      "model": model, "precision": precision, "remat": remat, "crop": crop,
      "batch_per_device": batch, "num_classes": num_classes, "width_multiplier": width,
      "params": params, "argument_bytes": arg, "output_bytes": out, "temp_bytes": temp,
      "alias_bytes": alias, "peak_bytes": peak, "peak_gib": peak / GIB,
      "sum_without_alias_gib": (arg + out + temp) / GIB,
      "fits": {name: {"whole": peak <= mib * 2**20,
                      "default_fraction": peak <= DEFAULT_MEM_FRACTION * mib * 2**20}
               for name, mib in DEVICES_MIB.items()},
      "trace_s": trace_s, "compile_s": compile_s,
      "child_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
  }


def _run_child(args: argparse.Namespace, row: dict[str, Any]) -> dict[str, Any]:
  cmd = [sys.executable, __file__, "--row", json.dumps(row)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env,
                          check=False)
  except subprocess.TimeoutExpired:
    return dict(row, error=f"timed out after {args.timeout:.0f} s")
  if proc.returncode != 0:
    return dict(row, error=(proc.stderr or proc.stdout).strip().splitlines()[-1:] or
                [f"exit {proc.returncode}"], wall_s=time.perf_counter() - t0)
  return dict(json.loads(proc.stdout.strip().splitlines()[-1]),
              wall_s=time.perf_counter() - t0)


def _summary(r: dict[str, Any]) -> str:
  head = f"{r['model']} {r['precision']} remat={r['remat']} crop {r['crop']}"
  if "error" in r:
    return f"{head}: FAILED ({r['error']})"
  def verdict(f: dict[str, bool]) -> str:
    return "fits" if f["default_fraction"] else "fits above 75%" if f["whole"] else "too big"
  fits = ", ".join(f"{n}: {verdict(f)}" for n, f in r["fits"].items())
  return (f"{head}: peak {r['peak_gib']:.2f} GiB (temp {r['temp_bytes'] / GIB:.2f}, args "
          f"{r['argument_bytes'] / GIB:.2f}); {fits} (compile {r['compile_s']:.0f} s)")


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if args.row:
    row = json.loads(args.row)
    print(json.dumps(measure_row(**row)))
    return
  rows = []
  for model in args.models.split(","):
    for precision in args.precisions.split(","):
      for remat in args.remat.split(","):
        for crop in (int(c) for c in args.crops.split(",")):
          row = dict(model=model, precision=precision, remat=remat, crop=crop,
                     batch=args.batch_per_device, num_classes=args.num_classes,
                     width=args.width)
          rows.append(_run_child(args, row))
          print(_summary(rows[-1]), flush=True)
  import jax
  result = {"date": time.strftime("%Y-%m-%d"), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__, "devices_mib": DEVICES_MIB,
            "default_mem_fraction": DEFAULT_MEM_FRACTION, "rows": rows}
  if args.out:
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
