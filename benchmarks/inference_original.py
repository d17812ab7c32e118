"""Eval-forward timing of the ORIGINAL PyTorch networks, for back-to-back comparisons with
`benchmarks/inference.py` on the same machine.

  python benchmarks/inference_original.py --repo ~/src/semantic-segmentation \
      --models DeepSRNX50V3PlusD_m1,DeepR50V3PlusD_m1 --sizes 512x1024 --out orig.json

`--repo` is a checkout of NVIDIA/semantic-segmentation, branch `sdcnet` (not shipped with
jaxseg). Needs torch (the `dev` extra). The networks are built with random weights: apex is
replaced by a stand-in for its one decorator, and the ImageNet downloads of the trunks are
skipped (timing does not depend on the weights). `DeepR101V3PlusD_m1`, which the original
registers under no function, is its `DeepV3Plus(trunk='resnet-101')`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import types
from typing import Any


def _import_original(repo: str):
  """Imports the original `network.deepv3` with its network side effects disabled."""
  import torch

  apex = types.ModuleType("apex")
  apex.amp = types.SimpleNamespace(float_function=lambda f: f)
  sys.modules.setdefault("apex", apex)
  sys.path.insert(0, repo)
  from config import cfg  # noqa: PLC0415  (the original's global config)

  cfg.MODEL.BNFUNC = torch.nn.BatchNorm2d
  import network.Resnet as resnet  # noqa: PLC0415
  import network.SEresnext as seresnext  # noqa: PLC0415

  seresnext.initialize_pretrained_model = lambda *args, **kwargs: None
  resnet.model_zoo.load_url = lambda *args, **kwargs: None
  resnet.ResNet.load_state_dict = lambda *args, **kwargs: None
  import network.deepv3 as deepv3  # noqa: PLC0415
  return deepv3


def _build(deepv3, name: str, num_classes: int):
  if name == "DeepR101V3PlusD_m1" and not hasattr(deepv3, name):
    return deepv3.DeepV3Plus(num_classes, trunk="resnet-101", criterion=None, variant="D",
                             skip="m1")
  if not hasattr(deepv3, name):
    raise SystemExit(f"--models: the original network/deepv3.py has no {name!r}")
  return getattr(deepv3, name)(num_classes=num_classes, criterion=None)


def bench_one(deepv3, name: str, hw: tuple[int, int], *, warmup: int, iters: int,
              num_classes: int) -> dict[str, Any]:
  import torch

  model = _build(deepv3, name, num_classes).eval()
  x = torch.randn(1, 3, *hw)
  with torch.no_grad():
    for _ in range(warmup):
      model(x)
    times = []
    for _ in range(iters):
      t0 = time.perf_counter()
      model(x)
      times.append(time.perf_counter() - t0)
  # Same fields as benchmarks/inference.py.
  return {"model": name, "height": hw[0], "width": hw[1], "batch": 1, "dtype": "float32",
          "iters": iters, "warmup": warmup, "latency_mean_s": statistics.fmean(times),
          "latency_median_s": statistics.median(times), "latency_min_s": min(times),
          "latency_max_s": max(times), "torch": torch.__version__,
          "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repo", required=True,
                      help="checkout of NVIDIA/semantic-segmentation, branch sdcnet")
  parser.add_argument("--models", default="DeepWV3Plus,DeepSRNX50V3PlusD_m1,"
                      "DeepSRNX101V3PlusD_m1,DeepR50V3PlusD_m1,DeepR101V3PlusD_m1")
  parser.add_argument("--sizes", default="512x1024", help="comma-separated HxW")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--num-classes", type=int, default=19)
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if not os.path.isfile(os.path.join(args.repo, "network", "deepv3.py")):
    raise SystemExit(f"--repo: {args.repo!r} has no network/deepv3.py; expected a checkout of "
                     "NVIDIA/semantic-segmentation (branch sdcnet)")
  deepv3 = _import_original(args.repo)
  sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
  header = {"machine": platform.machine(), "argv": sys.argv[1:], "date": time.strftime("%F")}
  print(json.dumps(header))
  results = []
  for name in args.models.split(","):
    for hw in sizes:
      r = bench_one(deepv3, name, hw, warmup=args.warmup, iters=args.iters,
                    num_classes=args.num_classes)
      results.append(r)
      print(f"{name:24s} {hw[0]}x{hw[1]} b1 float32  latency {r['latency_mean_s']:.3f}s "
            f"(median {r['latency_median_s']:.3f}s)  torch {r['torch']} threads "
            f"{r['threads']}", flush=True)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({**header, "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
