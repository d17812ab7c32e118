"""Tests of the embedded procedural street-scene dataset."""
import pickle

import grain
import numpy as np
import pytest

from jaxseg.data import synthetic
from jaxseg.data import synthetic_canvas

H, W = 128, 256


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
  """Twelve scenes at a small size (shared: rendering is the slow part)."""
  return [synthetic.render_scene(s, H, W) for s in range(12)]


def test_class_tables():
  assert synthetic.NUM_CLASSES == 8
  assert synthetic.CLASS_NAMES == ("sky", "road", "sidewalk", "building",
                                   "vegetation", "car", "pole", "pedestrian")
  colors = synthetic.CLASS_COLORS
  assert colors.shape == (8, 3) and colors.dtype == np.uint8
  assert len({tuple(c) for c in colors.tolist()}) == 8
  with pytest.raises(ValueError):
    colors[0, 0] = 1  # Read-only: a shared constant.


def test_deterministic_in_seed_and_size():
  a_img, a_lbl = synthetic.render_scene(7, 96, 160)
  b_img, b_lbl = synthetic.render_scene(7, 96, 160)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_lbl, b_lbl)
  c_img, c_lbl = synthetic.render_scene(8, 96, 160)
  assert (a_img != c_img).mean() > 0.5
  assert (a_lbl != c_lbl).mean() > 0.05


@pytest.mark.parametrize("height,width", [(16, 16), (37, 91), (128, 128),
                                          (256, 512)])
def test_shapes_and_dtypes(height, width):
  image, label = synthetic.render_scene(3, height, width)
  assert image.shape == (height, width, 3) and image.dtype == np.uint8
  assert label.shape == (height, width) and label.dtype == np.uint8
  assert image.flags.c_contiguous and label.flags.c_contiguous


def test_label_values_and_class_coverage(scenes):
  seen = set()
  for image, label in scenes:
    values = set(np.unique(label).tolist())
    assert values <= set(range(8)) | {255}
    classes = values - {255}
    assert len(classes) >= 5, classes  # Several classes in every scene.
    seen |= classes
    # Ignore is a thin border of things only, never a large region.
    ignore = (label == 255).mean()
    assert ignore < 0.08, ignore
    assert image.std() > 20  # Not a flat image.
  assert seen == set(range(8))


