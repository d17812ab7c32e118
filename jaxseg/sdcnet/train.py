r"""SDCNet video-reconstruction training (sdcnet/main.py), data-parallel over a device mesh.

  python -m jaxseg.main --config configs/sdcnet_cityscapes.py --workdir /tmp/sdctrain \
      --config.data.root=/data/cityscapes --config.flow.flownet2_checkpoint=/ckpt/flownet2/0

Samples are windows of `sequence_length + 1` consecutive frames (the original FrameLoader) from
the sequence folders under `train.sequence_root` (default
`<data.sequence_root or data.root>/leftImg8bit_sequence/train`), every `sample_rate`-th start,
played backwards with probability `reverse_prob`, randomly cropped to `crop_size` (one crop for
all frames of a window) and reflect-padded to multiples of 64, BGR in [0, 255] as cv2 reads
them. A folder holds one sequence, except that Cityscapes names `<city>_<seq>_<frame>` split a
folder into its sequences (the original's os.walk would join windows across them).

Loss: `reconstruction_loss` = 0.7 L1 colour + 0.2 L1 gradient + 0.1 flow smoothness of the
predicted frame (the last input frame warped bilinearly by SDCNet's flow) against the target.
FlowNet2 is frozen (its flows are computed in the step, no gradient); with `flow.source='dis'`
the host computes DIS flows instead and no FlowNet2 weights are needed. Adam (torch defaults,
no weight decay, as the original), MultiStepLR over epochs, optional clipping by value.
Checkpoints (jaxseg.runtime.checkpoint) hold params = SDCNet's own parameters and
batch_stats = its buffers, the layout of convert_weights, so a workdir can be given as
`sdcnet.checkpoint` for propagation. A run resumes from its latest checkpoint, with the
segmentation loop's resilience (runtime/preemption, runtime/health): SIGTERM / Ctrl-C save the
current step, a non-finite update is skipped and stops the run before anything NaN is saved,
a damaged newest step falls back to the previous one, a full disk exits in one line.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import time
from typing import Any, Sequence

from absl import logging
import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jaxseg import kernels
from jaxseg.data.datasets import cityscapes
from jaxseg.runtime import checkpoint as ckpt_lib
from jaxseg.runtime import health as health_lib
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import preemption as preemption_lib
from jaxseg.runtime import tensorboard
from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet.flownet2 import SIZE_MULTIPLE
from jaxseg.sdcnet.sdcnet import reconstruction_loss

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _natural_key(name: str) -> list[Any]:
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_sequences(root: str) -> list[list[str]]:
  """Frame paths per sequence under `root` (every folder with images, naturally sorted)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"train.sequence_root not found: {root} (expected folders of video "
                            "frames, e.g. <cityscapes>/leftImg8bit_sequence/train)")
  sequences = []
  for folder, dirs, files in sorted(os.walk(root, followlinks=True)):
    dirs.sort()
    names = sorted((f for f in files if f.lower().endswith(_EXTENSIONS)
                    and not f.startswith(".")), key=_natural_key)
    groups: dict[str, list[str]] = {}
    for name in names:
      key = cityscapes.image_key(name)
      group = key.rsplit("_", 1)[0] if key and key.count("_") >= 2 else ""
      groups.setdefault(group, []).append(os.path.join(folder, name))
    sequences.extend(groups[g] for g in sorted(groups))
  if not sequences:
    raise FileNotFoundError(f'no video frames ({", ".join(_EXTENSIONS)}) under {root}')
  return sequences


def make_windows(sequences: Sequence[Sequence[str]], num_frames: int,
                 sample_rate: int = 1) -> list[tuple[str, ...]]:
  """Windows of `num_frames` consecutive frames; (len - num_frames + 1) // rate per sequence."""
  windows = []
  for seq in sequences:
    count = (len(seq) - num_frames + 1) // sample_rate
    windows.extend(tuple(seq[sample_rate * i:sample_rate * i + num_frames])
                   for i in range(max(count, 0)))
  if not windows:
    raise ValueError(f"no sequence has {num_frames} frames: nothing to train on")
  return windows


