"""Training input pipeline throughput on the Cityscapes recipe, as JSON.

Recipe (scripts/train_cityscapes_*.sh): 2048x1024 PNG decode, random scale
[0.5, 2.0], 896 crop (padded), flip, colour jitter 0.25, Gaussian blur; with
and without class-uniform sampling (pct 0.5, tile 1024). Measures samples/s
with one worker process and with one worker per core, plus a per-stage
single-core profile and the centroid extraction rate.

  python benchmarks/input_pipeline.py --root ../shared/data/cityscapes \
      --seconds 20 --out /tmp/input_pipeline.json

The few real frames are repeated (`--repeat`) so that class-uniform epochs
hold class-centred crops (per class: int(n * 0.5 / 19)).
"""
import argparse
import json
import os
import platform
import tempfile
import time

import cv2
import numpy as np

from jaxseg.data import build_train_loader
from jaxseg.data import color
from jaxseg.data import data_config
from jaxseg.data import transforms
from jaxseg.data import uniform
from jaxseg.data.datasets import base
from jaxseg.data.datasets import get_dataset
from jaxseg.data.datasets import image_io


def recipe_config(root: str, cache_dir: str, pct: float, workers: int):
  c = data_config()
  c.name = "cityscapes"
  c.root = root
  c.crop_size = 896
  c.scale_min, c.scale_max = 0.5, 2.0
  c.color_aug = 0.25
  c.gblur = True
  c.class_uniform_pct = pct
  c.class_uniform_tile = 1024
  c.uniform_cache_dir = cache_dir
  c.num_workers = workers
  c.worker_buffer_size = 2
  c.read_num_threads = 1  # one sample at a time per worker: cores = workers
  c.read_prefetch_buffer_size = 2
  return c


def repeated_dataset(cfg, repeat: int):
  ds = get_dataset(cfg, cfg.train_split)
  return base.SegmentationDataset(list(ds.records) * repeat, ds.table, ds.split,
                                  name=ds.name)


def measure(cfg, dataset, batch: int, seconds: float) -> dict:
  t0 = time.perf_counter()
  it = build_train_loader(cfg, global_batch_size=batch, seed=0, process_index=0,
                          process_count=1, dataset=dataset)
  first = next(it)
  startup = time.perf_counter() - t0
  assert first["image"].shape == (batch, 896, 896, 3)
  n, t1 = 0, time.perf_counter()
  while time.perf_counter() - t1 < seconds:
    next(it)
    n += batch
  elapsed = time.perf_counter() - t1
  close = getattr(it, "close", None)
  if close:
    close()
  return {"samples_per_s": n / elapsed, "samples": n, "seconds": elapsed,
          "startup_s": startup}


def stage_profile(dataset, reps: int) -> dict:
  """Milliseconds per stage, one core, averaged over `reps` samples."""
  cv2.setNumThreads(1)
  rng = np.random.default_rng(0)
  times = {k: 0.0 for k in ("decode_image", "decode_label", "scale", "crop",
                            "flip", "color_jitter", "gblur")}
  for i in range(reps):
    rec = i % len(dataset)
    t = time.perf_counter()
    image = image_io.read_image(dataset.records[rec].image_path)
    times["decode_image"] += time.perf_counter() - t
    t = time.perf_counter()
    label = dataset.read_label(rec)
    times["decode_label"] += time.perf_counter() - t
    t = time.perf_counter()
    image, label, _ = transforms.random_scale(image, label, rng, 0.5, 2.0)
    times["scale"] += time.perf_counter() - t
    t = time.perf_counter()
    image, label = transforms.crop(image, label, (896, 896), rng)
    times["crop"] += time.perf_counter() - t
    t = time.perf_counter()
    image, label = transforms.random_hflip(image, label, rng)
    image = np.ascontiguousarray(image)
    times["flip"] += time.perf_counter() - t
    t = time.perf_counter()
    image = color.color_jitter(image, rng, 0.25, 0.25, 0.25, 0.25)
    times["color_jitter"] += time.perf_counter() - t
    t = time.perf_counter()
    transforms.random_gaussian_blur(image, rng)
    times["gblur"] += time.perf_counter() - t
  cv2.setNumThreads(-1)
  out = {k: 1000 * v / reps for k, v in times.items()}
  out["total"] = sum(out.values())
  return out


def centroid_rate(dataset, n: int, workers: int) -> dict:
  items = [(r.image_path, r.label_path) for r in dataset.records[:n]]
  t = time.perf_counter()
  uniform.class_centroids_all(items, dataset.read_label, 19, 1024, num_workers=workers)
  dt = time.perf_counter() - t
  return {"images": n, "workers": workers, "images_per_s": n / dt}


def main():
  here = os.path.dirname(os.path.abspath(__file__))
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.normpath(
      os.path.join(here, "..", "..", "shared", "data", "cityscapes")))
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--repeat", type=int, default=50)
  parser.add_argument("--workers", default="1,all",
                      help="comma list of worker counts; 'all' = os.cpu_count()")
  parser.add_argument("--profile_reps", type=int, default=8)
  parser.add_argument("--out", default="")
  args = parser.parse_args()

  cores = os.cpu_count() or 1
  workers = [cores if w == "all" else int(w) for w in args.workers.split(",")]
  result = {"machine": {"cpu_count": cores, "platform": platform.platform(),
                        "loadavg_before": os.getloadavg(),
                        "opencv": cv2.__version__},
            "recipe": {"crop": 896, "scale": [0.5, 2.0], "color_aug": 0.25,
                       "gblur": True, "flip": True, "batch": args.batch,
                       "images": "2048x1024 PNG", "root": args.root},
            "runs": []}
  with tempfile.TemporaryDirectory() as cache:
    cfg = recipe_config(args.root, cache, 0.0, 0)
    dataset = repeated_dataset(cfg, args.repeat)
    result["recipe"]["dataset_size"] = len(dataset)
    result["stage_ms_one_core"] = stage_profile(dataset, args.profile_reps)
    result["centroids"] = centroid_rate(dataset, min(len(dataset), 4 * cores), cores)
    for pct in (0.0, 0.5):
      for w in workers:
        cfg = recipe_config(args.root, cache, pct, w)
        run = measure(cfg, dataset, args.batch, args.seconds)
        run.update({"class_uniform_pct": pct, "num_workers": w})
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
  result["machine"]["loadavg_after"] = os.getloadavg()
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