def test_scene_geometry_is_plausible(scenes):
  """Sky is above the horizon, the ground below it; things stand on it."""
  for _, label in scenes:
    assert not np.isin(label[: H // 8], [1, 2]).any()  # No road at the top.
    assert not (label[-H // 8:] == 0).any()  # No sky at the bottom.
    rows = np.arange(H)[:, None]
    sky, road = label == 0, label == 1
    if sky.any():
      assert (rows * sky).sum() / sky.sum() < (rows * road).sum() / road.sum()
    # Every car's lowest pixel is on the lower half (it stands on the road).
    cars = np.nonzero((label == 5).any(1))[0]
    if cars.size:
      assert cars.max() > 0.3 * H


def test_ignore_ring_surrounds_things():
  _, with_ring = synthetic.render_scene(5, H, W)
  _, without = synthetic.render_scene(5, H, W, ignore_borders=False)
  assert 255 not in without
  ring = with_ring == 255
  assert ring.any()
  # The ring replaces only background pixels next to a car/pole/pedestrian.
  np.testing.assert_array_equal(with_ring[~ring], without[~ring])
  assert not np.isin(without[ring], [5, 6, 7]).any()


def test_both_lookup_paths_render_identically(monkeypatch):
  """Scenes with > 256 parts use numpy gathers instead of an 8-bit cv2.LUT;
  both must give the same pixels."""
  image, label = synthetic.render_scene(2, 64, 96)
  monkeypatch.setattr(
      synthetic, "lookup",
      lambda ids, n: synthetic_canvas.lookup(ids, n, fast=False))
  slow_image, slow_label = synthetic.render_scene(2, 64, 96)
  np.testing.assert_array_equal(image, slow_image)
  np.testing.assert_array_equal(label, slow_label)


def _colour_data(scenes):
  x = np.concatenate([i.reshape(-1, 3) for i, _ in scenes]).astype(np.int64)
  y = np.concatenate([l.ravel() for _, l in scenes])
  keep = y != 255
  return x[keep], y[keep]


def test_colour_alone_does_not_solve_the_task(scenes):
  """Per-class colours overlap: neither a nearest-mean colour classifier nor
  a colour look-up table (fit on other scenes) gets anywhere near 90%."""
  x, y = _colour_data(scenes)
  means = np.stack([x[y == c].mean(0) for c in range(8)])
  nearest = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
  nearest_mean_acc = (nearest == y).mean()
  assert nearest_mean_acc < 0.5, nearest_mean_acc  # Measured ~0.23.
  # The best colour-only classifier: majority class per 4-bit RGB bin, fit
  # on half of the scenes and scored on the other half.
  def bins(rgb):
    q = rgb >> 4
    return (q[:, 0] * 16 + q[:, 1]) * 16 + q[:, 2]

  x_fit, y_fit = _colour_data(scenes[:6])
  x_val, y_val = _colour_data(scenes[6:])
  table = np.zeros((16 ** 3, 8), np.int64)
  np.add.at(table, (bins(x_fit), y_fit), 1)
  lut_acc = (table.argmax(1)[bins(x_val)] == y_val).mean()
  assert lut_acc < 0.6, lut_acc  # Measured ~0.44.
  # No class dominates either: predicting the majority class is poor too.
  assert np.bincount(y).max() / len(y) < 0.5


def test_data_source_records():
  ds = synthetic.SyntheticStreetScenes(num_images=5, height=64, width=96,
                                       seed=3)
  assert len(ds) == 5
  rec = ds[2]
  assert set(rec) == {"image", "label", "name"}
  assert rec["name"] == "synthetic_000002"
  assert rec["image"].shape == (64, 96, 3) and rec["image"].dtype == np.uint8
  assert rec["label"].shape == (64, 96) and rec["label"].dtype == np.uint8
  # A pure function of (seed, index): a fresh source gives the same record.
  again = synthetic.SyntheticStreetScenes(5, 64, 96, seed=3)[2]
  np.testing.assert_array_equal(rec["image"], again["image"])
  np.testing.assert_array_equal(rec["label"], again["label"])
  image, label = synthetic.render_scene(ds.scene_seed(2), 64, 96)
  np.testing.assert_array_equal(rec["image"], image)
  np.testing.assert_array_equal(rec["label"], label)
  np.testing.assert_array_equal(ds[-1]["image"], ds[4]["image"])
  assert ds[-1]["name"] == "synthetic_000004"
  # Items differ from each other and from the next seed's (the val split).
  other = synthetic.SyntheticStreetScenes(5, 64, 96, seed=4)
  seeds = {ds.scene_seed(i) for i in range(5)}
  seeds |= {other.scene_seed(i) for i in range(5)}
  assert len(seeds) == 10
  assert (ds[0]["image"] != ds[1]["image"]).mean() > 0.5
  assert (ds[0]["image"] != other[0]["image"]).mean() > 0.5
  with pytest.raises(IndexError, match="out of range"):
    ds[5]
  with pytest.raises(IndexError, match="out of range"):
    ds[-6]


def test_data_source_in_grain():
  ds = synthetic.SyntheticStreetScenes(num_images=4, height=32, width=48,
                                       seed=0)
  dataset = grain.MapDataset.source(ds).map(lambda r: r["label"].shape)
  assert [dataset[i] for i in range(4)] == [(32, 48)] * 4
  # Multiprocess loaders pickle the source into their workers.
  clone = pickle.loads(pickle.dumps(ds))
  assert repr(clone) == repr(ds)
  np.testing.assert_array_equal(clone[1]["image"], ds[1]["image"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(seed=-1, height=32, width=32), "seed must be a non-negative"),
    (dict(seed=0, height=8, width=32), "height and width must be >= 16"),
    (dict(seed=0, height=32, width=15), "height and width must be >= 16"),
])
def test_render_scene_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    synthetic.render_scene(**kwargs)


def test_data_source_rejects_bad_arguments():
  with pytest.raises(ValueError, match="SyntheticStreetScenes: num_images"):
    synthetic.SyntheticStreetScenes(-1, 32, 32, 0)
  with pytest.raises(ValueError, match="SyntheticStreetScenes: seed"):
    synthetic.SyntheticStreetScenes(1, 32, 32, -2)
  with pytest.raises(TypeError):
    synthetic.render_scene(1.5, 32, 32)
