"""Segmentation losses: pure-function JAX ports of the original `loss.py`.

All losses take logits NHWC (N,H,W,C) in any float dtype (computed in
float32) and integer labels (N,H,W) with `ignore_index` = void, and return a
float32 scalar. Labels outside [0, C) other than `ignore_index` are treated
as ignored (the original would raise on them).

  cross_entropy              CrossEntropyLoss2d(size_average=True); with
                             `class_weights`: torch F.cross_entropy(weight=w)
  focal_loss                 Lin et al. 2017, softmax form, optional alpha
  image_based_cross_entropy  ImageBasedCrossEntropyLoss2d
  label_relaxation_loss      ImgWtLossSoftNLL (on relaxed targets)
  make_loss_fn               config -> SegmentationLoss (main + auxiliary heads)
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.train import class_weights as class_frequency
from jaxseg.train.relaxed_targets import relaxed_boundary_targets

LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, Any]]]
AuxLossFn = Callable[[jax.Array, jax.Array], jax.Array]

_LOSS_NAMES = ("cross_entropy", "focal", "image_based_ce", "label_relaxation")
_BATCH_WEIGHTING = ("original", "per_image")


def _log_softmax_nll(logits: jax.Array, labels: jax.Array, num_classes: int,
                     ignore_index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-pixel -log p(label), validity mask and safe (clipped) labels."""
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.where(valid, nll, 0.0), valid, safe


def cross_entropy(logits: jax.Array, labels: jax.Array, *,
                  ignore_index: int = 255,
                  class_weights: Optional[jax.Array] = None) -> jax.Array:
  """Mean NLL over the non-ignored pixels of the whole batch (0 if none).

  = CrossEntropyLoss2d(size_average=True): NLLLoss(log_softmax(logits)).
  With `class_weights` w (C,): torch's weighted mean
  `sum_p w[y_p] * nll_p / sum_p w[y_p]` (F.cross_entropy(weight=w)).
  """
  nll, valid, safe = _log_softmax_nll(logits, labels, logits.shape[-1],
                                      ignore_index)
  if class_weights is None:
    count = jnp.sum(valid, dtype=jnp.float32)
    return jnp.sum(nll) / jnp.maximum(count, 1.0)
  pix_w = jnp.where(valid, jnp.asarray(class_weights, jnp.float32)[safe], 0.0)
  den = jnp.sum(pix_w)
  return jnp.sum(pix_w * nll) / jnp.where(den > 0, den, 1.0)


def focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float = 2.0,
               alpha: Optional[jax.Array] = None,
               ignore_index: int = 255) -> jax.Array:
  """Softmax focal loss (Lin et al. 2017), mean over the non-ignored pixels.

  Per pixel `-alpha[y] * (1 - p_y)^gamma * log p_y` with p = softmax(logits);
  `alpha` (C,) per-class factors (None = 1). gamma = 0 without alpha is the
  cross entropy. The mean is over valid pixels (not weighted by alpha), 0 if
  there are none.
  """
  nll, valid, safe = _log_softmax_nll(logits, labels, logits.shape[-1],
                                      ignore_index)
  # 1 - p_y = -expm1(log p_y): accurate where p_y is close to 1.
  one_minus_p = -jnp.expm1(-nll)
  per_pixel = nll
  if gamma != 0:
    # The inner where keeps the gradient finite where p_y == 1 (0^gamma).
    pos = one_minus_p > 0
    per_pixel = nll * jnp.where(
        pos, jnp.where(pos, one_minus_p, 1.0) ** gamma, 0.0)
  if alpha is not None:
    per_pixel = per_pixel * jnp.asarray(alpha, jnp.float32)[safe]
  count = jnp.sum(valid, dtype=jnp.float32)
  return jnp.sum(jnp.where(valid, per_pixel, 0.0)) / jnp.maximum(count, 1.0)


def _class_weights(hist: jax.Array, upper_bound: float) -> jax.Array:
  """The original's `(hist != 0) * upper_bound * (1 - hist) + 1`."""
  return jnp.where(hist != 0, upper_bound * (1.0 - hist), 0.0) + 1.0


