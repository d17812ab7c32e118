"""Tests of class-uniform sampling: centroids, their cache, epoch composition."""
import json
import os

import numpy as np
import pytest
import scipy.ndimage

from jaxseg.data import sampling
from jaxseg.data import uniform
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets import base
from jaxseg.data.datasets.base import Record
from jaxseg.data.datasets.cityscapes import cityscapes_table


def _cityscapes_train(shared_data):
  """The 8 real aachen frames, paths as the reference writes them."""
  root = shared_data / "cityscapes"
  names = sorted(f[:-len("_gtFine_labelIds.png")]
                 for f in os.listdir(root / "gtFine/train/aachen")
                 if f.endswith("_gtFine_labelIds.png"))
  items = [(f"leftImg8bit/train/aachen/{n}_leftImg8bit.png",
            f"gtFine/train/aachen/{n}_gtFine_labelIds.png") for n in names]
  records = [Record(str(root / i), str(root / l), n) for (i, l), n in zip(items, names)]
  ds = base.SegmentationDataset(records, cityscapes_table(), "train")
  return ds, items


@pytest.mark.parametrize("tile", [1024, 512])
def test_centroids_match_original(shared_data, reference_dir, tile):
  ds, items = _cityscapes_train(shared_data)
  assert len(items) == 8
  got = uniform.class_centroids_all(items, ds.read_label, 19, tile, num_workers=2)
  with open(reference_dir / "uniform" / f"centroids_tile{tile}.json") as f:
    ref = {int(k): v for k, v in json.load(f).items()}
  got = {int(k): v for k, v in json.loads(json.dumps(
      {str(k): v for k, v in got.items()})).items()}  # JSON round trip
  assert got == ref
  assert list(got) == list(ref)  # first-seen class order too


def test_image_centroids_match_scipy():
  rng = np.random.default_rng(0)
  label = rng.choice(np.array([0, 1, 2, 5, 255], np.uint8), (70, 90),
                     p=[0.5, 0.3, 0.15, 0.049, 0.001])
  label[:35, :30] = 5  # a big blob in one tile
  out = uniform.image_centroids(label, 32, 6)
  expect = []
  for x0, y0 in uniform.calc_tile_locations(32, label.shape):
    patch = label[y0:y0 + 32, x0:x0 + 32]
    for c in range(6):
      if c in patch:
        cy, cx = scipy.ndimage.center_of_mass((patch == c).astype(int))
        expect.append((c, int(cx) + x0, int(cy) + y0))
  assert out == expect
  assert len(uniform.calc_tile_locations(32, label.shape)) == 2 * 2  # partial tiles skipped


class _CountingReader:
  def __init__(self, labels):
    self.labels, self.calls = labels, 0

  def __call__(self, i):
    self.calls += 1
    return self.labels[i]


