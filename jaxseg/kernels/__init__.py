"""FlowNet2's CUDA layers in JAX: Resample2d, Correlation, ChannelNorm (NHWC).

`resample2d` has an XLA path (any backend) and a Pallas Triton kernel
(`impl='auto'` picks the kernel on GPU when it compiles); `correlation` and
`channel_norm` are XLA. Semantics follow the CUDA kernels of
NVIDIA/flownet2-pytorch (see each module's docstring).

`grouped_conv` is the native CPU grouped convolution (C++, XLA FFI, built on first use by
`native`) that Conv2d uses for SE-ResNeXt on a single-device CPU process.
"""

from jaxseg.kernels.channelnorm import channel_norm
from jaxseg.kernels.correlation import correlation
from jaxseg.kernels.correlation import correlation_output_size
from jaxseg.kernels.resample2d import resample2d
from jaxseg.kernels.resample2d import resample2d_pallas
from jaxseg.kernels.resample2d import resample2d_xla

__all__ = [
    "channel_norm",
    "correlation",
    "correlation_output_size",
    "resample2d",
    "resample2d_pallas",
    "resample2d_xla",
]
