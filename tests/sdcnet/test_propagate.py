"""Label propagation: flow conventions, Cityscapes end to end (resume, sharding), CamVid quality,
and weight conversion from torch files."""
import os
import pathlib

from _testlib import load_config
from _testlib import load_module
import cv2
import numpy as np
import pytest

from jaxseg.sdcnet import convert_weights
from jaxseg.sdcnet import flow_providers
from jaxseg.sdcnet import propagate
from jaxseg.sdcnet import torch_names
from jaxseg.sdcnet import warp_step


def _config(**overrides):
  return load_config("configs/sdcnet_cityscapes.py", **overrides)


def _benchmark():
  return load_module("benchmarks/propagation.py")


def _texture(h, w, seed=0):
  rng = np.random.default_rng(seed)
  tex = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2)
  return (tex - tex.min()) / (tex.max() - tex.min()) * 255


# ---------------------------------------------------------------------------------- pure parts


def test_step_offsets_follow_sdc_aug():
  assert warp_step.step_offsets(1, 1) == (-1, 0, 1)
  assert warp_step.step_offsets(1, -1) == (1, 0, -1)
  assert warp_step.step_offsets(3, 1) == (0, 2, 3)  # multi_step_augmentation keeps frame t
  assert warp_step.step_offsets(4, -1) == (0, -3, -4)
  assert warp_step.step_offsets(3, 1, "previous") == (1, 2, 3)
  with pytest.raises(ValueError, match="first_frame"):
    warp_step.step_offsets(2, 1, "middle")
  assert propagate.required_offsets(3, 1, "sdcnet", "anchor") == {-1, 0, 1, 2, 3}
  assert propagate.required_offsets(3, -1, "flow", "anchor") == {-1, -2, -3}
  assert propagate.offset_key("aachen_000001_000019", -5) == "aachen_000001_000014"


def test_shard_anchors_partitions_whole_sequences():
  anchors = [propagate.Anchor("train", "c", f"c_{s:06d}_{f:06d}", "", "")
             for s in range(5) for f in (19, 40)]
  shards = [propagate.shard_anchors(anchors, i, 3) for i in range(3)]
  assert sorted(a.key for s in shards for a in s) == sorted(a.key for a in anchors)
  for s in shards:
    seqs = {a.sequence for a in s}
    assert {a.key for a in anchors if a.sequence in seqs} == {a.key for a in s}
  assert [len(s) for s in shards] == [4, 4, 2]


def test_pair_flows_order_and_dis_convention():
  calls = []

  class Recorder:
    name, needs_multiple_of_64 = "rec", False

    def __call__(self, first, second):
      calls.append((first[:, 0, 0, 0].tolist(), second[:, 0, 0, 0].tolist()))
      return np.zeros(first.shape[:3] + (2,), np.float32)

  frames = [np.full((2, 4, 4, 3), v, np.float32) for v in (0, 1, 2)]
  flows = flow_providers.pair_flows(Recorder(), frames)
  assert len(flows) == 2 and flows[0].shape == (2, 4, 4, 2)
  assert calls == [([1, 1, 2, 2], [0, 0, 1, 1])]  # (frames[i+1], frames[i]) batched
  # DIS: frame c is frame b moved 3 px right; the flow on c points 3 px left into b.
  tex = _texture(64, 160)
  b, c = tex[:, 10:138], tex[:, 7:135]
  flow = flow_providers.DISFlow("medium")(c[None], b[None])[0]
  assert abs(np.median(flow[..., 0]) + 3) < 0.1 and abs(np.median(flow[..., 1])) < 0.1


def test_flow_propagator_moves_label_with_the_scene():
  tex = _texture(64, 160, seed=1)
  b, c = tex[:, 10:138], tex[:, 6:134]  # scene moves 4 px right
  label = np.zeros((64, 128), np.uint8)
  label[20:40, 40:70] = 7
  want = np.roll(label, 4, axis=1)
  step = warp_step.Propagator("flow", flow_providers.DISFlow())
  image, lab = step([b[None], b[None], c[None]], b[None], label[None], bilinear=True)
  assert lab.dtype == np.uint8 and image.dtype == np.uint8
  np.testing.assert_array_equal(lab[0], want)
  assert np.abs(image[0].astype(np.float32) - c)[4:-4, 8:-8].mean() < 2.0


