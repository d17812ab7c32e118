"""`--mode eval` and `--mode predict`: restore a model checkpoint, evaluate or segment inputs.

Both use the inference settings of `config.eval` (mode whole / sliding / pooling, scales,
flip; see jaxseg/train_lib/sliding.py). Only the model variables are read from the checkpoint.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import flax.nnx as nnx
import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from jaxseg import input_pipeline
from jaxseg.input_pipeline import datasets
from jaxseg.train_lib import checkpoint as checkpoint_lib
from jaxseg.train_lib import class_share as class_share_lib
from jaxseg.train_lib import eval_outputs
from jaxseg.train_lib import evaluate as evaluate_lib
from jaxseg.train_lib import inference_model
from jaxseg.train_lib import mesh as mesh_lib
from jaxseg.train_lib import precision as precision_lib
from jaxseg.train_lib import sliding
from jaxseg.train_lib import train_step as step_lib
from jaxseg.train_lib import variables
from jaxseg.train_lib import video as video_lib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A restored checkpoint ready to segment: variables on the mesh and the segmenter."""
  segmenter: sliding.Segmenter
  model_vars: dict[str, Any]
  info: Any  # input_pipeline.DatasetInfo
  table: Any  # labels.ClassTable (train id -> raw id for `pred/`)
  step_dir: pathlib.Path


def _checked_num_classes(config: ml_collections.ConfigDict, step_dir: pathlib.Path,
                         meta: dict[str, Any], info: Any) -> int:
  """The network's class count: the dataset's, or the universal one with eval.taxonomy."""
  num_classes = inference_model.model_num_classes(config, info.num_classes)
  what = (f"dataset '{config.data.name}'" if num_classes == info.num_classes
          else f"taxonomy '{config.eval.taxonomy}'")
  stored = int(meta.get("num_classes") or 0)
  if stored and stored != num_classes:
    raise ValueError(f"checkpoint {step_dir} predicts {stored} classes (model "
                     f"'{meta.get('model')}') but {what} has {num_classes}: pass the --config "
                     "the checkpoint was trained with (and eval.taxonomy for a universal model)")
  wanted = int(config.model.num_classes)
  if wanted > 0 and wanted != num_classes:
    raise ValueError(f"config.model.num_classes={wanted} but {what} has {num_classes} classes")
  return num_classes


def _restore_host_vars(config: ml_collections.ConfigDict, checkpoint: str | pathlib.Path,
                       step: int | None) -> tuple[dict[str, Any], Any, pathlib.Path]:
  """Host copies of the checkpoint's model variables, after checking model and class count."""
  step_dir = checkpoint_lib.resolve_checkpoint(checkpoint, step)
  info = input_pipeline.dataset_info(config.data)
  num_classes = _checked_num_classes(config, step_dir, checkpoint_lib.read_meta(step_dir), info)
  model = step_lib.build_model(config, num_classes, rngs=nnx.Rngs(0))
  checkpoint_lib.restore_model_variables(step_dir, model, expected_model=config.model.name)
  params, stats = variables.model_variables(model)
  return {"params": params, "batch_stats": stats}, info, step_dir


def load_model(config: ml_collections.ConfigDict, checkpoint: str | pathlib.Path,
               step: int | None, mesh) -> LoadedModel:
  """Restores `checkpoint` and builds the segmenter of `config.eval`'s inference settings."""
  settings = sliding.InferenceSettings.from_config(config.eval, config.data)
  model_vars, info, step_dir = _restore_host_vars(config, checkpoint, step)
  pool = settings.aspp_pool_size if settings.mode == "pooling" else None
  _, apply_fn = inference_model.build_apply_fn(config, info.num_classes, aspp_pool_size=pool)
  segmenter = sliding.Segmenter(apply_fn, num_classes=info.num_classes, mesh=mesh,
                                settings=settings,
                                dtype=precision_lib.compute_dtype(config.precision),
                                ignore_index=info.ignore_index)
  logging.info("restored %s (%s, %d classes); inference %s", step_dir, config.model.name,
               info.num_classes, settings)
  return LoadedModel(segmenter, jax.device_put(model_vars, mesh_lib.replicated(mesh)), info,
                     datasets.get_class_table(config.data), step_dir)


