"""Camera, instance canvas, palettes and image formation for the procedural
street scenes.

Helper module of `synthetic.py`. World coordinates are metres: x to the
right, y up from the ground, z forward (depth) from the camera.
"""
import cv2
import numpy as np

# Class ids (names and colours live in synthetic.py).
SKY, ROAD, SIDEWALK, BUILDING, VEGETATION, CAR, POLE, PEDESTRIAN = range(8)

ZNEAR = 0.5  # Points closer than this are clamped (no near-plane clipping).
ZFAR = 3000.0  # Depth of the drawn horizon.
_SHIFT = 4  # Sub-pixel bits for cv2 drawing: smooth small, distant shapes.
_ONE = float(1 << _SHIFT)
_MAX_PARTS = 65535  # Ids are uint16.

# Texture amplitudes per part kind: (low-frequency, blotchy, per-pixel), as
# relative brightness changes. Vegetation is strongly blotchy (leaves).
TEX = {
    "sky": (0.0, 0.0, 0.015),
    "asphalt": (0.07, 0.05, 0.08),
    "paving": (0.08, 0.06, 0.07),
    "marking": (0.10, 0.12, 0.06),
    "plaster": (0.10, 0.05, 0.05),
    "glass": (0.10, 0.06, 0.03),
    "leaves": (0.18, 0.40, 0.16),
    "bark": (0.05, 0.10, 0.10),
    "paint": (0.03, 0.02, 0.03),
    "rubber": (0.02, 0.03, 0.05),
    "metal": (0.04, 0.03, 0.04),
    "cloth": (0.03, 0.05, 0.06),
}

# Base colours (RGB). The same greys appear in road, facade, car and pole
# palettes on purpose: a colour look-up must not separate the classes.
PALETTES = {
    "asphalt": [(70, 70, 74), (90, 90, 92), (110, 108, 106), (128, 126, 124),
                (58, 60, 66), (140, 138, 132)],
    "paving": [(150, 148, 144), (128, 126, 124), (172, 164, 150),
               (160, 120, 110), (110, 108, 106), (185, 182, 176)],
    "facade": [(128, 126, 124), (150, 148, 144), (110, 108, 106),
               (190, 175, 150), (150, 82, 62), (220, 210, 185),
               (205, 205, 200), (215, 195, 140), (160, 172, 186),
               (90, 88, 86), (175, 140, 120), (120, 100, 80)],
    "glass": [(40, 48, 60), (60, 70, 84), (95, 110, 130), (30, 32, 36),
              (130, 145, 160), (80, 78, 70)],
    "leaves": [(60, 100, 40), (90, 122, 52), (48, 78, 42), (110, 120, 62),
               (140, 122, 52), (36, 56, 34), (75, 95, 60)],
    "bark": [(80, 60, 45), (100, 85, 70), (60, 50, 42)],
    "paint": [(222, 222, 220), (170, 172, 174), (110, 108, 106),
              (30, 30, 34), (150, 30, 30), (40, 60, 130), (50, 70, 55),
              (190, 175, 150), (128, 126, 124), (90, 88, 86)],
    "metal": [(128, 126, 124), (150, 148, 144), (60, 62, 64), (45, 70, 55),
              (90, 88, 86)],
    "cloth": [(30, 30, 34), (40, 48, 80), (60, 80, 120), (128, 126, 124),
              (210, 210, 205), (150, 40, 40), (190, 175, 150),
              (90, 70, 50), (60, 100, 40), (90, 88, 86)],
    "skin": [(230, 190, 160), (190, 140, 110), (120, 80, 60)],
}


def jitter(rng: np.random.Generator, palette: str, amount: float = 14.0):
  """A palette colour with a random per-channel offset (float RGB array)."""
  options = PALETTES[palette]
  r = rng.random(5).tolist()
  base = options[int(r[0] * len(options))]
  common = (2.0 * r[1] - 1.0) * amount  # Brightness, then a little tint.
  return np.array([min(255.0, max(0.0, b + common + (0.6 * t - 0.3) * amount))
                   for b, t in zip(base, r[2:])])


