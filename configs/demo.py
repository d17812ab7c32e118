"""The embedded default: DeepLabV3+ (tiny ResNet-18-D trunk) on procedurally generated streets.

Needs no download and finishes in minutes on a 2-core CPU:
  python -m jaxseg.main --config configs/demo.py --workdir /tmp/demo
"""
from jaxseg.config.base import base_config


def get_config():
  c = base_config()
  c.precision = "fp32"  # bf16 convolutions are slow on CPU
  c.model.name = "DeepR18V3PlusD_m1"
  c.model.overrides.width_multiplier = 0.25
  c.data.name = "synthetic"
  c.data.synthetic.num_train = 512
  c.data.synthetic.num_val = 32
  c.data.synthetic.height = 128
  c.data.synthetic.width = 256
  c.data.crop_size = 128
  c.data.scale_min = 0.75
  c.data.scale_max = 1.5
  c.data.read_num_threads = 2
  c.optimizer.lr = 0.02
  c.train.batch_size = 8
  c.train.num_steps = 600
  c.train.log_every = 20
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.eval.batch_size = 8
  return c