def image_based_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                              num_classes: int, upper_bound: float = 1.0,
                              ignore_index: int = 255,
                              batch_weighting: bool = False) -> jax.Array:
  """ImageBasedCrossEntropyLoss2d: class-weighted NLL, summed over images.

  Class weights come from the label histogram (np.histogram density over
  bins range(C+1), so void pixels do not count): `w = (hist != 0) *
  upper_bound * (1 - hist) + 1`, per image (or over the whole batch when
  `batch_weighting`, the original's cfg.BATCH_WEIGHTING). Each image's loss is
  torch's weighted-mean NLL `sum w[y] * nll / sum w[y]` over its valid pixels;
  the result is the SUM over the batch (not the mean), as in the original.
  An image without valid pixels contributes 0 (the original gives NaN).
  """
  nll, valid, safe = _log_softmax_nll(logits, labels, num_classes,
                                      ignore_index)
  onehot = jax.nn.one_hot(safe, num_classes, dtype=jnp.float32)
  onehot = onehot * valid[..., None]
  counts = jnp.sum(onehot, axis=(1, 2))  # (N, C), exact integers
  if batch_weighting:
    counts = jnp.sum(counts, axis=0, keepdims=True)
  total = jnp.sum(counts, axis=-1, keepdims=True)
  hist = counts / jnp.maximum(total, 1.0)
  weights = _class_weights(hist, upper_bound)  # (N or 1, C)
  pix_w = jnp.einsum("nhwc,nc->nhw", onehot,
                     jnp.broadcast_to(weights, (logits.shape[0], num_classes)))
  num = jnp.sum(pix_w * nll, axis=(1, 2))
  den = jnp.sum(pix_w, axis=(1, 2))
  per_image = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
  return jnp.sum(per_image)


def label_relaxation_loss(logits: jax.Array, targets: jax.Array, *,
                          num_classes: int, upper_bound: float = 1.0,
                          relax_off: bool = False,
                          batch_weighting: str = "original",
                          batch_class_weights: bool = False) -> jax.Array:
  """ImgWtLossSoftNLL: boundary-relaxed, class- and border-weighted NLL.

  For image i, with t = targets[i, ..., :C] (allowed classes), A the allowed
  set at a pixel, b = sum_c t (the "border weight", 1 where the pixel is
  ignored), m = 1 for ignored pixels (b == 0 before the fix-up):

    S_i(p)  = -sum_c t_c * cw_c * log(sum_{k in A} softmax_k)
    loss_i  = sum_p (1 - m_i) * S_i(p) * f(p) / (H*W - sum m_i + 1)
    loss    = sum_i loss_i

  log(sum_{k in A} softmax_k) is computed as logsumexp over the allowed
  logits minus logsumexp over all logits, so a pixel whose allowed
  probabilities underflow gives a finite value (the original's log(max(...))
  gives -inf there and 0*-inf = NaN in the masked classes).

  Class weights cw come from the target channel sums incl. the ignore
  channel (`hist = sum_hw t / sum t`, last entry dropped after
  `(hist != 0) * upper_bound * (1 - hist) + 1`), per image, or over the batch
  when `batch_class_weights` (cfg.BATCH_WEIGHTING).

  Border factor f(p), `batch_weighting`:
    'original':  f(p) = sum_n 1/b_n(p) over ALL images n of the batch. This
      reproduces the original, which passes the whole batch's border weights
      to each image's custom_nll, so the (1,H,W) loss matrix broadcasts to
      (N,H,W): an image's loss depends on its batch mates (and scales with N).
      Identical to 'per_image' for N == 1.
    'per_image': f(p) = 1/b_i(p), only the image's own border weights.

  rlx_off phase (`relax_off`, targets with 0/1/2 values): the border weight
  b is taken from the unclamped targets (values 2 count twice), the loss uses
  1/b instead (f = sum_n b_n, or b_i), and targets are clamped to 1 for the
  class sum and the allowed set; class weights use the unclamped targets.

  Args:
    logits: (N,H,W,C) float, any dtype (computed in float32).
    targets: (N,H,W,C+1) relaxed targets (see relaxed_boundary_targets).
    num_classes: C.
    upper_bound: cfg wt_bound.
    relax_off: True after the rlx_off epoch (must match the targets).
    batch_weighting: 'original' or 'per_image' (see above).
    batch_class_weights: class weights from the whole batch.

  Returns:
    float32 scalar.
  """
  if batch_weighting not in _BATCH_WEIGHTING:
    raise ValueError(
        f"label_relaxation_loss: batch_weighting must be one of "
        f"{_BATCH_WEIGHTING}, got {batch_weighting!r}")
  if targets.shape[-1] != num_classes + 1:
    raise ValueError(
        f"label_relaxation_loss: targets must have num_classes + 1 = "
        f"{num_classes + 1} channels (last = ignore), got shape "
        f"{targets.shape}")
  logits = logits.astype(jnp.float32)
  t_full = targets.astype(jnp.float32)
  n, h, w, _ = logits.shape

  # Class weights from the raw targets (rlx_off values of 2 count double).
  counts = jnp.sum(t_full, axis=(1, 2))  # (N, C+1)
  if batch_class_weights:
    counts = jnp.sum(counts, axis=0, keepdims=True)
  total = jnp.sum(counts, axis=-1, keepdims=True)
  hist = counts / jnp.where(total > 0, total, 1.0)
  cw = _class_weights(hist, upper_bound)[:, :num_classes]  # (N or 1, C)

  t = t_full[..., :num_classes]
  border = jnp.sum(t, axis=-1)  # (N,H,W), before clamping as the original
  ignored = border == 0
  border = jnp.where(ignored, 1.0, border)
  if relax_off:
    t = jnp.minimum(t, 1.0)
    border_factor = border
  else:
    border_factor = 1.0 / border
  if batch_weighting == "original":
    border_factor = jnp.sum(border_factor, axis=0, keepdims=True)

  allowed = t > 0
  # Pixels with nothing allowed are masked below; let them see all classes so
  # the logsumexp (and its gradient) stays finite.
  allowed = allowed | ignored[..., None]
  lse_all = jax.nn.logsumexp(logits, axis=-1)
  lse_allowed = jax.nn.logsumexp(jnp.where(allowed, logits, -jnp.inf), axis=-1)
  log_p_allowed = lse_allowed - lse_all  # (N,H,W), <= 0
  class_sum = jnp.einsum("nhwc,nc->nhw", t,
                         jnp.broadcast_to(cw, (n, num_classes)))
  per_pixel = -class_sum * log_p_allowed * border_factor
  per_pixel = jnp.where(ignored, 0.0, per_pixel)
  denom = h * w - jnp.sum(ignored, axis=(1, 2), dtype=jnp.float32) + 1.0
  return jnp.sum(jnp.sum(per_pixel, axis=(1, 2)) / denom)