class Camera:
  """Pinhole camera at height `hc` looking along +z, with a small roll."""

  def __init__(self, f: float, cx: float, cy: float, hc: float, roll: float,
               height: int, width: int):
    self.f = f  # Focal length in pixels.
    self.cx, self.cy = cx, cy  # Vanishing point column, horizon row.
    self.hc = hc  # Camera height above the ground in metres.
    self.roll = roll  # Radians, about the image centre.
    self.height, self.width = height, width
    self._cos, self._sin = float(np.cos(roll)), float(np.sin(roll))

  def project(self, pts: np.ndarray) -> np.ndarray:
    """World points (..., 3) to pixel coordinates (..., 2) as (u, v)."""
    pts = np.asarray(pts, np.float64)
    inv = self.f / np.maximum(pts[..., 2], ZNEAR)
    ox, oy = 0.5 * self.width, 0.5 * self.height
    u = pts[..., 0] * inv + (self.cx - ox)
    v = (self.hc - pts[..., 1]) * inv + (self.cy - oy)
    out = np.empty(pts.shape[:-1] + (2,))
    out[..., 0] = self._cos * u - self._sin * v + ox
    out[..., 1] = self._sin * u + self._cos * v + oy
    return out

  def ppm(self, z: float) -> float:
    """Pixels per metre at depth z."""
    return self.f / max(z, ZNEAR)

  def visible(self, x: float, z: float, margin: float = 0.0) -> bool:
    """Whether the ground point (x, 0, z) falls inside the image columns."""
    u = self.project(np.array([x, 0.0, z]))[0]
    return -margin * self.width <= u <= (1 + margin) * self.width

  def on_screen(self, pts) -> bool:
    """Whether the bounding box of projected world points meets the image."""
    uv = self.project(pts).reshape(-1, 2)
    lo, hi = uv.min(0), uv.max(0)
    return (hi[0] >= 0 and lo[0] < self.width and hi[1] >= 0
            and lo[1] < self.height)


def quad_z(x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
  """A rectangle in the plane at depth z (facing the camera)."""
  return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


def quad_x(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
  """A rectangle in the plane x = const (parallel to the street)."""
  return np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]])


def quad_ground(x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
  """A rectangle on the ground plane."""
  return np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]])


_CIRCLE = np.stack([np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                    np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False))], -1)


def ellipse_x(x: float, yc: float, zc: float, r: float) -> np.ndarray:
  """A circle of radius r in the plane x = const (a wheel from the side)."""
  out = np.empty((len(_CIRCLE), 3))
  out[:, 0] = x
  out[:, 1:] = r * _CIRCLE + (yc, zc)
  return out


