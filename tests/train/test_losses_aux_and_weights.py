"""Focal loss, class-weighted cross entropy (weights from label frequencies, cached) and
auxiliary-head losses in the train step.

torch (a test-only tool) gives the reference values and gradients: F.cross_entropy(weight=)
and the focal-loss formula written with torch ops.
"""
import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config import base as config_base
from jaxseg.models import preprocess
from jaxseg.models import registry
from jaxseg.models.interpolate import resize_bilinear_align_corners
from jaxseg.models.layers import Conv2d
from jaxseg.models.spec import ModelSpec
from jaxseg.runtime import mesh as mesh_lib
from jaxseg.train import class_weights as class_frequency
from jaxseg.train import losses
from jaxseg.train import optimizer as optimizer_lib
from jaxseg.train import step as step_lib

C = 6
RTOL = 1e-5


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  logits = (rng.standard_normal((2, 9, 11, C)) * 3).astype(np.float32)
  labels = rng.integers(0, C, (2, 9, 11))
  labels[rng.random(labels.shape) < 0.2] = 255
  labels[0, 0, :3] = 200  # out-of-range ids count as ignored (see losses.py)
  # A confidently right pixel: focal's (1 - p)^gamma is ~0 there.
  logits[1, 2, 3] = -12.0
  logits[1, 2, 3, 4] = 12.0
  labels[1, 2, 3] = 4
  return logits, labels.astype(np.int32)


def _torch_reference(logits, labels, kind, *, weight=None, gamma=2.0):
  """Loss and d loss / d logits (NHWC) from torch."""
  torch = pytest.importorskip("torch")
  f = torch.nn.functional
  x = torch.tensor(logits.transpose(0, 3, 1, 2).astype(np.float64), requires_grad=True)
  y = torch.tensor(np.where((labels >= 0) & (labels < C), labels, 255), dtype=torch.long)
  w = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
  if kind == "ce":
    loss = f.cross_entropy(x, y, weight=w, ignore_index=255)
  else:  # focal: -alpha_t (1 - p_t)^gamma log p_t, mean over valid pixels
    valid = y != 255
    logp = f.log_softmax(x, dim=1).gather(1, torch.where(valid, y, 0)[:, None])[:, 0]
    # 1 - p_t as -expm1(log p_t): `1 - exp` is 0 at p_t ~ 1 and 0^0.5 has a NaN gradient.
    per_pixel = -((-torch.expm1(logp)) ** gamma) * logp
    if w is not None:
      per_pixel = per_pixel * w[torch.where(valid, y, 0)]
    loss = per_pixel[valid].sum() / valid.sum()
  loss.backward()
  return float(loss.detach()), x.grad.numpy().transpose(0, 2, 3, 1)


def _check(fn, logits, want, want_grad):
  value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
  assert value.dtype == jnp.float32 and value.shape == ()
  np.testing.assert_allclose(float(value), want, rtol=RTOL)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-7)


WEIGHTS = np.array([0.5, 2.0, 1.0, 0.0, 3.5, 1.25], np.float32)


@pytest.mark.parametrize("weight", [None, WEIGHTS], ids=["plain", "weighted"])
def test_cross_entropy_matches_torch(batch, weight):
  logits, labels = batch
  want, want_grad = _torch_reference(logits, labels, "ce", weight=weight)
  _check(lambda lg: losses.cross_entropy(lg, labels, class_weights=weight), logits, want,
         want_grad)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, WEIGHTS], ids=["no_alpha", "alpha"])
def test_focal_loss_matches_torch(batch, gamma, alpha):
  logits, labels = batch
  want, want_grad = _torch_reference(logits, labels, "focal", weight=alpha, gamma=gamma)
  _check(lambda lg: losses.focal_loss(lg, labels, gamma=gamma, alpha=alpha), logits, want,
         want_grad)