@dataclasses.dataclass(frozen=True)
class SegmentationLoss:
  """A configured loss: `loss(logits, labels) -> (loss, aux)` plus aux heads.

  aux_loss: `(aux_logits, labels) -> loss` for each auxiliary head (the
    cross entropy with the main loss's ignore index and class weights, as
    semseg), None when the loss cannot train aux heads (label relaxation).
  aux_weight: the factor of every aux head's loss (loss.aux_weight).
  The train step adds `aux_weight * aux_loss(head logits, labels)` per head
  for models with aux heads (see train_step.py).
  """
  name: str
  main: LossFn
  aux_loss: Optional[AuxLossFn]
  aux_weight: float

  def __call__(self, logits: jax.Array,
               labels: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    return self.main(logits, labels)


def _static_class_weights(loss_config, num_classes: int,
                          class_weights) -> Optional[np.ndarray]:
  spec = str(loss_config.get("class_weights", "") or "").strip()
  if class_weights is not None:
    w = np.asarray(class_weights, np.float32)
    if w.shape != (num_classes,):
      raise ValueError(f"class_weights: expected shape ({num_classes},), got "
                       f"{w.shape}")
    return w
  if not spec:
    return None
  if spec in class_frequency.FREQUENCY_MODES:
    raise ValueError(
        f"loss.class_weights={spec!r} needs the training label frequencies: "
        "pass make_loss_fn(..., class_weights=class_frequency."
        "class_weights_for_config(config, num_classes)) (the trainer does)")
  return class_frequency.parse_class_weight_list(spec, num_classes)


def make_loss_fn(loss_config: ml_collections.ConfigDict,
                 class_weights: Optional[Any] = None) -> SegmentationLoss:
  """Builds the configured loss (callable as `loss(logits, labels)`).

  Config fields: name ('cross_entropy' | 'focal' | 'image_based_ce' |
  'label_relaxation'), num_classes, ignore_index, upper_bound, border_window,
  strict_border_classes, batch_weighting ('original' | 'per_image'),
  rlx_off, and optionally batch_class_weights (default False), class_weights,
  focal_gamma (2.0), aux_weight (0.4). The config is read once: rebuild the
  function (and re-jit) when `rlx_off` flips.
  `class_weights`: resolved (C,) weights, required when loss.class_weights
  names a frequency mode (class_frequency.class_weights_for_config); an
  explicit comma list is parsed here. They weight cross_entropy (torch
  `weight=`), are focal's alpha, and weight the aux heads' cross entropy.
  For 'label_relaxation' the relaxed targets are built on device from the
  labels. aux: {'valid_pixels': float32 count of non-ignored labels}.
  """
  def get(field: str, default: Any = None) -> Any:
    if field in loss_config:
      return loss_config[field]
    if default is None:
      raise ValueError(f"loss config: missing field {field!r}")
    return default

  name = get("name")
  ignore_index = int(get("ignore_index", 255))
  if name not in _LOSS_NAMES:
    raise ValueError(
        f"loss config field name: unknown loss {name!r}, expected one of "
        f"{_LOSS_NAMES}")
  num_classes = int(get("num_classes"))
  upper_bound = float(get("upper_bound", 1.0))
  batch_class_weights = bool(get("batch_class_weights", False))
  aux_weight = float(get("aux_weight", 0.4))
  weights = _static_class_weights(loss_config, num_classes, class_weights)
  if weights is not None and name in ("image_based_ce", "label_relaxation"):
    raise ValueError(
        f'loss.class_weights={get("class_weights", "")!r} cannot be combined '
        f'with loss.name={name!r}, which computes its own per-image class '
        "weights; use 'cross_entropy' or 'focal'")
  w = weights  # numpy: a jit constant

  def aux_of(labels: jax.Array) -> dict[str, Any]:
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    return {"valid_pixels": jnp.sum(valid, dtype=jnp.float32)}

  def ce(logits, labels):
    return cross_entropy(logits, labels, ignore_index=ignore_index,
                         class_weights=w)

  def wrap(main: LossFn, aux_loss: Optional[AuxLossFn] = ce):
    return SegmentationLoss(name, main, aux_loss, aux_weight)

  if name == "cross_entropy":
    return wrap(lambda logits, labels: (ce(logits, labels), aux_of(labels)))

  if name == "focal":
    gamma = float(get("focal_gamma", 2.0))
    if gamma < 0:
      raise ValueError(f"loss.focal_gamma must be >= 0, got {gamma}")

    def focal_fn(logits, labels):
      loss = focal_loss(logits, labels, gamma=gamma, alpha=w,
                        ignore_index=ignore_index)
      return loss, aux_of(labels)
    return wrap(focal_fn)

  if name == "image_based_ce":
    def loss_fn(logits, labels):
      loss = image_based_cross_entropy(
          logits, labels, num_classes=num_classes, upper_bound=upper_bound,
          ignore_index=ignore_index, batch_weighting=batch_class_weights)
      return loss, aux_of(labels)
    return wrap(loss_fn)

  batch_weighting = get("batch_weighting", "original")
  if batch_weighting not in _BATCH_WEIGHTING:
    raise ValueError(
        f"loss config field batch_weighting: expected one of "
        f"{_BATCH_WEIGHTING}, got {batch_weighting!r}")
  border_window = int(get("border_window", 1))
  strict = tuple(int(c) for c in (get("strict_border_classes", ()) or ()))
  relax_off = bool(get("rlx_off", False))

  def relax_fn(logits, labels):
    targets = relaxed_boundary_targets(
        labels, num_classes=num_classes, border_window=border_window,
        strict_border_classes=strict, relax_off=relax_off,
        ignore_index=ignore_index)
    loss = label_relaxation_loss(
        logits, targets, num_classes=num_classes, upper_bound=upper_bound,
        relax_off=relax_off, batch_weighting=batch_weighting,
        batch_class_weights=batch_class_weights)
    return loss, aux_of(labels)
  # Label relaxation has no auxiliary-head form (the NVIDIA models have none).
  return wrap(relax_fn, aux_loss=None)
