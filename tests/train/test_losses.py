"""Parity and property tests for jaxseg.train.losses / relaxed_targets.

Fixture: ../shared/reference/loss (README section 4), produced by the original
PyTorch losses; arrays there are NCHW and are transposed to NHWC here.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg.config import base as config_base
from jaxseg.train import losses
from jaxseg.train.relaxed_targets import find_boundaries_thick
from jaxseg.train.relaxed_targets import relaxed_boundary_targets

C = 19
STRICT = (5, 6, 7, 11, 12, 17, 18)
RELAX = {
    "relax_plain": dict(strict=(), relax_off=False),
    "relax_strict": dict(strict=STRICT, relax_off=False),
    "relax_strict_rlxoff": dict(strict=STRICT, relax_off=True),
}
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-5


@pytest.fixture(scope="module")
def fixture(reference_dir):
  folder = reference_dir / "loss"
  if not (folder / "loss_fixture.npz").is_file():
    pytest.skip(f"loss fixture not found in {folder}")
  data = dict(np.load(folder / "loss_fixture.npz"))
  meta = json.loads((folder / "meta.json").read_text())
  out = {"meta": meta, "labels": data["labels"],
         "logits": data["logits"].transpose(0, 2, 3, 1)}
  for k, v in data.items():
    if k.startswith(("grad_", "target_")):
      out[k] = v.transpose(0, 2, 3, 1)
    elif k.startswith("loss_"):
      out[k] = float(v)
  return out


def _rel_l2(a, b) -> float:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check(value, grad, fixture, variant):
  ref = fixture[f"loss_{variant}"]
  assert ref == pytest.approx(fixture["meta"]["loss_values"][variant])
  assert abs(float(value) - ref) <= LOSS_RTOL * abs(ref), (variant, value, ref)
  assert _rel_l2(grad, fixture[f"grad_{variant}"]) <= GRAD_RTOL, variant


def _config(name, **kw) -> ml_collections.ConfigDict:
  cfg = config_base.loss_config()
  cfg.name = name
  cfg.num_classes = C
  for k, v in kw.items():
    cfg[k] = v
  return cfg


# ------------------------------------------------------------ relaxed targets


@pytest.mark.parametrize("variant", sorted(RELAX))
def test_relaxed_targets_match_original_exactly(fixture, variant):
  opts = RELAX[variant]
  got = relaxed_boundary_targets(
      jnp.asarray(fixture["labels"]), num_classes=C,
      strict_border_classes=opts["strict"], relax_off=opts["relax_off"],
      dtype=jnp.uint8)
  ref = fixture[f"target_{variant}"]
  assert got.shape == ref.shape == (2, 64, 128, C + 1)
  np.testing.assert_array_equal(np.asarray(got), ref)


def test_relaxed_targets_single_image_and_float_dtype(fixture):
  got = relaxed_boundary_targets(jnp.asarray(fixture["labels"][1]),
                                 num_classes=C, strict_border_classes=STRICT)
  assert got.dtype == jnp.float32 and got.shape == (64, 128, C + 1)
  np.testing.assert_array_equal(np.asarray(got),
                                fixture["target_relax_strict"][1])


def test_find_boundaries_thick_small_case():
  # skimage find_boundaries(mode='thick'): both sides of a 4-neighbour label
  # change; the image border is not a boundary (reflect mode).
  lab = np.array([[1, 1, 1, 2],
                  [1, 1, 1, 2],
                  [3, 1, 1, 2],
                  [1, 1, 1, 1]])
  want = np.array([[0, 0, 1, 1],
                   [1, 0, 1, 1],
                   [1, 1, 1, 1],
                   [1, 0, 0, 1]], bool)
  np.testing.assert_array_equal(np.asarray(find_boundaries_thick(lab)), want)


def test_relaxed_targets_wider_window_and_image_border():
  lab = np.full((1, 5, 6), 3, np.int32)
  lab[0, 2, 2] = 255
  t = np.asarray(relaxed_boundary_targets(lab, num_classes=4, border_window=2))
  assert t[0, :, :, 3].all()  # class 3 everywhere within radius 2
  assert t[0, :, :, 4].all()  # ignore: image border (cval) or the void pixel
  t1 = np.asarray(relaxed_boundary_targets(lab, num_classes=4))
  assert t1[0, 1:4, 1:5, 4].sum() == 9  # void pixel's 3x3 neighbourhood only
  assert not t1[0, 1:4, 1:5, 4][0, 3]


# ------------------------------------------------------------ losses vs fixture


@pytest.mark.parametrize("variant", sorted(RELAX))
def test_label_relaxation_matches_original(fixture, variant):
  opts = RELAX[variant]
  targets = jnp.asarray(fixture[f"target_{variant}"])
  fn = lambda lg: losses.label_relaxation_loss(
      lg, targets, num_classes=C, relax_off=opts["relax_off"])
  value, grad = jax.value_and_grad(fn)(jnp.asarray(fixture["logits"]))
  assert value.dtype == jnp.float32 and value.shape == ()
  _check(value, grad, fixture, variant)


@pytest.mark.parametrize("variant", ["cross_entropy", "image_based_ce_ub1",
                                     "image_based_ce_ub6"])
def test_cross_entropy_variants_match_original(fixture, variant):
  labels = jnp.asarray(fixture["labels"])
  if variant == "cross_entropy":
    fn = lambda lg: losses.cross_entropy(lg, labels)
  else:
    ub = 1.0 if variant.endswith("ub1") else 6.0
    fn = lambda lg: losses.image_based_cross_entropy(
        lg, labels, num_classes=C, upper_bound=ub)
  value, grad = jax.value_and_grad(fn)(jnp.asarray(fixture["logits"]))
  _check(value, grad, fixture, variant)


@pytest.mark.parametrize("variant", sorted(RELAX) + ["cross_entropy",
                                                     "image_based_ce_ub6"])
def test_make_loss_fn_end_to_end_jit(fixture, variant):
  if variant in RELAX:
    cfg = _config("label_relaxation",
                  strict_border_classes=RELAX[variant]["strict"],
                  rlx_off=RELAX[variant]["relax_off"])
  elif variant == "cross_entropy":
    cfg = _config("cross_entropy")
  else:
    cfg = _config("image_based_ce", upper_bound=6.0)
  loss_fn = losses.make_loss_fn(cfg)
  labels = jnp.asarray(fixture["labels"])

  @jax.jit
  def value_and_grad(lg):
    return jax.value_and_grad(loss_fn, has_aux=True)(lg, labels)

  (value, aux), grad = value_and_grad(jnp.asarray(fixture["logits"]))
  _check(value, grad, fixture, variant)
  assert float(aux["valid_pixels"]) == float(np.sum(fixture["labels"] != 255))


# ------------------------------------------------------------ properties


def _reference_relax_f64(logits, targets, relax_off, per_image):
  """Float64 numpy transcription of ImgWtLossSoftNLL's arithmetic."""
  logits = np.asarray(logits, np.float64)
  targets = np.asarray(targets, np.float64)
  bw = targets[..., :-1].sum(-1)
  ign = bw == 0
  bw[ign] = 1
  total = 0.0
  for i in range(logits.shape[0]):
    t = targets[i].copy()
    hist = t.sum((0, 1)) / t.sum()
    cw = ((hist != 0) * (1 - hist) + 1)[:-1]
    if relax_off:
      border = 1 / bw
      t[t > 1] = 1
    else:
      border = bw
    if per_image:
      border = border[i:i + 1]
    x = logits[i] - logits[i].max(-1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    tc = t[..., :-1]
    logsoft = np.log(np.maximum(p, tc * (p * tc).sum(-1, keepdims=True)))
    mat = (-1 / border * (tc * cw * logsoft).sum(-1)) * (1 - ign[i])
    total += mat.sum() / (t.shape[0] * t.shape[1] - ign[i].sum() + 1)
  return total


@pytest.fixture(scope="module")
def small_batch():
  rng = np.random.default_rng(0)
  labels = np.kron(rng.integers(0, 5, (3, 4, 5)), np.ones((1, 3, 3), np.int64))
  labels[rng.random(labels.shape) < 0.05] = 255
  logits = rng.normal(0, 3, labels.shape + (5,)).astype(np.float32)
  return jnp.asarray(logits), jnp.asarray(labels.astype(np.uint8))


@pytest.mark.parametrize("relax_off", [False, True])
def test_per_image_vs_original_border_weighting(small_batch, relax_off):
  logits, labels = small_batch
  t = relaxed_boundary_targets(labels, num_classes=5, relax_off=relax_off,
                               border_window=2, strict_border_classes=(1,))
  loss = lambda lg, tg, mode: float(losses.label_relaxation_loss(
      lg, tg, num_classes=5, relax_off=relax_off, batch_weighting=mode))
  for mode, per_image in (("original", False), ("per_image", True)):
    want = _reference_relax_f64(logits, t, relax_off, per_image)
    assert loss(logits, t, mode) == pytest.approx(want, rel=1e-6)
  # Batch of one: both modes are the same loss.
  assert loss(logits[:1], t[:1], "original") == loss(logits[:1], t[:1],
                                                     "per_image")
  # per_image is the sum of independent single-image losses; original is not.
  singles = sum(loss(logits[i:i + 1], t[i:i + 1], "original")
                for i in range(3))
  assert loss(logits, t, "per_image") == pytest.approx(singles, rel=1e-6)
  assert abs(loss(logits, t, "original") - singles) > 1e-2 * singles
  # 'original': an image's loss depends on its batch mates.
  mates = t.at[1:].set(jnp.ones_like(t[1:]))
  lg0 = lambda tg, mode: jax.grad(
      lambda lg: losses.label_relaxation_loss(
          lg, tg, num_classes=5, relax_off=relax_off,
          batch_weighting=mode))(logits)[0]
  assert not np.allclose(lg0(t, "original"), lg0(mates, "original"))
  np.testing.assert_allclose(lg0(t, "per_image"), lg0(mates, "per_image"),
                             rtol=1e-6, atol=1e-9)


def test_no_nan_when_probabilities_underflow():
  # Pixel 0: the non-allowed classes have softmax == 0 in float32 (the
  # original's 0 * log(0) = NaN); pixel 1: even the allowed class underflows
  # (the original gives inf). Both must be finite and exact here.
  logits = np.zeros((1, 1, 2, 3), np.float32)
  logits[0, 0, 0] = [200.0, -200.0, 0.0]  # label 0 -> allowed {0}
  logits[0, 0, 1] = [0.0, -150.0, 10.0]  # label 1 -> allowed {1}
  targets = np.zeros((1, 1, 2, 4), np.float32)
  targets[0, 0, 0, 0] = 1
  targets[0, 0, 1, 1] = 1
  p32 = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
  assert p32[0, 0, 0, 1] == 0 and p32[0, 0, 1, 1] == 0
  fn = lambda lg: losses.label_relaxation_loss(lg, jnp.asarray(targets),
                                               num_classes=3)
  value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  # cw = 1 + (1 - 1/2) = 1.5 for both classes; loss = sum(-cw * log p) / 3.
  lse = lambda v: np.log(np.sum(np.exp(np.asarray(v) - max(v)))) + max(v)
  nll0 = lse([200.0, -200.0, 0.0]) - 200.0
  nll1 = lse([0.0, -150.0, 10.0]) + 150.0
  assert float(value) == pytest.approx(1.5 * (nll0 + nll1) / 3, rel=1e-6)


def test_bf16_logits(fixture):
  lg32 = jnp.asarray(fixture["logits"])
  lg16 = lg32.astype(jnp.bfloat16)
  labels = jnp.asarray(fixture["labels"])
  for name in ("cross_entropy", "image_based_ce", "label_relaxation"):
    loss_fn = losses.make_loss_fn(_config(name, strict_border_classes=STRICT))
    v16, _ = jax.jit(loss_fn)(lg16, labels)
    v32, _ = loss_fn(lg16.astype(jnp.float32), labels)
    assert v16.dtype == jnp.float32
    assert float(v16) == pytest.approx(float(v32), rel=1e-6)
    g = jax.grad(lambda lg: loss_fn(lg, labels)[0])(lg16)
    assert g.dtype == jnp.bfloat16 and np.isfinite(
        np.asarray(g, np.float32)).all()


def test_all_ignored_gives_zero():
  logits = jnp.ones((2, 4, 4, 3))
  labels = jnp.full((2, 4, 4), 255, jnp.uint8)
  assert float(losses.cross_entropy(logits, labels)) == 0.0
  assert float(losses.image_based_cross_entropy(logits, labels,
                                                num_classes=3)) == 0.0
  t = relaxed_boundary_targets(labels, num_classes=3)
  assert float(losses.label_relaxation_loss(logits, t, num_classes=3)) == 0.0


def test_batch_class_weights_uses_whole_batch_histogram(small_batch):
  logits, labels = small_batch
  got = losses.image_based_cross_entropy(logits, labels, num_classes=5,
                                         batch_weighting=True)
  lab = np.asarray(labels)
  hist = np.histogram(lab.ravel(), range(6), density=True)[0]
  w = (hist != 0) * (1 - hist) + 1
  lp = np.asarray(jax.nn.log_softmax(logits), np.float64)
  want = 0.0
  for i in range(lab.shape[0]):
    v = lab[i] != 255
    y = lab[i][v].astype(int)
    want += np.sum(-w[y] * lp[i][v][np.arange(y.size), y]) / np.sum(w[y])
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_make_loss_fn_errors():
  with pytest.raises(ValueError, match="name"):
    losses.make_loss_fn(_config("dice"))
  with pytest.raises(ValueError, match="batch_weighting"):
    losses.make_loss_fn(_config("label_relaxation", batch_weighting="batch"))
  cfg = ml_collections.ConfigDict({"name": "cross_entropy"})
  with pytest.raises(ValueError, match="num_classes"):
    losses.make_loss_fn(cfg)