def test_focal_properties(batch):
  logits, labels = batch
  lg = jnp.asarray(logits)
  ce = float(losses.cross_entropy(lg, labels))
  assert float(losses.focal_loss(lg, labels, gamma=0.0)) == pytest.approx(ce, rel=1e-6)
  assert float(losses.focal_loss(lg, labels, gamma=2.0)) < ce  # easy pixels are down-weighted
  # p_t == 1 in float32 (and float64): 0^gamma for gamma < 1 must not give a NaN gradient.
  sure = np.where(np.arange(C) == 2, 30.0, -30.0).astype(np.float32)[None, None, None]
  grad = jax.grad(lambda x: losses.focal_loss(x, np.full((1, 1, 1), 2), gamma=0.5))(sure)
  assert np.all(np.isfinite(np.asarray(grad)))
  all_void = np.full_like(labels, 255)
  assert float(losses.focal_loss(lg, all_void)) == 0.0
  assert float(losses.cross_entropy(lg, all_void, class_weights=WEIGHTS)) == 0.0


# --------------------------------------------------------------------- class weights
def test_class_weight_formulas():
  counts = np.array([600, 300, 90, 10, 0], np.int64)
  p = counts / 1000
  w = class_frequency.class_weights_from_histogram(counts, "inverse_log")
  np.testing.assert_allclose(w, 1 / np.log(1.02 + p), rtol=1e-6)
  assert w[0] < w[1] < w[2] < w[3]  # rarer classes weigh more
  w = class_frequency.class_weights_from_histogram(counts, "inverse_sqrt")
  ref = 1 / np.sqrt(p[:4])
  np.testing.assert_allclose(w, np.append(ref / ref.mean(), 0), rtol=1e-6)
  # SegNet: freq = class pixels / pixels of the images containing the class.
  image_pixels = np.array([1000, 600, 300, 100, 0])
  freq = counts[:4] / image_pixels[:4]  # 0.6, 0.5, 0.3, 0.1 -> median 0.4
  w = class_frequency.class_weights_from_histogram(counts, "median_frequency",
                                                   image_pixels=image_pixels)
  np.testing.assert_allclose(w, np.append(0.4 / freq, 0), rtol=1e-6)
  w = class_frequency.class_weights_from_histogram(counts, "median_frequency")
  np.testing.assert_allclose(w[:4], np.median(p[:4]) / p[:4], rtol=1e-6)
  with pytest.raises(ValueError, match="expected one of"):
    class_frequency.class_weights_from_histogram(counts, "sqrt")
  with pytest.raises(ValueError, match="empty"):
    class_frequency.class_weights_from_histogram(np.zeros(3), "inverse_log")


def test_explicit_class_weight_list():
  np.testing.assert_array_equal(class_frequency.parse_class_weight_list("1, 2.5,0", 3),
                                np.array([1, 2.5, 0], np.float32))
  with pytest.raises(ValueError, match="3 finite weights"):
    class_frequency.parse_class_weight_list("1,2", 3)
  with pytest.raises(ValueError, match="comma list"):
    class_frequency.parse_class_weight_list("1,x,2", 3)