# ---------------------------------------------------------------------- Cityscapes end to end


def _outputs(out):
  return sorted(str(p.relative_to(out)) for p in pathlib.Path(out).rglob("*.png"))


def test_propagation_end_to_end_resumable(shared_data, tmp_path):
  root = shared_data / "cityscapes"
  k = 2
  cfg = _config(**{"data.root": str(root), "data.image_size": (128, 256), "flow.source": "dis",
                   "sdcnet.random_init": True, "propagate.steps": k,
                   "propagate.on_missing": "skip", "progress_bar": False})
  # aachen_000006/7 are annotated but have no video frames: by default that is an error.
  with pytest.raises(FileNotFoundError, match="aachen_000006_000019"):
    propagate.run_propagation(_config(**{"data.root": str(root), "flow.source": "dis",
                                         "sdcnet.random_init": True}), str(tmp_path / "x"))
  summary = propagate.run_propagation(cfg, str(tmp_path))
  out = pathlib.Path(summary["output"])
  assert out == tmp_path / "sdc_aug"
  assert summary["anchors"] == 8 and summary["chains"] == 12 and summary["missing_chains"] == 4
  assert summary["written"] == 12 * k and summary["copied"] == 6
  files = _outputs(out)
  assert len(files) == 2 * 6 * (2 * k + 1)
  for s in range(6):
    source = cv2.imread(str(root / "gtFine" / "train" / "aachen" /
                           f"aachen_{s:06d}_000019_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
    source_ids = set(np.unique(source).tolist())
    for f in range(19 - k, 19 + k + 1):
      key = f"aachen_{s:06d}_{f:06d}"
      image = cv2.imread(str(out / "leftImg8bit/train/aachen" / f"{key}_leftImg8bit.png"))
      label = cv2.imread(str(out / "gtFine/train/aachen" / f"{key}_gtFine_labelIds.png"),
                         cv2.IMREAD_UNCHANGED)
      assert image.shape == (128, 256, 3) and label.shape == (128, 256)
      assert label.dtype == np.uint8 and label.max() <= 33  # raw labelIds, as gtFine
      assert set(np.unique(label).tolist()) <= source_ids  # nearest warps only move ids
  # The Cityscapes loader reads the result as SDC-augmented data.
  from jaxseg.data.datasets import cityscapes
  records = cityscapes.make_records(str(root), "train", sdc_root=str(out))
  assert sum(r.kind == "sdc" for r in records) == 6 * 2 * k

  # Second run: everything is finished, nothing is rewritten.
  mtimes = {f: os.stat(out / f).st_mtime_ns for f in files}
  again = propagate.run_propagation(cfg, str(tmp_path))
  assert again["skipped_chains"] == 12 and again["written"] == 0 and again["copied"] == 0
  assert {f: os.stat(out / f).st_mtime_ns for f in files} == mtimes

  # A chain interrupted after step 1 restarts from the written step and reproduces step 2.
  lost = [out / "leftImg8bit/train/aachen/aachen_000003_000021_leftImg8bit.png",
          out / "gtFine/train/aachen/aachen_000003_000021_gtFine_labelIds.png"]
  before = [p.read_bytes() for p in lost]
  lost[1].unlink()
  resumed = propagate.run_propagation(cfg, str(tmp_path))
  assert resumed["skipped_chains"] == 11 and resumed["written"] == 1
  decoded = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in lost]
  expected = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in before]
  for got, want in zip(decoded, expected):
    np.testing.assert_array_equal(got, want)
  assert not list(out.rglob("*.part*"))


def test_propagation_process_shards_are_disjoint(shared_data, tmp_path):
  cfg = _config(**{"data.root": str(shared_data / "cityscapes"), "data.image_size": (64, 128),
                   "flow.source": "dis", "propagate.method": "flow", "propagate.steps": 1,
                   "propagate.on_missing": "skip", "progress_bar": False})
  counts = [propagate.run_propagation(cfg, str(tmp_path), process_index=i, process_count=2)
            for i in range(2)]
  assert [c["anchors"] for c in counts] == [4, 4]
  assert sum(c["chains"] for c in counts) == 12
  assert len(_outputs(tmp_path / "sdc_aug")) == 2 * 6 * 3


# ------------------------------------------------------------------------------ CamVid quality


