"""LayerCfg (the one home of a model's layer settings) and the registry overrides that fill it,
including the deprecated `precision` spelling of `conv_precision`."""
import dataclasses

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import create_model
from jaxseg.models import registry
from jaxseg.models.layer_cfg import LayerCfg


def test_defaults_frozen_and_variants():
  cfg = LayerCfg()
  assert (cfg.dtype, cfg.param_dtype, cfg.bn_groups, cfg.conv_precision, cfg.conv_impl,
          cfg.norm, cfg.norm_groups, cfg.bn_momentum, cfg.remat) == (
              jnp.float32, jnp.float32, 1, None, "auto", "batch", 32, 0.1, "none")
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.norm = "group"
  variant = dataclasses.replace(cfg, bn_momentum=0.01)
  assert variant.bn_momentum == 0.01 and cfg.bn_momentum == 0.1
  with pytest.raises(ValueError, match="remat"):
    LayerCfg(remat="all")


def _capture_cfg(monkeypatch, name="DeepR18V3PlusD_m1"):
  """Records the LayerCfg the registry hands to `name`'s builder (no network is built)."""
  seen = []
  spec = registry.get_spec(name)

  def build(num_classes, *, cfg, rngs, **overrides):
    seen.append(cfg)
    return nnx.Module()

  monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(spec, build=build))
  return seen


def test_registry_overrides_fill_the_layer_cfg(monkeypatch):
  seen = _capture_cfg(monkeypatch)
  create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
               bn_groups=2, remat="block", conv_precision="highest", conv_impl="xla",
               norm="group", norm_groups=8.0)
  assert seen[-1] == LayerCfg(dtype=jnp.bfloat16, bn_groups=2, remat="block",
                              conv_precision="highest", conv_impl="xla", norm="group",
                              norm_groups=8)


def test_deprecated_precision_override_is_conv_precision_and_warns_once(monkeypatch):
  seen = _capture_cfg(monkeypatch)
  warnings = []
  monkeypatch.setattr(registry, "_warned_deprecated", set())
  monkeypatch.setattr(registry.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
  for _ in range(2):
    create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0), precision="highest")
  assert [cfg.conv_precision for cfg in seen] == ["highest", "highest"]
  assert len(warnings) == 1
  assert "'precision' is deprecated" in warnings[0] and "'conv_precision'" in warnings[0]
  with pytest.raises(ValueError, match="'precision' and 'conv_precision'"):
    create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0), precision="highest",
                 conv_precision="highest")


def test_deprecated_precision_builds_the_same_network():
  """The alias reaches every conv: same logits as conv_precision, bit for bit."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 33, 41, 3)), jnp.float32)
  logits = []
  for key in ("precision", "conv_precision"):
    model = create_model("DeepR18V3PlusD_m1", num_classes=3, rngs=nnx.Rngs(0),
                         width_multiplier=0.0625, conv_impl="xla", **{key: "highest"})
    assert model.layer1[0].conv1.precision == "highest"
    logits.append(np.asarray(model(x)))
  np.testing.assert_array_equal(*logits)


def test_config_model_overrides_precision_still_works(monkeypatch):
  """A run config (or a checkpoint's stored one) with the old key keeps its meaning."""
  from jaxseg.config.base import base_config
  seen = _capture_cfg(monkeypatch)
  monkeypatch.setattr(registry, "_warned_deprecated", {"precision"})
  config = base_config()
  config.model.name = "DeepR18V3PlusD_m1"
  config.model.overrides.precision = "highest"
  registry.from_config(config, 3, rngs=nnx.Rngs(0))
  # The two meanings stay apart: config.precision ('bf16' by default) is the dtype policy.
  assert config.precision == "bf16"
  assert seen[-1].conv_precision == "highest" and seen[-1].dtype == jnp.bfloat16
