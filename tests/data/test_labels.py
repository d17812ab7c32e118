"""Class tables: Cityscapes/CamVid/Mapillary/KITTI mappings, JSON tables, colourising."""
import json
import struct

import numpy as np
import pytest

from jaxseg.data import class_table as table_lib
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets.camvid import camvid_table
from jaxseg.data.datasets.cityscapes import CITYSCAPES_LABELS
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.data.datasets.kitti import kitti_table
from jaxseg.data.datasets.mapillary import MAPILLARY_V12_LABELS
from jaxseg.data.datasets.mapillary import mapillary_table
from jaxseg.data.datasets.tables import get_builtin_table

# (labelId, trainId) pairs of the official Cityscapes table, written out independently.
CITYSCAPES_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                          23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_TRAIN_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole",
                          "traffic light", "traffic sign", "vegetation", "terrain", "sky",
                          "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                          "bicycle")


def test_cityscapes_table_maps_official_ids():
  t = cityscapes_table()
  assert t.num_classes == 19 and t.class_names == CITYSCAPES_TRAIN_NAMES
  for raw in range(256):
    if raw in CITYSCAPES_ID_TO_TRAIN:
      expected = CITYSCAPES_ID_TO_TRAIN[raw]
    elif raw <= 33:
      expected = 255
    else:
      expected = table_lib.UNKNOWN
    assert t.raw_to_train[raw] == expected, raw
  # Benchmark ids: every train id goes back to its labelId, ignore to 'unlabeled' (0).
  for raw, train in CITYSCAPES_ID_TO_TRAIN.items():
    assert t.train_to_raw[train] == raw
  assert t.train_to_raw[255] == 0
  np.testing.assert_array_equal(t.colors[0], (128, 64, 128))
  np.testing.assert_array_equal(t.colors[18], (119, 11, 32))
  assert len(CITYSCAPES_LABELS) == 35
  assert [l.name for l in CITYSCAPES_LABELS if l.has_instances] == [
      "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle",
      "bicycle"]


def test_cityscapes_table_matches_cityscapesscripts():
  cs = pytest.importorskip("cityscapesscripts.helpers.labels")
  ours = {l.id: l for l in CITYSCAPES_LABELS}
  assert len(cs.labels) == len(CITYSCAPES_LABELS)
  for lab in cs.labels:
    mine = ours[lab.id]
    assert (mine.name, mine.train_id, mine.category, mine.category_id, mine.has_instances,
            mine.ignore_in_eval, tuple(mine.color)) == (
                lab.name, lab.trainId, lab.category, lab.categoryId, lab.hasInstances,
                lab.ignoreInEval, tuple(lab.color))


def test_to_train_ids_and_unknown_ids_error():
  t = cityscapes_table()
  raw = np.array([[7, 26, 0], [33, 1, 23]], np.uint8)
  np.testing.assert_array_equal(t.to_train_ids(raw), [[0, 13, 255], [18, 255, 10]])
  assert t.to_train_ids(raw).dtype == np.uint8
  with pytest.raises(table_lib.UnknownLabelIdError) as e:
    t.to_train_ids(np.array([[7, 40, 200]], np.uint8), source="some/file.png")
  msg = str(e.value)
  assert "some/file.png" in msg and "[40, 200]" in msg and "0-33" in msg
  assert e.value.bad_ids == (40, 200)
  # 16-bit labels: values above 255 are named too.
  with pytest.raises(table_lib.UnknownLabelIdError, match=r"\[7000\]"):
    t.to_train_ids(np.array([[7, 7000]], np.uint16))
  np.testing.assert_array_equal(t.to_train_ids(np.array([[26]], np.uint16)), [[13]])


def test_camvid_table():
  t = camvid_table()
  assert t.num_classes == 11 and t.class_names[0] == "Sky" and t.class_names[10] == "Bicyclist"
  np.testing.assert_array_equal(t.raw_to_train[:12], list(range(11)) + [255])
  assert (t.raw_to_train[12:] == table_lib.UNKNOWN).all()
  np.testing.assert_array_equal(t.colors[3], (128, 64, 128))  # Road in SegNet's palette.
  assert t.train_to_raw[255] == 11
  with pytest.raises(ValueError, match=r"valid raw ids are 0-11"):
    t.to_train_ids(np.array([12], np.uint8))


def _png_palette(path) -> list[tuple[int, int, int]]:
  data = open(path, "rb").read()
  pos = 8
  while pos < len(data):
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    if data[pos + 4:pos + 8] == b"PLTE":
      body = data[pos + 8:pos + 8 + n]
      return [tuple(body[i:i + 3]) for i in range(0, n, 3)]
    pos += 12 + n
  raise AssertionError("no PLTE")