def test_dis_propagation_beats_copying_the_label(shared_data):
  bench = _benchmark()
  _, frames, labels = bench.load_clip(shared_data / "camvid", limit=40)
  anchors = bench.anchor_frames(len(frames), 3, 8)
  assert anchors == [3, 11, 19, 27, 35]
  copy = bench.evaluate(bench.copy_method, frames, labels, anchors, 3)
  dis = bench.evaluate(bench.step_method(warp_step.Propagator("flow", flow_providers.DISFlow())),
                       frames, labels, anchors, 3)
  # Measured: copy 77.2 / 67.3 / 61.3, DIS 85.6 / 82.3 / 79.0 (mIoU %, distances 1-3).
  for d in ("2", "3"):
    assert dis[d]["miou"] > copy[d]["miou"] + 5, (d, copy, dis)
  assert copy["1"]["miou"] > copy["3"]["miou"]  # the labels really change along the clip


# ----------------------------------------------------------------------------- weight files


def _torch_sdcnet_file(bundle, path, *, prefix="module.", tamper=None):
  torch = pytest.importorskip("torch")
  model = bundle.merge(bundle.params, bundle.buffers)
  sd = {}
  for key, var in torch_names.torch_variables(model).items():
    if not key.startswith("flownet2."):
      sd[prefix + key] = torch.from_numpy(np.array(torch_names.to_torch_value(var)))
  if tamper:
    tamper(sd)
  torch.save({"epoch": 7, "arch": bundle.name, "state_dict": sd}, path)
  return sd


def test_convert_torch_checkpoint_round_trip(tmp_path):
  bundle = convert_weights.build_sdcnet(random_init=True, seed=3)
  pth = tmp_path / "sdc_tiny.pth.tar"
  sd = _torch_sdcnet_file(bundle, pth)
  assert len(sd) == 2 * 17 + 3  # 17 conv / deconv layers (weight, bias) + 3 buffers
  written = convert_weights.convert(sdcnet=str(pth), out=str(tmp_path / "ckpt"))
  assert written["sdcnet"].endswith(os.path.join("ckpt", "sdcnet", "0"))
  for source in (str(pth), str(tmp_path / "ckpt" / "sdcnet")):
    loaded = convert_weights.build_sdcnet(checkpoint=source)
    assert sorted(loaded.params) == sorted(bundle.params)
    for key, value in bundle.params.items():
      np.testing.assert_array_equal(np.asarray(loaded.params[key]), np.asarray(value), key)
    for key, value in bundle.buffers.items():
      np.testing.assert_array_equal(np.asarray(loaded.buffers[key]), np.asarray(value), key)
  meta = convert_weights.ckpt_lib.read_meta(pathlib.Path(written["sdcnet"]))
  assert meta["model"] == "SDCNet2DRecon" and meta["sequence_length"] == 2
  with pytest.raises(ValueError, match="holds 'SDCNet2DRecon'"):
    convert_weights.build_sdcnet("SDCNet2D", checkpoint=str(tmp_path / "ckpt" / "sdcnet"))


def test_convert_rejects_mismatched_or_incomplete_files(tmp_path):
  torch = pytest.importorskip("torch")
  bundle = convert_weights.build_sdcnet(random_init=True)

  def sdcnet2d_shape(sd):  # an SDCNet2D conv1 (8 input channels) is not SDCNet2DRecon's (13)
    sd["module.conv1.0.weight"] = torch.zeros(32, 8, 7, 7)

  bad = tmp_path / "bad.pth"
  _torch_sdcnet_file(bundle, bad, tamper=sdcnet2d_shape)
  with pytest.raises(ValueError, match=r"conv1\.0\.weight has torch shape \(32, 8, 7, 7\)"):
    convert_weights.convert(sdcnet=str(bad), out=str(tmp_path / "o"))
  partial = tmp_path / "flownet2_partial.pth"
  torch.save({"state_dict": {"flownetc.conv1.0.weight": torch.zeros(64, 3, 7, 7)}}, partial)
  with pytest.raises(ValueError, match="missing"):
    convert_weights.convert(flownet2=str(partial), out=str(tmp_path / "o"))
  with pytest.raises(ValueError, match="sdcnet.checkpoint is empty"):
    convert_weights.build_sdcnet()
  with pytest.raises(FileNotFoundError, match="sdcnet.checkpoint not found"):
    convert_weights.build_sdcnet(checkpoint=str(tmp_path / "nope"))