class Loader:
  """Deterministic batches from the step number: resuming needs no iterator state.

  Epoch e visits the windows in `default_rng([seed, e]).permutation`, dropping the last partial
  batch; process p loads its slice of every global batch.
  """

  def __init__(self, windows: Sequence[tuple[str, ...]], config: ml_collections.ConfigDict,
               global_batch: int, provider: flow_providers.FlowProvider | None,
               net_frames: int):
    self.windows = list(windows)
    self.config = config
    self.global_batch = global_batch
    self.steps_per_epoch = len(self.windows) // global_batch
    if self.steps_per_epoch < 1:
      raise ValueError(f"train.batch_size={global_batch} exceeds the {len(self.windows)} "
                       "training windows")
    self.provider = provider
    self.net_frames = net_frames
    count = jax.process_count()
    self.local = global_batch // count
    self.offset = jax.process_index() * self.local
    self._pool = concurrent.futures.ThreadPoolExecutor(max(1, config.train.num_workers))
    self._pending: dict[int, list[concurrent.futures.Future]] = {}

  def _indices(self, step: int) -> tuple[int, list[int]]:
    epoch, b = divmod(step, self.steps_per_epoch)
    perm = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.windows))
    start = b * self.global_batch + self.offset
    return epoch, [int(i) for i in perm[start:start + self.local]]

  def _sample(self, step: int, position: int, index: int) -> dict[str, np.ndarray]:
    cfg = self.config
    epoch = step // self.steps_per_epoch
    rng = np.random.default_rng([cfg.seed, epoch, step, position])
    files = list(self.windows[index])
    if rng.random() < cfg.train.reverse_prob:
      files = files[::-1]
    frames = []
    for path in files:
      x = cv2.imread(path, cv2.IMREAD_COLOR)
      if x is None:
        raise ValueError(f"cannot decode frame {path}")
      if any(cfg.data.image_size):
        x = cv2.resize(x, tuple(cfg.data.image_size)[::-1], interpolation=cv2.INTER_AREA)
      frames.append(x)
    h, w = frames[0].shape[:2]
    th, tw = (int(s) for s in cfg.train.crop_size)
    if th or tw:
      if th > h or tw > w:
        raise ValueError(f"train.crop_size={(th, tw)} is larger than the frames ({h}x{w}) of "
                         f"{files[0]}")
      y0, x0 = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
      frames = [f[y0:y0 + th, x0:x0 + tw] for f in frames]
      h, w = th, tw
    ph, pw = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
    frames = np.stack([np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="reflect")
                       for f in frames]).astype(np.float32)
    sample = {"frames": frames}
    if self.provider is not None:
      inputs = frames[:self.net_frames]
      sample["flows"] = np.stack([self.provider(inputs[i + 1][None], inputs[i][None])[0]
                                  for i in range(len(inputs) - 1)])
    return sample

  def _submit(self, step: int) -> None:
    if step not in self._pending:
      _, idx = self._indices(step)
      self._pending[step] = [self._pool.submit(self._sample, step, self.offset + j, i)
                             for j, i in enumerate(idx)]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of the global batch of `step` (0-based); prefetches the next."""
    self._submit(step)
    self._submit(step + 1)
    samples = [f.result() for f in self._pending.pop(step)]
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


def make_train_step(bundle: convert_weights.SDCNetBundle, tx: optax.GradientTransformation):
  """jit(params, opt_state, buffers, flownet_state, batch, counters, step)
  -> (params, opt_state, counters, losses).

  A step whose loss, gradients or new parameters are not finite is not applied: params and
  opt_state come back unchanged, `counters` (runtime/health) count it under the 1-based
  `step`, and losses['finite'] is False, so the loop can stop naming it.
  """

  def loss_fn(params, buffers, flownet_state, batch):
    model = bundle.merge(params, buffers, flownet_state)
    frames = [batch["frames"][:, i] for i in range(batch["frames"].shape[1])]
    _, last, target = model.split_frames(frames)
    if "flows" in batch:
      flows = [batch["flows"][:, i] for i in range(batch["flows"].shape[1])]
    else:
      flows = model.flows(frames)  # frozen FlowNet2 (stop_gradient inside)
    flow_pred = model.network_output(frames, flows)
    image_pred = kernels.resample2d(last, flow_pred, mode="bilinear")
    losses = reconstruction_loss(image_pred, target, flow_pred, rgb_max=bundle.rgb_max)
    return losses["tot"], losses

  @jax.jit
  def step(params, opt_state, buffers, flownet_state, batch, counters, step_number):
    grads, losses = jax.grad(loss_fn, has_aux=True)(params, buffers, flownet_state, batch)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = (health_lib.all_finite(grads) & jnp.isfinite(losses["tot"]) &
              health_lib.all_finite(new_params))
    params = health_lib.select_if_finite(finite, new_params, params)
    opt_state = health_lib.select_if_finite(finite, new_opt_state, opt_state)
    counters = health_lib.count_nonfinite(counters, finite, step_number)
    return params, opt_state, counters, dict(losses, finite=finite)

  return step


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  t = config.train
  schedule = optax.piecewise_constant_schedule(
      t.lr, {int(m) * steps_per_epoch: t.lr_gamma for m in t.lr_milestones})
  parts = [optax.clip(t.clip_gradients)] if t.clip_gradients > 0 else []
  return optax.chain(*parts, optax.adam(schedule)), schedule


# Meta keys a resume must share with its checkpoint: another network or window length is
# another model (the parameter shapes would only tell "shape mismatch").
_RUN_KEYS = ("model", "sequence_length")


def _refuse_other_runs(ckpt: ckpt_lib.CheckpointManager, meta: dict[str, Any]) -> None:
  """Raises CheckpointMismatchError, naming the setting, when the newest readable step of
  `ckpt` was written for another SDCNet or sequence_length (a damaged step is skipped here:
  restore_latest moves it aside)."""
  for step in reversed(ckpt.all_steps()):
    try:
      stored = ckpt_lib.read_meta(ckpt.directory / str(step))
    except ckpt_lib.DamagedCheckpointError:
      continue
    differences = [f"{k}: checkpoint {stored[k]!r}, this run {meta[k]!r}" for k in _RUN_KEYS
                   if k in stored and stored[k] != meta[k]]
    if differences:
      raise ckpt_lib.CheckpointMismatchError(
          f"cannot resume from checkpoint {step} under {ckpt.directory}: it was written by a "
          f"different run ({'; '.join(differences)}); use a new --workdir, or the settings the "
          "checkpoint was trained with")
    return


def train_sdcnet(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains SDCNet in `workdir` (resuming from its latest checkpoint); returns a summary.

  The segmentation loop's resilience (runtime/preemption, runtime/health, the checkpoint
  manager): SIGTERM or a first Ctrl-C saves the step it is at and stops (Ctrl-C then exits
  with status 130, a second one at once); a non-finite update is never applied and stops the
  run with NonFiniteLossError naming the step and the last good checkpoint, checked before
  every save; a resume refuses a workdir of another model / sequence_length and falls back
  from a damaged newest step; a full disk exits in one line naming the step to resume from.
  """
  t = config.train
  is_main = jax.process_index() == 0
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  if t.batch_size % mesh_lib.data_parallel_size(mesh) or t.batch_size % jax.process_count():
    raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the data-parallel "
                     f"size {mesh_lib.data_parallel_size(mesh)} and of the process count")
  source = config.flow.source
  if source not in flow_providers.FLOW_SOURCES:
    raise ValueError(f"flow.source={source!r}; expected one of {flow_providers.FLOW_SOURCES}")
  if source == "flownet2" and not config.flow.flownet2_checkpoint:
    raise ValueError("flow.source='flownet2' needs flow.flownet2_checkpoint (SDCNet trains on "
                     "FlowNet2 flows); without FlowNet2 weights set flow.source='dis'")
  bundle = convert_weights.build_sdcnet(
      config.sdcnet.model, sequence_length=config.sdcnet.sequence_length,
      rgb_max=config.sdcnet.rgb_max, checkpoint=config.sdcnet.checkpoint,
      flownet2_checkpoint=config.flow.flownet2_checkpoint if source == "flownet2" else "",
      random_init=True, seed=config.seed)
  net_frames = bundle.num_frames if bundle.name == "SDCNet2DRecon" else bundle.num_frames - 1
  root = t.sequence_root or os.path.join(config.data.sequence_root or config.data.root,
                                         "leftImg8bit_sequence", "train")
  if not root or root == os.path.join("leftImg8bit_sequence", "train"):
    raise ValueError("set data.root (Cityscapes) or train.sequence_root (folders of frames)")
  windows = make_windows(find_sequences(root), bundle.num_frames, t.sample_rate)
  provider = flow_providers.DISFlow(config.flow.dis_preset) if source == "dis" else None
  loader = Loader(windows, config, t.batch_size, provider, net_frames)
  spe = loader.steps_per_epoch
  total = t.num_steps if t.num_steps > 0 else t.num_epochs * spe
  tx, schedule = make_optimizer(config, spe)

  replicated = mesh_lib.replicated(mesh)
  put = lambda tree: jax.device_put(jax.tree.map(jnp.asarray, tree), replicated)
  params, buffers = put(bundle.params), put(bundle.buffers)
  flownet_state = put(bundle.flownet_state()) if source == "flownet2" else None
  opt_state = put(tx.init(params))
  counters = put(health_lib.initial_counters())  # not checkpointed: a saved run has none
  ckpt = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                    keep=config.checkpoint.keep,
                                    async_save=config.checkpoint.async_save)
  meta = {"model": bundle.name, "sequence_length": bundle.sequence_length,
          "rgb_max": bundle.rgb_max, "flow_source": source, "windows": len(windows),
          "layout": "params: own (no flownet2/); batch_stats: buffers"}
  try:
    _refuse_other_runs(ckpt, meta)
    start, restored = ckpt.restore_latest(
        meta=meta, model_vars={"params": params, "batch_stats": buffers},
        train_vars={"opt_state": opt_state, "step": np.zeros((), np.int64)})
  except BaseException:
    loader.close()  # (the manager is left unclosed: closing would prune another run's steps)
    raise
  start = start or 0
  if restored is not None:
    params, buffers = restored["model"]["params"], restored["model"]["batch_stats"]
    opt_state = restored["train"]["opt_state"]
    logging.info("resumed SDCNet training from %s at step %d", ckpt.directory, start)
  last_saved = start or None
  health = health_lib.Health(lambda c: c, ckpt.directory, counters,
                             advice="Lower train.lr or check the frames.")

  def save(step: int) -> None:
    nonlocal last_saved
    health.check(counters, step, last_saved)  # never checkpoint a failed run
    ckpt.save(step, model_vars={"params": params, "batch_stats": buffers},
              train_vars={"opt_state": opt_state, "step": np.asarray(step, np.int64)},
              data_state={"step": step, "epoch": step // spe}, meta=meta, force=True)
    last_saved = step

  train_step = make_train_step(bundle, tx)
  # A resumed run hides in TensorBoard what the interrupted one logged after its checkpoint.
  writer = (tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                      purge_step=start + 1 if restored is not None else None)
            if is_main else None)
  preemption = preemption_lib.Preemption(t.get("preemption_sync_every", 10),
                                         where=lambda: preemption_lib.last_committed(ckpt))
  stop = min(total, t.stop_at_step) if t.stop_at_step > 0 else total
  history: list[dict[str, float]] = []
  bar = tqdm.tqdm(total=total, initial=start, desc="sdcnet train", unit="step",
                  disable=not (is_main and config.progress_bar), dynamic_ncols=True)
  tick = time.perf_counter()
  done, stopped = start, None
  with preemption_lib.closing_run(ckpt, preemption, bar, loader, writer):
    for step in range(start, stop):
      batch = mesh_lib.shard_batch(loader.batch(step), mesh)
      done = step + 1
      params, opt_state, counters, losses = train_step(params, opt_state, buffers,
                                                       flownet_state, batch, counters, done)
      bar.update(1)
      if done % t.log_every == 0 or done == stop:
        scalars = {k: float(v) for k, v in jax.device_get(losses).items() if k != "finite"}
        health.check(counters, done, last_saved, scalars["tot"])
        scalars["lr"] = float(schedule(step))
        scalars["step_time_s"] = (time.perf_counter() - tick) / max(1, done - start)
        history.append(dict(scalars, step=done))
        bar.set_postfix(loss=f"{scalars['tot']:.4f}", lr=f"{scalars['lr']:.1e}")
        if writer:
          writer.scalars({f"train/{k}": v for k, v in scalars.items()}, done)
      preempted = preemption.should_stop(done)
      if done % t.checkpoint_every == 0 or done == stop or preempted:
        save(done)
      if preempted:
        stopped = preemption.reason
        break
  if stopped:  # a Ctrl-C exits with status 130 here
    preemption_lib.report_stop(done, stopped, ckpt.directory)
  elif t.stop_at_step > 0 and done == t.stop_at_step < total:
    logging.warning("stopping at step %d (train.stop_at_step); checkpoint %d is saved under %s",
                    done, done, ckpt.directory)
  return {"start_step": start, "step": done, "total_steps": total,
          "steps_per_epoch": spe, "history": history, "stopped": stopped,
          "checkpoint": os.path.join(workdir, "checkpoints")}
