r"""`--mode propagate`: SDCNet label propagation on Cityscapes sequences (sdcnet/sdc_aug.py).

  python -m jaxseg.main --mode propagate --config configs/sdcnet_cityscapes.py --workdir /tmp/sdc \
      --config.data.root=/data/cityscapes \
      --config.sdcnet.checkpoint=/ckpt/sdcnet/0 --config.flow.flownet2_checkpoint=/ckpt/flownet2/0

For every annotated frame t (`<root>/leftImg8bit/<split>/<city>/*` with its gtFine labelIds)
the image and label are propagated step by step to t +- 1 ... t +- k (`propagate.steps`, 5 as
_aug.sh) using the video frames of `<sequence_root>/leftImg8bit_sequence/<split>/<city>/`
(.png or .jpg), each step feeding the previous prediction back (see warp_step.py). Output, in
the layout the Cityscapes loader reads as `data.sdc_root` (labels are raw labelIds, as gtFine)::

  <output>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <output>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

2k new pairs per annotated frame, plus a copy of the annotated pair (as sdc_aug.py does).
Resumable: chains whose k outputs exist are skipped, a partly written chain restarts from its
last written step (read back from disk, exactly what the original does between steps); files
are written under a temporary name and renamed. Multi-process: each process propagates its
slice of the sequences (one process per accelerator; JAXSEG_* / SLURM as for training).
Where two annotated frames of a sequence are closer than 2k frames, an output that is itself
an annotated frame keeps the copied ground truth; other overlaps hold the later chain's pair.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any, Sequence

import cv2
import jax
import ml_collections
import numpy as np
import tqdm

from jaxseg.data.datasets import base
from jaxseg.data.datasets import cityscapes
from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet import warp_step

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = cityscapes.FINE_LABEL_SUFFIX
SEQUENCE_LAYOUT = ("  <sequence_root>/leftImg8bit_sequence/<split>/<city>/"
                   "<city>_<seq>_<frame>_leftImg8bit.png|.jpg")


def offset_key(key: str, offset: int) -> str:
  """'aachen_000000_000019', 2 -> 'aachen_000000_000021' (frames may be negative: no file)."""
  city, seq, frame = key.rsplit("_", 2)
  return f"{city}_{seq}_{int(frame) + offset:06d}"


@dataclasses.dataclass(frozen=True)
class Anchor:
  """An annotated frame: its split ('train'/'val'), city, key, image and label paths."""
  split: str
  city: str
  key: str
  image: str
  label: str

  @property
  def sequence(self) -> str:
    return self.key.rsplit("_", 1)[0]


def find_anchors(root: str, splits: Sequence[str]) -> list[Anchor]:
  """The annotated frames of `splits` under a Cityscapes root, sorted."""
  img_dir, gt_dir = cityscapes.find_fine_dirs(root)
  anchors = []
  for split in splits:
    split_dir = base.require_dir(os.path.join(img_dir, split), f"Cityscapes {split!r} split",
                                 cityscapes.LAYOUT)
    for city in base.list_subdirs(split_dir):
      for name in base.list_files(os.path.join(split_dir, city), cityscapes.IMAGE_SUFFIXES):
        key = cityscapes.image_key(name)
        label = os.path.join(gt_dir, split, city, key + LABEL_SUFFIX)
        if not os.path.isfile(label):
          raise FileNotFoundError(f"annotated frame {os.path.join(split_dir, city, name)} has "
                                  f"no label {label}")
        anchors.append(Anchor(split, city, key, os.path.join(split_dir, city, name), label))
  if not anchors:
    raise FileNotFoundError(f"no annotated frames for splits {list(splits)} under {img_dir}")
  return anchors


def shard_anchors(anchors: Sequence[Anchor], index: int, count: int) -> list[Anchor]:
  """This process's slice: whole sequences, every `count`-th of the sorted sequence names."""
  sequences = sorted({(a.split, a.sequence) for a in anchors})
  mine = set(sequences[index::count])
  return [a for a in anchors if (a.split, a.sequence) in mine]


