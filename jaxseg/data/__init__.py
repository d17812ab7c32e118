"""Input pipeline: datasets, augmentations, class-uniform sampling, grain loaders."""
from jaxseg.data.defaults import data_config
from jaxseg.data.loader import (
           DatasetInfo,
           build_eval_loader,
           build_train_loader,
           dataset_info,
           steps_per_epoch,
)

__all__ = ["DatasetInfo", "build_eval_loader", "build_train_loader",
           "data_config", "dataset_info", "steps_per_epoch"]