def test_mapillary_v12_table(shared_data):
  t = mapillary_table()
  assert t.num_classes == 65 and t.name == "mapillary"
  np.testing.assert_array_equal(t.raw_to_train[:65], np.arange(65))
  assert t.raw_to_train[65] == 255 and t.raw_to_train[66] == table_lib.UNKNOWN
  assert t.class_names[13] == "Road" and t.class_names[55] == "Car"
  # The built-in colours are those of the real v1.2 label PNG's palette.
  pal = _png_palette(shared_data / "mapillary_sample" / "v1.2" / "__CRyFzoDOXn6unQ6a3DnQ.png")
  np.testing.assert_array_equal(t.colors, np.array(pal[:65], np.uint8))


def test_mapillary_table_from_config(tmp_path):
  labels = [{"name": f"x--{n}", "readable": n, "color": list(c), "instances": False,
             "evaluate": n != "Unlabeled"} for n, c in MAPILLARY_V12_LABELS]
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"labels": labels, "version": 1.2}))
  from_file = mapillary_table(path)
  builtin = mapillary_table()
  assert from_file.class_names == builtin.class_names
  np.testing.assert_array_equal(from_file.raw_to_train, builtin.raw_to_train)
  np.testing.assert_array_equal(from_file.colors, builtin.colors)
  # from_json recognises a Mapillary config too.
  np.testing.assert_array_equal(table_lib.ClassTable.from_json(path).raw_to_train,
                                builtin.raw_to_train)


def test_kitti_table_is_cityscapes():
  k, c = kitti_table(), cityscapes_table()
  assert k.name == "kitti" and k.class_names == c.class_names
  np.testing.assert_array_equal(k.raw_to_train, c.raw_to_train)


def test_colorize():
  t = camvid_table()
  rgb = t.colorize(np.array([[0, 3], [255, 10]], np.uint8))
  assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[0, 0], (128, 128, 128))
  np.testing.assert_array_equal(rgb[0, 1], (128, 64, 128))
  np.testing.assert_array_equal(rgb[1, 0], (0, 0, 0))
  np.testing.assert_array_equal(rgb[1, 1], (0, 128, 192))


def test_from_json(tmp_path):
  spec = {"name": "mine", "classes": [
      {"name": "road", "color": [1, 2, 3], "ids": [7, 9]},
      {"name": "car", "color": [4, 5, 6], "id": 26},
      {"name": "sky", "color": [7, 8, 9]}],  # raw id = position = 2
          "ignore_ids": [0, 255]}
  path = tmp_path / "table.json"
  path.write_text(json.dumps(spec))
  t = table_lib.ClassTable.from_json(path)
  assert t.name == "mine" and t.class_names == ("road", "car", "sky")
  expected = {7: 0, 9: 0, 26: 1, 2: 2, 0: 255, 255: 255}
  for raw in range(256):
    assert t.raw_to_train[raw] == expected.get(raw, table_lib.UNKNOWN), raw
  assert t.train_to_raw[0] == 7 and t.train_to_raw[1] == 26 and t.train_to_raw[255] == 0
  # Round trip through the JSON form.
  path2 = tmp_path / "again.json"
  path2.write_text(json.dumps(t.to_json_dict()))
  t2 = table_lib.ClassTable.from_json(path2)
  np.testing.assert_array_equal(t2.raw_to_train, t.raw_to_train)
  np.testing.assert_array_equal(t2.colors, t.colors)


def test_from_json_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.json"):
    table_lib.ClassTable.from_json(tmp_path / "nope.json")
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="bad.json"):
    table_lib.ClassTable.from_json(bad)
  bad.write_text(json.dumps({"classes": [{"name": "a", "color": [0, 0, 0], "id": 3},
                                         {"name": "b", "color": [0, 0, 0], "id": 3}]}))
  with pytest.raises(ValueError, match="raw id 3 is listed twice"):
    table_lib.ClassTable.from_json(bad)
  bad.write_text(json.dumps({"classes": [{"name": "a"}]}))
  with pytest.raises(ValueError, match=r'classes\[0\] needs "name" and "color"'):
    table_lib.ClassTable.from_json(bad)


def test_table_validation_and_immutability():
  with pytest.raises(ValueError, match="colors has shape"):
    table_lib.ClassTable.build("x", ["a", "b"], [[0, 0, 0]], {0: 0, 1: 1})
  with pytest.raises(ValueError, match="classes; expected 1..254"):
    table_lib.ClassTable.build("x", [str(i) for i in range(255)], np.zeros((255, 3)), {})
  t = cityscapes_table()
  with pytest.raises(ValueError):
    t.raw_to_train[0] = 3
  with pytest.raises(ValueError, match="unknown class table 'foo'"):
    get_builtin_table("foo")


def test_identity_table():
  t = identity_table("syn", ["a", "b", "c"], np.zeros((3, 3), np.uint8))
  np.testing.assert_array_equal(t.to_train_ids(np.array([0, 2, 255], np.uint8)), [0, 2, 255])
  with pytest.raises(table_lib.UnknownLabelIdError, match=r"\[3\]"):
    t.to_train_ids(np.array([3], np.uint8))

