r"""StableHLO export of a segmenter (`jax.export`), and a loader that needs only JAX + NumPy.

    python -m jaxseg.export --checkpoint ckpt/wrn38_cityscapes --out model.stablehlo \
        --height 1024 --width 2048 [--batch N | --symbolic-batch] [--output logits|ids]
    seg.export("model.stablehlo", height=1024, width=2048)        # jaxseg.Segmenter

    from jaxseg import export
    model = export.load("model.stablehlo")        # jax + numpy only, no jaxseg model code
    ids = model(images).argmax(-1)                # images: (N, H, W, 3) uint8 RGB

The artifact is the whole inference forward of the segmenter's settings (normalisation,
scales, flips, sliding tiles, averaging; weights embedded as constants) for one image size:
(N, H, W, 3) RGB in, (N, H, W, K) float32 scores ('logits': the averaged logits, or the
averaged probabilities under a softmax average, see `output.scores` in the metadata) or
(N, H, W) uint8 class ids ('ids') out. Each image is segmented as the API segments a batch
of one. N is fixed (--batch, default 1) or symbolic (--symbolic-batch: any N at run time).
Input dtype uint8, or float32 holding 0..255 values (rounded and clipped to uint8 inside the
program, so both give the same result).

`<out>.json` beside it holds what a server needs: classes, palette, mean / std (fractions of
255, applied inside the program), input layout and dtype, output kind, the inference settings,
the platforms the program was lowered for and the JAX version that wrote it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from typing import Any, Sequence

import jax
import numpy as np

from jaxseg.runtime import files

FORMAT = "jaxseg-export/1"
OUTPUTS = ("logits", "ids")
INPUT_DTYPES = ("uint8", "float32")


def metadata_path(path: str | os.PathLike) -> pathlib.Path:
  """The metadata JSON written beside an artifact: `<path>.json`."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".json")


# ------------------------------------------------------------------------ loader --
class ExportedSegmenter:
  """A loaded artifact: call it on (N, H, W, 3) or (H, W, 3) images."""

  def __init__(self, exported: Any, metadata: dict[str, Any], path: pathlib.Path):
    self.exported = exported
    self.metadata = metadata
    self.path = path
    self._call = jax.jit(exported.call)

  @property
  def class_names(self) -> list[str]:
    return list(self.metadata.get("classes", []))

  @property
  def palette(self) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class."""
    return np.asarray(self.metadata.get("palette", []), np.uint8).reshape(-1, 3)

  def _check(self, images: np.ndarray) -> None:
    aval = self.exported.in_avals[0]
    fixed = [d if isinstance(d, int) else None for d in aval.shape]
    if images.ndim != 4 or any(w is not None and w != g for w, g in zip(fixed, images.shape)):
      want = tuple("N" if d is None else d for d in fixed)
      raise ValueError(f"{self.path}: images of shape {images.shape}; expected {want} "
                       "(NHWC RGB, or one HWC image)")
    if images.dtype != aval.dtype:
      raise ValueError(f"{self.path}: images of dtype {images.dtype}; expected {aval.dtype}")
    backend = jax.default_backend()
    platforms = tuple(self.exported.platforms)
    if backend not in platforms and not (backend == "gpu" and {"cuda", "rocm"} & set(platforms)):
      raise ValueError(f"{self.path} was exported for {platforms}; this JAX runs on "
                       f"'{backend}': export again with --platforms")

  def __call__(self, images: Any) -> np.ndarray:
    """The program's output for `images` (one image: without the batch axis)."""
    images = np.asarray(images)
    single = images.ndim == 3
    batch = images[None] if single else images
    self._check(batch)
    out = np.asarray(self._call(batch))
    return out[0] if single else out


