"""Benchmark: relaxed-boundary targets on device vs on the host (issue 4).

Compares, for a batch of integer label maps:
  * device: `relaxed_boundary_targets` under jit, from the uint8 labels;
  * host, original algorithm: per image, (2b+1)^2 scipy.ndimage.shift calls
    (default spline order 3, cval = C) each one-hot encoded and summed, as
    RelaxedBoundaryLossToTensor does in the original data loader;
  * host, vectorised numpy: the same result with padding and slice maxima
    (the best a host-side port could do);
  * host->device transfer of what each design ships per batch: the uint8
    labels, the (C+1)-channel uint8 targets (the original's .byte() tensor) and
    the float32 targets the loss consumes.
Results of the three implementations are checked equal before timing.
Prints one JSON object (and writes it with --out).

  python benchmarks/relaxed_targets.py [--batch 2 --size 896 --classes 19]
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxseg.train.losses import label_relaxation_loss  # noqa: E402
from jaxseg.train.relaxed_targets import relaxed_boundary_targets  # noqa: E402

STRICT = (5, 6, 7, 11, 12, 17, 18)


def make_labels(batch: int, size: int, classes: int, seed: int = 0) -> np.ndarray:
  """Blocky random trainId maps (16x16 px regions) with 1% void pixels."""
  rng = np.random.default_rng(seed)
  block = 16
  coarse = rng.integers(0, classes, (batch, size // block, size // block))
  labels = np.kron(coarse, np.ones((1, block, block), np.int64)).astype(np.uint8)
  labels[rng.random(labels.shape) < 0.01] = 255
  return labels


def host_original(label: np.ndarray, classes: int, border: int,
                  strict: tuple[int, ...]) -> np.ndarray:
  """One image the way the original loader does it -> (C+1, H, W) uint8."""
  img = label.copy()
  img[img == 255] = classes
  eye = np.eye(classes + 1, dtype=np.uint8)
  acc = np.zeros(img.shape + (classes + 1,), np.uint8)
  for i in range(-border, border + 1):
    for j in range(-border, border + 1):
      shifted = ndimage.shift(img, (i, j), cval=classes)
      acc += eye[shifted]
  acc[acc > 1] = 1
  if strict:
    acc = np.where(np.isin(img, strict)[..., None], eye[img], acc)
  return np.moveaxis(acc, -1, 0)


def host_vectorised(labels: np.ndarray, classes: int, border: int,
                    strict: tuple[int, ...]) -> np.ndarray:
  """Whole batch with padding + slice maxima -> (N, H, W, C+1) uint8."""
  lab = np.where(labels == 255, classes, labels).astype(np.int64)
  n, h, w = lab.shape
  pad = np.pad(lab, ((0, 0), (border, border), (border, border)),
               constant_values=classes)
  onehot = np.eye(classes + 1, dtype=np.uint8)[pad]
  rows = onehot[:, 0:h]
  for d in range(1, 2 * border + 1):
    rows = np.maximum(rows, onehot[:, d:d + h])
  out = rows[:, :, 0:w]
  for d in range(1, 2 * border + 1):
    out = np.maximum(out, rows[:, :, d:d + w])
  if strict:
    eye = np.eye(classes + 1, dtype=np.uint8)
    out = np.where(np.isin(lab, strict)[..., None], eye[lab], out)
  return out


def timeit(fn: Callable[[], object], reps: int) -> dict[str, float]:
  fn()  # warm-up (compile)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return {"median_ms": 1e3 * statistics.median(times),
          "min_ms": 1e3 * min(times), "reps": reps}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--size", type=int, default=896)
  parser.add_argument("--classes", type=int, default=19)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--host-reps", type=int, default=2)
  parser.add_argument("--out", type=str, default="")
  args = parser.parse_args()
  n, s, c = args.batch, args.size, args.classes
  labels = make_labels(n, s, c)
  dev = jax.devices()[0]

  result = {
      "config": {"batch": n, "size": s, "classes": c, "border_window": 1,
                 "strict_border_classes": list(STRICT)},
      "platform": {"jax": jax.__version__, "device": str(dev),
                   "cpu_count": os.cpu_count(), "machine": platform.machine()},
  }

  # Correctness first: all three implementations agree (strict variant).
  lab_dev = jax.device_put(labels)
  fns = {}
  for mode, strict, off in (("plain", (), False), ("strict", STRICT, False),
                            ("strict_rlxoff", STRICT, True)):
    fns[mode] = jax.jit(lambda x, strict=strict, off=off: relaxed_boundary_targets(
        x, num_classes=c, strict_border_classes=strict, relax_off=off))
  device_t = np.asarray(fns["strict"](lab_dev)).astype(np.uint8)
  vec_t = host_vectorised(labels, c, 1, STRICT)
  orig_t = np.stack([np.moveaxis(host_original(l, c, 1, STRICT), 0, -1)
                     for l in labels])
  assert np.array_equal(device_t, vec_t), "device != vectorised host"
  assert np.array_equal(device_t, orig_t), "device != original-style host"
  result["outputs_equal"] = True

  result["device_jit"] = {
      mode: timeit(lambda f=f: f(lab_dev).block_until_ready(), args.reps)
      for mode, f in fns.items()}
  # Fused into a consumer (what the training step does): a reduction over the
  # targets, so the 128 MB float32 tensor need not be materialised.
  consume = jax.jit(lambda x: jnp.sum(relaxed_boundary_targets(
      x, num_classes=c, strict_border_classes=STRICT), axis=(1, 2)))
  result["device_jit"]["strict_fused_into_reduction"] = timeit(
      lambda: consume(lab_dev).block_until_ready(), args.reps)

  u8 = jax.jit(lambda x: relaxed_boundary_targets(
      x, num_classes=c, strict_border_classes=STRICT, dtype=jnp.uint8))
  result["device_jit"]["strict_uint8_output"] = timeit(
      lambda: u8(lab_dev).block_until_ready(), args.reps)

  # Marginal cost inside the real consumer: loss value+grad from the labels
  # (targets built in the same jit) vs from targets already on device.
  logits = jax.device_put(jax.random.normal(
      jax.random.key(0), (n, s, s, c), jnp.float32))
  targets_dev = jax.device_put(vec_t.astype(np.float32))
  relax = lambda lg, t: label_relaxation_loss(lg, t, num_classes=c)
  from_targets = jax.jit(jax.value_and_grad(relax))
  from_labels = jax.jit(jax.value_and_grad(lambda lg, x: relax(
      lg, relaxed_boundary_targets(x, num_classes=c,
                                   strict_border_classes=STRICT))))
  loss_step = {
      "from_device_targets": timeit(
          lambda: jax.block_until_ready(from_targets(logits, targets_dev)),
          args.reps),
      "from_labels": timeit(
          lambda: jax.block_until_ready(from_labels(logits, lab_dev)),
          args.reps),
  }
  loss_step["targets_overhead_ms"] = (loss_step["from_labels"]["median_ms"] -
                                      loss_step["from_device_targets"]["median_ms"])
  result["loss_value_and_grad"] = loss_step

  result["host_original_per_batch"] = timeit(
      lambda: [host_original(l, c, 1, STRICT) for l in labels], args.host_reps)
  result["host_vectorised_per_batch"] = timeit(
      lambda: host_vectorised(labels, c, 1, STRICT), args.host_reps)

  arrays = {
      "labels_uint8": labels,
      "targets_uint8": vec_t,
      "targets_float32": vec_t.astype(np.float32),
  }
  transfer = {}
  for name, arr in arrays.items():
    # device_put of a fresh copy each time so no cached buffer is reused.
    stats = timeit(lambda arr=arr: jax.device_put(arr.copy()).block_until_ready(),
                   args.reps)
    copy_only = timeit(lambda arr=arr: arr.copy(), args.reps)
    stats["host_copy_ms"] = copy_only["median_ms"]
    stats["bytes"] = int(arr.nbytes)
    stats["pcie_gen4_16GBps_ms"] = 1e3 * arr.nbytes / 16e9  # estimate only
    transfer[name] = stats
  result["host_to_device"] = transfer

  dev_ms = result["device_jit"]["strict"]["median_ms"]
  result["summary"] = {
      "speedup_device_vs_host_original":
          result["host_original_per_batch"]["median_ms"] / dev_ms,
      "speedup_device_vs_host_vectorised":
          result["host_vectorised_per_batch"]["median_ms"] / dev_ms,
      "bytes_ratio_float32_targets_vs_labels":
          arrays["targets_float32"].nbytes / labels.nbytes,
      "bytes_ratio_uint8_targets_vs_labels":
          arrays["targets_uint8"].nbytes / labels.nbytes,
  }
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
