"""Class-colour pictures: palette lookups, colour-mask overlays, PNG files (cv2 + numpy).

Shared by the dataset preview, evaluation reports, prediction outputs and TensorBoard grids.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np


def write_png(path: pathlib.Path, image: np.ndarray) -> pathlib.Path:
  """Writes an RGB (H, W, 3) or single-channel (H, W) uint8 PNG."""
  path.parent.mkdir(parents=True, exist_ok=True)
  data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
  if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
    raise OSError(f"could not write {path}")
  return path


def palette_of(colors: np.ndarray) -> np.ndarray:
  """(256, 3) uint8 lookup: train id -> colour; ignore and unused ids are black."""
  palette = np.zeros((256, 3), np.uint8)
  palette[:len(colors)] = np.asarray(colors, np.uint8)
  return palette


def blend(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """PIL Image.blend: image + alpha * (mask - image), truncated to uint8."""
  out = image.astype(np.float32) + alpha * (color_mask.astype(np.float32) - image)
  return np.clip(out, 0, 255).astype(np.uint8)


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
  """(H, W) class ids -> (H, W, 3) RGB in `colors`; ignore / unknown ids are black."""
  return palette_of(colors)[np.asarray(labels, np.uint8)]