def load(path: str | os.PathLike) -> ExportedSegmenter:
  """Reads an artifact written by `export_segmenter` and its metadata JSON (if present)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no exported model at {path}")
  try:
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # pylint: disable=broad-except
    detail = " ".join(str(e).split())[:200]
    raise ValueError(f"{path} is not a jax.export artifact ({type(e).__name__}: {detail})"
                     ) from None
  meta_file = metadata_path(path)
  metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
  return ExportedSegmenter(exported, metadata, path)


# ------------------------------------------------------------------------ export --
def _metadata(segmenter: Any, path: pathlib.Path, exported: Any, *, output: str,
              input_dtype: str, batch: int | None, height: int, width: int) -> dict[str, Any]:

  from jaxseg.models import preprocess
  settings = dataclasses.asdict(segmenter.settings)
  settings["scales"] = list(settings["scales"])
  k = segmenter.num_classes
  scores = "logits" if segmenter.settings.average == "logits" else "probabilities"
  return {
      "format": FORMAT,
      "artifact": path.name,
      "input": {"layout": "NHWC", "channels": "RGB", "dtype": input_dtype,
                "shape": [batch, height, width, 3], "range": [0, 255],
                "note": "shape[0] null: any batch size" if batch is None else "fixed batch"},
      "output": {"kind": output, "dtype": "float32" if output == "logits" else "uint8",
                 "shape": [batch, height, width] + ([k] if output == "logits" else []),
                 "scores": scores if output == "logits" else "argmax of the scores"},
      "classes": list(segmenter.class_names),
      "palette": segmenter.palette.tolist(),
      "ignore_index": int(segmenter.info.ignore_index),
      "mean": list(preprocess.IMAGENET_MEAN),
      "std": list(preprocess.IMAGENET_STD),
      "normalization": "inside the program: (x - 255 * mean) / (255 * std)",
      "model": segmenter.model_name,
      "model_overrides": segmenter.config.model.overrides.to_dict(),
      "precision": str(segmenter.config.precision),
      "inference": settings,
      "checkpoint": str(segmenter.step_dir) if segmenter.step_dir else None,
      "platforms": list(exported.platforms),
      "jax_version": jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def check_options(*, height: int, width: int, batch: int, symbolic_batch: bool, output: str,
                  input_dtype: str) -> None:
  """One-line ValueError for export options that cannot work (before any model is loaded)."""
  if output not in OUTPUTS:
    raise ValueError(f"export: output={output!r}; expected one of {OUTPUTS}")
  if input_dtype not in INPUT_DTYPES:
    raise ValueError(f"export: input_dtype={input_dtype!r}; expected one of {INPUT_DTYPES}")
  if int(height) <= 0 or int(width) <= 0:
    raise ValueError(f"export: height={height}, width={width}; expected positive image sizes")
  if not symbolic_batch and int(batch) <= 0:
    raise ValueError(f"export: batch={batch}; expected > 0 (or symbolic_batch=True)")


def export_segmenter(segmenter: Any, path: str | os.PathLike, *, height: int, width: int,
                     batch: int = 1, symbolic_batch: bool = False, output: str = "logits",
                     input_dtype: str = "uint8",
                     platforms: Sequence[str] | None = None) -> pathlib.Path:
  """Serialises `segmenter`'s forward for (batch | symbolic, height, width, 3) images to
  `path`, and its metadata to `<path>.json`. Returns `path`.

  `platforms`: what the program is lowered for (default: this JAX's backend), e.g.
  ('cpu', 'cuda') for one artifact that runs on both.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  check_options(height=height, width=width, batch=batch, symbolic_batch=symbolic_batch,
                output=output, input_dtype=input_dtype)
  forward = segmenter.traceable(output)

  def program(images: jax.Array) -> jax.Array:
    if images.dtype != jnp.uint8:  # 0..255 floats: the pipeline resizes uint8 (PIL-exact)
      images = jnp.clip(jnp.round(images), 0, 255).astype(jnp.uint8)
    return forward(images)

  n = jax.export.symbolic_shape("batch")[0] if symbolic_batch else int(batch)
  spec = jax.ShapeDtypeStruct((n, int(height), int(width), 3), np.dtype(input_dtype))
  exported = jax.export.export(jax.jit(program), platforms=platforms)(spec)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  files.atomic_write_bytes(path, bytes(exported.serialize()))
  meta = _metadata(segmenter, path, exported, output=output, input_dtype=input_dtype,
                   batch=None if symbolic_batch else int(batch), height=int(height),
                   width=int(width))
  files.atomic_write_bytes(metadata_path(path), (json.dumps(meta, indent=1) + "\n").encode())
  return path
