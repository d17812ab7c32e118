"""Tests of the grain loaders (jaxseg.data.loader)."""
import json
import logging
import os

import numpy as np
import pytest

from jaxseg.data import build_eval_loader
from jaxseg.data import build_train_loader
from jaxseg.data import data_config
from jaxseg.data import dataset_info
from jaxseg.data import steps_per_epoch
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets.base import Record


class FakeDataset:
  """In-memory dataset; image channel 0 = sample index, labels = class blocks.

  Module level so that grain's spawned worker processes can unpickle it.
  """

  def __init__(self, n=20, h=36, w=44, num_classes=4, bad=(), sizes=None):
    self.n, self.h, self.w, self.k = n, h, w, num_classes
    self.bad = frozenset(bad)
    self.sizes = sizes or {}
    self.records = tuple(Record(f"img/{i}.png", f"lbl/{i}.png", f"s{i}") for i in range(n))
    self.table = identity_table("fake", [f"c{i}" for i in range(num_classes)],
                                           np.zeros((num_classes, 3), np.uint8))

  def __len__(self):
    return self.n

  def _hw(self, i):
    return self.sizes.get(i, (self.h, self.w))

  def read_label(self, i):
    h, w = self._hw(i)
    yy, xx = np.mgrid[:h, :w]
    lab = ((yy // 6 + xx // 6 + i) % (self.k + 1)).astype(np.uint8)
    lab[lab == self.k] = 255
    return lab

  def __getitem__(self, i):
    if i in self.bad:
      return None
    h, w = self._hw(i)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = i
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = np.arange(w)[None]
    return {"image": img, "label": self.read_label(i), "name": f"s{i}"}


def _cfg(**kw):
  c = data_config()
  c.name = "folder"
  c.crop_size = 24
  c.scale_min = c.scale_max = 1.0  # no resampling: image channel 0 stays the index
  c.read_num_threads = 2
  c.read_prefetch_buffer_size = 4
  for k, v in kw.items():
    c[k] = v
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _indices(batch):
  return batch["image"][:, 0, 0, 0].astype(int)


def test_batches_shapes_dtypes_and_seed():
  ds = FakeDataset()
  cfg = _cfg(color_aug=0.25, gblur=True)
  a = _take(build_train_loader(cfg, global_batch_size=4, seed=1, process_index=0,
                               process_count=1, dataset=ds), 6)
  b = _take(build_train_loader(cfg, global_batch_size=4, seed=1, process_index=0,
                               process_count=1, dataset=ds), 6)
  c = _take(build_train_loader(cfg, global_batch_size=4, seed=2, process_index=0,
                               process_count=1, dataset=ds), 6)
  for x in a:
    assert set(x) == {"image", "label"}
    assert x["image"].shape == (4, 24, 24, 3) and x["image"].dtype == np.uint8
    assert x["label"].shape == (4, 24, 24) and x["label"].dtype == np.uint8
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


@pytest.mark.parametrize("num_proc", [2, 4])
def test_process_shards_are_disjoint_and_cover_the_epoch(num_proc):
  ds = FakeDataset(n=20)
  cfg = _cfg()
  gb = 8
  steps = steps_per_epoch(cfg, gb, dataset=ds)
  assert steps == 20 // gb
  single = _take(build_train_loader(cfg, global_batch_size=gb, seed=0, process_index=0,
                                    process_count=1, dataset=ds), 2 * steps)
  shards = [_take(build_train_loader(cfg, global_batch_size=gb, seed=0, process_index=p,
                                     process_count=num_proc, dataset=ds), 2 * steps)
            for p in range(num_proc)]
  for epoch in range(2):
    seen = []
    for s in range(epoch * steps, (epoch + 1) * steps):
      parts = [shards[p][s] for p in range(num_proc)]
      assert all(x["image"].shape[0] == gb // num_proc for x in parts)
      # Process batches, concatenated, are exactly the single-process batch.
      np.testing.assert_array_equal(np.concatenate([x["image"] for x in parts]),
                                    single[s]["image"])
      np.testing.assert_array_equal(np.concatenate([x["label"] for x in parts]),
                                    single[s]["label"])
      for x in parts:
        seen.extend(_indices(x))
    assert len(seen) == len(set(seen)) == steps * gb  # disjoint, one epoch's worth
  assert set(_indices(single[0])) != set(_indices(single[steps]))  # reshuffled


def _resume_check(cfg, ds, first, then):
  it = build_train_loader(cfg, global_batch_size=4, seed=5, process_index=0,
                          process_count=1, dataset=ds)
  _take(it, first)
  state = json.loads(json.dumps(it.get_state()))  # stored as JSON by the trainer
  assert state["step"] == first
  expected = _take(it, then)
  resumed = build_train_loader(cfg, global_batch_size=4, seed=5, process_index=0,
                               process_count=1, dataset=ds)
  resumed.set_state(state)
  got = _take(resumed, then)
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  for i in (it, resumed):
    i.close()


def test_get_state_set_state_mid_epoch_and_across_epochs(tmp_path):
  ds = FakeDataset(n=20)  # 5 steps per epoch
  _resume_check(_cfg(), ds, first=2, then=6)
  cu = _cfg(class_uniform_pct=0.5, class_uniform_tile=12, uniform_cache_dir=str(tmp_path),
            max_cu_epoch=0, color_aug=0.25)
  _resume_check(cu, ds, first=3, then=8)


@pytest.mark.slow  # spawns 2 x 2 worker processes (~10-20 s on 2 cores)
def test_worker_processes_give_the_same_batches():
  ds = FakeDataset(n=16)
  cfg = _cfg(color_aug=0.25)
  ref = _take(build_train_loader(cfg, global_batch_size=4, seed=7, process_index=0,
                                 process_count=1, dataset=ds), 7)
  cfg.num_workers = 2
  cfg.worker_buffer_size = 1
  it = build_train_loader(cfg, global_batch_size=4, seed=7, process_index=0,
                          process_count=1, dataset=ds)
  try:
    got = _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    got += _take(it, 4)
  finally:
    it.close()
  for x, y in zip(ref, got):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert state["step"] == 3
  # Resume a worker-backed loader from JSON state, and one without workers
  # from the same state (the state does not depend on the worker count).
  it = build_train_loader(cfg, global_batch_size=4, seed=7, process_index=0,
                          process_count=1, dataset=ds)
  try:
    it.set_state(state)
    for x, y in zip(ref[3:], _take(it, 4)):
      np.testing.assert_array_equal(x["image"], y["image"])
  finally:
    it.close()
  cfg.num_workers = 0
  it = build_train_loader(cfg, global_batch_size=4, seed=7, process_index=0,
                          process_count=1, dataset=ds)
  it.set_state(state)
  for x, y in zip(ref[3:], _take(it, 4)):
    np.testing.assert_array_equal(x["image"], y["image"])


def test_bad_inputs_are_replaced_and_reported(caplog):
  ds = FakeDataset(n=12, bad={3, 4})
  cfg = _cfg(on_bad_input="skip")
  it = build_train_loader(cfg, global_batch_size=4, seed=0, process_index=0,
                          process_count=1, dataset=ds)
  with caplog.at_level(logging.WARNING):
    batches = _take(it, 3)  # one epoch
  idx = np.concatenate([_indices(b) for b in batches])
  assert 3 not in idx and 4 not in idx
  assert np.sum(idx == 5) == 3  # 3 and 4 are replaced by the next readable one
  assert any("epoch 0: 2 bad sample(s) skipped" in r.getMessage() for r in caplog.records)
  with pytest.raises(Exception, match="on_bad_input"):
    _take(build_train_loader(_cfg(), global_batch_size=4, seed=0, process_index=0,
                             process_count=1, dataset=ds), 3)


def test_class_uniform_loader_steps(tmp_path):
  ds = FakeDataset(n=30)
  cfg = _cfg(class_uniform_pct=0.5, class_uniform_tile=12, uniform_cache_dir=str(tmp_path))
  per_class = int(30 * 0.5 / 4)
  assert steps_per_epoch(cfg, 4, dataset=ds) == (30 - per_class * 4 + per_class * 4) // 4
  it = build_train_loader(cfg, global_batch_size=4, seed=0, process_index=0,
                          process_count=1, dataset=ds)
  assert next(it)["image"].shape == (4, 24, 24, 3)


def test_batch_size_must_divide_by_process_count():
  with pytest.raises(ValueError, match="multiple of the process count"):
    build_train_loader(_cfg(), global_batch_size=6, seed=0, process_index=0,
                       process_count=4, dataset=FakeDataset())


@pytest.mark.parametrize("num_proc", [1, 2])
def test_eval_loader_pads_and_shards(num_proc):
  ds = FakeDataset(n=11)
  cfg = _cfg()
  names, valid_count, num_batches = [], 0, []
  for p in range(num_proc):
    batches = list(build_eval_loader(cfg, batch_size=3, process_index=p,
                                     process_count=num_proc, dataset=ds))
    num_batches.append(len(batches))
    for b in batches:
      assert b["image"].shape == (3, 36, 44, 3) and b["image"].dtype == np.uint8
      assert b["label"].shape == (3, 36, 44) and b["label"].dtype == np.uint8
      assert b["valid"].dtype == bool and b["name"].shape == (3,)
      names += [n for n, v in zip(b["name"], b["valid"]) if v]
      valid_count += int(b["valid"].sum())
  assert len(set(num_batches)) == 1  # same number of batches on every process
  assert sorted(names) == sorted(f"s{i}" for i in range(11)) and valid_count == 11


def test_eval_loader_sizes():
  ds = FakeDataset(n=4, sizes={2: (30, 44)})
  with pytest.raises(Exception, match="eval_pad_height"):
    list(build_eval_loader(_cfg(), batch_size=2, process_index=0, process_count=1,
                           dataset=ds))
  cfg = _cfg(eval_pad_height=40, eval_pad_width=48)
  b = next(iter(build_eval_loader(cfg, batch_size=4, process_index=0, process_count=1,
                                  dataset=ds)))
  assert b["image"].shape == (4, 40, 48, 3) and np.all(b["label"][2, 30:] == 255)
  cfg = _cfg(eval_resize="fixed", eval_height=16, eval_width=20)
  b = next(iter(build_eval_loader(cfg, batch_size=4, process_index=0, process_count=1,
                                  dataset=ds)))
  assert b["image"].shape == (4, 16, 20, 3)


def test_dataset_info():
  cfg = data_config()
  cfg.name = "cityscapes"
  info = dataset_info(cfg)
  assert info.num_classes == 19 and len(info.class_names) == 19
  assert info.colors.shape == (19, 3) and info.ignore_index == 255
  assert info.class_names[0] == "road"


def test_real_cityscapes_class_uniform(shared_data, reference_dir, tmp_path):
  """End to end on the 8 real frames: the loader's centroid cache is the reference."""
  cfg = data_config()
  cfg.name = "cityscapes"
  cfg.root = str(shared_data / "cityscapes")
  cfg.crop_size = 96
  cfg.class_uniform_pct = 0.5
  cfg.class_uniform_tile = 1024
  cfg.uniform_cache_dir = str(tmp_path)
  cfg.color_aug = 0.25
  cfg.gblur = True
  cfg.read_num_threads = 2
  it = build_train_loader(cfg, global_batch_size=2, seed=0, process_index=0, process_count=1)
  b = next(it)
  assert b["image"].shape == (2, 96, 96, 3) and b["label"].dtype == np.uint8
  assert set(np.unique(b["label"])) <= set(range(19)) | {255}
  with open(tmp_path / "cityscapes_train_cv0_tile1024.json") as f:
    got = {int(k): v for k, v in json.load(f).items()}
  with open(reference_dir / "uniform" / "centroids_tile1024.json") as f:
    ref = {int(k): v for k, v in json.load(f).items()}
  assert got == ref
  per_class = int(8 * 0.5 / 19)  # 0: 8 plain samples, as the original
  assert steps_per_epoch(cfg, 2) == (8 - per_class * 19) // 2 == 4
  cfg.eval_split = "val"
  ev = list(build_eval_loader(cfg, batch_size=2, process_index=0, process_count=1))
  assert len(ev) == 1 and list(ev[0]["valid"]) == [True, False]
  assert ev[0]["image"].shape == (2, 128, 256, 3)
  assert os.path.basename(str(ev[0]["name"][0])).startswith("frankfurt")


def test_synthetic_dataset_end_to_end():
  cfg = data_config()
  cfg.name = "synthetic"
  cfg.crop_size = 48
  cfg.synthetic.num_train, cfg.synthetic.num_val = 8, 3
  cfg.class_uniform_pct = 0.5
  cfg.class_uniform_tile = 32
  cfg.read_num_threads = 2
  b = next(build_train_loader(cfg, global_batch_size=4, seed=0, process_index=0,
                              process_count=1))
  assert b["image"].shape == (4, 48, 48, 3) and b["label"].shape == (4, 48, 48)
  assert set(np.unique(b["label"])) <= set(range(8)) | {255}
  ev = list(build_eval_loader(cfg, batch_size=2, process_index=0, process_count=1))
  assert len(ev) == 2 and ev[0]["image"].shape == (2, 64, 128, 3)
  assert int(sum(e["valid"].sum() for e in ev)) == 3
