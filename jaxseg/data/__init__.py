"""Input pipeline: datasets, augmentations, class-uniform sampling, grain loaders."""
from jaxseg.data.defaults import data_config
from jaxseg.data.loader import DatasetInfo
from jaxseg.data.loader import build_eval_loader
from jaxseg.data.loader import build_train_loader
from jaxseg.data.loader import dataset_info
from jaxseg.data.loader import make_plan
from jaxseg.data.loader import steps_per_epoch

__all__ = ["DatasetInfo", "build_eval_loader", "build_train_loader",
           "data_config", "dataset_info", "make_plan", "steps_per_epoch"]
