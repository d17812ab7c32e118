"""Eval-forward benchmark of the jaxseg segmentation networks.

  python benchmarks/inference.py --models DeepWV3Plus,DeepR50V3PlusD_m1 \
      --sizes 512x1024,1024x2048 --batch 1 --dtypes float32,bfloat16 --out bench.json

Each (model, size, batch, dtype) is compiled once, run `--warmup` times, then timed
over `--iters` runs (each blocked until ready). Reports img/s, latency statistics,
compile time, process CPU seconds per iteration (a load-independent cost measure
on a shared machine) and peak memory: the device's `memory_stats()['peak_bytes_in_use']`
where the backend provides it, else the process peak RSS (ru_maxrss; CPU: includes
the parameters and everything allocated before). Weights are random (throughput
does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import create_model
from jaxseg.models import list_models

DEFAULT_MODELS = ("DeepWV3Plus", "DeepSRNX50V3PlusD_m1", "DeepSRNX101V3PlusD_m1",
                  "DeepR50V3PlusD_m1", "DeepR101V3PlusD_m1")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _parse_sizes(text: str) -> list[tuple[int, int]]:
  sizes = []
  for item in text.split(","):
    try:
      h, w = item.lower().split("x")
      sizes.append((int(h), int(w)))
    except ValueError as e:
      raise argparse.ArgumentTypeError(f"--sizes: expected HxW[,HxW...], got {item!r}") from e
  return sizes


def _cpu_seconds() -> float:
  """User + system CPU time of this process (all threads)."""
  t = os.times()
  return t.user + t.system


def _peak_memory_bytes() -> tuple[int, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss * (1 if sys.platform == "darwin" else 1024)), "process ru_maxrss"


def bench_one(name: str, hw: tuple[int, int], batch: int, dtype_name: str, *, warmup: int,
              iters: int, num_classes: int, overrides: dict[str, Any]) -> dict[str, Any]:
  """Times the eval forward of one configuration."""
  model = create_model(name, num_classes=num_classes, rngs=nnx.Rngs(0),
                       dtype=DTYPES[dtype_name], **overrides)
  graphdef, state = nnx.split(model)
  del model
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *hw, 3)), jnp.float32)
  t0 = time.perf_counter()
  forward = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    forward(state, x).block_until_ready()
  times, cpu_times = [], []
  for _ in range(iters):
    c0, t0 = _cpu_seconds(), time.perf_counter()
    forward(state, x).block_until_ready()
    times.append(time.perf_counter() - t0)
    cpu_times.append(_cpu_seconds() - c0)
  peak, peak_kind = _peak_memory_bytes()
  mean = statistics.fmean(times)
  return dict(model=name, height=hw[0], width=hw[1], batch=batch, dtype=dtype_name,
              iters=iters, warmup=warmup, compile_s=compile_s, latency_mean_s=mean,
              latency_median_s=statistics.median(times), latency_min_s=min(times),
              latency_max_s=max(times), img_per_s=batch / mean,
              cpu_s_per_iter=statistics.fmean(cpu_times), peak_memory_bytes=peak,
              peak_memory_kind=peak_kind)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                      help=f"comma-separated registry names (known: {', '.join(list_models())})")
  parser.add_argument("--sizes", type=_parse_sizes, default=_parse_sizes("512x1024,1024x2048"),
                      help="comma-separated HxW input sizes")
  parser.add_argument("--batch", default="1", help="comma-separated batch sizes")
  parser.add_argument("--dtypes", default="float32,bfloat16",
                      help=f"comma-separated compute dtypes ({', '.join(DTYPES)})")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--num-classes", type=int, default=19)
  parser.add_argument("--width-multiplier", type=float, default=1.0)
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args(argv)

  models = [m for m in args.models.split(",") if m]
  unknown = [m for m in models if m not in list_models()]
  if unknown:
    parser.error(f"--models: unknown {unknown}; known: {', '.join(list_models())}")
  dtypes = [d for d in args.dtypes.split(",") if d]
  if any(d not in DTYPES for d in dtypes):
    parser.error(f"--dtypes: expected a subset of {list(DTYPES)}, got {dtypes}")
  batches = [int(b) for b in args.batch.split(",") if b]
  overrides = {} if args.width_multiplier == 1.0 else {"width_multiplier": args.width_multiplier}

  results = []
  header = dict(jax=jax.__version__, backend=jax.default_backend(),
                devices=[str(d) for d in jax.devices()], machine=platform.machine(),
                processor=platform.processor(), argv=sys.argv[1:] if argv is None else argv)
  print(json.dumps(header))
  for name in models:
    for hw in args.sizes:
      for batch in batches:
        for dtype_name in dtypes:
          r = bench_one(name, hw, batch, dtype_name, warmup=args.warmup, iters=args.iters,
                        num_classes=args.num_classes, overrides=overrides)
          results.append(r)
          print(f"{name:24s} {hw[0]}x{hw[1]} b{batch} {dtype_name:8s} "
                f"latency {r['latency_mean_s']:.3f}s (median {r['latency_median_s']:.3f}s) "
                f"{r['img_per_s']:.3f} img/s  cpu {r['cpu_s_per_iter']:.1f}s/iter  "
                f"compile {r['compile_s']:.1f}s  "
                f"peak {r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']})",
                flush=True)
          if args.out:  # rewrite after each result so a long run leaves partial numbers
            with open(args.out, "w") as f:
              json.dump(dict(header=header, results=results), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
