"""`--mode eval` and `--mode predict`: restore a model checkpoint, evaluate or segment inputs.

Both use the inference settings of `config.eval` (mode whole / sliding / pooling, scales,
flip; see jaxseg/inference/sliding.py). Only the model variables are read from the checkpoint.

Predict never throws finished work away for one bad input: every readable image of a folder is
segmented and written, and so is every decodable frame of a video that ends before its declared
frame count. The bad inputs are listed at the end (one line each, path and reason); with
`data.on_bad_input='error'` (the default) the run then fails with `PartialInputError` (exit
status 1 from jaxseg.main), with 'skip' it succeeds. A run where no input is readable fails.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Any, Iterable, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from jaxseg import data as data_lib
from jaxseg.data import datasets
from jaxseg.data import pictures
from jaxseg.evaluation import class_share as class_share_lib
from jaxseg.evaluation import evaluate as evaluate_lib
from jaxseg.evaluation import report as eval_outputs
from jaxseg.inference import model as inference_model
from jaxseg.inference import segmenter as segmenter_lib
from jaxseg.inference import sliding
from jaxseg.inference import video as video_lib
from jaxseg.runtime import checkpoint as checkpoint_lib
from jaxseg.runtime import mesh as mesh_lib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
ON_BAD_INPUT = ("error", "skip")


class PartialInputError(ValueError):
  """Predict inputs were unreadable or incomplete under data.on_bad_input='error'.

  Raised after everything readable was written. Attributes: `written` (the files written) and
  `problems` ((input path, one-line reason) pairs).
  """

  def __init__(self, message: str, written: list[pathlib.Path],
               problems: list[tuple[pathlib.Path, str]]):
    super().__init__(message)
    self.written = written
    self.problems = problems


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A restored checkpoint ready to segment: variables on the mesh and the segmenter."""
  segmenter: sliding.Segmenter
  model_vars: dict[str, Any]
  info: Any  # data_lib.DatasetInfo
  table: Any  # class_table.ClassTable (train id -> raw id for `pred/`)
  step_dir: pathlib.Path


def load_model(config: ml_collections.ConfigDict, checkpoint: str | pathlib.Path,
               step: int | None, mesh) -> LoadedModel:
  """Restores `checkpoint` and builds the segmenter of `config.eval`'s inference settings."""
  settings = sliding.InferenceSettings.from_config(config.eval, config.data)
  step_dir = checkpoint_lib.resolve_checkpoint(checkpoint, step)
  info = data_lib.dataset_info(config.data)
  model_vars = inference_model.restore_variables(config, step_dir, info)
  segmenter = inference_model.build_engine(config, info, mesh, settings)
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
    preds = mesh_lib.local_rows(arrays["pred"])
    for i in np.flatnonzero(valid):
      dump.write(batch["name"][i], batch["image"][i], preds[i],
                 batch["label"][i] if with_labels else None)

  loader = data_lib.build_eval_loader(config.data, batch_size=config.eval.batch_size)
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


def bad_input_policy(config: ml_collections.ConfigDict) -> str:
  """config.data.on_bad_input, checked: 'error' or 'skip'."""
  policy = str(config.data.get("on_bad_input", "error"))
  if policy not in ON_BAD_INPUT:
    raise ValueError(f"config.data.on_bad_input={policy!r}: expected one of {ON_BAD_INPUT}")
  return policy


def _problem_line(path: pathlib.Path, reason: str) -> str:
  """One line naming the input and why it failed (reader messages often name the file)."""
  reason = " ".join(str(reason).split())
  return reason if str(path) in reason else f"{path}: {reason}"


def _readable_images(files: Iterable[pathlib.Path], problems: list[tuple[pathlib.Path, str]]
                     ) -> Iterator[tuple[pathlib.Path, np.ndarray]]:
  """(path, RGB) of every decodable file; the others go to `problems` with the reason."""
  for path in files:
    try:
      image = datasets.read_image(str(path))
    except (ValueError, OSError) as e:
      problems.append((path, _problem_line(path, str(e))))
      continue
    yield path, image


