"""hszhao/semseg PSANet-50 on ADE20K (config/ade20k/ade20k_psanet50.yaml).

The PSPNet-50 recipe (configs/ade20k_pspnet50.py: batch 16, lr 0.01 poly 0.9, 100 epochs,
aux 0.4, scale 0.5-2, rotate 10) with semseg's PSANet settings: crop 465, psa_type 2
(bi-direction), compact 0, shrink_factor 2, mask from the crop (2 * ((465 - 1) // 16 + 1) - 1
= 59), normalization_factor 1.0, psa_softmax 1.
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "ade20k_pspnet50", pathlib.Path(__file__).with_name("ade20k_pspnet50.py"))
_psp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_psp)

CROP = 465


def get_config():
  c = _psp.get_config()
  c.model.name = "PSANetR50"
  c.optimizer.lr_multipliers = "psa=10,cls=10,aux=10"
  c.data.crop_size = CROP
  c.eval.crop_size = CROP
  with c.unlocked():
    c.model.overrides.psa_type = 2
    c.model.overrides.crop_size = CROP  # sets the 59 x 59 attention mask
    c.model.overrides.shrink_factor = 2
    c.model.overrides.normalization_factor = 1.0
  return c

