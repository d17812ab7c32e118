"""Input pipeline: datasets, augmentations, class-uniform sampling, grain loaders."""
from jaxseg.input_pipeline.defaults import data_config
from jaxseg.input_pipeline.loader import build_eval_loader
from jaxseg.input_pipeline.loader import build_train_loader
from jaxseg.input_pipeline.loader import dataset_info
from jaxseg.input_pipeline.loader import DatasetInfo
from jaxseg.input_pipeline.loader import steps_per_epoch

__all__ = ['DatasetInfo', 'build_eval_loader', 'build_train_loader',
           'data_config', 'dataset_info', 'steps_per_epoch']