@dataclasses.dataclass(frozen=True)
class Chain:
  """Propagation of one annotated frame in one direction (+1 forward, -1 backward)."""
  anchor: Anchor
  direction: int


class Layout:
  """Where inputs are read and outputs written."""

  def __init__(self, sequence_root: str, output: str):
    self.sequence_dir = os.path.join(sequence_root, "leftImg8bit_sequence")
    base.require_dir(self.sequence_dir, "Cityscapes sequence folder", SEQUENCE_LAYOUT)
    self.output = output

  def frame(self, anchor: Anchor, offset: int) -> str | None:
    """Path of the video frame `offset` from the anchor (.png or .jpg), None if absent."""
    key = offset_key(anchor.key, offset)
    for suffix in cityscapes.IMAGE_SUFFIXES:
      path = os.path.join(self.sequence_dir, anchor.split, anchor.city, key + suffix)
      if os.path.isfile(path):
        return path
    return None

  def outputs(self, anchor: Anchor, offset: int) -> tuple[str, str]:
    key = offset_key(anchor.key, offset)
    return (os.path.join(self.output, "leftImg8bit", anchor.split, anchor.city,
                         key + IMAGE_SUFFIX),
            os.path.join(self.output, "gtFine", anchor.split, anchor.city, key + LABEL_SUFFIX))

  def done(self, chain: Chain, n: int) -> bool:
    return all(os.path.isfile(p) for p in self.outputs(chain.anchor, chain.direction * n))


def required_offsets(steps: int, direction: int, method: str, first_frame: str) -> set[int]:
  """Sequence-frame offsets a chain reads (offset 0 of step 1 is the annotated image)."""
  need = set()
  for n in range(1, steps + 1):
    offs = warp_step.step_offsets(n, direction, first_frame)
    if method == "flow":
      offs = offs[1:]
    need.update(o for i, o in enumerate(offs) if not (n == 1 and o == 0))
  return need


class Reader:
  """Reads frames (BGR) and labels at the working size; caches decoded frames per batch."""

  def __init__(self, image_size: tuple[int, int]):
    self.size = tuple(int(s) for s in image_size)
    self._cache: dict[str, np.ndarray] = {}

  def _resize(self, x: np.ndarray, interpolation: int) -> np.ndarray:
    if not any(self.size) or x.shape[:2] == self.size:
      return x
    return cv2.resize(x, self.size[::-1], interpolation=interpolation)

  def image(self, path: str) -> np.ndarray:
    if path not in self._cache:
      x = cv2.imread(path, cv2.IMREAD_COLOR)
      if x is None:
        raise ValueError(f"cannot decode image {path}")
      self._cache[path] = self._resize(x, cv2.INTER_AREA)
    return self._cache[path]

  def label(self, path: str) -> np.ndarray:
    x = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if x is None or x.ndim != 2:
      raise ValueError(f"cannot decode label {path} as a one-channel labelIds PNG")
    return self._resize(x, cv2.INTER_NEAREST)

  def clear(self) -> None:
    self._cache.clear()