def _settings_record(config: ml_collections.ConfigDict, settings: sliding.InferenceSettings
                     ) -> dict[str, Any]:
  record = dataclasses.asdict(settings)
  record["scales"] = list(settings.scales)
  return {"inference": record, "model": config.model.name, "precision": config.precision,
          "dataset": config.data.name, "split": config.data.eval_split}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                        checkpoint: str | pathlib.Path, step: int | None = None
                        ) -> dict[str, Any]:
  """Evaluates the eval split; writes the report (and with eval.dump_images the pictures).

  Output folder: config.eval.output_dir, default WORKDIR/eval_restored. Returns the summary
  (metrics.summarize); without labelled pixels (e.g. the test split) only pictures are made.
  """
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  loaded = load_model(config, checkpoint, step, mesh)
  info = loaded.info
  outdir = pathlib.Path(config.eval.output_dir or pathlib.Path(workdir) / "eval_restored")
  dump = None
  if config.eval.dump_images:
    dump = eval_outputs.DumpWriter(outdir, info.colors, loaded.table.train_to_raw,
                                   ignore_index=info.ignore_index,
                                   alpha=float(config.eval.overlay_alpha))
  with_labels = config.data.eval_split != "test"
  images_done = 0

  def on_batch(batch: dict[str, Any], arrays: dict[str, jax.Array]) -> None:
    nonlocal images_done
    valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)))
    images_done += int(valid.sum())
    if dump is None:
      return
    preds = evaluate_lib.local_rows(arrays["pred"])
    for i in np.flatnonzero(valid):
      dump.write(batch["name"][i], batch["image"][i], preds[i],
                 batch["label"][i] if with_labels else None)

  loader = input_pipeline.build_eval_loader(config.data, batch_size=config.eval.batch_size)
  start = time.perf_counter()
  summary, confusion = evaluate_lib.evaluate(
      loaded.segmenter.confusion, loaded.model_vars, loader, mesh=mesh,
      num_classes=info.num_classes, max_batches=config.eval.max_batches or None,
      on_batch=on_batch, progress=config.progress_bar)
  seconds = time.perf_counter() - start
  settings = loaded.segmenter.settings
  where = (f"{loaded.step_dir} [{settings.mode}, scales {list(settings.scales)}, "
           f"flip {settings.flip}]")
  if jax.process_index() != 0:
    return summary
  if confusion.sum() == 0:
    print(f"[eval {where}] no labelled pixels in split '{config.data.eval_split}': metrics "
          f"skipped; {images_done} images in {seconds:.1f}s", flush=True)
    return summary
  extra = _settings_record(config, settings)
  extra.update({"checkpoint": str(loaded.step_dir), "images": images_done,
                "seconds": seconds})
  table = evaluate_lib.write_eval_report(outdir, int(loaded.step_dir.name), summary, confusion,
                                         info.class_names, colors=info.colors, extra=extra)
  logging.info("eval of %s:\n%s", where, table)
  print(f"[eval {where}] mIoU {100 * summary['miou']:.2f} ({images_done} images, "
        f"{seconds:.1f}s)\n{table}\nreport: {outdir}", flush=True)
  return summary


def list_images(input_path: str | pathlib.Path) -> list[pathlib.Path]:
  """The image itself, or every image under a folder (recursively, sorted)."""
  path = pathlib.Path(input_path)
  if path.is_file():
    return [path]
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files
  raise FileNotFoundError(f"--input {path} is neither an image or video file nor a folder")


def read_rgb(path: pathlib.Path) -> np.ndarray:
  """(H, W, 3) uint8 RGB; ValueError naming the file when it cannot be decoded."""
  try:
    return datasets.read_image(str(path))
  except ValueError as e:
    raise ValueError(f"--input: cannot read image {path}: {e}") from None


def predict_paths(config: ml_collections.ConfigDict, *, checkpoint: str | pathlib.Path,
                  step: int | None, input_path: str | pathlib.Path,
                  output_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Segments an image, a folder of images (recursively) or a video file.

  Images: <rel>/<stem>_color.png and <stem>_overlay.png under `output_dir` (folder structure
  kept). Video: <stem>_overlay.mp4 and <stem>_color.mp4. Both: class_share.csv (pixel share of
  every class per image / frame, per folder and overall) and a printed table. Returns the
  written masks, overlays or videos.
  """
  source = pathlib.Path(input_path)
  if not source.exists():
    raise FileNotFoundError(f"--input {source} does not exist")
  files = None if video_lib.is_video(source) else list_images(source)
  # One image at a time, any size: a single-device mesh (no padding to the device count).
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.local_devices()[:1])
  loaded = load_model(config, checkpoint, step, mesh)
  info, out = loaded.info, pathlib.Path(output_dir)
  share = class_share_lib.ClassShare(info.class_names)
  alpha = float(config.eval.overlay_alpha)

  def dispatch(image: np.ndarray) -> jax.Array:
    return loaded.segmenter.predict(loaded.model_vars, jax.device_put(image[None]))

  def fetch(handle: jax.Array) -> np.ndarray:
    return np.asarray(jax.device_get(handle))[0]

  if files is None:
    written = video_lib.segment_video(source, out, dispatch=dispatch, fetch=fetch,
                                      colors=info.colors, share=share,
                                      fourcc=str(config.eval.video_fourcc), alpha=alpha,
                                      progress=config.progress_bar)
    csv_path = share.write_csv(out / f"{source.stem}_class_share.csv")
  else:
    root = source if source.is_dir() else source.parent
    written = []

    def emit(path: pathlib.Path, image: np.ndarray, handle: jax.Array) -> None:
      pred = fetch(handle)
      rel = path.relative_to(root)
      share.add(str(rel), pred, group=str(rel.parent))
      mask = evaluate_lib.colorize(pred, info.colors)
      stem = out / rel.parent / path.stem
      written.append(eval_outputs.write_png(stem.with_name(f"{path.stem}_color.png"), mask))
      written.append(eval_outputs.write_png(stem.with_name(f"{path.stem}_overlay.png"),
                                            evaluate_lib.overlay(image, mask, alpha)))

    images = ((path, read_rgb(path)) for path in
              tqdm.tqdm(files, desc="predict", unit="img", disable=not config.progress_bar))
    video_lib.pipelined(images, lambda item: dispatch(item[1]),
                        lambda item, handle: emit(*item, handle))
    csv_path = share.write_csv(out / "class_share.csv")
  print(f"class share (% of pixels), {len(share.rows)} "
        f"{'frames' if files is None else 'images'}:\n{share.format_table()}\n"
        f"wrote {len(written)} files and {csv_path} to {out}", flush=True)
  return written
