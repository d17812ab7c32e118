r"""Label-propagation quality on a labelled video clip: mIoU of propagated vs true labels.

CamVid's val split (SegNet version) is one continuous 15 Hz clip (sequence 0016E5, every 2nd
frame of the 30 Hz video) with a label on every frame. For each anchor frame t whose t-D and
t+D exist (D = --max-distance), the true label of t is propagated to t+-1 ... t+-D and compared
with the true labels there (11 classes, void ignored); the confusion matrices of both directions
are summed per distance. Methods:

  copy    the label of t unchanged (the baseline any propagation must beat)
  dis     flow-only propagation: OpenCV DIS flow between consecutive frames warps the label
          (nearest Resample2d), step by step (jaxseg.sdcnet.warp_step, method 'flow')
  sdcnet  SDCNet2DRecon as sdc_aug.py (needs --sdcnet; flows from --flownet2, else DIS)

  python benchmarks/propagation.py --out /tmp/propagation.json
  python benchmarks/propagation.py --methods copy,dis,sdcnet --sdcnet /ckpt/sdcnet/0 \
      --flownet2 /ckpt/flownet2/0
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import cv2
import numpy as np

try:
  import jaxseg  # noqa: F401  pylint: disable=unused-import
except ImportError:  # Run from a checkout without installing.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxseg.evaluation import metrics
from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet import warp_step

# pylint: enable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 11  # CamVid (SegNet): 0-10, 11 = void
DEFAULT_CAMVID = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def load_clip(camvid_root: str | os.PathLike, limit: int = 0
              ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
  """(names, BGR frames, labels with void -> 255) of CamVid val, sorted by frame number."""
  img_dir = pathlib.Path(camvid_root) / "val"
  lab_dir = pathlib.Path(camvid_root) / "valannot"
  if not img_dir.is_dir() or not lab_dir.is_dir():
    raise FileNotFoundError(f"CamVid val not found: expected {img_dir} and {lab_dir}")
  names = sorted(p.name for p in img_dir.glob("*.png"))
  if limit:
    names = names[:limit]
  frames, labels = [], []
  for name in names:
    frames.append(cv2.imread(str(img_dir / name), cv2.IMREAD_COLOR))
    label = cv2.imread(str(lab_dir / name), cv2.IMREAD_UNCHANGED)
    if label is None:
      raise FileNotFoundError(f"missing CamVid label {lab_dir / name}")
    labels.append(np.where(label >= NUM_CLASSES, 255, label).astype(np.uint8))
  return names, frames, labels


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
  """(K, K) counts, rows = truth; truth 255 ignored; predicted ignore ids count as wrong."""
  mask = truth < num_classes
  pred = np.where(pred < num_classes, pred, num_classes).astype(np.int64)
  idx = truth[mask].astype(np.int64) * (num_classes + 1) + pred[mask]
  counts = np.bincount(idx, minlength=num_classes * (num_classes + 1))
  return counts.reshape(num_classes, num_classes + 1)[:, :num_classes]


Propagate = Callable[[list, np.ndarray, np.ndarray, int, int, int], list]


def copy_method(frames, image, label, anchor, direction, steps) -> list[np.ndarray]:
  del frames, image, anchor, direction
  return [label] * steps


def step_method(step: warp_step.Propagator, first_frame: str = "anchor") -> Propagate:
  def run(frames, image, label, anchor, direction, steps):
    return warp_step.propagate_sequence(step, frames, image, label, steps=steps,
                                        direction=direction, first_frame=first_frame,
                                        anchor=anchor)
  return run


def evaluate(method: Propagate, frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             anchors: Sequence[int], max_distance: int) -> dict[str, Any]:
  """{distance: {'miou', 'aacc', 'pairs'}} over both directions of every anchor."""
  conf = np.zeros((max_distance, NUM_CLASSES, NUM_CLASSES), np.int64)
  for t in anchors:
    for d in (1, -1):
      preds = method(frames, frames[t], labels[t], t, d, max_distance)
      for n, pred in enumerate(preds, start=1):
        conf[n - 1] += confusion(labels[t + d * n], pred)
  out = {}
  for n in range(1, max_distance + 1):
    s = metrics.summarize(conf[n - 1])
    out[str(n)] = {"miou": round(100 * s["miou"], 2), "aacc": round(100 * s["aacc"], 2),
                   "pairs": 2 * len(anchors)}
  return out


def anchor_frames(num_frames: int, max_distance: int, stride: int = 1) -> list[int]:
  """Frames t with t - D - 0 >= 0 and t + D < num_frames (so every method has its context)."""
  return list(range(max_distance, num_frames - max_distance, stride))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--camvid", default=str(DEFAULT_CAMVID), help="CamVid root (val/, valannot/)")
  p.add_argument("--methods", default="copy,dis", help="comma list of copy, dis, sdcnet")
  p.add_argument("--max-distance", type=int, default=5)
  p.add_argument("--anchor-stride", type=int, default=1, help="every n-th frame as anchor")
  p.add_argument("--dis-preset", default="medium", choices=sorted(flow_providers.DIS_PRESETS))
  p.add_argument("--sdcnet", default="", help="SDCNet2DRecon weights (orbax dir or .pth.tar)")
  p.add_argument("--flownet2", default="", help="FlowNet2 weights; without: DIS flows")
  p.add_argument("--first-frame", default="anchor", choices=["anchor", "previous"])
  p.add_argument("--out", default="", help="write the JSON report here")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  names, frames, labels = load_clip(args.camvid)
  anchors = anchor_frames(len(frames), args.max_distance, args.anchor_stride)
  report: dict[str, Any] = {
      "dataset": f"CamVid val clip {names[0]}..{names[-1]} ({len(names)} frames, 15 Hz)",
      "size_hw": list(frames[0].shape[:2]), "anchors": len(anchors),
      "max_distance": args.max_distance, "metric": "mIoU (%) over 11 classes, void ignored; "
      "both directions pooled per distance", "methods": {}, "seconds": {}}
  for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
    if name == "copy":
      method = copy_method
    elif name == "dis":
      method = step_method(warp_step.Propagator("flow", flow_providers.DISFlow(args.dis_preset)))
    elif name == "sdcnet":
      if not args.sdcnet:
        raise SystemExit("--methods sdcnet needs --sdcnet (SDCNet2DRecon weights)")
      bundle = convert_weights.build_sdcnet("SDCNet2DRecon", checkpoint=args.sdcnet,
                                            flownet2_checkpoint=args.flownet2)
      source = "flownet2" if args.flownet2 else "dis"
      provider = flow_providers.make_flow_provider(source, flownet2=bundle.flownet2,
                                                   dis_preset=args.dis_preset)
      method = step_method(warp_step.Propagator("sdcnet", provider, bundle), args.first_frame)
      name = f"sdcnet_{source}"
    else:
      raise SystemExit(f"unknown method {name!r}; expected copy, dis, sdcnet")
    start = time.perf_counter()
    report["methods"][name] = evaluate(method, frames, labels, anchors, args.max_distance)
    report["seconds"][name] = round(time.perf_counter() - start, 1)
    print(name, {k: v["miou"] for k, v in report["methods"][name].items()}, flush=True)
  text = json.dumps(report, indent=2)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  print(text)
  return report


if __name__ == "__main__":
  main()
