"""`--mode eval` and `--mode predict`: restore a model checkpoint, evaluate or segment images."""
from __future__ import annotations

import pathlib
from typing import Any

import cv2
import flax.nnx as nnx
import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from jaxseg import input_pipeline
from jaxseg.train_lib import checkpoint as checkpoint_lib
from jaxseg.train_lib import evaluate as evaluate_lib
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import train_step as step_lib
from jaxseg.train_lib import variables

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def restore_for_inference(config: ml_collections.ConfigDict, checkpoint: str | pathlib.Path,
                          step: int | None, mesh) -> tuple[step_lib.StepFunctions, dict, Any]:
  """Step functions plus replicated model variables restored from `checkpoint`."""
  step_dir = checkpoint_lib.resolve_checkpoint(checkpoint, step)
  meta = checkpoint_lib.read_meta(step_dir)
  info = input_pipeline.dataset_info(config.data)
  num_classes = int(meta.get("num_classes") or info.num_classes)
  if num_classes != info.num_classes:
    raise ValueError(f"checkpoint {step_dir} predicts {num_classes} classes but dataset "
                     f"'{config.data.name}' has {info.num_classes}: pass a matching --config")
  model = step_lib.build_model(config, num_classes, rngs=nnx.Rngs(0))
  checkpoint_lib.restore_model_variables(step_dir, model, expected_model=config.model.name)
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=None,
                                       loss_fn=None)
  params, stats = variables.model_variables(model)
  model_vars = jax.device_put({"params": params, "batch_stats": stats}, mesh_lib.replicated(mesh))
  logging.info("restored %s (%s, %d classes)", step_dir, config.model.name, num_classes)
  return fns, model_vars, info


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                        checkpoint: str | pathlib.Path, step: int | None = None) -> dict[str, Any]:
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  fns, model_vars, info = restore_for_inference(config, checkpoint, step, mesh)
  loader = input_pipeline.build_eval_loader(config.data, batch_size=config.eval.batch_size)
  summary, confusion = evaluate_lib.evaluate(
      fns.eval_step, model_vars, loader, mesh=mesh, num_classes=info.num_classes,
      max_batches=config.eval.max_batches or None, progress=config.progress_bar)
  step_dir = checkpoint_lib.resolve_checkpoint(checkpoint, step)
  table = evaluate_lib.write_eval_report(pathlib.Path(workdir) / "eval_restored", int(step_dir.name),
                                         summary, confusion, info.class_names)
  print(f"[eval {step_dir}] mIoU {100 * summary['miou']:.2f}\n{table}", flush=True)
  return summary


def list_images(input_path: str | pathlib.Path) -> list[pathlib.Path]:
  path = pathlib.Path(input_path)
  if path.is_file():
    return [path]
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files
  raise FileNotFoundError(f"--input {path} is neither an image file nor a folder")


def read_rgb(path: pathlib.Path) -> np.ndarray:
  data = np.fromfile(str(path), np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise ValueError(f"cannot decode image {path}: unreadable, truncated or not an image")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def predict_paths(config: ml_collections.ConfigDict, *, checkpoint: str | pathlib.Path,
                  step: int | None, input_path: str | pathlib.Path,
                  output_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Segments one image or every image of a folder; writes colour masks and overlays."""
  files = list_images(input_path)
  # Images of any size, one at a time: a single-device mesh avoids padding to the device count.
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.local_devices()[:1])
  fns, model_vars, info = restore_for_inference(config, checkpoint, step, mesh)
  root = pathlib.Path(input_path) if pathlib.Path(input_path).is_dir() else None
  written = []
  for path in tqdm.tqdm(files, desc="predict", unit="img", disable=not config.progress_bar):
    image = read_rgb(path)
    pred = np.asarray(fns.predict_step(model_vars, image[None]))[0]
    rel = path.relative_to(root).parent if root else pathlib.Path()
    written += evaluate_lib.write_prediction_images(pathlib.Path(output_dir) / rel, [path.name],
                                                    image[None], pred[None], info.colors)
  print(f"wrote {len(written)} files for {len(files)} images to {output_dir}", flush=True)
  return written
