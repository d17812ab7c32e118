"""SDCNet label propagation: FlowNet2 and SDCNet2D / SDCNet2DRecon in Flax NNX (NHWC)."""
from jaxseg.convert.report import LoadReport
from jaxseg.sdcnet.flownet2 import FlowNet2
from jaxseg.sdcnet.flownet2 import upsample_bilinear
from jaxseg.sdcnet.flownet2 import upsample_nearest
from jaxseg.sdcnet.flownet_parts import FlowNetC
from jaxseg.sdcnet.flownet_parts import FlowNetFusion
from jaxseg.sdcnet.flownet_parts import FlowNetS
from jaxseg.sdcnet.flownet_parts import FlowNetSD
from jaxseg.sdcnet.sdcnet import LOSS_WEIGHTS
from jaxseg.sdcnet.sdcnet import TRAINABLE
from jaxseg.sdcnet.sdcnet import Buffer
from jaxseg.sdcnet.sdcnet import SDCNet2D
from jaxseg.sdcnet.sdcnet import SDCNet2DRecon
from jaxseg.sdcnet.sdcnet import as_frames
from jaxseg.sdcnet.sdcnet import reconstruction_loss
from jaxseg.sdcnet.torch_names import extract_state_dict
from jaxseg.sdcnet.torch_names import load_flownet2_state_dict
from jaxseg.sdcnet.torch_names import load_sdcnet_state_dict
from jaxseg.sdcnet.torch_names import load_torch_state_dict
from jaxseg.sdcnet.torch_names import to_torch_state_dict
from jaxseg.sdcnet.torch_names import transposed_prefixes

__all__ = [
    "Buffer", "FlowNet2", "FlowNetC", "FlowNetFusion", "FlowNetS", "FlowNetSD", "LOSS_WEIGHTS",
    "LoadReport", "SDCNet2D", "SDCNet2DRecon", "TRAINABLE", "as_frames", "extract_state_dict",
    "load_flownet2_state_dict", "load_sdcnet_state_dict", "load_torch_state_dict",
    "reconstruction_loss", "to_torch_state_dict", "transposed_prefixes", "upsample_bilinear",
    "upsample_nearest",
]