def write_png(path: str, array: np.ndarray) -> None:
  """cv2.imwrite under a temporary name, then an atomic rename."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.part{os.getpid()}.png"
  if not cv2.imwrite(tmp, array):
    raise OSError(f"cv2.imwrite failed for {tmp}")
  os.replace(tmp, path)


def _copy_anchor(anchor: Anchor, layout: Layout, reader: Reader) -> int:
  image_out, label_out = layout.outputs(anchor, 0)
  if os.path.isfile(image_out) and os.path.isfile(label_out):
    return 0
  if any(reader.size) or not anchor.image.endswith(".png"):
    write_png(image_out, reader.image(anchor.image))
    write_png(label_out, reader.label(anchor.label))
  else:  # byte copies, as sdc_aug.py's shutil.copyfile
    for src, dst in ((anchor.image, image_out), (anchor.label, label_out)):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.copyfile(src, dst + ".part")
      os.replace(dst + ".part", dst)
  return 1


def _run_batch(chains: Sequence[Chain], step: warp_step.Propagator, layout: Layout,
               reader: Reader, *, steps: int, first_frame: str, batch_size: int,
               protected: set[str], bar: tqdm.tqdm) -> int:
  """Propagates a batch of chains in lockstep from each chain's first missing step."""
  first_missing = [next(n for n in range(1, steps + 1) if not layout.done(c, n)) for c in chains]
  state = []
  for c, m in zip(chains, first_missing):
    if m == 1:
      state.append((reader.image(c.anchor.image), reader.label(c.anchor.label)))
    else:  # resume from the last written step, as the original reads it back
      image_path, label_path = layout.outputs(c.anchor, c.direction * (m - 1))
      state.append((reader.image(image_path), reader.label(label_path)))
  bar.update(sum(m - 1 for m in first_missing))
  written = 0
  for n in range(min(first_missing), steps + 1):
    active = [i for i, m in enumerate(first_missing) if m <= n]
    frames = [[], [], []]
    for i in active:
      c = chains[i]
      for slot, o in enumerate(warp_step.step_offsets(n, c.direction, first_frame)):
        if n == 1 and o == 0:
          frames[slot].append(reader.image(c.anchor.image))
        elif step.method == "flow" and slot == 0:
          frames[slot].append(state[i][0])  # unused by the flow-only method
        else:
          frames[slot].append(reader.image(layout.frame(c.anchor, o)))
    pad = batch_size - len(active)  # fixed batch shape: one compilation
    stack = lambda xs: np.stack(list(xs) + [xs[-1]] * pad)
    images, labels = step([stack(f) for f in frames], stack([state[i][0] for i in active]),
                          stack([state[i][1] for i in active]), bilinear=n == 1)
    for j, i in enumerate(active):
      c = chains[i]
      state[i] = (images[j], labels[j])
      image_path, label_path = layout.outputs(c.anchor, c.direction * n)
      if image_path not in protected:  # never overwrite a copied annotated pair
        write_png(image_path, images[j])
        write_png(label_path, labels[j])
        written += 1
    bar.update(len(active))
  return written


def _splits(value: str) -> list[str]:
  splits = [s.strip() for s in str(value).split(",") if s.strip()]
  if not splits or any(s not in ("train", "val", "test") for s in splits):
    raise ValueError(f"propagate.splits={value!r}; expected a comma list of train, val, test")
  return splits


def build_propagator(config: ml_collections.ConfigDict) -> warp_step.Propagator:
  """The step function of `config`: method, flow source, SDCNet and FlowNet2 weights."""
  method, source = config.propagate.method, config.flow.source
  if method not in warp_step.METHODS:
    raise ValueError(f"propagate.method={method!r}; expected one of {warp_step.METHODS}")
  if source not in flow_providers.FLOW_SOURCES:
    raise ValueError(f"flow.source={source!r}; expected one of {flow_providers.FLOW_SOURCES}")
  bundle = None
  flownet2_path = config.flow.flownet2_checkpoint if source == "flownet2" else ""
  if source == "flownet2" and not flownet2_path:
    raise ValueError("flow.source='flownet2' needs flow.flownet2_checkpoint; without FlowNet2 "
                     "weights set flow.source='dis'")
  if method == "sdcnet":
    bundle = convert_weights.build_sdcnet(
        config.sdcnet.model, sequence_length=config.sdcnet.sequence_length,
        rgb_max=config.sdcnet.rgb_max, checkpoint=config.sdcnet.checkpoint,
        flownet2_checkpoint=flownet2_path, random_init=config.sdcnet.random_init,
        seed=config.seed)
    flownet2 = bundle.flownet2
  else:
    flownet2 = None
    if flownet2_path:
      flownet2 = convert_weights.abstract_sdcnet().flownet2
      convert_weights.load_flownet2_weights(flownet2, flownet2_path)
  provider = flow_providers.make_flow_provider(source, flownet2=flownet2,
                                               dis_preset=config.flow.dis_preset)
  return warp_step.Propagator(method, provider, bundle)


