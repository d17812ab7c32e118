"""SDCNet label propagation: FlowNet2 and SDCNet2D / SDCNet2DRecon in Flax NNX (NHWC)."""
from jaxseg.sdcnet.flownet2 import FlowNet2, upsample_bilinear, upsample_nearest
from jaxseg.sdcnet.flownet_parts import FlowNetC, FlowNetFusion, FlowNetS, FlowNetSD
from jaxseg.sdcnet.sdcnet import (
                                  LOSS_WEIGHTS,
                                  TRAINABLE,
                                  Buffer,
                                  SDCNet2D,
                                  SDCNet2DRecon,
                                  as_frames,
                                  reconstruction_loss,
)
from jaxseg.sdcnet.torch_names import (
                                  LoadReport,
                                  extract_state_dict,
                                  load_flownet2_state_dict,
                                  load_sdcnet_state_dict,
                                  load_torch_state_dict,
                                  to_torch_state_dict,
                                  transposed_prefixes,
)

__all__ = [
    "Buffer", "FlowNet2", "FlowNetC", "FlowNetFusion", "FlowNetS", "FlowNetSD", "LOSS_WEIGHTS",
    "LoadReport", "SDCNet2D", "SDCNet2DRecon", "TRAINABLE", "as_frames", "extract_state_dict",
    "load_flownet2_state_dict", "load_sdcnet_state_dict", "load_torch_state_dict",
    "reconstruction_loss", "to_torch_state_dict", "transposed_prefixes", "upsample_bilinear",
    "upsample_nearest",
]