def _folder_dataset(root):
  """Three CamVid-id labels (11 = void) in a 'folder' dataset under `root`."""
  import cv2
  rng = np.random.default_rng(1)
  (root / "images").mkdir(parents=True)
  (root / "labels").mkdir()
  raw = [rng.integers(0, 12, (6, 8)).astype(np.uint8) for _ in range(3)]
  raw[1][raw[1] == 7] = 3  # class 7 absent from image 1: image_pixels differ from totals
  for i, lab in enumerate(raw):
    cv2.imwrite(str(root / "images" / f"s{i}.png"), np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(str(root / "labels" / f"s{i}.png"), lab)
  return raw


def _folder_config(root, **loss):
  from jaxseg.config.base import base_config
  c = base_config()
  c.data.name = "folder"
  c.data.root = str(root)
  c.data.image_dir = "images"
  c.data.label_dir = "labels"
  c.data.class_table = "camvid"
  c.progress_bar = False
  for k, v in loss.items():
    c.loss[k] = v
  return c


def test_label_frequency_is_counted_once_and_cached_next_to_the_data(tmp_path, monkeypatch):
  raw = _folder_dataset(tmp_path / "data")
  config = _folder_config(tmp_path / "data", class_weights="median_frequency")
  freq, path = class_frequency.label_frequency(config.data, 11, progress=False)
  assert path.parent == tmp_path / "data" and path.suffix == ".json"
  valid = [lab[lab < 11] for lab in raw]
  want = sum(np.bincount(v, minlength=11) for v in valid)
  np.testing.assert_array_equal(freq.counts, want)
  want_img = sum((np.bincount(v, minlength=11) > 0) * v.size for v in valid)
  np.testing.assert_array_equal(freq.image_pixels, want_img)
  assert freq.num_images == 3 and json.loads(path.read_text())["counts"] == want.tolist()

  def no_recount(*args, **kwargs):
    raise AssertionError("the cached frequencies were counted again")
  monkeypatch.setattr(class_frequency, "count_label_frequency", no_recount)
  weights = class_frequency.class_weights_for_config(config, 11)
  np.testing.assert_allclose(weights, class_frequency.class_weights_from_histogram(
      want, "median_frequency", image_pixels=want_img))


def test_trainer_feeds_class_weights_into_the_loss(tmp_path, monkeypatch):
  from jaxseg.train import loop as trainer
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  _folder_dataset(tmp_path / "data")
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.standard_normal((2, 4, 5, 11)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 11, (2, 4, 5)))
  for name in ("cross_entropy", "focal"):
    config = _folder_config(tmp_path / "data", name=name, class_weights="inverse_log")
    loss_fn = trainer.make_loss(config, 11, rlx_off=False)
    freq, _ = class_frequency.label_frequency(config.data, 11, progress=False)
    w = class_frequency.class_weights_from_histogram(freq.counts, "inverse_log")
    want = (losses.cross_entropy(logits, labels, class_weights=w) if name == "cross_entropy"
            else losses.focal_loss(logits, labels, gamma=2.0, alpha=w))
    assert float(loss_fn(logits, labels)[0]) == pytest.approx(float(want), rel=1e-6)
    assert float(want) != pytest.approx(float(losses.cross_entropy(logits, labels)), rel=1e-3)
  explicit = ",".join(["2"] * 10 + ["0"])
  config = _folder_config(tmp_path / "data", class_weights=explicit)
  loss_fn = trainer.make_loss(config, 11, rlx_off=False)
  w = np.array([2.0] * 10 + [0.0], np.float32)
  assert float(loss_fn(logits, labels)[0]) == pytest.approx(
      float(losses.cross_entropy(logits, labels, class_weights=w)), rel=1e-6)


def test_class_weight_config_errors():
  cfg = config_base.loss_config()
  cfg.num_classes = 3
  cfg.class_weights = "inverse_log"
  with pytest.raises(ValueError, match="needs the training label frequencies"):
    losses.make_loss_fn(cfg)
  cfg.name = "image_based_ce"
  cfg.class_weights = "1,1,2"
  with pytest.raises(ValueError, match="cannot be combined"):
    losses.make_loss_fn(cfg)
  cfg.name = "focal"
  cfg.focal_gamma = -1.0
  with pytest.raises(ValueError, match="focal_gamma"):
    losses.make_loss_fn(cfg)


# --------------------------------------------------------------------- auxiliary heads
class ToyAuxModel(nnx.Module):
  """The aux-head contract: `return_aux=True` -> (logits, {'aux': logits at input size})."""

  def __init__(self, num_classes, *, cfg, rngs):
    del cfg
    self.body = Conv2d(3, 8, 3, padding=1, rngs=rngs)
    self.cls = Conv2d(8, num_classes, 1, use_bias=True, rngs=rngs)
    self.aux = Conv2d(8, num_classes, 1, stride=2, use_bias=True, rngs=rngs)

  def __call__(self, x, *, train=False, rngs=None, return_aux=False):
    h = jax.nn.relu(self.body(x))
    logits = self.cls(h).astype(jnp.float32)
    if not return_aux:
      return logits
    aux = resize_bilinear_align_corners(self.aux(h).astype(jnp.float32), x.shape[1:3])
    return logits, {"aux": aux}


