"""Parity of jaxseg.sdcnet (FlowNet2 + SDCNet2DRecon) with the original PyTorch code.

Fixtures: ../shared/reference/sdcnet (README section 3): weights from `weights.py` (salt 0) and
`buffers.npz`, 3 frames of 128x256, the torch outputs in NCHW. The full model (~172M parameters)
is loaded once per module and each forward is jitted once (float32, highest matmul precision).
"""
from __future__ import annotations

import importlib
import json
import pathlib
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import kernels
from jaxseg import sdcnet
from jaxseg.sdcnet import torch_names
from jaxseg.sdcnet.flownet2 import check_size


def _rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _nchw(x) -> np.ndarray:
  return np.moveaxis(np.asarray(x), -1, -3)


def _nhwc(x) -> jax.Array:
  return jnp.asarray(np.moveaxis(np.asarray(x), -3, -1))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref(reference_dir: pathlib.Path) -> dict:
  d = reference_dir / "sdcnet"
  if not d.is_dir():
    pytest.skip(f"SDCNet fixtures not found at {d}")
  out = {name: np.load(d / f"{name}.npy") for name in (
      "frames", "label", "flownet2_flows", "sdcnet_input", "flow_pred", "image_pred",
      "label_pred")}
  out["intermediates"] = dict(np.load(d / "flownet2_intermediates.npz"))
  out["buffers"] = dict(np.load(d / "buffers.npz"))
  out["meta"] = json.loads((d / "meta.json").read_text())
  man = reference_dir / "manifests"
  out["manifest"] = json.loads((man / "SDCNet2DRecon.json").read_text())
  out["manifest_flownet2"] = json.loads((man / "FlowNet2.json").read_text())
  return out


@pytest.fixture(scope="module")
def torch_state_dict(reference_dir: pathlib.Path, ref: dict) -> dict[str, np.ndarray]:
  """The full torch state dict of SDCNet2DRecon: own params + buffers + 'flownet2.' params."""
  sys.path.insert(0, str(reference_dir))
  try:
    weights = importlib.import_module("weights")
  finally:
    sys.path.remove(str(reference_dir))
  salt = ref["meta"]["salt"]
  man, man_f = ref["manifest"], ref["manifest_flownet2"]
  sd = weights.state_dict(man["entries"], salt, man["transposed_prefixes"])
  sd.update(ref["buffers"])
  flownet2 = weights.state_dict(man_f["entries"], salt, man_f["transposed_prefixes"])
  sd.update({"flownet2." + k: v for k, v in flownet2.items()})
  return sd


@pytest.fixture(scope="module")
def model(torch_state_dict: dict) -> sdcnet.SDCNet2DRecon:
  # Built abstractly (no random init of 172M parameters); the strict load fills every variable.
  m = nnx.eval_shape(lambda: sdcnet.SDCNet2DRecon(sequence_length=2, rgb_max=255.0,
                                                  rngs=nnx.Rngs(0)))
  report = sdcnet.load_sdcnet_state_dict(m, torch_state_dict)
  assert report.ok and len(report.loaded) == len(torch_state_dict)
  return m


@pytest.fixture(scope="module")
def frames(ref: dict) -> jax.Array:
  return sdcnet.as_frames(ref["frames"])


@pytest.fixture(scope="module")
def end_to_end(model, frames, ref) -> dict:
  """predict_with_intermediates(frames, label), one jitted call."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, frames, label):
    image_pred, label_pred, flow_pred, aux = nnx.merge(graphdef, state).predict_with_intermediates(
        frames, label)
    return dict(aux, image_pred=image_pred, label_pred=label_pred, flow_pred=flow_pred)

  with jax.default_matmul_precision("highest"):
    out = run(state, frames, _nhwc(ref["label"]))
  return jax.tree.map(np.asarray, out)


@pytest.fixture(scope="module")
def network_given_flows(model, frames, ref) -> dict:
  """network_input / network_output fed the fixture's FlowNet2 flows."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, frames, flows):
    m = nnx.merge(graphdef, state)
    return m.network_input(frames, flows), m.network_output(frames, flows)

  flows = [_nhwc(f) for f in ref["flownet2_flows"]]
  with jax.default_matmul_precision("highest"):
    x, flow_pred = run(state, frames, flows)
  return dict(network_input=np.asarray(x), flow_pred=np.asarray(flow_pred))


# -- FlowNet2 ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_flownet2_flows(end_to_end, ref):
  for pair in range(2):
    got, want = _nchw(end_to_end["flows"][pair]), ref["flownet2_flows"][pair]
    assert got.shape == want.shape
    assert _rel_l2(got, want) <= 2e-4, f"pair {pair}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["flownetc_flow2", "flownets1_flow2", "flownets2_flow2",
                                  "flownetsd_flow2"])
