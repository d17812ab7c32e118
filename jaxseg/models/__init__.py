"""Segmentation networks (Flax NNX ports of NVIDIA/semantic-segmentation sdcnet)."""
from jaxseg.models.registry import create_model
from jaxseg.models.registry import get_spec
from jaxseg.models.registry import list_models

__all__ = ["create_model", "get_spec", "list_models"]
