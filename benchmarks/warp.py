"""Bandwidth of Resample2d (image and label warps) against a device copy.

Times `jaxseg.kernels.resample2d` per implementation (XLA; Pallas Triton on
GPU) for an N x H x W x C float32 bilinear image warp and H x W uint8 / int32
nearest label warps, and reports effective GB/s = (image + flow + output
bytes) / time next to the copy bandwidth of the device measured on the same
bytes (`jnp.copy` and `x + 1`). Writes JSON with --out.

  python benchmarks/warp.py                            # 1x1024x2048x3
  python benchmarks/warp.py --impls xla,pallas --tile-elements 1024,4096,8192
  python benchmarks/warp.py --height 64 --width 128 --impls pallas --interpret
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

try:
  import jaxseg  # noqa: F401  pylint: disable=unused-import
except ImportError:  # Run from a checkout without installing.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxseg.kernels import pallas_resample
from jaxseg.kernels import pallas_triton
from jaxseg.kernels.resample2d import resample2d
from jaxseg.kernels.resample2d import resample2d_xla

# pylint: enable=g-import-not-at-top,wrong-import-position


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--height", type=int, default=1024)
  p.add_argument("--width", type=int, default=2048)
  p.add_argument("--channels", type=int, default=3)
  p.add_argument("--impls", default="",
                 help="comma list of xla,pallas (default: xla, plus pallas "
                 "on GPU)")
  p.add_argument("--interpret", action="store_true",
                 help="allow Pallas in interpret mode off GPU (smoke test; "
                 "timings meaningless)")
  p.add_argument("--tile-elements", default=str(
      pallas_resample.DEFAULT_TILE_ELEMENTS),
                 help="comma list of Pallas tile sizes (pixels x padded "
                 "channels, powers of two)")
  p.add_argument("--num-warps", type=int, default=4)
  p.add_argument("--flow", choices=("smooth", "random"), default="smooth",
                 help="smooth: low-frequency field up to ~12 px (like real "
                 "flow); random: uniform in [-20, 20] px per pixel")
  p.add_argument("--grad", action="store_true",
                 help="also time forward+backward of the image warp")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", type=pathlib.Path, default=None,
                 help="write the results as JSON here")
  return p.parse_args(argv)


def time_fn(fn: Callable[..., Any], args: tuple[Any, ...], iters: int,
            warmup: int) -> dict[str, float]:
  """Median/min wall time in ms of fn(*args) (compiled before timing)."""
  for _ in range(max(1, warmup)):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return {"median_ms": statistics.median(times), "min_ms": min(times)}


def make_flow(shape: tuple[int, int, int], kind: str,
              rng: np.random.Generator) -> np.ndarray:
  n, h, w = shape
  if kind == "random":
    return rng.uniform(-20, 20, (n, h, w, 2)).astype(np.float32)
  ys, xs = np.meshgrid(np.linspace(0, 2 * np.pi, h),
                       np.linspace(0, 2 * np.pi, w), indexing="ij")
  base = np.stack([8 * np.sin(xs + 0.5 * ys), 6 * np.cos(0.7 * xs - ys)], -1)
  noise = rng.uniform(-2, 2, (n, h, w, 2))
  return (base[None] + noise).astype(np.float32)


def copy_baseline(nbytes: int, iters: int, warmup: int) -> dict[str, Any]:
  """GB/s of jnp.copy and x + 1 on a float32 array of `nbytes` bytes."""
  x = jnp.ones((max(1, nbytes // 4),), jnp.float32)
  out = {}
  for name, fn in (("copy", jax.jit(jnp.copy)),
                   ("add1", jax.jit(lambda v: v + 1.0))):
    t = time_fn(fn, (x,), iters, warmup)
    moved = 2 * x.size * 4  # read + write
    out[name] = dict(t, bytes=moved, gbps=moved / t["median_ms"] / 1e6)
  return out


def warp_fns(impl: str, mode: str, tile: int, num_warps: int,
             interpret: bool) -> Callable[..., Any]:
  if impl == "xla":
    return jax.jit(lambda i, f: resample2d_xla(i, f, mode=mode))
  return jax.jit(lambda i, f: pallas_resample.forward(
      i, f, mode=mode, interpret=interpret, tile_elements=tile,
      num_warps=num_warps))


def grad_fn(impl: str) -> Callable[..., Any]:
  loss = lambda i, f: jnp.sum(resample2d(i, f, mode="bilinear", impl=impl))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  on_gpu = pallas_triton.gpu_backend()
  impls = [s for s in args.impls.split(",") if s] or (
      ["xla", "pallas"] if on_gpu else ["xla"])
  if "pallas" in impls and not on_gpu and not args.interpret:
    raise SystemExit("benchmarks/warp.py: --impls pallas needs a GPU backend "
                     "(or --interpret for a smoke test).")
  tiles = [int(t) for t in args.tile_elements.split(",")]
  rng = np.random.default_rng(args.seed)
  n, h, w, c = args.batch, args.height, args.width, args.channels
  flow = jnp.asarray(make_flow((n, h, w), args.flow, rng))
  cases = {
      "image_bilinear_float32": (jnp.asarray(
          rng.uniform(0, 255, (n, h, w, c)).astype(np.float32)), "bilinear"),
      "label_nearest_uint8": (jnp.asarray(
          rng.integers(0, 19, (n, h, w, 1)).astype(np.uint8)), "nearest"),
      "label_nearest_int32": (jnp.asarray(
          rng.integers(0, 19, (n, h, w, 1)).astype(np.int32)), "nearest"),
  }
  results: dict[str, Any] = {
      "device": str(jax.devices()[0]), "platform": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "jax_version": jax.__version__, "args": {
          k: (str(v) if isinstance(v, pathlib.Path) else v)
          for k, v in vars(args).items()}, "cases": []}
  for name, (image, mode) in cases.items():
    in_bytes = image.nbytes + flow.nbytes
    moved = in_bytes + image.nbytes  # + output (same dtype and size)
    copy = copy_baseline(in_bytes, args.iters, args.warmup)
    reference = None
    for impl in impls:
      for tile in (tiles if impl == "pallas" else [0]):
        fn = warp_fns(impl, mode, tile, args.num_warps, args.interpret)
        out = fn(image, flow)
        if reference is None:
          reference = out
        err = float(jnp.max(jnp.abs(out.astype(jnp.float32)
                                    - reference.astype(jnp.float32))))
        t = time_fn(fn, (image, flow), args.iters, args.warmup)
        gbps = moved / t["median_ms"] / 1e6
        row = dict(case=name, impl=impl, tile_elements=tile or None,
                   shape=list(image.shape), dtype=str(image.dtype), mode=mode,
                   bytes=moved, gbps=gbps,
                   fraction_of_copy=gbps / copy["copy"]["gbps"],
                   max_abs_diff_vs_first=err, copy=copy, **t)
        results["cases"].append(row)
        print(f"{name:24s} {impl:6s} tile={tile or '-':>5} "
              f"{t['median_ms']:9.3f} ms  {gbps:8.2f} GB/s  "
              f"(copy {copy['copy']['gbps']:.2f} GB/s, "
              f"{row['fraction_of_copy']:.0%})  diff={err:.2e}")
  if args.grad:
    image = cases["image_bilinear_float32"][0]
    for impl in impls:
      if impl == "pallas" and not on_gpu:
        continue
      t = time_fn(grad_fn(impl), (image, flow), args.iters, args.warmup)
      results["cases"].append(dict(case="image_bilinear_float32_grad",
                                   impl=impl, **t))
      print(f"{'image_bilinear_grad':24s} {impl:6s} {t['median_ms']:9.3f} ms")
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
  return results


if __name__ == "__main__":
  main()
