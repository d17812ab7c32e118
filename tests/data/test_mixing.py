"""Rotation (semseg's RandRotate), CutMix and CopyBlob on the grain pipeline."""
import json

import cv2
import numpy as np
import pytest
from scipy import stats

from jaxseg.data import build_train_loader
from jaxseg.data import copy_blob as CB
from jaxseg.data import data_config
from jaxseg.data import datasets
from jaxseg.data import defaults
from jaxseg.data import mixing
from jaxseg.data import transforms as T
from jaxseg.data.class_table import identity_table
from jaxseg.data.datasets.base import Record
from jaxseg.data.datasets.camvid import camvid_table
from jaxseg.data.datasets.cityscapes import cityscapes_table

MEAN = (123.675, 116.28, 103.53)  # semseg's padding: ImageNet mean * 255


def _pair(h, w, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
          rng.integers(0, 5, (h, w), dtype=np.uint8))


# ---------------------------------------------------------------- rotation --
def _semseg_rotate(image, label, angle, image_dtype=np.uint8):
  """hszhao/semseg util/transform.py RandRotate's two cv2 calls."""
  h, w = label.shape
  m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
  img = cv2.warpAffine(image.astype(image_dtype), m, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=MEAN)
  lab = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=255)
  return img, lab


def test_rotation_matches_semseg_randrotate():
  image, label = _pair(37, 52)
  rotated = 0
  for seed in range(200):
    rng = np.random.default_rng(seed)
    coin, r = rng.random(), rng.random()  # semseg: p test, then the angle
    img, lab = T.random_rotate(image, label, np.random.default_rng(seed), 10.0,
                               MEAN, prob=0.5)
    if coin >= 0.5:
      assert img is image and lab is label
      continue
    rotated += 1
    angle = -10 + 20 * r
    ref_img, ref_lab = _semseg_rotate(image, label, angle)
    np.testing.assert_array_equal(img, ref_img)
    np.testing.assert_array_equal(lab, ref_lab)
    if seed < 20:
      # semseg rotates float32 images; OpenCV's uint8 path rounds the result
      # and uses fixed-point weights: within one grey level.
      err = np.abs(img.astype(np.float32) - _semseg_rotate(image, label, angle,
                                                           np.float32)[0])
      assert err.max() <= 1.0 and err.mean() < 0.3
  assert 70 < rotated < 130  # p = 0.5
  # Corners come in as the mean (rounded) and ignore.
  img, lab = T.rotate_pair(image, label, T.rotation_matrix((37, 52), 10.0), MEAN)
  np.testing.assert_array_equal(img[0, 0], [124, 116, 104])
  assert lab[0, 0] == 255 and lab[-1, -1] == 255


def test_train_transform_rotates_before_the_crop():
  image, label = _pair(40, 56, seed=1)
  params = T.AugmentParams(crop_hw=(40, 56), scale_min=1.0, scale_max=1.0,
                           flip=False, rotate=10.0, rotate_prob=0.5)
  for seed in range(6):
    rng = np.random.default_rng(seed)
    rng.uniform(1.0, 1.0)  # random_scale's draw
    ref = T.random_rotate(image, label, rng, 10.0, MEAN, prob=0.5)
    got = T.train_transform(image, label, np.random.default_rng(seed), params)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
  # The centroid follows the rotation: a class-centred crop still holds the class.
  label = np.zeros((60, 90), np.uint8)
  label[44:48, 75:79] = 7
  params = T.AugmentParams(crop_hw=(16, 16), scale_min=1.0, scale_max=1.0,
                           rotate=10.0, rotate_prob=1.0)
  for seed in range(10):
    _, lab = T.train_transform(np.zeros((60, 90, 3), np.uint8), label,
                               np.random.default_rng(seed), params, centroid=(76, 45))
    assert (lab == 7).any(), seed


