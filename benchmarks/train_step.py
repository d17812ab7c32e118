r"""Compiles and times the train step of a config on random data.

  python benchmarks/train_step.py --config configs/cityscapes_wrn38.py --steps 20 --warmup 3
  python benchmarks/train_step.py --config configs/demo.py --steps 5 --warmup 2 \
      --config.model.overrides.width_multiplier=0.0625 --config.data.crop_size=64 \
      --out benchmarks/results/train_step_cpu_tiny.json

Reports (printed and written as JSON): images/s, seconds per step, peak device memory, FLOPs
per step from XLA's cost analysis of the compiled (partitioned) step, and on GPUs the model
FLOPs utilisation against the device's dense bf16 peak. Everything the trainer would do per
step is in the timed program (normalisation, forward, loss, backward, all-reduce, SGD, fp16
loss scaling); data loading is not (batches are device-resident random crops).
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", str(ROOT / "configs" / "demo.py"),
                                          "A configs/*.py file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Classes (0: the dataset's).")
_OUT = flags.DEFINE_string("out", None, "JSON output path (default: print only).")

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, by a substring of device_kind; the
# first match wins, so the specific names come first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("V100", 125e12),  # fp16 tensor cores (no bf16)
)


def peak_flops(device_kind: str) -> float | None:
  for name, flops in PEAK_BF16_FLOPS:
    if name.lower() in device_kind.lower():
      return flops
  return None


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def _peak_memory(compiled, devices) -> tuple[float | None, str]:
  """Peak bytes on the busiest device: the allocator's count, else XLA's static estimate."""
  peaks = [d.memory_stats().get("peak_bytes_in_use") for d in devices
           if getattr(d, "memory_stats", None) and d.memory_stats()]
  peaks = [p for p in peaks if p]
  if peaks:
    return float(max(peaks)), "memory_stats.peak_bytes_in_use"
  mem = compiled.memory_analysis()
  if mem is None:
    return None, "unavailable"
  total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes -
           mem.alias_size_in_bytes)
  return float(total), "compiled.memory_analysis (arguments + outputs + temporaries - aliased)"


def benchmark(config, *, steps: int, warmup: int, num_classes: int = 0) -> dict[str, Any]:
  import jax
  import numpy as np

  from jaxseg import data as data_lib
  from jaxseg.runtime import distributed
  from jaxseg.runtime import mesh as mesh_lib
  from jaxseg.train import loop as trainer
  from jaxseg.train import optimizer as optimizer_lib
  from jaxseg.train import step as step_lib

  distributed.maybe_initialize()
  if num_classes <= 0:
    num_classes = data_lib.dataset_info(config.data).num_classes
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  batch_size = trainer.global_batch_size(config, mesh)
  tx, _ = optimizer_lib.create_optimizer(config, warmup + steps + 1)
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=tx,
                                       loss_fn=trainer.make_loss(config, num_classes, False))
  local = batch_size // jax.process_count()
  crop = int(config.data.crop_size)
  rng = np.random.default_rng(0)
  host_batch = {"image": rng.integers(0, 256, (local, crop, crop, 3), dtype=np.uint8),
                "label": rng.integers(0, num_classes, (local, crop, crop)).astype(np.uint8)}
  batch = mesh_lib.shard_batch(host_batch, mesh)
  key = jax.random.key(0)

  t0 = time.perf_counter()
  state = fns.init()
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = fns.train_step.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, metrics = compiled(state, batch, key)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch, key)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / steps

  devices = list(mesh.devices.flat)
  flops_device = _flops(compiled)
  flops_step = flops_device * len(devices) if flops_device is not None else None
  peak_mem, mem_source = _peak_memory(compiled, [d for d in devices if d.process_index ==
                                                 jax.process_index()])
  kind = devices[0].device_kind
  peak = peak_flops(kind) if devices[0].platform == "gpu" else None
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  result = {
      "config": config.model.name, "precision": config.precision, "syncbn": bool(config.syncbn),
      "mesh": {k: int(v) for k, v in mesh.shape.items()}, "device_kind": kind,
      "platform": devices[0].platform, "num_devices": len(devices),
      "process_count": jax.process_count(), "global_batch": batch_size, "crop": crop,
      "num_classes": num_classes, "params": params,
      "model_overrides": dict(config.model.overrides) if config.model.get("overrides") else {},
      "steps": steps, "warmup": warmup, "init_s": init_s, "compile_s": compile_s,
      "step_time_s": step_s, "img_per_s": batch_size / step_s,
      "flops_per_step": flops_step, "flops_per_device_step": flops_device,
      "achieved_tflops_per_device": (flops_device / step_s / 1e12) if flops_device else None,
      "peak_memory_bytes": peak_mem, "peak_memory_gib": peak_mem / 2**30 if peak_mem else None,
      "peak_memory_source": mem_source,
      "device_peak_bf16_tflops": peak / 1e12 if peak else None,
      "mfu": (flops_device / step_s / peak) if (peak and flops_device) else None,
      "final_loss": float(metrics["loss"]), "jax_version": jax.__version__,
  }
  return result


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = benchmark(_CONFIG.value, steps=_STEPS.value, warmup=_WARMUP.value,
                     num_classes=_NUM_CLASSES.value)
  import jax
  if jax.process_index() != 0:
    return
  mfu = f", MFU {100 * result['mfu']:.1f}%" if result["mfu"] is not None else ""
  flops = (f"{result['flops_per_step'] / 1e9:.2f} GFLOP/step" if result["flops_per_step"]
           else "FLOPs n/a")
  mem = (f"{result['peak_memory_gib']:.2f} GiB peak" if result["peak_memory_gib"] is not None
         else "memory n/a")
  print(f"{result['config']} {result['precision']} batch {result['global_batch']}x"
        f"{result['crop']}^2 on {result['num_devices']}x {result['device_kind']}: "
        f"{result['step_time_s'] * 1e3:.1f} ms/step, {result['img_per_s']:.2f} img/s, {flops}, "
        f"{mem}{mfu} (compile {result['compile_s']:.1f} s)")
  print(json.dumps(result, indent=2))
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
