"""Seconds per image of --mode eval inference: whole, sliding, multi-scale + flip sliding.

For each model x precision x mode, a child process (so that peak memory is its own) builds the
model with random weights, segments one random H x W image on ONE device (the original's
protocol: one GPU, batch 1), and reports the first call (compilation included), the median
steady-state seconds per image, the number of model calls and crops, and the peak memory
(device `peak_bytes_in_use` where the backend reports it, else the process's peak RSS).

  python benchmarks/eval.py                                  # 1024x2048, the full grid
  python benchmarks/eval.py --height 512 --width 1024 --models DeepSRNX50V3PlusD_m1 \\
      --precisions fp32 --out /tmp/eval_bench.json           # a CPU-sized run

Modes: whole (one call per image), sliding (crop --crop-size, default the image height, i.e.
1024 for Cityscapes: 3 tiles, overlap 1/3), ms_flip_sliding (sliding at --scales, default
0.5,1.0,2.0, with the mirrored image).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MODES = ("whole", "sliding", "ms_flip_sliding")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="DeepWV3Plus,DeepSRNX50V3PlusD_m1")
  p.add_argument("--precisions", default="bf16,fp32")
  p.add_argument("--modes", default=",".join(MODES))
  p.add_argument("--height", type=int, default=1024)
  p.add_argument("--width", type=int, default=2048)
  p.add_argument("--crop-size", type=int, default=0, help="sliding tile (0: the height)")
  p.add_argument("--scales", default="0.5,1.0,2.0", help="ms_flip_sliding scales")
  p.add_argument("--crop-budget-mpix", type=float, default=8.0,
                 help="config.eval.crop_budget_mpix (crop megapixels per model call)")
  p.add_argument("--num-classes", type=int, default=19)
  p.add_argument("--width-multiplier", type=float, default=1.0,
                 help="model.overrides.width_multiplier (< 1: a narrow model, e.g. CPU dry runs)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--timeout", type=float, default=3600, help="seconds per child")
  p.add_argument("--out", type=pathlib.Path, default=None, help="write the results as JSON")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def _settings(mode: str, args: argparse.Namespace):
  from jaxseg.inference import sliding  # pylint: disable=g-import-not-at-top
  crop = args.crop_size or args.height
  common = dict(crop_size=crop, crop_budget_mpix=args.crop_budget_mpix)
  if mode == "whole":
    return sliding.InferenceSettings.of(mode="whole", **common)
  if mode == "sliding":
    return sliding.InferenceSettings.of(mode="sliding", **common)
  return sliding.InferenceSettings.of(mode="sliding", scales=args.scales, flip=True, **common)


def _peak_memory() -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"peak_bytes": int(stats["peak_bytes_in_use"]), "peak_kind": "device"}
  # Linux reports ru_maxrss in KiB.
  return {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "peak_kind": "host_rss"}


def run_one(model: str, precision: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
  """One configuration, in this process."""
  import flax.nnx as nnx  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np

  from jaxseg.config.base import base_config
  from jaxseg.inference import model as inference_model
  from jaxseg.inference import sliding
  from jaxseg.models import registry
  from jaxseg.runtime import mesh as mesh_lib
  from jaxseg.runtime import precision as precision_lib
  from jaxseg.runtime import variables

  config = base_config()
  config.model.name = model
  config.precision = precision
  if args.width_multiplier != 1.0:
    config.model.overrides.width_multiplier = args.width_multiplier
  net = registry.from_config(config, args.num_classes, rngs=nnx.Rngs(0))
  params, stats = variables.model_variables(net)
  del net
  device = jax.devices()[0]
  mesh = mesh_lib.create_mesh({"data": 1}, devices=[device])
  model_vars = jax.device_put({"params": params, "batch_stats": stats},
                              mesh_lib.replicated(mesh))
  _, apply_fn = inference_model.build_apply_fn(config, args.num_classes)
  settings = _settings(mode, args)
  seg = sliding.Segmenter(apply_fn, num_classes=args.num_classes, mesh=mesh, settings=settings,
                          dtype=precision_lib.compute_dtype(precision))
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (1, args.height, args.width, 3), dtype=np.uint8)
  images = mesh_lib.shard_batch({"image": image}, mesh)["image"]
  t0 = time.perf_counter()
  jax.block_until_ready(seg.predict(model_vars, images))
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(seg.predict(model_vars, images))
    times.append(time.perf_counter() - t0)
  plans = seg.plans(args.height, args.width, 1)
  direct = seg.is_direct(args.height, args.width, 1)
  return {
      "model": model, "precision": precision, "mode": mode,
      "height": args.height, "width": args.width,
      "scales": list(settings.scales), "flip": settings.flip, "crop_size": settings.crop_size,
      "crops": sum(len(p.boxes) * settings.num_variants for p in plans),
      "model_calls": 1 if direct else sum(len(p.items) for p in plans),
      "crops_per_call": [p.chunk for p in plans],
      "first_call_s": first, "seconds_per_image": statistics.median(times),
      "min_seconds_per_image": min(times), "repeats": len(times),
      "device": str(device), "device_kind": device.device_kind,
      "platform": jax.default_backend(), "jax_version": jax.__version__,
      **_peak_memory(),
  }


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  root = pathlib.Path(__file__).resolve().parents[1]
  if args.child:
    sys.path.insert(0, str(root))
    model, precision, mode = args.child.split(":")
    print("RESULT " + json.dumps(run_one(model, precision, mode, args)), flush=True)
    return {}
  rows = []
  passthrough = list(argv if argv is not None else sys.argv[1:])
  for model in args.models.split(","):
    for precision in args.precisions.split(","):
      for mode in args.modes.split(","):
        if mode not in MODES:
          raise SystemExit(f"benchmarks/eval.py: unknown mode {mode!r}; expected {MODES}")
        cmd = [sys.executable, __file__, *passthrough, "--child", f"{model}:{precision}:{mode}"]
        try:
          proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                check=False)
          found = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
          row = (json.loads(found[-1][7:]) if found else
                 {"model": model, "precision": precision, "mode": mode,
                  "error": proc.stderr.strip().splitlines()[-1:] or ["no output"]})
        except subprocess.TimeoutExpired:
          row = {"model": model, "precision": precision, "mode": mode,
                 "error": f"timeout after {args.timeout}s"}
        rows.append(row)
        if "error" in row:
          print(f"{model:24s} {precision:5s} {mode:16s} FAILED {row['error']}", flush=True)
        else:
          print(f"{model:24s} {precision:5s} {mode:16s} {row['seconds_per_image']:8.3f} s/img "
                f"(first {row['first_call_s']:7.1f} s, {row['crops']} crops in "
                f"{row['model_calls']} calls, peak {row['peak_bytes'] / 2**30:6.2f} GiB "
                f"{row['peak_kind']})", flush=True)
  results = {"args": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                      for k, v in vars(args).items() if k != "child"}, "results": rows}
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
  return results


if __name__ == "__main__":
  main()
