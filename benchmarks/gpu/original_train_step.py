r"""Train-step timing of the ORIGINAL PyTorch code (NVIDIA/semantic-segmentation, sdcnet).

  python benchmarks/gpu/original_train_step.py --repo .original --model DeepWV3Plus \
      --crop 896 --batch 2 --out /tmp/orig_wrn38.json

The step is the original train.py's: net(inputs, gts) returns the loss of the network's own
criterion (ImgWtLossSoftNLL, the --jointwtborder label relaxation of the Cityscapes scripts,
on one-hot targets), backward, SGD (momentum 0.9, weight decay 1e-4). Two forms:
  shipped  fp16 autocast + GradScaler standing in for apex O1, NCHW, eager;
  modern   bf16 autocast, channels_last, torch.compile of the network.
Random weights and data (timing does not depend on them). Networks are imported as
benchmarks/inference_original.py does. Writes JSON with --out; never raises for one mode's
failure (it is recorded as that mode's error).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from inference_original import _import_original  # noqa: E402  pylint: disable=wrong-import-position

MODES = {
    "shipped": "fp16 autocast + GradScaler (apex O1 stand-in), NCHW, eager",
    "modern": "bf16 autocast, channels_last, torch.compile",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repo", required=True, help="checkout/export of the original, branch sdcnet")
  p.add_argument("--model", default="DeepWV3Plus")
  p.add_argument("--crop", type=int, default=896)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--num-classes", type=int, default=19)
  p.add_argument("--modes", default="shipped,modern")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--compile-backend", default="inductor",
                 help="torch.compile backend of the modern form ('eager' for CPU dry runs)")
  p.add_argument("--cpu-autocast-dtype", default="none",
                 help="off GPU: autocast dtype of both forms, or none (float32; reduced-precision"
                 " convolutions on CPU crawl)")
  p.add_argument("--out", type=pathlib.Path, default=None)
  return p.parse_args(argv)


def _criterion(repo_loss, num_classes: int, device):
  """The original's ImgWtLossSoftNLL; its `.cuda()` calls become moves to `device`."""
  import torch  # pylint: disable=g-import-not-at-top
  crit = repo_loss.ImgWtLossSoftNLL(classes=num_classes, ignore_index=255, upper_bound=1.0)
  if device.type != "cuda":  # the loss hard-codes .cuda() for its class weights
    repo_loss.torch = _CpuTorch(torch)
  return crit


class _CpuTorch:
  """`torch` for the original loss module off GPU: Tensor(...).cuda() stays on the CPU."""

  def __init__(self, torch):
    self._torch = torch

  def __getattr__(self, name):
    if name == "Tensor":
      return lambda *a: _NoCuda(self._torch.Tensor(*a))
    return getattr(self._torch, name)


class _NoCuda:  # pylint: disable=too-few-public-methods
  def __init__(self, t):
    self._t = t

  def cuda(self):
    return self._t


def _data(args: argparse.Namespace, device):
  """Random images and the one-hot (N, C+1, H, W) targets of the relaxed loss (last: ignore)."""
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(0)
  images = torch.randn(args.batch, 3, args.crop, args.crop, generator=g)
  labels = torch.randint(0, args.num_classes, (args.batch, args.crop, args.crop), generator=g)
  target = torch.nn.functional.one_hot(labels, args.num_classes + 1).permute(0, 3, 1, 2)
  return images.to(device), target.to(device=device, dtype=torch.uint8)


def _peak_bytes(device) -> int | None:
  import torch  # pylint: disable=g-import-not-at-top
  return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def time_mode(deepv3, repo_loss, mode: str, args: argparse.Namespace, device) -> dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  if device.type == "cuda":
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
  net = getattr(deepv3, args.model)(num_classes=args.num_classes, criterion=None)
  # Set afterwards: with a criterion the WRN38 constructor loads ImageNet weights from disk.
  net.criterion = _criterion(repo_loss, args.num_classes, device)
  net = net.to(device).train()
  images, target = _data(args, device)
  modern = mode == "modern"
  if modern:
    net = net.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
  dtype = torch.bfloat16 if modern else torch.float16
  if device.type != "cuda":
    dtype = None if args.cpu_autocast_dtype == "none" else getattr(torch, args.cpu_autocast_dtype)
  scaler = None if modern else torch.amp.GradScaler(device.type)
  forward = torch.compile(net, backend=args.compile_backend) if modern else net

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
      loss = forward(images, gts=target)
    if scaler is None:
      loss.backward()
      opt.step()
    else:
      scaler.scale(loss).backward()
      scaler.step(opt)
      scaler.update()
    return float(loss.detach())

  def sync() -> None:
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  t0 = time.perf_counter()
  loss = step()
  sync()
  first = time.perf_counter() - t0
  for _ in range(max(args.warmup - 1, 0)):
    step()
  sync()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  sync()
  step_s = (time.perf_counter() - t0) / args.steps
  return {"mode": mode, "desc": MODES[mode], "autocast_dtype": str(dtype),
          "first_step_s": first, "step_time_s": step_s,
          "img_per_s": args.batch / step_s, "final_loss": loss,
          "peak_memory_bytes": _peak_bytes(device), "steps": args.steps, "warmup": args.warmup}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  repo = pathlib.Path(args.repo)
  if not (repo / "network" / "deepv3.py").is_file():
    raise SystemExit(f"--repo: {repo} has no network/deepv3.py; expected an export of NVIDIA/"
                     "semantic-segmentation sdcnet (benchmarks/gpu/export_original.sh)")
  modes = [m for m in args.modes.split(",") if m]
  if any(m not in MODES for m in modes):
    raise SystemExit(f"--modes {args.modes!r}: expected a comma list of {sorted(MODES)}")
  import torch  # pylint: disable=g-import-not-at-top
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  deepv3 = _import_original(str(repo.resolve()))
  import loss as repo_loss  # pylint: disable=g-import-not-at-top  (the original's loss.py)
  result: dict[str, Any] = {
      "model": args.model, "crop": args.crop, "batch": args.batch, "device": str(device),
      "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
      "torch": torch.__version__, "loss": "ImgWtLossSoftNLL", "modes": []}
  for mode in modes:
    try:
      row = time_mode(deepv3, repo_loss, mode, args, device)
    except Exception as e:  # pylint: disable=broad-except  (one mode must not lose the other)
      traceback.print_exc()
      row = {"mode": mode, "desc": MODES[mode], "error": f"{type(e).__name__}: {e}"}
    result["modes"].append(row)
    print(json.dumps(row), flush=True)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
  if any("error" in m for m in result["modes"]):
    sys.exit(1)
  return result


if __name__ == "__main__":
  main()
