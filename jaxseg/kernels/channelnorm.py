"""ChannelNorm of FlowNet2: the L2 norm over channels, keepdim (NHWC).

`networks/channelnorm_package/channelnorm_kernel.cu` computes
sqrt(sum_c x_c**2) with a float accumulator; its `norm_deg` argument is
ignored, so only the 2-norm exists. FlowNet2 applies it to brightness errors
and flows before its fusion networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def channel_norm(x: jax.Array) -> jax.Array:
  """sqrt(sum_c x**2) of an (N, H, W, C) array -> (N, H, W, 1).

  Accumulates in at least float32 and returns x's float dtype (float32 for
  integer inputs). Like the CUDA backward (x * g / norm), the gradient at an
  all-zero pixel is NaN.
  """
  if x.ndim != 4:
    raise ValueError(f"channel_norm: x must be NHWC (4-D), got shape "
                     f"{x.shape}.")
  out_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else np.float32
  xa = x.astype(jnp.promote_types(out_dtype, jnp.float32))
  return jnp.sqrt(jnp.sum(xa * xa, axis=-1, keepdims=True)).astype(out_dtype)
