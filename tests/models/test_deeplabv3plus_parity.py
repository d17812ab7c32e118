"""Parity of the five segmentation networks with the original PyTorch logits.

Weights: ../shared/reference/weights.py formula + buffers.npz (README §1/§2), written
as a real torch `.pth`, read back with jaxseg.convert.pth_reader.load_pth, loaded
with torch_layout.load_state_dict, eval forward in float32 at highest precision.
"""
import json
import sys

from flax import nnx
import jax
import numpy as np
import pytest

from jaxseg.convert import torch_layout
from jaxseg.convert.pth_reader import load_pth
from jaxseg.models import create_model

# name: (rel L2 bound, max|d|/std bound, argmax agreement bound). rel L2: README's
# suggested bounds; max/std: 10x the README's "other float32" column.
BOUNDS = {
    "DeepWV3Plus": (1e-4, 4.6e-4, 0.999),
    "DeepSRNX50V3PlusD_m1": (1e-4, 9.3e-4, 0.999),
    "DeepSRNX101V3PlusD_m1": (5e-4, 2.2e-3, 0.999),
    "DeepR50V3PlusD_m1": (5e-4, 2.8e-3, 0.999),
    "DeepR101V3PlusD_m1": (3e-3, 2.7e-2, 0.998),
}


def _manifest(reference_dir, name):
  with open(reference_dir / "manifests" / f"{name}.json") as f:
    return json.load(f)


def _formula_state_dict(reference_dir, name, manifest):
  sys.path.insert(0, str(reference_dir))
  try:
    import weights  # the fixture's formula (reference folder), numpy only
  finally:
    sys.path.remove(str(reference_dir))
  sd = weights.state_dict(manifest["entries"], salt=0,
                          transposed_prefixes=manifest["transposed_prefixes"])
  with np.load(reference_dir / name / "buffers.npz") as buffers:
    sd.update({k: buffers[k] for k in buffers.files})
  assert sorted(sd) == sorted(e["key"] for e in manifest["entries"])
  return sd


@pytest.mark.parametrize("name", [*BOUNDS, "WiderResNet38A2"])
def test_model_keys_and_shapes_equal_manifest(reference_dir, name):
  """Every manifest entry exists in the model with its torch shape, and nothing else."""
  manifest = _manifest(reference_dir, name)
  want = {e["key"]: tuple(e["shape"]) for e in manifest["entries"]}
  if name == "WiderResNet38A2":
    # The ImageNet trunk = DeepWV3Plus's mod1..mod7 plus bn_out / classifier.fc.
    want = {k: v for k, v in want.items() if k.startswith("module.mod")}
    model = nnx.eval_shape(lambda: create_model("DeepWV3Plus", num_classes=19,
                                                rngs=nnx.Rngs(0)))
    got = {k: v for k, v in torch_layout.model_state_shapes(
        model, prefix="module.", include_num_batches_tracked=True).items()
           if k.startswith("module.mod")}
  else:
    model = nnx.eval_shape(lambda: create_model(name, num_classes=19, rngs=nnx.Rngs(0)))
    got = torch_layout.model_state_shapes(model, prefix="module.",
                                          include_num_batches_tracked=True)
  assert sorted(set(want) - set(got)) == [], "manifest entries the model lacks"
  assert sorted(set(got) - set(want)) == [], "model entries the manifest lacks"
  assert {k: got[k] for k in want} == want


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BOUNDS))
def test_logits_match_original(reference_dir, tmp_path, name):
  torch = pytest.importorskip("torch")
  manifest = _manifest(reference_dir, name)
  sd = _formula_state_dict(reference_dir, name, manifest)
  path = tmp_path / f"{name}.pth"
  torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, path)
  del sd
  checkpoint = load_pth(path)
  path.unlink()

  model = nnx.eval_shape(lambda: create_model(name, num_classes=19, rngs=nnx.Rngs(0)))
  report = torch_layout.load_state_dict(model, checkpoint["state_dict"])
  keys = {e["key"][len("module."):] for e in manifest["entries"]}
  assert report.ok and not report.reinitialised
  assert set(report.loaded) | set(report.ignored) == keys, "manifest keys not consumed"
  assert all(k.endswith("num_batches_tracked") for k in report.ignored)
  del checkpoint

  x = np.load(reference_dir / name / "input.npy").transpose(0, 2, 3, 1)
  ref = np.load(reference_dir / name / "logits.npy").transpose(0, 2, 3, 1)
  graphdef, state = nnx.split(model)
  with jax.default_matmul_precision("highest"):
    forward = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile()
  out = np.asarray(forward(state, x))
  assert out.shape == ref.shape and out.dtype == np.float32

  rel_l2_bound, max_std_bound, argmax_bound = BOUNDS[name]
  diff = out - ref
  rel_l2 = np.linalg.norm(diff) / np.linalg.norm(ref)
  max_std = np.abs(diff).max() / ref.std()
  argmax = (out.argmax(-1) == ref.argmax(-1)).mean()
  print(f"{name}: rel L2 {rel_l2:.3g}, max/std {max_std:.3g}, argmax agreement {argmax:.6f}")
  assert rel_l2 <= rel_l2_bound
  assert max_std <= max_std_bound
  assert argmax >= argmax_bound


@pytest.mark.slow
def test_wider_resnet38_trunk_checkpoint_initialises_trunk(reference_dir):
  """wider_resnet38.pth.tar layout (manifests/WiderResNet38A2.json) -> DeepWV3Plus trunk."""
  manifest = _manifest(reference_dir, "WiderResNet38A2")
  params = [e for e in manifest["entries"] if e["kind"] == "param"]
  sys.path.insert(0, str(reference_dir))
  try:
    import weights
  finally:
    sys.path.remove(str(reference_dir))
  sd = weights.state_dict(params, salt=0)
  for e in manifest["entries"]:  # buffers are not in the formula: plain BN defaults
    if e["kind"] == "buffer":
      leaf = e["key"].rsplit(".", 1)[1]
      sd[e["key"]] = (np.zeros((), np.int64) if leaf == "num_batches_tracked" else
                      np.full(e["shape"], 1.0 if leaf == "running_var" else 0.0, np.float32))
  model = nnx.eval_shape(lambda: create_model("DeepWV3Plus", num_classes=19, rngs=nnx.Rngs(0)))
  report = torch_layout.load_trunk_state_dict(model, sd, trunk_format="auto")
  assert report.ok
  trunk_keys = {e["key"][len("module."):] for e in manifest["entries"]
                if e["key"].startswith("module.mod") and not e["key"].endswith("tracked")}
  assert set(report.loaded) == trunk_keys
  assert {"classifier.fc.weight", "classifier.fc.bias", "bn_out.0.weight"} <= set(report.ignored)
  np.testing.assert_array_equal(
      np.asarray(model.mod2.block1.convs.conv1.kernel[...]),
      sd["module.mod2.block1.convs.conv1.weight"].transpose(2, 3, 1, 0))
  # The head was not in the file: it stays as constructed (abstract here).
  assert isinstance(model.final[6].kernel.get_value(), jax.ShapeDtypeStruct)
