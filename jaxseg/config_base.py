"""The full configuration tree every `configs/*.py` starts from.

Every field exists here with its default, and the returned ConfigDict is locked, so a typo in a
config file or in a `--config.x=y` override fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from jaxseg.input_pipeline import defaults as data_defaults
from jaxseg.train_lib import losses


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.precision = "bf16"  # 'bf16' | 'fp16' (dynamic loss scaling) | 'fp32'
  c.syncbn = True  # global BatchNorm statistics over all devices; False = per device
  c.progress_bar = True
  c.init_from = ""  # model checkpoint (converted or trained) to start from

  c.model = ml_collections.ConfigDict()
  c.model.name = "DeepR50V3PlusD_m1"
  c.model.num_classes = -1  # -1: from the dataset's class table
  # Keyword overrides of the registry constructor, e.g. width_multiplier.
  c.model.overrides = ml_collections.ConfigDict({"width_multiplier": 1.0})

  c.data = data_defaults.data_config()
  c.loss = losses.default_loss_config()
  c.loss.num_classes = -1  # set from the model at run time

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.nesterov = False

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "poly"  # 'poly' | 'constant'
  c.schedule.power = 1.0  # original --poly_exp
  c.schedule.warmup_steps = 0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8  # global, over all devices and hosts
  c.train.num_steps = -1
  c.train.num_epochs = -1
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.stop_at_step = 0  # >0: save and exit at this step (time-sliced jobs); resume later

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.max_batches = 0  # 0 = the whole split
  c.eval.write_predictions = True
  c.eval.num_prediction_images = 8

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict({"data": -1})

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True
  c.checkpoint.best_metric = "miou"

  c.predict = ml_collections.ConfigDict()
  c.predict.input = config_dict.placeholder(str)
  c.predict.output = config_dict.placeholder(str)
  return c