def _toy_labels(n=6, h=20, w=24):
  yy, xx = np.mgrid[:h, :w]
  return [((yy // 5 + xx // 6 + i) % 4).astype(np.uint8) for i in range(n)]


def test_cache_reuse_and_invalidation(tmp_path):
  labels = _toy_labels()
  items = [(f"img/{i}.png", f"lbl/{i}.png") for i in range(6)]
  path = str(tmp_path / "cache" / "toy_tile8.json")
  reader = _CountingReader(labels)
  first = uniform.load_or_compute_centroids(path, items, reader, 4, 8, num_workers=1)
  assert reader.calls == 6 and os.path.isfile(path) and os.path.isfile(path + ".meta.json")
  with open(path) as f:  # the original's format: str keys, 4-tuples
    on_disk = json.load(f)
  assert {int(k) for k in on_disk} == set(first)
  assert on_disk["0"][0][:2] == ["img/0.png", "lbl/0.png"] and on_disk["0"][0][3] == 0
  # Same file list: reused, nothing read.
  again = uniform.load_or_compute_centroids(path, items, reader, 4, 8, num_workers=1)
  assert reader.calls == 6 and again == first
  # A changed file list (one item dropped) invalidates the cache.
  uniform.load_or_compute_centroids(path, items[:5], reader, 4, 8, num_workers=1)
  assert reader.calls == 6 + 5
  # So does another tile size, and a corrupt cache file.
  uniform.load_or_compute_centroids(path, items[:5], reader, 4, 10, num_workers=1)
  assert reader.calls == 6 + 5 + 5
  with open(path, "w") as f:
    f.write("{not json")
  fixed = uniform.load_or_compute_centroids(path, items[:5], reader, 4, 10, num_workers=1)
  assert reader.calls == 6 + 5 + 5 + 5
  assert fixed == uniform.class_centroids_all(items[:5], labels.__getitem__, 4, 10)


def _pool(idx, seed=0):
  idx = np.asarray(idx, np.int64)
  return uniform.CentroidPool(idx, np.stack([idx * 10 + seed, idx * 20], -1))


def test_build_epoch_counts():
  items = np.arange(100) + 1000
  pools = {0: _pool([1, 2, 3]), 1: _pool(range(40)), 2: _pool([7]), 4: _pool(range(5))}
  ep = uniform.build_epoch(np.random.default_rng(0), items, pools, 5, 0.5)
  per_class = int(100 * 0.5 / 5)  # 10
  num_rand = 100 - per_class * 5  # 50
  assert len(ep) == num_rand + 4 * per_class  # class 3 has no centroids: skipped
  np.testing.assert_array_equal(uniform.class_counts(ep, 5), [10, 10, 10, 0, 10])
  plain = ep.index[ep.class_id < 0]
  assert len(plain) == num_rand and len(set(plain)) == num_rand  # no repeats
  assert set(plain) <= set(items) and np.all(ep.centroid[ep.class_id < 0] == -1)
  # Wrap-around sampling: 3 centroids drawn 10 times -> each 3 or 4 times.
  _, counts = np.unique(ep.index[ep.class_id == 0], return_counts=True)
  assert sorted(counts) == [3, 3, 4]
  assert np.all(ep.index[ep.class_id == 2] == 7)
  sel = ep.class_id == 1
  np.testing.assert_array_equal(ep.centroid[sel], np.stack([ep.index[sel] * 10,
                                                            ep.index[sel] * 20], -1))
  # pct = 1: all samples class-centred; pct = 0: a plain shuffle.
  full = uniform.build_epoch(np.random.default_rng(0), items, pools, 5, 1.0)
  assert len(full) == 80 and np.all(full.class_id >= 0)
  none = uniform.build_epoch(np.random.default_rng(0), items, pools, 5, 0.0)
  assert sorted(none.index) == list(items)


def test_cut_pools_follow_original_shallow_copy():
  fine = {0: _pool([1, 2]), 1: _pool([3])}
  sdc = {0: _pool([50]), 2: _pool([51])}
  full = uniform.merge_pools(fine, sdc)
  assert list(full[0].index) == [1, 2, 50]
  cut = uniform.cut_pools(full, fine)
  # Class 0 keeps its SDC centroid (shared list in the original); class 2,
  # which has no fine centroid, disappears.
  assert sorted(cut) == [0, 1] and list(cut[0].index) == [1, 2, 50]


class _FakeDataset:
  def __init__(self, kinds, h=16, w=16, num_classes=3):
    self.records = tuple(Record(f"i{k}", f"l{k}", f"n{k}", kind) for k, kind in enumerate(kinds))
    self.table = identity_table("fake", [f"c{i}" for i in range(num_classes)],
                                           np.zeros((num_classes, 3), np.uint8))
    self.h, self.w = h, w

  def __len__(self):
    return len(self.records)

  def read_label(self, i):
    lab = np.full((self.h, self.w), i % 2, np.uint8)  # classes 0 and 1, never 2
    lab[:4, :4] = 255
    return lab


def _cfg(name="cityscapes", pct=0.5, max_cu_epoch=1):
  from jaxseg.data import defaults  # pylint: disable=g-import-not-at-top
  c = defaults.data_config()
  c.name = name
  c.class_uniform_pct = pct
  c.class_uniform_tile = 8
  c.max_cu_epoch = max_cu_epoch
  return c


@pytest.mark.parametrize("name", ["cityscapes", "camvid"])
def test_plan_composition_and_cut(tmp_path, name):
  kinds = ["fine"] * 30 + ["sdc"] * 12
  ds = _FakeDataset(kinds)
  cfg = _cfg(name)
  cfg.uniform_cache_dir = str(tmp_path)
  plan = sampling.make_plan(cfg, 4, seed=3, dataset=ds)
  n0 = 42 if name == "cityscapes" else 30  # SDC in the plain part: Cityscapes only
  per0 = int(n0 * 0.5 / 3)
  assert plan.epoch_size(0) == n0 - per0 * 3 + per0 * 2  # class 2 has no centroids
  ep0 = plan.epoch(0)
  np.testing.assert_array_equal(uniform.class_counts(ep0, 3), [per0, per0, 0])
  plain0 = ep0.index[ep0.class_id < 0]
  assert (np.any(plain0 >= 30)) == (name == "cityscapes")
  # Centred samples draw from fine and SDC centroids before and after the cut.
  assert np.any(ep0.index[ep0.class_id >= 0] >= 30)
  assert not plan.is_cut(1) and plan.is_cut(2)
  ep2 = plan.epoch(2)
  per2 = int(30 * 0.5 / 3)
  assert len(ep2) == 30 - per2 * 3 + per2 * 2 == plan.epoch_size(2)
  assert np.all(ep2.index[ep2.class_id < 0] < 30)  # the plain part is fine-only
  # Pure function of (seed, epoch); epochs differ.
  again = sampling.make_plan(cfg, 4, seed=3, dataset=ds).epoch(0)
  np.testing.assert_array_equal(again.index, ep0.index)
  np.testing.assert_array_equal(again.centroid, ep0.centroid)
  assert not np.array_equal(plan.epoch(1).index, ep0.index)
  # locate(): steps of epochs 0..1 (uncut) then cut epochs.
  s0, s2 = plan.steps(0), plan.steps(2)
  assert plan.locate(0) == (0, 0) and plan.locate(s0) == (1, 0)
  assert plan.locate(2 * s0) == (2, 0) and plan.locate(2 * s0 + s2 + 1) == (3, 1)
  assert os.path.isfile(tmp_path / f"{name}_train_cv0_tile8.json")


def test_plan_without_class_uniform_ignores_sdc(tmp_path):
  ds = _FakeDataset(["fine"] * 10 + ["sdc"] * 5)
  cfg = _cfg(pct=0.0)
  cfg.uniform_cache_dir = str(tmp_path)
  plan = sampling.make_plan(cfg, 3, seed=0, dataset=ds)
  assert plan.epoch_size(0) == 10 and plan.steps(0) == 3
  assert sorted(plan.epoch(0).index) == list(range(10))
  assert not os.listdir(tmp_path)  # no centroids needed
  with pytest.raises(ValueError, match="fewer than the global batch"):
    sampling.make_plan(cfg, 11, seed=0, dataset=ds)


class _FakeCoarse(_FakeDataset):
  def read_label(self, i):
    lab = np.full((self.h, self.w), 1, np.uint8)
    lab[8:, 8:] = 2  # class 2: absent from the fine fake labels
    return lab


def test_coarse_boost_adds_only_boosted_classes(tmp_path, monkeypatch):
  fine = _FakeDataset(["fine"] * 12)
  coarse = _FakeCoarse(["coarse"] * 5)
  from jaxseg.data import datasets  # pylint: disable=g-import-not-at-top
  requested = []

  def fake_get_dataset(cfg, split):
    requested.append(split)
    return coarse
  monkeypatch.setattr(datasets, "get_dataset", fake_get_dataset)
  cfg = _cfg()
  cfg.uniform_cache_dir = str(tmp_path)
  cfg.coarse_boost_classes = (2,)
  plan = sampling.make_plan(cfg, 4, seed=0, dataset=fine)
  assert requested == ["extra"]  # the Cityscapes gtCoarse split
  assert len(plan.source) == 17 and sorted(plan.pools) == [0, 1, 2]
  assert np.all(plan.pools[2].index >= 12)  # class 2: coarse samples only
  assert np.all(plan.pools[1].index < 12)  # class 1 not boosted: fine only
  assert np.all(plan.plain < 12)  # coarse samples are never plain samples
  ep = plan.epoch(0)
  per = int(12 * 0.5 / 3)
  np.testing.assert_array_equal(uniform.class_counts(ep, 3), [per, per, per])
  sample_rec = plan.source.records[int(ep.index[ep.class_id == 2][0])]
  assert sample_rec.kind == "coarse"
  assert os.path.isfile(tmp_path / "cityscapes_coarse_tile8.json")
  # After the cut, class 2 (no fine centroid) loses its pool, as the original.
  assert 2 not in plan.pools_cut
