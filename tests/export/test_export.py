"""jaxseg.export: the serialised inference forward equals the in-process segmenter."""
import json

import flax.nnx as nnx
import jax
import numpy as np
import pytest

import jaxseg
from jaxseg import export
from jaxseg.config.base import base_config
from jaxseg.export import __main__ as export_cli
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib

MODEL = "DeepR18V3PlusD_m1"
H, W = 40, 56
# Exported vs in-process, both fp32 on this CPU: the same arithmetic compiled as one program
# instead of several, so only XLA's fusion order differs (observed ~2e-6).
PROB_ATOL = 1e-5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random tiny CamVid checkpoint with a converted checkpoint's metadata."""
  config = base_config()
  config.model.name = MODEL
  config.model.overrides.width_multiplier = 0.0625
  path = tmp_path_factory.mktemp("ckpt")
  model = registry.from_config(config, 11, rngs=nnx.Rngs(1))
  checkpoint_lib.save_model_checkpoint(path, model, metadata={
      "model": MODEL, "num_classes": 11, "model_overrides": {"width_multiplier": 0.0625}})
  return path


@pytest.fixture(scope="module")
def seg(checkpoint):
  # With flip the image goes through the tiled pipeline (prepare, tiles, mirror back, average),
  # not the plain model call: the export carries all of it.
  return jaxseg.Segmenter.from_checkpoint(checkpoint, precision="fp32", flip=True,
                                          devices=jax.local_devices()[:1])


def _images(n, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, H, W, 3)).astype(np.uint8)


def test_symbolic_batch_export_equals_the_in_process_model(seg, tmp_path):
  path = seg.export(tmp_path / "model.stablehlo", height=H, width=W, symbolic_batch=True)
  loaded = export.load(path)  # jax + numpy only
  meta = loaded.metadata
  assert meta["input"] == {"layout": "NHWC", "channels": "RGB", "dtype": "uint8",
                           "shape": [None, H, W, 3], "range": [0, 255],
                           "note": "shape[0] null: any batch size"}
  assert meta["output"]["kind"] == "logits" and meta["output"]["shape"] == [None, H, W, 11]
  assert meta["classes"] == list(seg.class_names) and len(meta["palette"]) == 11
  assert meta["mean"] == [0.485, 0.456, 0.406] and meta["jax_version"] == jax.__version__
  assert meta["inference"]["flip"] is True and meta["inference"]["mode"] == "sliding"
  for n in (1, 2):  # two batch sizes through the one artifact
    images = _images(n, seed=n)
    # One image per call in-process (one compiled program for both sizes).
    ids, probs = (np.stack(x) for x in seg.predict(list(images), return_probs=True,
                                                   batch_size=1))
    logits = loaded(images)
    assert logits.shape == (n, H, W, 11) and logits.dtype == np.float32
    np.testing.assert_allclose(jax.nn.softmax(logits, axis=-1), probs, atol=PROB_ATOL)
    top2 = np.sort(probs, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * PROB_ATOL  # ties may flip either way
    np.testing.assert_array_equal(logits.argmax(-1)[clear], ids[clear])
  assert loaded(images[0]).shape == (H, W, 11)  # one image: no batch axis
  with pytest.raises(ValueError, match=r"images of shape \(1, 8, 8, 3\); expected \('N', 40"):
    loaded(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="images of dtype float32; expected uint8"):
    loaded(images.astype(np.float32))


def test_command_line_export_of_ids_from_float_input(checkpoint, seg, tmp_path, capsys):
  out = tmp_path / "ids.stablehlo"
  status = export_cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", str(H),
                        "--width", str(W), "--batch", "2", "--output", "ids",
                        "--input-dtype", "float32", "--precision", "fp32", "--flip"])
  assert status == 0 and f"wrote {out}" in capsys.readouterr().out
  meta = json.loads(export.metadata_path(out).read_text())
  assert (meta["input"]["dtype"], meta["input"]["shape"]) == ("float32", [2, H, W, 3])
  assert (meta["output"]["kind"], meta["output"]["dtype"]) == ("ids", "uint8")
  images = _images(2, seed=5)
  ids = export.load(out)(images.astype(np.float32))
  assert ids.dtype == np.uint8
  np.testing.assert_array_equal(ids, np.stack(seg.predict(list(images), batch_size=1)))


def test_bad_exports_and_artifacts_are_one_line_errors(checkpoint, tmp_path, capsys):
  status = export_cli.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "m"),
                        "--height", "8", "--width", "8"])
  err = capsys.readouterr().err
  assert status == 1 and err.startswith("error: no checkpoint under") and err.count("\n") == 1
  status = export_cli.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m"),
                        "--height", "0", "--width", "8"])
  assert status == 1 and "height=0, width=8; expected positive" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # argparse: the size is required
    export_cli.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m")])
  junk = tmp_path / "junk.stablehlo"
  junk.write_bytes(b"not an artifact")
  with pytest.raises(ValueError, match="junk.stablehlo is not a jax.export artifact"):
    export.load(junk)
  with pytest.raises(FileNotFoundError, match="no exported model at"):
    export.load(tmp_path / "missing.stablehlo")