def run_propagation(config: ml_collections.ConfigDict, workdir: str, *,
                    process_index: int | None = None, process_count: int | None = None
                    ) -> dict[str, Any]:
  """Propagates this process's share of the annotated frames; returns a summary dict."""
  cfg = config.propagate
  if not config.data.root:
    raise ValueError("data.root is empty; set it to the Cityscapes folder containing "
                     "leftImg8bit/, gtFine/ and leftImg8bit_sequence/")
  steps, batch_size = int(cfg.steps), int(cfg.batch_size)
  if steps < 1 or batch_size < 1:
    raise ValueError(f"propagate.steps={steps} and propagate.batch_size={batch_size} must be >= 1")
  if cfg.on_missing not in ("error", "skip"):
    raise ValueError(f"propagate.on_missing={cfg.on_missing!r}; expected 'error' or 'skip'")
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  output = cfg.output or os.path.join(workdir, "sdc_aug")
  layout = Layout(config.data.sequence_root or config.data.root, output)
  reader = Reader(tuple(config.data.image_size))
  anchors = shard_anchors(find_anchors(config.data.root, _splits(cfg.splits)), index, count)

  chains, missing = [], []
  for a in anchors:
    for d in (1, -1):
      absent = [offset_key(a.key, o) for o in sorted(
          required_offsets(steps, d, cfg.method, cfg.first_frame)) if layout.frame(a, o) is None]
      if absent:
        missing.append((a, d, absent))
      else:
        chains.append(Chain(a, d))
  if missing and cfg.on_missing == "error":
    lines = [f'  {a.split}/{a.city}/{a.key} ({"+" if d > 0 else "-"}): {", ".join(k[:3])}'
             for a, d, k in missing[:5]]
    raise FileNotFoundError(
        f"{len(missing)} propagation chains lack video frames under {layout.sequence_dir} "
        f"(frames needed: t-{steps}..t+{steps} and the +-1 context), e.g.\n" + "\n".join(lines)
        + "\nSet propagate.on_missing='skip' to propagate the others.")
  for a, d, absent in missing:
    logging.warning("skipping %s/%s direction %+d: missing frames %s", a.city, a.key, d, absent)

  copied, protected = 0, set()
  if cfg.copy_annotated:
    for a in sorted({c.anchor for c in chains}, key=lambda a: a.key):
      copied += _copy_anchor(a, layout, reader)
      protected.add(layout.outputs(a, 0)[0])
  pending = [c for c in chains if not all(layout.done(c, n) for n in range(1, steps + 1))]
  summary = {"output": output, "process": [index, count], "anchors": len(anchors),
             "chains": len(chains), "skipped_chains": len(chains) - len(pending),
             "missing_chains": len(missing), "copied": copied, "written": 0}
  logging.info("propagation %d/%d: %d anchors, %d chains (%d finished)", index + 1, count,
               len(anchors), len(chains), summary["skipped_chains"])
  if not pending:
    return summary
  step = build_propagator(config)
  bar = tqdm.tqdm(total=len(pending) * steps, desc=f"propagate {index + 1}/{count}",
                  unit="frame", disable=not config.progress_bar, dynamic_ncols=True)
  with bar:
    for i in range(0, len(pending), batch_size):
      summary["written"] += _run_batch(pending[i:i + batch_size], step, layout, reader,
                                       steps=steps, first_frame=cfg.first_frame,
                                       batch_size=batch_size, protected=protected, bar=bar)
      reader.clear()
  return summary
