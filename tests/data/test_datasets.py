"""Datasets in their native layouts: listing, splits, label mapping and bad-input errors."""
import json
import os
import pickle
import struct
import sys
import zlib

from _testlib import write_palette_png
import cv2
import ml_collections
import numpy as np
import pytest

from jaxseg.data.datasets import BadInputError
from jaxseg.data.datasets import camvid
from jaxseg.data.datasets import cityscapes
from jaxseg.data.datasets import get_class_table
from jaxseg.data.datasets import get_dataset
from jaxseg.data.datasets import image_io
from jaxseg.data.datasets import kitti
from jaxseg.data.datasets.cityscapes import cityscapes_table
from jaxseg.data.datasets.mapillary import MAPILLARY_V12_LABELS

MAPILLARY_KEY = "__CRyFzoDOXn6unQ6a3DnQ"


def cfg(**kw) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({"cv": 0, "on_bad_input": "error"})
  for k, v in kw.items():
    c[k] = v
  return c


def write_png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), array)


def write_pair(img_path, lab_path, h=4, w=6, value=0):
  write_png(img_path, np.full((h, w, 3), 100, np.uint8))
  write_png(lab_path, np.full((h, w), value, np.uint8))


def decode_palette_png_indices(path) -> np.ndarray:
  """Reference decoder for 8-bit, non-interlaced palette PNGs (all five row filters)."""
  data = open(path, "rb").read()
  pos, idat = 8, b""
  while pos < len(data):
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    ctype, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
    if ctype == b"IHDR":
      w, h, depth, ctype_, _, _, interlace = struct.unpack(">IIBBBBB", body)
      assert (depth, ctype_, interlace) == (8, 3, 0)
    elif ctype == b"IDAT":
      idat += body
    pos += 12 + n
  raw = zlib.decompress(idat)
  out = np.zeros((h, w), np.int64)
  prev = [0] * w
  for y in range(h):
    f, line = raw[y * (w + 1)], list(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
    for x in range(w):
      a = line[x - 1] if x else 0
      b, c = prev[x], (prev[x - 1] if x else 0)
      if f == 1:
        line[x] = (line[x] + a) & 255
      elif f == 2:
        line[x] = (line[x] + b) & 255
      elif f == 3:
        line[x] = (line[x] + (a + b) // 2) & 255
      elif f == 4:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    out[y], prev = line, line
  return out


# --------------------------------------------------------------------------------------------
# CamVid (real data)
# --------------------------------------------------------------------------------------------


def test_camvid_real(shared_data):
  c = cfg(name="camvid", root=str(shared_data / "camvid"))
  train, val = get_dataset(c, "train"), get_dataset(c, "val")
  assert (len(train), len(val), len(get_dataset(c, "trainval"))) == (367, 101, 468)
  assert train.table.num_classes == 11 and train.split == "train"
  assert val.records[0].name == "0016E5_07959"
  for ds, idx in ((train, 0), (train, 200), (val, 50)):
    s = ds[idx]
    assert s["image"].shape == (360, 480, 3) and s["image"].dtype == np.uint8
    assert s["label"].shape == (360, 480) and s["label"].dtype == np.uint8
    assert set(np.unique(s["label"]).tolist()) <= set(range(11)) | {255}
    raw = cv2.imread(ds.records[idx].label_path, cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(s["label"] == 255, raw == 11)
    np.testing.assert_array_equal(s["label"][raw != 11], raw[raw != 11])
    bgr = cv2.imread(ds.records[idx].image_path)
    np.testing.assert_array_equal(s["image"], bgr[:, :, ::-1])
  with pytest.raises(FileNotFoundError, match=r"CamVid 'test' folder not found: .*test"):
    get_dataset(c, "test")


def test_camvid_original_layout_and_sdc(tmp_path):
  d = tmp_path / "LargeScale" / "CamVid"
  for folder, names in (("train", ["0001TP_006690", "0006R0_f01230"]), ("val", ["0016E5_07959"])):
    for n in names:
      write_pair(d / folder / f"{n}.png", d / f"{folder}annot" / f"{n}.png", value=11)
  sdc = tmp_path / "aug"
  for n in ("0001TP_006689", "0001TP_006691", "0001TP_006695", "0001TP_006690",
            "0006R0_f01229"):
    write_pair(sdc / "train" / f"{n}.png", sdc / "trainannot" / f"{n}.png", value=3)
  base = dict(name="camvid", root=str(tmp_path), camvid_layout="original")
  train = get_dataset(cfg(**base), "train")
  assert [r.name for r in train.records] == ["0001TP_006690", "0006R0_f01230"]
  assert (train[0]["label"] == 255).all()
  with pytest.raises(FileNotFoundError, match="LargeScale"):
    get_dataset(cfg(name="camvid", root=str(tmp_path)), "train")
  with pytest.raises(ValueError, match="sdc_max_skip=1 needs data.sdc_root"):
    get_dataset(cfg(**base, sdc_max_skip=1), "train")
  aug1 = get_dataset(cfg(**base, sdc_root=str(sdc), sdc_max_skip=1), "train")
  assert [(r.name, r.kind) for r in aug1.records[2:]] == [
      ("0001TP_006689", "sdc"), ("0001TP_006691", "sdc"), ("0006R0_f01229", "sdc")]
  np.testing.assert_array_equal(aug1.indices_of_kind("sdc"), [2, 3, 4])
  # 0: every propagated pair, the copy of the annotated frame excluded.
  aug_all = get_dataset(cfg(**base, sdc_root=str(sdc), sdc_max_skip=0), "train")
  assert sorted(r.name for r in aug_all.records if r.kind == "sdc") == [
      "0001TP_006689", "0001TP_006691", "0001TP_006695", "0006R0_f01229"]
  assert len(get_dataset(cfg(**base, sdc_root=str(sdc), sdc_max_skip=1), "val")) == 1
  assert camvid.neighbour_stem("Seq05VD_f00000", 30) == "Seq05VD_f00030"
  assert camvid.neighbour_stem("0016E5_07959", -1) == "0016E5_07958"


# --------------------------------------------------------------------------------------------
# Cityscapes (real samples + fake layouts)
# --------------------------------------------------------------------------------------------


def test_cityscapes_real_train_val(shared_data):
  c = cfg(name="cityscapes", root=str(shared_data / "cityscapes"))
  train, val = get_dataset(c, "train"), get_dataset(c, "val")
  assert len(train) == 8 and len(val) == 1 and len(get_dataset(c, "trainval")) == 9
  assert [r.name for r in train.records] == [
      f"aachen_00000{i}_000019_leftImg8bit" for i in range(8)]
  s = train[3]
  assert s["image"].shape == (1024, 2048, 3) and s["label"].shape == (1024, 2048)
  assert set(np.unique(s["label"]).tolist()) <= set(range(19)) | {255}
  raw = cv2.imread(train.records[3].label_path, cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(s["label"], cityscapes_table().raw_to_train[raw])
  assert (s["label"][raw == 26] == 13).all() and (s["label"][raw == 0] == 255).all()


def test_cityscapes_label_mapping_vs_label_train_ids(shared_data):
  """mmseg-style labelTrainIds file of the val sample vs our labelIds -> trainIds mapping.

  The sample was downscaled, and its labelTrainIds file independently so (77 of 32768 pixels
  differ, all on class boundaries), so we check: for every raw id the train id most of its
  pixels carry there, and that every disagreement has our value within one pixel.
  """
  root = shared_data / "cityscapes"
  ds = get_dataset(cfg(name="cityscapes", root=str(root)), "val")
  ours = ds[0]["label"]
  gt = root / "gtFine" / "val" / "frankfurt"
  ref = cv2.imread(str(gt / "frankfurt_000000_000294_gtFine_labelTrainIds.png"),
                   cv2.IMREAD_UNCHANGED)
  raw = cv2.imread(str(gt / "frankfurt_000000_000294_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
  assert ours.shape == ref.shape == (128, 256)
  table = cityscapes_table()
  for rid in np.unique(raw):
    values, counts = np.unique(ref[raw == rid], return_counts=True)
    assert values[counts.argmax()] == table.raw_to_train[rid], rid
  assert (ours == ref).mean() > 0.995
  near = np.zeros(ours.shape, bool)
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      near |= np.roll(ref, (dy, dx), (0, 1)) == ours
  assert near.all()


def test_cityscapes_sequence_frames(shared_data):
  root = str(shared_data / "cityscapes")
  frames = cityscapes.list_sequence_frames(root, "train")
  assert len(frames) == 180 and all(f.endswith("_leftImg8bit.jpg") for f in frames)
  assert os.path.basename(frames[0]) == "aachen_000000_000000_leftImg8bit.jpg"
  assert len(cityscapes.list_sequence_frames(root, "train", "aachen")) == 180
  f19 = [f for f in frames if "aachen_000002_000019" in f][0]
  assert os.path.basename(cityscapes.sequence_neighbour(f19, -1)) == (
      "aachen_000002_000018_leftImg8bit.jpg")
  assert cityscapes.sequence_neighbour(f19, 11) is None  # frame 30 does not exist
  img = image_io.read_image(cityscapes.sequence_neighbour(f19, 1))
  assert img.shape == (1024, 2048, 3)


def make_fake_cityscapes(root, val_cities=("frankfurt", "lindau", "munster"),
                         train_cities=("aachen", "bochum", "bremen", "cologne", "darmstadt",
                                       "dusseldorf"), nested=False, ext="png"):
  img = root / "leftImg8bit_trainvaltest" / "leftImg8bit" if nested else root / "leftImg8bit"
  gt = root / "gtFine_trainvaltest" / "gtFine" if nested else root / "gtFine"
  for split, cities in (("train", train_cities), ("val", val_cities)):
    for c in cities:
      key = f"{c}_000000_000019"
      write_pair(img / split / c / f"{key}_leftImg8bit.{ext}",
                 gt / split / c / f"{key}_gtFine_labelIds.png", value=26)
  return img, gt


def test_cityscapes_cv_folds_and_nesting(tmp_path):
  make_fake_cityscapes(tmp_path, nested=True, ext="jpg")
  c = cfg(name="cityscapes", root=str(tmp_path))
  city = lambda ds: [r.name.split("_")[0] for r in ds.records]
  # 9 cities ordered val then train: fold k validates on the 3 starting at k * 9 // 3.
  expected_val = {0: ["frankfurt", "lindau", "munster"], 1: ["aachen", "bochum", "bremen"],
                  2: ["cologne", "darmstadt", "dusseldorf"]}
  for cv, val_cities in expected_val.items():
    c.cv = cv
    val, train = get_dataset(c, "val"), get_dataset(c, "train")
    assert city(val) == val_cities
    assert sorted(city(train)) == sorted(set(expected_val[0] + expected_val[1] +
                                             expected_val[2]) - set(val_cities))
    assert len(get_dataset(c, "trainval")) == 9
  assert (get_dataset(c, "val")[0]["label"] == 13).all()
  c.cv = 3
  with pytest.raises(ValueError, match="cv=3; expected 0..2"):
    get_dataset(c, "train")


def test_cityscapes_coarse_sdc_and_test_split(tmp_path):
  img, gt = make_fake_cityscapes(tmp_path, val_cities=("frankfurt",),
                                 train_cities=("aachen", "bochum"))
  write_png(img / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png",
            np.zeros((4, 6, 3), np.uint8))
  coarse = tmp_path / "coarse"
  for c in ("augsburg", "bad-honnef"):
    write_pair(coarse / "leftImg8bit" / "train_extra" / c / f"{c}_000001_000019_leftImg8bit.png",
               coarse / "gtCoarse" / "train_extra" / c /
               f"{c}_000001_000019_gtCoarse_labelIds.png", value=7)
  sdc = tmp_path / "sdc"
  for frame in (18, 19, 20, 22):  # 19 is the copied annotated frame
    key = f"aachen_000000_{frame:06d}"
    write_pair(sdc / "leftImg8bit" / "train" / "aachen" / f"{key}_leftImg8bit.png",
               sdc / "gtFine" / "train" / "aachen" / f"{key}_gtFine_labelIds.png", value=24)
  base = dict(name="cityscapes", root=str(tmp_path), coarse_root=str(coarse))
  extra = get_dataset(cfg(**base), "extra")
  assert [r.kind for r in extra.records] == ["coarse", "coarse"]
  assert (extra[1]["label"] == 0).all()
  train = get_dataset(cfg(**base, include_coarse=True, sdc_root=str(sdc), sdc_max_skip=1),
                      "train")
  assert [(r.name, r.kind) for r in train.records] == [
      ("aachen_000000_000019_leftImg8bit", "fine"), ("bochum_000000_000019_leftImg8bit", "fine"),
      ("aachen_000000_000018_leftImg8bit", "sdc"), ("aachen_000000_000020_leftImg8bit", "sdc"),
      ("augsburg_000001_000019_leftImg8bit", "coarse"),
      ("bad-honnef_000001_000019_leftImg8bit", "coarse")]
  assert (train[2]["label"] == 11).all()
  every = get_dataset(cfg(**base, sdc_root=str(sdc)), "train")
  assert len(every.indices_of_kind("sdc")) == 3
  assert len(get_dataset(cfg(**base, sdc_root=str(sdc), sdc_max_skip=1), "val")) == 1
  test = get_dataset(cfg(**base), "test")
  assert test.records[0].label_path is None
  s = test[0]
  assert s["label"].shape == (4, 6) and (s["label"] == 255).all()


# --------------------------------------------------------------------------------------------
# Mapillary, KITTI, folder
# --------------------------------------------------------------------------------------------


def test_mapillary_real_crop(shared_data):
  root = shared_data / "mapillary_sample"
  c = cfg(name="mapillary", root=str(root))
  ds = get_dataset(c, "train")
  assert len(ds) == 1 and ds.table.num_classes == 65
  assert get_class_table(c).class_names == ds.table.class_names
  s = ds[0]
  assert s["image"].shape == (100, 100, 3) and s["name"] == MAPILLARY_KEY
  # Palette indices, as an independent pure-Python PNG decoder sees them.
  ref = decode_palette_png_indices(root / "v1.2" / f"{MAPILLARY_KEY}.png")
  np.testing.assert_array_equal(s["label"], np.where(ref == 65, 255, ref))
  names = {ds.table.class_names[i] for i in np.unique(s["label"]) if i != 255}
  assert "Building" in names


def test_mapillary_layout_config_and_palette(tmp_path):
  rng = np.random.default_rng(0)
  idx = rng.integers(0, 66, (5, 7))
  pal = np.array([c for _, c in MAPILLARY_V12_LABELS] + [(0, 0, 0)] * 190, np.uint8)
  for split in ("training", "validation"):
    write_png(tmp_path / split / "images" / "k1.jpg", np.zeros((5, 7, 3), np.uint8))
    write_palette_png(tmp_path / split / "v1.2" / "labels" / "k1.png", idx, pal)
  ds = get_dataset(cfg(name="mapillary", root=str(tmp_path)), "trainval")
  assert len(ds) == 2
  np.testing.assert_array_equal(ds[1]["label"], np.where(idx == 65, 255, idx))
  # A config.json renaming the classes is picked up.
  labels = [{"readable": f"c{i}", "color": [i, i, i], "evaluate": i < 65} for i in range(66)]
  (tmp_path / "config.json").write_text(json.dumps({"labels": labels}))
  assert get_dataset(cfg(name="mapillary", root=str(tmp_path)), "val").table.class_names[3] == "c3"


def make_fake_kitti(root, n=200):
  for i in range(n):
    write_pair(root / "training" / "image_2" / f"{i:06d}_10.png",
               root / "training" / "semantic" / f"{i:06d}_10.png", h=2, w=3, value=7 + (i % 2))
  write_png(root / "testing" / "image_2" / "000000_10.png", np.zeros((2, 3, 3), np.uint8))


def test_kitti_folds(tmp_path):
  make_fake_kitti(tmp_path)
  c = cfg(name="kitti", root=str(tmp_path))
  for cv in range(3):
    c.cv = cv
    val, train = get_dataset(c, "val"), get_dataset(c, "train")
    assert [int(r.name[:6]) for r in val.records] == list(kitti.VAL_INDICES[cv])
    assert len(val) == 21 and len(train) == 179
    assert not {r.name for r in val.records} & {r.name for r in train.records}
    assert len(get_dataset(c, "trainval")) == 200
  assert kitti.VAL_INDICES[0][:3] == (1, 5, 11) and kitti.VAL_INDICES[2][-1] == 199
  s = get_dataset(c, "val")[0]  # index 3 (cv 2): raw 8 -> sidewalk
  assert (s["label"] == 1).all() and s["image"].shape == (2, 3, 3)
  test = get_dataset(c, "test")
  assert len(test) == 1 and (test[0]["label"] == 255).all()


def test_kitti_needs_200_images_for_folds(tmp_path):
  make_fake_kitti(tmp_path, n=5)
  c = cfg(name="kitti", root=str(tmp_path))
  with pytest.raises(ValueError, match="found 5"):
    get_dataset(c, "train")
  assert len(get_dataset(c, "trainval")) == 5


def test_folder_dataset(tmp_path):
  table = {"name": "mine", "classes": [{"name": "a", "color": [1, 1, 1], "ids": [10]},
                                       {"name": "b", "color": [2, 2, 2], "ids": [20]}],
           "ignore_ids": [0]}
  (tmp_path / "t.json").write_text(json.dumps(table))
  for split in ("train", "val"):
    write_pair(tmp_path / split / "img" / "x.jpg", tmp_path / split / "lab" / "x_mask.png",
               value=20)
  c = cfg(name="folder", root=str(tmp_path), image_dir="{split}/img", label_dir="{split}/lab",
          label_suffix="_mask", class_table=str(tmp_path / "t.json"))
  ds = get_dataset(c, "val")
  assert len(ds) == 1 and ds.table.name == "mine" and (ds[0]["label"] == 1).all()
  assert get_class_table(c).class_names == ("a", "b")
  c.label_dir = None
  assert (get_dataset(c, "train")[0]["label"] == 255).all()
  c.class_table = "camvid"
  assert get_class_table(c).num_classes == 11


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_camvid(tmp_path):
  for i in range(3):
    write_pair(tmp_path / "train" / f"s_{i:05d}.png", tmp_path / "trainannot" / f"s_{i:05d}.png",
               value=i)
  return tmp_path


def test_truncated_and_empty_files(small_camvid):
  img = small_camvid / "train" / "s_00001.png"
  data = img.read_bytes()
  img.write_bytes(data[:len(data) // 2])
  lab = small_camvid / "trainannot" / "s_00002.png"
  lab.write_bytes(b"")
  ds = get_dataset(cfg(name="camvid", root=str(small_camvid)), "train")
  with pytest.raises(BadInputError, match=r"s_00001\.png is a truncated PNG") as e:
    ds[1]
  assert e.value.kind == "unreadable" and e.value.paths == (str(img),)
  with pytest.raises(BadInputError, match=r"s_00002\.png is empty"):
    ds[2]
  jpg = small_camvid / "x.jpg"
  write_png(jpg, np.zeros((8, 8, 3), np.uint8))
  jpg.write_bytes(jpg.read_bytes()[:-2])
  with pytest.raises(BadInputError, match="truncated JPEG"):
    image_io.read_image(str(jpg))
  (small_camvid / "junk.png").write_bytes(b"not an image at all")
  with pytest.raises(BadInputError, match="cannot decode .*junk.png"):
    image_io.read_image(str(small_camvid / "junk.png"))


def test_size_mismatch(small_camvid):
  write_png(small_camvid / "trainannot" / "s_00000.png", np.zeros((5, 6), np.uint8))
  ds = get_dataset(cfg(name="camvid", root=str(small_camvid)), "train")
  with pytest.raises(BadInputError) as e:
    ds[0]
  msg = str(e.value)
  assert e.value.kind == "size_mismatch"
  assert "train/s_00000.png is 6x4" in msg and "trainannot/s_00000.png is 6x5" in msg


def test_label_id_not_in_table(small_camvid):
  write_png(small_camvid / "trainannot" / "s_00001.png",
            np.array([[3, 12, 40, 0, 0, 0]] * 4, np.uint8))
  ds = get_dataset(cfg(name="camvid", root=str(small_camvid)), "train")
  with pytest.raises(BadInputError) as e:
    ds[1]
  msg = str(e.value)
  assert e.value.kind == "unknown_label_id"
  assert "trainannot/s_00001.png" in msg and "[12, 40]" in msg and "valid raw ids are 0-11" in msg


def test_colour_label_rejected(small_camvid):
  colour = np.zeros((4, 6, 3), np.uint8)
  colour[..., 2] = 128
  write_png(small_camvid / "trainannot" / "s_00000.png", colour)
  ds = get_dataset(cfg(name="camvid", root=str(small_camvid)), "train")
  with pytest.raises(BadInputError, match="3-channel colour image") as e:
    ds[0]
  assert e.value.kind == "not_a_label_map"


def test_missing_label_and_missing_image(small_camvid):
  os.remove(small_camvid / "trainannot" / "s_00001.png")
  c = cfg(name="camvid", root=str(small_camvid))
  with pytest.raises(FileNotFoundError) as e:
    get_dataset(c, "train")
  assert "image(s) without a label" in str(e.value)
  assert str(small_camvid / "train" / "s_00001.png") in str(e.value)
  assert str(small_camvid / "trainannot" / "s_00001.png") in str(e.value)  # expected name
  write_png(small_camvid / "trainannot" / "s_00001.png", np.zeros((4, 6), np.uint8))
  os.remove(small_camvid / "train" / "s_00002.png")
  with pytest.raises(FileNotFoundError, match=r"label\(s\) without an image.*s_00002\.png"):
    get_dataset(c, "train")


def test_cityscapes_missing_label_names_expected_file(tmp_path):
  _, gt = make_fake_cityscapes(tmp_path, val_cities=("frankfurt",), train_cities=("aachen",))
  os.remove(gt / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png")
  with pytest.raises(FileNotFoundError, match="aachen_000000_000019_gtFine_labelIds.png"):
    get_dataset(cfg(name="cityscapes", root=str(tmp_path)), "train")


def test_missing_root_and_split(tmp_path):
  missing = tmp_path / "nothing"
  for name in ("camvid", "cityscapes", "mapillary", "kitti"):
    with pytest.raises(FileNotFoundError) as e:
      get_dataset(cfg(name=name, root=str(missing)), "train")
    assert str(missing) in str(e.value) and "Expected layout" in str(e.value), name
  (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
  (tmp_path / "gtFine").mkdir()
  with pytest.raises(FileNotFoundError, match=r"Cityscapes 'val' split not found: .*val"):
    get_dataset(cfg(name="cityscapes", root=str(tmp_path)), "val")
  with pytest.raises(ValueError, match="data.root is empty"):
    get_dataset(cfg(name="camvid", root=None), "train")


def test_skip_mode_counts_and_pickles(small_camvid):
  img = small_camvid / "train" / "s_00001.png"
  img.write_bytes(img.read_bytes()[:30])
  write_png(small_camvid / "trainannot" / "s_00002.png", np.full((4, 6), 99, np.uint8))
  ds = get_dataset(cfg(name="camvid", root=str(small_camvid), on_bad_input="skip"), "train")
  out = [ds[i] for i in range(3)] + [ds[1]]
  assert out[0]["name"] == "s_00000" and out[1] is None and out[2] is None and out[3] is None
  assert ds.bad_input_counts == {"unreadable": 2, "unknown_label_id": 1}
  clone = pickle.loads(pickle.dumps(ds))
  assert clone.bad_input_counts == ds.bad_input_counts and clone[1] is None
  ds.reset_bad_input_counts()
  assert ds.bad_input_counts == {}
  with pytest.raises(ValueError, match="on_bad_input='ignore'"):
    get_dataset(cfg(name="camvid", root=str(small_camvid), on_bad_input="ignore"), "train")


# --------------------------------------------------------------------------------------------
# Dispatch, TFDS, synthetic
# --------------------------------------------------------------------------------------------


def test_unknown_dataset_and_split(small_camvid):
  with pytest.raises(ValueError, match="known datasets: synthetic, camvid, cityscapes"):
    get_dataset(cfg(name="pascal"), "train")
  with pytest.raises(ValueError, match="unknown CamVid split 'extra'"):
    get_dataset(cfg(name="camvid", root=str(small_camvid)), "extra")
  assert get_class_table(cfg(name="cityscapes")).num_classes == 19
  assert get_class_table(cfg(name="kitti")).name == "kitti"
  assert get_class_table(cfg(name="mapillary", root=None)).num_classes == 65


def test_tfds_missing_package_message(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="pip install tensorflow-datasets array-record"):
    get_dataset(cfg(name="tfds"), "train")


def test_synthetic_source():
  from jaxseg.data import synthetic
  if not hasattr(synthetic, "SyntheticStreetScenes"):
    pytest.skip("SyntheticStreetScenes not available yet")
  c = cfg(name="synthetic", synthetic=dict(num_train=2, num_val=1, height=32, width=48, seed=0))
  train, val = get_dataset(c, "train"), get_dataset(c, "val")
  assert len(train) == 2 and len(val) == 1
  s = train[1]
  assert s["image"].shape == (32, 48, 3) and s["label"].shape == (32, 48)
  assert set(np.unique(s["label"]).tolist()) <= set(range(synthetic.NUM_CLASSES)) | {255}
  assert not np.array_equal(val[0]["image"], train[0]["image"])
  assert get_class_table(c).class_names == tuple(synthetic.CLASS_NAMES)