def test_flownet2_intermediates(end_to_end, ref, name):
  for pair in range(2):
    got, want = _nchw(end_to_end[name][pair]), ref["intermediates"][name][pair]
    assert got.shape == want.shape
    assert _rel_l2(got, want) <= 2e-4, f"{name} pair {pair}"


# -- SDCNet --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_network_input(network_given_flows, ref):
  got, want = _nchw(network_given_flows["network_input"]), ref["sdcnet_input"]
  assert got.shape == want.shape
  assert _rel_l2(got, want) <= 1e-4


@pytest.mark.slow
def test_network_output(network_given_flows, ref):
  got, want = _nchw(network_given_flows["flow_pred"]), ref["flow_pred"]
  assert got.shape == want.shape
  assert _rel_l2(got, want) <= 1e-4


def test_warps_of_fixture_flow(frames, ref):
  flow = _nhwc(ref["flow_pred"])
  image_pred = kernels.resample2d(frames[1], flow, mode="bilinear")
  assert np.abs(_nchw(image_pred) - ref["image_pred"]).max() <= 1e-3
  label_pred = kernels.resample2d(_nhwc(ref["label"]), flow, mode="nearest")
  np.testing.assert_array_equal(_nchw(label_pred), ref["label_pred"])


@pytest.mark.slow
def test_end_to_end(end_to_end, ref):
  # float32 vs float64 of the original: flow_pred 5.8e-6, image_pred 4.9e-5 rel L2.
  assert _rel_l2(_nchw(end_to_end["flow_pred"]), ref["flow_pred"]) <= 1e-4
  assert _rel_l2(_nchw(end_to_end["image_pred"]), ref["image_pred"]) <= 5e-4
  label_pred = _nchw(end_to_end["label_pred"])
  assert label_pred.shape == ref["label_pred"].shape
  assert int(np.sum(label_pred != ref["label_pred"])) <= 8  # of 32768; f32 vs f64 differ in 1


def test_reconstruction_loss_of_fixture_outputs(frames, ref):
  flow = _nhwc(ref["flow_pred"])
  image_pred = kernels.resample2d(frames[1], flow, mode="bilinear")
  losses = sdcnet.reconstruction_loss(image_pred, frames[2], flow)
  for name, want in ref["meta"]["losses"].items():
    np.testing.assert_allclose(float(losses[name]), want, rtol=2e-5, err_msg=name)


@pytest.mark.slow
def test_reconstruction_loss_end_to_end(end_to_end, frames, ref):
  losses = sdcnet.reconstruction_loss(jnp.asarray(end_to_end["image_pred"]), frames[2],
                                      jnp.asarray(end_to_end["flow_pred"]))
  for name, want in ref["meta"]["losses"].items():
    np.testing.assert_allclose(float(losses[name]), want, rtol=1e-4, err_msg=name)


# -- state-dict mapping --------------------------------------------------------------------------


def test_every_manifest_key_consumed(model, ref, torch_state_dict):
  want = {e["key"]: tuple(e["shape"]) for e in ref["manifest"]["entries"]}
  want.update({"flownet2." + e["key"]: tuple(e["shape"])
               for e in ref["manifest_flownet2"]["entries"]})
  exported = torch_names.to_torch_state_dict(model)
  assert {k: v.shape for k, v in exported.items()} == want
  for key, value in torch_state_dict.items():  # the mapping round-trips bit for bit
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  prefixes = set(ref["manifest"]["transposed_prefixes"])
  prefixes |= {"flownet2." + p for p in ref["manifest_flownet2"]["transposed_prefixes"]}
  assert set(torch_names.transposed_prefixes(model)) == prefixes


