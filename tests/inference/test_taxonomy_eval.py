"""--mode eval of a universal-taxonomy model in CamVid's own classes (eval.taxonomy).

A model trained on the MSeg-style universal taxonomy (data.name='multi') predicts the universal
classes; `eval.taxonomy` + `eval.taxonomy_dataset` make `--mode eval` score it on one dataset
by summing, per dataset class, the probabilities of the universal classes mapped to it. This
runs that path end to end on real CamVid val images: checkpoint on disk, restore, metrics over
the 11 CamVid classes, checked against an independent numpy computation from the same model.
"""
import json

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from jaxseg import data as data_lib
from jaxseg.config.base import base_config
from jaxseg.data import taxonomy as taxonomy_lib
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.inference import commands as inference
from jaxseg.models import preprocess
from jaxseg.models import registry
from jaxseg.runtime import checkpoint as checkpoint_lib

CAMVID_CLASSES = 11
IMAGES = 2  # one eval batch: enough pixels for every path, small enough for ~30 s on CPU


@pytest.fixture(scope="module")
def camvid_root(shared_data):
  root = shared_data / "camvid"
  if not (root / "val").is_dir() or not (root / "valannot").is_dir():
    pytest.skip(f"CamVid val split not found under {root}")
  return root


def _config(root, *, taxonomy=True):
  c = base_config()
  c.precision = "fp32"
  c.progress_bar = False
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.0625
  c.data.name = "camvid"
  c.data.root = str(root)
  c.data.eval_split = "val"
  c.data.eval_num_threads = 1
  c.mesh.shape = {"data": 1}
  # One whole-image call per batch: the taxonomy mapping sits in the model's apply_fn, so the
  # tiling modes add nothing here but compile time.
  c.eval.mode = "whole"
  c.eval.batch_size = IMAGES
  c.eval.max_batches = 1
  if taxonomy:
    c.eval.taxonomy = "universal"
    c.eval.taxonomy_dataset = "camvid"
  return c


def _save(config, path, num_classes, seed=0):
  """A model-only checkpoint as written by convert / a training run's model item."""
  model = registry.from_config(config, num_classes, rngs=nnx.Rngs(seed))
  checkpoint_lib.save_model_checkpoint(
      path, model, metadata={"model": config.model.name, "num_classes": num_classes})
  return model


def _reference_confusion(config, model, mapping):
  """The eval batch scored in numpy: softmax over universal classes, summed per CamVid class."""
  batch = next(iter(data_lib.build_eval_loader(config.data, batch_size=IMAGES)))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
  x = preprocess.normalize_images(batch["image"], np.float32)
  logits = np.asarray(forward(state, x), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  preds = (probs @ mapping.eval_matrix().astype(np.float64)).argmax(-1)
  valid = np.asarray(batch.get("valid", np.ones(len(preds), bool)))
  return np.asarray(metrics_lib.confusion_matrix(batch["label"][valid], preds[valid],
                                                 CAMVID_CLASSES))


def test_universal_model_evaluates_in_camvid_classes(camvid_root, tmp_path):
  config = _config(camvid_root)
  mapping = taxonomy_lib.load_mapping("universal", "camvid",
                                      data_lib.dataset_info(config.data).class_names)
  universal = mapping.taxonomy.num_classes
  assert universal > CAMVID_CLASSES  # otherwise a class-count mix-up could pass unnoticed
  model = _save(config, tmp_path / "ckpt", universal, seed=3)

  summary = inference.evaluate_checkpoint(config, tmp_path, checkpoint=tmp_path / "ckpt")

  out = tmp_path / "eval_restored"
  record = json.loads((out / "metrics.json").read_text())
  assert list(record["per_class"]) == list(mapping.dataset_classes)  # CamVid's 11, in order
  assert len(summary["iou"]) == CAMVID_CLASSES
  assert record["images"] == IMAGES and record["pixels"] > 0.5 * IMAGES * 360 * 480
  assert record["miou"] == pytest.approx(summary["miou"])
  confusion = np.load(out / "confusion.npy")
  assert confusion.shape == (CAMVID_CLASSES, CAMVID_CLASSES)
  # The restored weights and the probability sums, not a re-initialised model or the first 11
  # universal logits: the same confusion as the numpy reference (a few near-tie pixels may
  # flip between XLA programs).
  reference = _reference_confusion(config, model, mapping)
  assert confusion.sum() == reference.sum()
  assert np.abs(confusion - reference).sum() <= 1e-3 * reference.sum()
  assert np.count_nonzero(confusion.sum(axis=0)) >= 2  # predictions with some substance


def test_class_count_mismatch_names_the_taxonomy(camvid_root, tmp_path):
  config = _config(camvid_root)
  universal = taxonomy_lib.load_taxonomy("universal").num_classes
  # A CamVid (11-class) checkpoint evaluated as a universal model.
  _save(config, tmp_path / "camvid_ckpt", CAMVID_CLASSES)
  with pytest.raises(ValueError, match=rf"predicts {CAMVID_CLASSES} classes .*but taxonomy "
                                       rf"'universal' has {universal}"):
    inference.evaluate_checkpoint(config, tmp_path, checkpoint=tmp_path / "camvid_ckpt")
  # A universal checkpoint evaluated without the taxonomy: the dataset's count is named.
  plain = _config(camvid_root, taxonomy=False)
  _save(plain, tmp_path / "universal_ckpt", universal)
  with pytest.raises(ValueError, match=rf"predicts {universal} classes .*but dataset 'camvid' "
                                       rf"has {CAMVID_CLASSES}.*eval.taxonomy"):
    inference.evaluate_checkpoint(plain, tmp_path, checkpoint=tmp_path / "universal_ckpt")
  # Half a taxonomy setting is refused before anything is restored.
  half = _config(camvid_root)
  half.eval.taxonomy_dataset = ""
  with pytest.raises(ValueError, match="set both"):
    inference.evaluate_checkpoint(half, tmp_path, checkpoint=tmp_path / "universal_ckpt")