def test_validate_names_the_bad_field(tmp_path):
  for key, value, msg in [("rotate_prob", 1.5, "rotate_prob"),
                          ("rotate_pad_value", (1.0, 2.0), "rotate_pad_value"),
                          ("cutmix_prob", -0.1, "cutmix_prob"),
                          ("cutmix_alpha", 0.0, "cutmix_alpha"),
                          ("copyblob_support", 0.0, "copyblob_support")]:
    c = data_config()
    c[key] = value
    with pytest.raises(ValueError, match=msg):
      defaults.validate(c)
  c = data_config()
  c.copyblob_prob = 0.5
  c.copyblob_rules = str(tmp_path / "missing.json")
  with pytest.raises(ValueError, match="copyblob_rules.*missing.json"):
    defaults.validate(c)
  c.name, c.copyblob_rules = "folder", ""
  with pytest.raises(ValueError, match="copyblob_rules.*'folder' has none"):
    defaults.validate(c)
  c.name = "camvid"
  defaults.validate(c)  # '' = the built-in camvid rules


# ------------------------------------------------------------------ CutMix --
def test_cutmix_box_area_follows_beta():
  for alpha in (1.0, 0.5, 2.0):
    rng = np.random.default_rng(3)
    boxes = [mixing.cutmix_box(rng, (480, 640), alpha) for _ in range(3000)]
    assert all(0 <= b.y and b.y + b.h <= 480 and 0 <= b.x and b.x + b.w <= 640
               for b in boxes)
    share = np.array([b.area / (480 * 640) for b in boxes])
    ks = stats.kstest(share, stats.beta(alpha, alpha).cdf)
    assert ks.pvalue > 0.01, (alpha, ks)  # KS test against Beta(alpha, alpha)
    assert abs(share.mean() - 0.5) < 0.02
    assert abs(share.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
  # A different law is rejected: the side (not the area) ~ Beta would fail.
  rng = np.random.default_rng(3)
  side_share = rng.beta(1, 1, 3000) ** 2
  assert stats.kstest(side_share, stats.beta(1, 1).cdf).statistic > 0.1


def test_cutmix_pastes_the_partner_box():
  a_img, a_lab = _pair(20, 30, seed=1)
  b_img, b_lab = _pair(20, 30, seed=2)
  sample = {"image": a_img, "label": a_lab, "_pos": 3}
  out = mixing.CutMix(1.0)(sample, {"image": b_img, "label": b_lab},
                           np.random.default_rng(0))
  box = mixing.cutmix_box(np.random.default_rng(0), (20, 30), 1.0)
  inside = np.zeros((20, 30), bool)
  inside[box.y:box.y + box.h, box.x:box.x + box.w] = True
  assert 0 < inside.sum() < inside.size and out["_pos"] == 3
  np.testing.assert_array_equal(out["label"][inside], b_lab[inside])
  np.testing.assert_array_equal(out["image"][inside], b_img[inside])
  np.testing.assert_array_equal(out["label"][~inside], a_lab[~inside])
  np.testing.assert_array_equal(out["image"][~inside], a_img[~inside])
  assert sample["image"] is a_img and not np.array_equal(a_img, out["image"])


# ---------------------------------------------------------------- CopyBlob --
CITY = cityscapes_table()
ROAD, SIDEWALK, WALL, SKY, CAR, BUS = 0, 1, 3, 10, 13, 15


def test_rules_resolve_by_name_and_name_unknown_classes(tmp_path):
  for name, table in (("cityscapes", CITY), ("camvid", camvid_table())):
    rules = CB.resolve_rules(CB.load_rule_names(name), table)
    assert rules and all(ctx for ctx in rules.values())
  assert CB.resolve_rules(CB.load_rule_names("cityscapes"), CITY)[BUS] == {ROAD}
  path = tmp_path / "rules.json"
  path.write_text(json.dumps({"Wall": ["sidewalk"], "bus": ["road", "terrain"]}))
  assert CB.resolve_rules(CB.load_rule_names(str(path)), CITY) == {
      WALL: {SIDEWALK}, BUS: {ROAD, 9}}
  path.write_text(json.dumps({"bus": ["raod"]}))
  with pytest.raises(ValueError, match=r"my_rules: unknown class 'raod' \(context of 'bus'\)"
                     r" in table 'cityscapes'; its classes: road, sidewalk"):
    CB.resolve_rules(CB.load_rule_names(str(path)), CITY, "my_rules")
  path.write_text(json.dumps({"bus": "road"}))
  with pytest.raises(ValueError, match="non-empty list"):
    CB.load_rule_names(str(path))
  with pytest.raises(ValueError, match="neither a built-in rule table"):
    CB.load_rule_names("mapillary")


def test_placements_equal_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(12):
    h, w = (int(v) for v in rng.integers(4, 40, 2))
    allowed = rng.random((h, w)) < 0.7
    bh, bw = (int(v) for v in rng.integers(1, min(h, w) + 1, 2))
    mask = rng.random((bh, bw)) < 0.6
    mask[-1, rng.integers(bw)] = True
    blob = CB.Blob(0, 0, 0, mask)
    support = float(rng.choice([0.5, 0.9, 1.0]))
    rows, cols = blob.bottom
    want = [(y, x) for y in range(h - bh + 1) for x in range(w - bw + 1)
            if allowed[y + rows, x + cols].sum() >= np.ceil(support * len(cols))]
    assert [tuple(p) for p in CB.placements(allowed, blob, support).tolist()] == want


def _check_pastes(before, after_img, after_lab, p_img, p_lab, pastes, rules,
                  support, min_pixels):
  """Every changed pixel belongs to a logged paste of a rule class, copied from
  the partner, whose bottom edge covered context of the sample. Later pastes
  may cover earlier ones (occlusion): each is checked where it is on top."""
  blobs = {(b.class_id, b.y, b.x, b.mask.shape): b
           for b in CB.find_blobs(p_lab, tuple(rules), min_pixels)}
  covered = np.zeros(before.shape, bool)
  for p in reversed(pastes):
    blob = blobs[(p.class_id, *p.src_yx, p.hw)]
    assert p.class_id in rules and p.pixels == blob.mask.sum() >= min_pixels
    (y, x), (sy, sx), (bh, bw) = p.dst_yx, p.src_yx, p.hw
    top = blob.mask & ~covered[y:y + bh, x:x + bw]
    assert (after_lab[y:y + bh, x:x + bw][top] == p.class_id).all()
    np.testing.assert_array_equal(after_img[y:y + bh, x:x + bw][top],
                                  p_img[sy:sy + bh, sx:sx + bw][top])
    rows, cols = blob.bottom
    on_context = np.isin(before[y + rows, x + cols], list(rules[p.class_id]))
    assert on_context.mean() >= support - 1e-9, p
    covered[y:y + bh, x:x + bw] |= blob.mask
  changed = after_lab != before
  assert not (changed & ~covered).any()
  assert set(np.unique(after_lab[changed])) <= set(rules)


def test_copy_blob_pastes_rule_classes_onto_context_only():
  h, w = 48, 64
  sample = np.full((h, w), SKY, np.uint8)
  sample[24:, :32], sample[24:, 32:] = ROAD, SIDEWALK
  sample[30:40, 36:44] = CAR  # not context: nothing may stand on it
  partner = np.full((h, w), SKY, np.uint8)
  partner[5:15, 2:20] = BUS     # a bus: road only
  partner[20:26, 40:60] = WALL  # a wall: sidewalk only
  partner[30:40, 2:12] = CAR    # no rule: never pasted
  partner[30:32, 30:34] = BUS   # 8 pixels < min_pixels: never pasted
  partner[40:, 50:60] = BUS     # cut by the bottom border: never pasted
  p_img = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
  img = np.zeros((h, w, 3), np.uint8)
  rules = {BUS: frozenset({ROAD}), WALL: frozenset({SIDEWALK})}
  seen = {}
  for seed in range(25):
    out_img, out_lab, pastes = CB.copy_blobs(img, sample, p_img, partner, rules,
                                             np.random.default_rng(seed), 3, 20, 1.0)
    _check_pastes(sample, out_img, out_lab, p_img, partner, pastes, rules, 1.0, 20)
    for p in pastes:
      seen[(p.class_id, p.src_yx)] = seen.get((p.class_id, p.src_yx), 0) + 1
      # support=1: the whole bottom edge is on road (bus) / sidewalk (wall).
      assert p.dst_yx[0] + p.hw[0] - 1 >= 24
  assert set(seen) == {(BUS, (5, 2)), (WALL, (20, 40))} and min(seen.values()) == 25
  # No context in the sample: nothing is pasted, the inputs come back.
  sky = np.full((h, w), SKY, np.uint8)
  out_img, out_lab, pastes = CB.copy_blobs(img, sky, p_img, partner, rules,
                                           np.random.default_rng(0))
  assert pastes == [] and (out_lab == SKY).all() and not out_img.any()


# ------------------------------------------------------------ grain loader --
NAMES = ["road", "sidewalk", "bus", "sky"]


class _Scenes:
  """In-memory dataset: image channel 0 = sample index, channel 1 = label, so
  a mixed sample shows where each pixel came from and that image and label
  were pasted together. Labels: sky over road | sidewalk, and a bus blob."""

  def __init__(self, n=12, h=36, w=44):
    self.n, self.h, self.w = n, h, w
    self.records = tuple(Record(f"i{i}.png", f"l{i}.png", f"s{i}") for i in range(n))
    self.table = identity_table("scenes", NAMES, np.zeros((4, 3), np.uint8))

  def __len__(self):
    return self.n

  def read_label(self, i):
    lab = np.full((self.h, self.w), 3, np.uint8)
    lab[self.h // 2:, :self.w // 2], lab[self.h // 2:, self.w // 2:] = 0, 1
    y, x = 4 + i % 5, 3 + (3 * i) % 20
    lab[y:y + 8, x:x + 10] = 2
    return lab

  def __getitem__(self, i):
    lab = self.read_label(i)
    img = np.zeros((self.h, self.w, 3), np.uint8)
    img[..., 0], img[..., 1] = i, lab
    return {"image": img, "label": lab, "name": f"s{i}"}


def _cfg(tmp_path, **kw):
  c = data_config()
  c.name = "folder"
  c.crop_size = 24
  c.scale_min = c.scale_max = 1.0  # no resampling: channel 0 stays the index
  c.read_num_threads = 1
  c.read_prefetch_buffer_size = 2
  rules = tmp_path / "rules.json"
  rules.write_text(json.dumps({"bus": ["road"]}))
  c.copyblob_rules = str(rules)
  c.copyblob_min_pixels = 4
  for k, v in kw.items():
    c[k] = v
  return c


def _batches(cfg, n, seed=0, state=None):
  it = build_train_loader(cfg, global_batch_size=4, seed=seed, process_index=0,
                          process_count=1, dataset=_Scenes())
  if state is not None:
    it.set_state(state)
  out = [next(it) for _ in range(n)]
  return out, it.get_state()


def test_loader_cutmix_partner_is_the_augmented_sample_at_its_position(tmp_path):
  plain, _ = _batches(_cfg(tmp_path), 3)  # epoch 0 = positions 0..11
  mixed, _ = _batches(_cfg(tmp_path, cutmix_prob=1.0), 3)
  img = np.concatenate([b["image"] for b in plain])
  lab = np.concatenate([b["label"] for b in plain])
  for pos in range(12):
    rng = np.random.default_rng([0, mixing.CUTMIX_STREAM, 0, pos])
    rng.random()
    partner = mixing.partner_position(rng, pos, 12)
    assert partner != pos
    box = mixing.cutmix_box(rng, (24, 24), 1.0)
    want = mixing.paste_box(img[pos], lab[pos], img[partner], lab[partner], box)
    np.testing.assert_array_equal(mixed[pos // 4]["image"][pos % 4], want[0])
    np.testing.assert_array_equal(mixed[pos // 4]["label"][pos % 4], want[1])


def test_loader_mixing_is_seeded_resumable_and_keeps_pairs(tmp_path):
  cfg = _cfg(tmp_path, cutmix_prob=0.5, copyblob_prob=0.7, copyblob_support=1.0)
  a, _ = _batches(cfg, 5)  # 20 samples: crosses into epoch 1
  b, state = _batches(cfg, 2)
  resumed, _ = _batches(cfg, 3, state=state)
  for x, y in zip(a, b + resumed):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  other, _ = _batches(cfg, 5, seed=1)
  assert any(not np.array_equal(x["label"], y["label"]) for x, y in zip(a, other))
  plain, _ = _batches(_cfg(tmp_path), 5)
  sources, bus_gain = [], 0
  for mb, pb in zip(a, plain):
    img, lab = mb["image"], mb["label"]
    # Labels come only from the samples whose pixels are there, pasted together.
    np.testing.assert_array_equal(img[..., 1], lab)
    for k in range(4):
      src = np.unique(img[k, ..., 0])
      sources.append(len(src))
      assert len(src) <= 3  # the sample + a CopyBlob and a CutMix partner
      bus_gain += int((lab[k] == 2).sum() > (pb["label"][k] == 2).sum())
  assert max(sources) >= 2 and sources.count(1) >= 1  # some mixed, some not
  assert bus_gain >= 1


# ------------------------------------------------------------- real CamVid --
def test_copy_blob_on_real_camvid(shared_data):
  root = shared_data / "camvid"
  if not (root / "train").is_dir():
    pytest.skip(f"CamVid train split not found under {root}")
  c = data_config()
  c.name, c.root = "camvid", str(root)
  ds = datasets.get_dataset(c, "train")
  table = ds.table
  rules = CB.resolve_rules(CB.load_rule_names("camvid"), table)
  names = table.class_names
  assert {names[s] for s in rules} == {"Column-Pole", "Fence", "Pedestrian", "Bicyclist"}
  partner = ds[60]  # 0001TP_008490: pedestrians and a bicyclist
  pasted = {}
  for k, target in enumerate((0, 108, 348)):
    sample = ds[target]
    img, lab, pastes = CB.copy_blobs(sample["image"], sample["label"], partner["image"],
                                     partner["label"], rules, np.random.default_rng(k),
                                     max_blobs=4, min_pixels=50, support=0.9)
    _check_pastes(sample["label"], img, lab, partner["image"], partner["label"],
                  pastes, rules, 0.9, 50)
    for p in pastes:
      pasted[names[p.class_id]] = pasted.get(names[p.class_id], 0) + p.pixels
  assert sum(pasted.values()) > 500, pasted
  assert "Pedestrian" in pasted or "Bicyclist" in pasted, pasted
  # Through the loader: only rule classes appear where CopyBlob changed a label.
  c.crop_size, c.read_num_threads = 256, 1  # CopyBlob needs whole objects in crops
  c.copyblob_rules = ""  # the dataset's built-in (camvid) rules
  def batches(prob):
    c.copyblob_prob = prob
    it = build_train_loader(c, global_batch_size=4, seed=0, process_index=0,
                            process_count=1)
    return [next(it) for _ in range(2)]
  gained = set()
  for mb, pb in zip(batches(1.0), batches(0.0)):
    changed = mb["label"] != pb["label"]
    assert set(np.unique(mb["label"][changed])) <= set(rules)
    # A pasted pixel may keep its class (a pole over a pole): where the image
    # changed the label is a pasted rule class.
    img_changed = (mb["image"] != pb["image"]).any(axis=-1)
    assert set(np.unique(mb["label"][img_changed])) <= set(rules)
    gained |= set(np.unique(mb["label"][changed]).tolist())
  assert gained, "CopyBlob pasted nothing in 8 CamVid crops"