@pytest.fixture
def toy_aux_model(monkeypatch):
  spec = ModelSpec(lambda n, *, cfg, rngs: ToyAuxModel(n, cfg=cfg, rngs=rngs),
                   aux_heads=("aux",), description="test-only aux-head model")
  monkeypatch.setitem(registry._REGISTRY, "ToyAux", spec)
  return "ToyAux"


def _aux_step(model_name, **loss):
  from jaxseg.config.base import base_config
  c = base_config()
  c.precision = "fp32"
  c.model.name = model_name
  c.model.overrides = {}
  c.optimizer.weight_decay = 0.0  # unchanged aux parameters mean zero aux gradients
  mesh = mesh_lib.create_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optimizer_lib.create_optimizer(c, total_steps=4)
  cfg = config_base.loss_config()
  cfg.num_classes = 3
  cfg.update(loss)
  fns = step_lib.create_step_functions(c, mesh=mesh, num_classes=3, tx=tx,
                                       loss_fn=losses.make_loss_fn(cfg))
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, (2, 8, 8))
  labels[:, 0] = 255
  batch = {"image": rng.integers(0, 255, (2, 8, 8, 3)).astype(np.uint8),
           "label": labels.astype(np.uint8)}
  state = fns.init()
  before = jax.device_get(state.params)
  logits, aux_logits = fns.layout.merge(state.params, state.batch_stats)(
      preprocess.normalize_images(jnp.asarray(batch["image"]), jnp.float32), train=True,
      return_aux=True)
  state, metrics = fns.train_step(state, mesh_lib.shard_batch(batch, mesh), jax.random.key(0))
  return (before, jax.device_get(state.params), jax.device_get(metrics), batch, logits,
          aux_logits["aux"])


def test_train_step_adds_weighted_aux_loss(toy_aux_model):
  before, after, m, batch, logits, aux = _aux_step(toy_aux_model, aux_weight=0.4,
                                                   class_weights="1,3,0.5")
  w = np.array([1, 3, 0.5], np.float32)
  main = losses.cross_entropy(logits, batch["label"], class_weights=w)
  aux_loss = losses.cross_entropy(aux, batch["label"], class_weights=w)
  np.testing.assert_allclose(m["main_loss"], float(main), rtol=1e-6)
  np.testing.assert_allclose(m["aux_loss/aux"], float(aux_loss), rtol=1e-6)
  # XLA fuses main + 0.4 * aux into one kernel: its float32 result may differ from numpy's by an
  # ulp or two (6e-8 relative each). A wrong weight (0.5) or a missing term moves it by > 1e-2.
  np.testing.assert_allclose(m["loss"], np.float32(m["main_loss"]) + np.float32(0.4)
                             * np.float32(m["aux_loss/aux"]), rtol=5e-7, atol=0)
  assert m["aux_loss/aux"] > 0 and m["loss"] > m["main_loss"]
  assert not np.array_equal(before["aux/kernel"], after["aux/kernel"])  # aux heads train


def test_aux_weight_zero_and_label_relaxation(toy_aux_model):
  before, after, m, _, _, _ = _aux_step(toy_aux_model, aux_weight=0.0)
  assert "aux_loss/aux" not in m and "main_loss" not in m
  np.testing.assert_array_equal(before["aux/kernel"], after["aux/kernel"])
  with pytest.raises(ValueError, match="no auxiliary-head form.*aux_weight=0"):
    _aux_step(toy_aux_model, name="label_relaxation")
