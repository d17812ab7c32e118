"""Training-time evaluation (train/periodic_eval.py) runs the inference engine of --mode eval:
the default protocol is the plain whole-image forward, 'config' follows config.eval."""
import json
import pathlib

from _testlib import tiny_demo_config
import cv2
import jax
import numpy as np
import pytest

from jaxseg import data as data_lib
from jaxseg.config.base import base_config
from jaxseg.data import pictures
from jaxseg.evaluation import metrics as metrics_lib
from jaxseg.inference import commands as inference
from jaxseg.inference import sliding
from jaxseg.models import preprocess
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.runtime import precision as precision_lib
from jaxseg.train import loop as trainer
from jaxseg.train import periodic_eval
from jaxseg.train import step as step_lib


def test_eval_protocol_is_checked_with_the_field_named():
  config = tiny_demo_config()
  config.train.eval_protocol = "tiles"
  with pytest.raises(ValueError, match=r"^config\.train\.eval_protocol='tiles'; expected one "
                                       r"of \('whole', 'config'\)$"):
    periodic_eval.inference_settings(config)


def test_default_protocol_is_the_whole_image_forward_on_8_devices(tmp_path):
  """The default ('whole') gives exactly what the train step's old eval_step gave: one model
  call on the whole image at scale 1, argmax, batched over the 8 devices (FSDP weights too)."""
  assert base_config().train.eval_protocol == "whole"
  assert base_config().eval.mode == "sliding"  # config.eval is --mode eval's, not used here
  config = tiny_demo_config()
  config.mesh.shape = {"data": 4, "fsdp": 2}  # FSDP-sliced weights go into the engine too
  config.mesh.fsdp_min_size = 1
  num_classes, info = trainer.resolve_num_classes(config)
  mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
  fns = step_lib.create_step_functions(config, mesh=mesh, num_classes=num_classes, tx=None,
                                       loss_fn=None)
  model_vars = fns.init().model_vars()
  evaluator = periodic_eval.PeriodicEval(config, mesh, info, tmp_path)
  assert evaluator.settings == sliding.InferenceSettings.of(mode="whole", scales="1.0",
                                                            flip=False)
  summary = evaluator.evaluate(model_vars, 3, writer=None)
  written = evaluator.write_predictions(model_vars, tmp_path / "predictions")

  dtype = precision_lib.compute_dtype(config.precision)

  @jax.jit
  def forward(variables, images):
    model = fns.layout.merge(variables["params"], variables["batch_stats"])
    return jax.numpy.argmax(model(preprocess.normalize_images(images, dtype), train=False), -1)

  host_vars = jax.device_get(model_vars)
  want = np.zeros((num_classes, num_classes), np.int64)
  preds = {}
  for batch in data_lib.build_eval_loader(config.data, batch_size=config.eval.batch_size):
    pred = np.asarray(forward(host_vars, batch["image"]))
    want += np.asarray(metrics_lib.confusion_matrix(batch["label"], pred, num_classes,
                                                    valid=batch["valid"]), np.int64)
    preds.update({pathlib.Path(str(n)).stem: p
                  for n, p, v in zip(batch["name"], pred, batch["valid"]) if v})
  assert len(np.unique(np.concatenate([p.ravel() for p in preds.values()]))) > 1
  np.testing.assert_array_equal(np.load(tmp_path / "eval" / "confusion.npy"), want)
  assert summary["miou"] == metrics_lib.summarize(want)["miou"]
  record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert record["eval_protocol"] == "whole" and record["inference"]["mode"] == "whole"
  masks = sorted(p for p in written if p.name.endswith("_color.png"))
  assert len(masks) == config.eval.num_prediction_images
  for path in masks:
    mask = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(
        mask, pictures.colorize(preds[path.name[:-len("_color.png")]], info.colors))


def test_config_protocol_equals_mode_eval_of_the_checkpoint(tmp_path):
  """train.eval_protocol='config': sliding 32-pixel tiles with flip, as --mode eval runs them
  on the saved checkpoint; the whole-image numbers of that checkpoint differ."""
  config = tiny_demo_config(num_steps=2)
  config.train.eval_protocol = "config"
  config.eval.mode, config.eval.crop_size, config.eval.flip = "sliding", 32, True
  config.eval.num_prediction_images = 2
  summary = trainer.train_and_evaluate(config, tmp_path)
  record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert record["eval_protocol"] == "config"
  assert (record["inference"]["mode"], record["inference"]["crop_size"],
          record["inference"]["flip"]) == ("sliding", 32, True)
  assert len(list((tmp_path / "predictions").glob("*_color.png"))) == 2

  restored = inference.evaluate_checkpoint(config, tmp_path, checkpoint=tmp_path)
  assert restored["miou"] == summary["miou"]
  np.testing.assert_array_equal(np.load(tmp_path / "eval_restored" / "confusion.npy"),
                                np.load(tmp_path / "eval" / "confusion.npy"))

  whole = tiny_demo_config(num_steps=2)
  whole.eval.mode, whole.eval.output_dir = "whole", str(tmp_path / "whole")
  inference.evaluate_checkpoint(whole, tmp_path, checkpoint=tmp_path)
  assert not np.array_equal(np.load(tmp_path / "whole" / "confusion.npy"),
                            np.load(tmp_path / "eval" / "confusion.npy"))
