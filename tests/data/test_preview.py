"""`--mode preview` (input_pipeline/preview.py): the training loader's augmented samples as
PNGs, class-uniform centres marked where they land."""
import os
import subprocess
import sys

from _testlib import DEMO_ARGS
from _testlib import ROOT
from _testlib import subprocess_env
import cv2
import numpy as np
import pytest

from jaxseg.config.base import base_config
from jaxseg.data import build_train_loader
from jaxseg.data import preview
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets.base import Record


class BlobDataset:
  """Grey noise images, class 0 everywhere but one 10x10 square of class 1 per image: the
  class-1 centroid is the square's centre, so a correctly tracked centre lands on class 1."""

  def __init__(self, n=12, h=40, w=56):
    self.n, self.h, self.w = n, h, w
    self.records = tuple(Record(f"img/{i}.png", f"lbl/{i}.png", f"blob{i}") for i in range(n))
    self.table = identity_table("blobs", ["ground", "blob"],
                                           np.array([[0, 128, 0], [255, 0, 0]], np.uint8))

  def __len__(self):
    return self.n

  def read_label(self, i):
    label = np.zeros((self.h, self.w), np.uint8)
    y, x = 3 + (7 * i) % (self.h - 16), 3 + (11 * i) % (self.w - 16)
    label[y:y + 10, x:x + 10] = 1
    return label

  def __getitem__(self, i):
    image = np.random.default_rng(i).integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)
    return {"image": image, "label": self.read_label(i), "name": f"blob{i}"}


def _blob_config(tmp_path, num_samples=8):
  c = base_config()
  c.data.name = "folder"
  c.data.crop_size = 24
  c.data.scale_min, c.data.scale_max = 0.75, 1.5
  c.data.rotate, c.data.rotate_prob = 15.0, 1.0  # every geometric step moves the centroid
  c.data.class_uniform_pct = 1.0
  c.data.class_uniform_tile = 40
  c.data.uniform_cache_dir = str(tmp_path)
  c.data.read_num_threads = 1
  c.preview.num_samples = num_samples
  c.seed = 3
  return c


def test_centres_land_on_their_class_and_samples_are_the_loaders(tmp_path):
  config = _blob_config(tmp_path)
  dataset = BlobDataset()
  samples = preview.preview_samples(config, 8, dataset=dataset)
  blobs = [s for s in samples if s.class_id == 1]
  assert blobs and all(s.class_id in (0, 1) for s in samples)  # every crop class-centred here
  for s in blobs:
    assert s.centre is not None, s
    x, y = s.centre
    assert s.label[y, x] == 1, (s.name, s.centre)
  # The training run's own first batch (batch 4, the same seed) holds the same samples.
  batch = next(build_train_loader(config.data, global_batch_size=4, seed=config.seed,
                                  process_index=0, process_count=1, dataset=dataset))
  for i in range(4):
    np.testing.assert_array_equal(samples[i].image, batch["image"][i])
    np.testing.assert_array_equal(samples[i].label, batch["label"][i])

  written = preview.write_preview(config, tmp_path / "work", dataset=dataset)
  assert [p.name for p in written] == [f"{k:03d}_{s.name}.png" for k, s in enumerate(samples)]
  picture = cv2.cvtColor(cv2.imread(str(written[samples.index(blobs[0])])), cv2.COLOR_BGR2RGB)
  top = picture.shape[0] - 24
  assert picture.shape == (top + 24, 2 * 24 + 4, 3)
  x, y = blobs[0].centre
  assert (picture[top + y, x] == 255).all() and (picture[top + y, 28 + x] == 255).all()  # cross


def test_bad_count_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="config.preview.num_samples=0"):
    preview.preview_samples(_blob_config(tmp_path), 0, dataset=BlobDataset())


def test_cli_preview_on_the_demo_data(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", *DEMO_ARGS, "--mode", "preview",
       "--workdir", str(tmp_path), "--config.preview.num_samples=3",
       "--config.data.class_uniform_pct=0.5", "--config.data.class_uniform_tile=32"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **subprocess_env()})
  assert result.returncode == 0, result.stderr[-2000:]
  pictures = sorted((tmp_path / "preview").glob("*.png"))
  assert len(pictures) == 3 and [str(p) for p in pictures] == result.stdout.split()
  shape = cv2.imread(str(pictures[0])).shape
  assert shape[1] == 2 * 32 + 4 and shape[0] > 32


def test_preview_on_camvid(shared_data, tmp_path):
  root = shared_data / "camvid"
  if not root.is_dir():
    pytest.skip(f"CamVid not found at {root}")
  from _testlib import load_config
  config = load_config("configs/camvid.py", **{"data.root": str(root), "data.crop_size": 64,
                                                "preview.num_samples": 3})
  samples = preview.preview_samples(config, 2)
  for s in samples:
    assert s.image.shape == (64, 64, 3) and s.label.shape == (64, 64)
    assert set(np.unique(s.label)) <= set(range(11)) | {255}
    assert s.class_id is None and s.centre is None  # the recipe samples plainly
  assert len(preview.write_preview(config, tmp_path)) == 3