def test_strict_loading_names_bad_keys(model, torch_state_dict):
  sd = dict(torch_state_dict)
  del sd["conv1.0.bias"]
  sd["conv9.0.weight"] = np.zeros((1,), np.float32)
  sd["flownet2.flownetc.conv1.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)
  before = np.asarray(model.flownet2.flownetc.conv1.layers[0].kernel.get_value()).copy()
  with pytest.raises(ValueError) as err:
    sdcnet.load_sdcnet_state_dict(model, sd)
  for name in ("conv1.0.bias", "conv9.0.weight", "flownet2.flownetc.conv1.0.weight",
               "(64, 3, 7, 7)"):
    assert name in str(err.value)
  # A failed strict load writes nothing.
  np.testing.assert_array_equal(model.flownet2.flownetc.conv1.layers[0].kernel.get_value(), before)
  report = sdcnet.load_sdcnet_state_dict(model, sd, strict=False)
  assert report.missing == ["conv1.0.bias"] and report.unexpected == ["conv9.0.weight"]
  assert [m[0] for m in report.mismatched] == ["flownet2.flownetc.conv1.0.weight"]
  np.testing.assert_array_equal(model.flownet2.flownetc.conv1.layers[0].kernel.get_value(), before)
  sdcnet.load_sdcnet_state_dict(model, torch_state_dict)  # restore (loads the same values)


def test_published_layouts_load(model, torch_state_dict, ref):
  # SDCNet checkpoints hold own keys only (flownet2.* dropped by save_model), wrapped in a dict.
  own = {k: v for k, v in torch_state_dict.items() if not k.startswith("flownet2.")}
  report = sdcnet.load_sdcnet_state_dict(model, {"epoch": 3, "state_dict": own})
  assert report.ok and len(report.loaded) == len(ref["manifest"]["entries"])
  # FlowNet2 checkpoints: {'state_dict': FlowNet2 keys without prefix}.
  flownet2 = {k[len("flownet2."):]: v for k, v in torch_state_dict.items()
              if k.startswith("flownet2.")}
  report = sdcnet.load_flownet2_state_dict(model.flownet2, {"state_dict": flownet2})
  assert report.ok and len(report.loaded) == len(ref["manifest_flownet2"]["entries"])


def test_pth_checkpoint_files(model, torch_state_dict, reference_dir, tmp_path):
  pth_reader = pytest.importorskip("jaxseg.convert.pth_reader")
  torch = pytest.importorskip("torch")
  own = {k: torch.from_numpy(v) for k, v in torch_state_dict.items()
         if not k.startswith("flownet2.")}
  path = tmp_path / "sdcnet.pth"
  torch.save({"epoch": 1, "arch": "SDCNet2DRecon", "state_dict": own}, path)
  report = sdcnet.load_sdcnet_state_dict(model, pth_reader.load_pth(path))
  assert report.ok and len(report.loaded) == len(own)
  # The toy checkpoint of the published SDCNet format has unrelated keys: strict load refuses.
  toy = pth_reader.load_pth(reference_dir / "pth_formats" / "sdcnet_checkpoint_legacy.pth")
  with pytest.raises(ValueError, match="bn1.running_mean"):
    sdcnet.load_sdcnet_state_dict(model, toy)


# -- building blocks vs torch ---------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_matches_torch(bias):
  torch = pytest.importorskip("torch")
  from jaxseg.sdcnet.flownet_parts import conv_transpose_4x4
  torch.manual_seed(0)
  layer = torch.nn.ConvTranspose2d(5, 3, kernel_size=4, stride=2, padding=1, bias=bias)
  x = torch.randn(2, 5, 6, 7)
  mine = conv_transpose_4x4(5, 3, use_bias=bias, rngs=nnx.Rngs(0))
  torch_names.load_torch_state_dict(mine, {k: v.numpy() for k, v in layer.state_dict().items()})
  with jax.default_matmul_precision("highest"):
    got = _nchw(mine(_nhwc(x.numpy())))
  want = layer(x).detach().numpy()
  assert got.shape == want.shape == (2, 3, 12, 14)
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_x4_matches_torch(mode):
  torch = pytest.importorskip("torch")
  x = torch.randn(2, 2, 5, 7, generator=torch.Generator().manual_seed(0))
  want = torch.nn.Upsample(scale_factor=4, mode=mode)(x).numpy()
  fn = sdcnet.upsample_bilinear if mode == "bilinear" else sdcnet.upsample_nearest
  got = _nchw(fn(_nhwc(x.numpy()), 4))
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_input_validation():
  with pytest.raises(ValueError, match="multiples of 64"):
    check_size(100, 256, where="FlowNet2")
  m = nnx.eval_shape(lambda: sdcnet.SDCNet2D(rngs=nnx.Rngs(0)))
  # Only SDCNet's own 34 weights train; FlowNet2 and the buffers are frozen.
  assert len(jax.tree.leaves(nnx.state(m, sdcnet.TRAINABLE))) == 34
  x = jnp.zeros((1, 64, 64, 3))
  assert len(m.split_frames([x, x])[0]) == 2  # inputs only
  images, last, target = m.split_frames([x, x, x + 1])  # inputs + target
  assert len(images) == 2 and target is not None
  with pytest.raises(ValueError, match="expected 2 input frames"):
    m.split_frames([x])