class Canvas:
  """An instance-id raster drawn back to front, plus per-part look-up tables.

  Part 0 is the sky. Each part has a class, a base colour (with its lighting
  baked in), texture amplitudes and whether ground shadows darken it.
  Drawing calls are recorded in painter's order and rasterised by `render()`
  after one projection of all their points (per-call numpy overhead would
  otherwise dominate). Ground shadows are drawn at once into `shadow`.
  """

  def __init__(self, height: int, width: int, cam: Camera):
    self.cam = cam
    self.ids = np.zeros((height, width), np.uint16)
    self.shadow = np.ones((height, width), np.float32)
    self.cls, self.rgb, self.tex, self.receives = [], [], [], []
    self._points, self._n, self._ops = [], 0, []
    self.has_shadows = False
    self.part(0, (0, 0, 0), "sky")

  def part(self, cls: int, rgb, tex: str, light: float = 1.0,
           receives: bool = False) -> int:
    """Registers a part; returns its id."""
    if len(self.cls) >= _MAX_PARTS:
      raise ValueError("synthetic scene: too many parts for a uint16 raster")
    self.cls.append(cls)
    self.rgb.append((rgb[0] * light, rgb[1] * light, rgb[2] * light))
    self.tex.append(TEX[tex])
    self.receives.append(float(receives))
    return len(self.cls) - 1

  def _record(self, kind: str, pid: int, pts: np.ndarray, size) -> None:
    n_items, n_pts = pts.shape[:2]
    self._points.append(pts.reshape(-1, 3))
    self._ops.append((kind, int(pid), self._n, n_items, n_pts, size))
    self._n += n_items * n_pts

  def fill_uv(self, poly: np.ndarray, pid: int) -> None:
    """Fills one pixel-space polygon (N, 2)."""
    self._ops.append(("uv", int(pid), 0, 0, 0,
                      np.round(np.asarray(poly) * _ONE).astype(np.int32)))

  def fill(self, polys, pid: int) -> None:
    """Fills world-space polygons (P, N, 3) or a single one (N, 3)."""
    polys = np.asarray(polys, np.float64)
    if polys.ndim == 2:
      polys = polys[None]
    if polys.size:
      self._record("poly", pid, polys, None)

  def lines(self, segments, pid: int, thickness_m: float, z: float) -> None:
    """Thick world-space segments (S, 2, 3) with a width in metres at z."""
    th = max(1, int(round(thickness_m * self.cam.ppm(z))))
    self._record("line", pid, np.asarray(segments, np.float64), th)

  def disc(self, centre, radius_m: float, pid: int) -> None:
    """A filled disc facing the camera (world centre, radius in metres)."""
    r = radius_m * self.cam.ppm(float(centre[2]))
    self._record("disc", pid, np.asarray(centre, np.float64).reshape(1, 1, 3),
                 max(int(round(r * _ONE)), int(_ONE) // 2))

  def render(self) -> np.ndarray:
    """Rasterises the recorded calls in order; returns the id raster."""
    if self._points:
      uv = self.cam.project(np.concatenate(self._points))
      uv = np.round(uv * _ONE).astype(np.int32)
    for kind, pid, start, n_items, n_pts, size in self._ops:
      if kind == "uv":
        cv2.fillPoly(self.ids, [size], pid, cv2.LINE_8, _SHIFT)
        continue
      pts = uv[start:start + n_items * n_pts]
      if kind == "poly":
        cv2.fillPoly(self.ids, list(pts.reshape(n_items, n_pts, 2)), pid,
                     cv2.LINE_8, _SHIFT)
      elif kind == "line":
        ends = pts.tolist()
        for k in range(n_items):
          cv2.line(self.ids, ends[2 * k], ends[2 * k + 1], pid, size,
                   cv2.LINE_8, _SHIFT)
      else:
        cv2.circle(self.ids, pts[0].tolist(), size, pid, -1, cv2.LINE_8,
                   _SHIFT)
    self._points, self._n, self._ops = [], 0, []
    return self.ids

  def darken(self, polys, factor: float) -> None:
    """Sets the ground-shadow factor inside world-space polygons (drawn at
    once: later shadows replace earlier ones where they overlap)."""
    polys = np.asarray(polys, np.float64)
    if polys.ndim == 2:
      polys = polys[None]
    pts = list(np.round(self.cam.project(polys) * _ONE).astype(np.int32))
    self.has_shadows = True
    cv2.fillPoly(self.shadow, pts, float(factor), cv2.LINE_8, _SHIFT)

  def shade_at(self, x: float, z: float) -> float:
    """The ground-shadow factor under world point (x, 0, z) (1 off-image)."""
    u, v = self.cam.project(np.array([x, 0.0, z]))
    h, w = self.shadow.shape
    if 0 <= u < w and 0 <= v < h:
      return float(self.shadow[int(v), int(u)])
    return 1.0

  def ground_uv(self) -> np.ndarray:
    """The image region below the (rolled) horizon as one pixel polygon."""
    cam = self.cam
    left, right = cam.project(np.array([[-1.0, 0, ZFAR], [1.0, 0, ZFAR]]))
    d = (right - left) / np.linalg.norm(right - left)
    big = 4.0 * (cam.width + cam.height)
    down = np.array([-d[1], d[0]])
    return np.stack([left - big * d, right + big * d,
                     right + big * d + big * down, left - big * d + big * down])


def smooth_noise(rng: np.random.Generator, height: int, width: int,
                 cell: float, out: np.ndarray | None = None) -> np.ndarray:
  """Unit-ish-variance noise with features about `cell` pixels across."""
  small = rng.standard_normal((max(2, int(height / cell) + 2),
                               max(2, int(width / cell) + 2)), np.float32)
  return cv2.resize(small, (width, height), dst=out,
                    interpolation=cv2.INTER_LINEAR)


def _sky(rng, cam: Camera, rows: int, width: int) -> np.ndarray:
  """Sky colours at a quarter of the resolution (rows/4, width/4, 3): a
  vertical gradient plus soft clouds (the sky is smooth; upsample it)."""
  mode = rng.integers(3)  # Clear, overcast, hazy evening.
  top, low, cloud = [
      ((60, 110, 190), (170, 195, 225), 240.0),
      ((150, 155, 165), (205, 205, 208), 215.0),
      ((95, 105, 150), (235, 190, 150), 225.0)][mode]
  top = np.asarray(top, np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
  low = np.asarray(low, np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
  r, w = max(2, rows // 4), max(2, width // 4)
  t = np.clip(np.linspace(0, rows / max(cam.cy, 1.0), r, dtype=np.float32),
              0, 1) ** np.float32(rng.uniform(0.5, 1.5))
  sky = top + (low - top) * t[:, None, None]
  field = smooth_noise(rng, r, w, w / rng.uniform(3.0, 10.0))
  cover = np.clip((field - rng.uniform(-0.6, 1.6)) * rng.uniform(0.7, 2.0),
                  0, 1) * np.float32(rng.uniform(0.5, 1.0))
  thick = np.float32(cloud) * (1.0 - 0.25 * np.clip(field, 0, 1))
  return sky + (thick[..., None] - sky) * cover[..., None]


def lookup(ids: np.ndarray, n_parts: int, fast: bool = True):
  """A function (table (n_parts,), out=None) -> table[ids] (written to out).

  With at most 256 parts (the usual case) it is an 8-bit cv2.LUT, several
  times faster than numpy's gather, which first converts ids to intp.
  """
  if fast and n_parts <= 256:
    ids8 = ids.astype(np.uint8)

    def look(table, out=None):
      pad = np.zeros(256, table.dtype)
      pad[:n_parts] = table
      return cv2.LUT(ids8, pad, dst=out)
  else:
    idx = ids.astype(np.intp)

    def look(table, out=None):
      return np.take(table, idx, out=out, mode="clip")
  return look


def compose(rng: np.random.Generator, cv: Canvas, look) -> np.ndarray:
  """The RGB image (H, W, 3) uint8 of a rendered canvas: part colours,
  texture, shadows, illumination, sky, blur, noise and tone; `look` is
  `lookup(cv.ids, len(cv.cls))`.

  Written around three reused full-size float buffers: fresh large arrays
  cost a page fault per 4 KiB, which dominated the time of a naive version.
  """
  h, w = cv.ids.shape
  gains = rng.uniform(0.9, 1.1, 3).astype(np.float32)  # White balance.
  rgb = np.clip(np.asarray(cv.rgb, np.float32) * gains, 0, 255).T.copy()
  tex = np.asarray(cv.tex, np.float32).T.copy()
  # Per-pixel noise: surface grain (per part) plus sensor luminance noise
  # (everywhere), both before the optical blur as in a real camera.
  tex[2] += np.float32(rng.uniform(0.02, 0.07))
  gain = look(tex[0], np.empty((h, w), np.float32))
  noise = smooth_noise(rng, h, w, h / 6.0)  # Stains, patches.
  gain *= noise
  tmp = look(tex[1], np.empty((h, w), np.float32))
  tmp *= smooth_noise(rng, h, w, max(2.0, h / 60.0), out=noise)  # Blotches.
  gain += tmp
  rng.random(out=noise, dtype=np.float32)  # Grain and sensor noise.
  noise -= 0.5
  noise *= 3.4  # Unit variance.
  tmp = look(tex[2], tmp)
  tmp *= noise
  gain += tmp
  gain += 1.0
  if cv.has_shadows:  # Ground shadows darken only the parts receiving them.
    tmp = look(np.asarray(cv.receives, np.float32), tmp)
    cv.shadow -= 1.0
    tmp *= cv.shadow
    tmp += 1.0
    gain *= tmp
  # Illumination gradient (sun side, sky light falling off).
  gx, gy = rng.uniform(-0.3, 0.3), rng.uniform(-0.15, 0.15)
  gain *= np.outer(1.0 + gy * np.linspace(-0.5, 0.5, h, dtype=np.float32),
                   1.0 + gx * np.linspace(-0.5, 0.5, w, dtype=np.float32),
                   out=tmp)
  # Colour planes one at a time: 1-D look-ups are much cheaper than (H, W, 3).
  sky_rows = np.flatnonzero((cv.ids == 0).any(1))
  if sky_rows.size:
    r = sky_rows[-1] + 1
    sky = _sky(rng, cv.cam, r, w) * gains
    is_sky = cv.ids[:r] == 0
  image = np.empty((h, w, 3), np.uint8)
  for c in range(3):
    plane = look(rgb[c], tmp)
    if sky_rows.size:
      up = cv2.resize(np.ascontiguousarray(sky[..., c]), (w, r),
                      dst=noise[:r], interpolation=cv2.INTER_LINEAR)
      np.copyto(plane[:r], up, where=is_sky)
    plane *= gain
    # Saturating cast (the rare negatives, noise on black, fold to black).
    image[..., c] = cv2.convertScaleAbs(plane)
  # The optical blur, in 8 bits, which is much cheaper than in float.
  image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.4, 0.9))
  # Camera tone curve: gamma, contrast, brightness as one 8-bit look-up.
  v = np.arange(256, dtype=np.float64) / 255.0
  v = v ** rng.uniform(0.8, 1.25)
  v = (v - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.1, 0.1)
  lut = np.clip(np.round(v * 255.0), 0, 255).astype(np.uint8)
  return cv2.LUT(image, lut, dst=image)