def report_bad_inputs(problems: list[tuple[pathlib.Path, str]], total: int, policy: str,
                      written: list[pathlib.Path], output_dir: pathlib.Path) -> None:
  """Lists `problems` on stderr ('skip') or raises PartialInputError ('error').

  With nothing written at all the run fails whatever the policy: skipping every input is no
  success.
  """
  if not problems:
    return
  lines = "\n".join(f"  {line}" for _, line in problems)
  what = f"{len(problems)} of {total} input{'' if total == 1 else 's'} unreadable or incomplete"
  if not written:
    raise PartialInputError(f"predict: {what}; nothing was written:\n{lines}", written, problems)
  if policy == "error":
    raise PartialInputError(
        f"predict: {what}; everything readable was written to {output_dir} "
        f"(with --config.data.on_bad_input=skip this run exits 0):\n{lines}", written, problems)
  print(f"warning: {what}, skipped (data.on_bad_input=skip):\n{lines}", file=sys.stderr,
        flush=True)


def predict_paths(config: ml_collections.ConfigDict, *, checkpoint: str | pathlib.Path,
                  step: int | None, input_path: str | pathlib.Path,
                  output_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Segments an image, a folder of images (recursively) or a video file.

  Images: <rel>/<stem>_color.png and <stem>_overlay.png under `output_dir` (folder structure
  kept). Video: <stem>_overlay.mp4 and <stem>_color.mp4. Both: class_share.csv (pixel share of
  every class per image / frame, per folder and overall) and a printed table. Returns the
  written masks, overlays or videos. Unreadable images and a video that ends early are handled
  as the module docstring says (PartialInputError under data.on_bad_input='error').
  """
  policy = bad_input_policy(config)
  source = pathlib.Path(input_path)
  if not source.exists():
    raise FileNotFoundError(f"--input {source} does not exist")
  files = None if video_lib.is_video(source) else list_images(source)
  # The API's own path (jaxseg.Segmenter): one image per call, on one device, any size.
  seg = segmenter_lib.Segmenter.from_config(config, checkpoint, step=step)
  info, out = seg.info, pathlib.Path(output_dir)
  share = class_share_lib.ClassShare(info.class_names)
  alpha = float(config.eval.overlay_alpha)

  def dispatch(image: np.ndarray) -> segmenter_lib.Pending:
    return seg.dispatch(image[None])

  def fetch(pending: segmenter_lib.Pending) -> np.ndarray:
    return pending.result()[0][0]

  problems: list[tuple[pathlib.Path, str]] = []
  if files is None:
    video = video_lib.segment_video(source, out, dispatch=dispatch, fetch=fetch,
                                    colors=info.colors, share=share,
                                    fourcc=str(config.eval.video_fourcc), alpha=alpha,
                                    progress=config.progress_bar)
    written = video.paths
    if video.problem:
      problems.append((source, _problem_line(source, video.problem)))
    csv_path = share.write_csv(out / f"{source.stem}_class_share.csv")
  else:
    root = source if source.is_dir() else source.parent
    written = []

    def emit(path: pathlib.Path, image: np.ndarray, pending: segmenter_lib.Pending) -> None:
      pred = fetch(pending)
      rel = path.relative_to(root)
      share.add(str(rel), pred, group=str(rel.parent))
      mask = seg.colorize(pred)
      stem = out / rel.parent / path.stem
      written.append(pictures.write_png(stem.with_name(f"{path.stem}_color.png"), mask))
      written.append(pictures.write_png(stem.with_name(f"{path.stem}_overlay.png"),
                                            pictures.blend(image, mask, alpha)))

    images = _readable_images(
        tqdm.tqdm(files, desc="predict", unit="img", disable=not config.progress_bar), problems)
    video_lib.pipelined(images, lambda item: dispatch(item[1]),
                        lambda item, pending: emit(*item, pending))
    if not written:
      report_bad_inputs(problems, len(files), policy, written, out)
    csv_path = share.write_csv(out / "class_share.csv")
  print(f"class share (% of pixels), {len(share.rows)} "
        f"{'frames' if files is None else 'images'}:\n{share.format_table()}\n"
        f"wrote {len(written)} files and {csv_path} to {out}", flush=True)
  report_bad_inputs(problems, 1 if files is None else len(files), policy, written, out)
  return written
