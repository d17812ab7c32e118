"""Scene elements of the procedural street scenes: buildings, vegetation,
cars, poles and pedestrians, each drawn onto a `Canvas` in world metres.

Helper module of `synthetic.py`. Every draw function takes the generator as
its only source of randomness, so a scene is a pure function of its seed.
"""
import numpy as np

from jaxseg.data.synthetic_canvas import BUILDING
from jaxseg.data.synthetic_canvas import CAR
from jaxseg.data.synthetic_canvas import PEDESTRIAN
from jaxseg.data.synthetic_canvas import POLE
from jaxseg.data.synthetic_canvas import VEGETATION
from jaxseg.data.synthetic_canvas import ZNEAR
from jaxseg.data.synthetic_canvas import Canvas
from jaxseg.data.synthetic_canvas import ellipse_x
from jaxseg.data.synthetic_canvas import jitter
from jaxseg.data.synthetic_canvas import quad_ground
from jaxseg.data.synthetic_canvas import quad_x
from jaxseg.data.synthetic_canvas import quad_z

_ALONG = np.array([-0.5, -0.5, 0.5, 0.5])  # Rectangle corners, unit size.
_UP = np.array([-0.5, 0.5, 0.5, -0.5])


def _grid(a0: float, a1: float, pitch: float) -> np.ndarray:
  """Centres of as many `pitch`-wide cells as fit, centred in [a0, a1]."""
  n = int((a1 - a0) / pitch)
  if n < 1:
    return np.zeros(0)
  return 0.5 * (a0 + a1) + pitch * (np.arange(n) - 0.5 * (n - 1))


def _rects(a: np.ndarray, y: np.ndarray, w: float, h: float) -> np.ndarray:
  """Rectangles (len(y) * len(a), 4, 2) in facade coordinates (along, up)."""
  out = np.empty((len(y), len(a), 4, 2))
  out[..., 0] = a[None, :, None] + w * _ALONG
  out[..., 1] = y[:, None, None] + h * _UP
  return out.reshape(-1, 4, 2)


def facade_windows(rng, a0: float, a1: float, hb: float) -> tuple[
    np.ndarray, np.ndarray, bool]:
  """Windows of a facade spanning [a0, a1] along and hb up, in facade
  coordinates (N, 4, 2): (upper-floor windows, ground-floor openings,
  whether those openings are shop windows rather than doors)."""
  fh, pitch, fw, fhh, ground = rng.uniform((2.8, 2.2, 0.35, 0.4, 3.2),
                                           (3.8, 4.2, 0.65, 0.62, 4.5))
  y = ground + fh * (np.arange(int((hb - ground - 0.8) / fh)) + 0.55)
  if rng.random() < 0.2:  # Office block: one ribbon window per floor.
    upper = _rects(np.array([0.5 * (a0 + a1)]), y, a1 - a0 - 1.0, fh * fhh)
  else:
    upper = _rects(_grid(a0, a1, pitch), y, pitch * fw, fh * fhh)
  shops = rng.random() < 0.5
  if shops:
    pitch = rng.uniform(3.0, 6.0)
    lower = _rects(_grid(a0, a1, pitch), np.array([0.5 * ground]),
                   0.8 * pitch, ground - 1.0)
  else:  # A few doors.
    a = _grid(a0, a1, pitch)
    lower = _rects(a[rng.random(a.size) < 0.35], np.array([1.1]), 1.2, 2.2)
  return upper, lower, shops


def _on_facade_x(rects: np.ndarray, x: float) -> np.ndarray:
  """Facade rectangles in the plane x = const to world quads (N, 4, 3)."""
  out = np.empty(rects.shape[:2] + (3,))
  out[..., 0], out[..., 1], out[..., 2] = x, rects[..., 1], rects[..., 0]
  return out


def _on_facade_z(rects: np.ndarray, z: float) -> np.ndarray:
  """Facade rectangles in the plane z = const to world quads (N, 4, 3)."""
  out = np.empty(rects.shape[:2] + (3,))
  out[..., 0], out[..., 1], out[..., 2] = rects[..., 0], rects[..., 1], z
  return out


def _glass_parts(cv: Canvas, rng, light: float) -> list[int]:
  """Three glass tones and their sunlit reflections, shared by a row."""
  tones = [jitter(rng, "glass", 10) for _ in range(3)]
  bright = [np.clip(t * rng.uniform(1.4, 2.2), 0, 255) for t in tones]
  return [cv.part(BUILDING, c, "glass", light) for c in tones + bright]


def draw_building_row(cv: Canvas, rng, x: float, side: int, z_end: float,
                      light: float) -> list[tuple[float, float, float]]:
  """Buildings along one side of the street, facade in the plane x, the
  buildings extending to side * infinity; returns their (z0, z1, height).

  Walls go far to near (painter's order); windows are batched per glass
  tone afterwards, which is exact because facades in one plane never
  overlap in the image and end walls project outside farther facades.
  """
  rows = []
  z = rng.uniform(-15.0, 2.0)
  while z < z_end:
    if rng.random() < 0.12:  # A gap (side street, courtyard).
      z += rng.uniform(4.0, 14.0)
      continue
    # Distant facades are long: detail there would be sub-pixel anyway.
    length = rng.uniform(8.0, 30.0) * max(1.0, z / 40.0)
    rows.append((z, min(z + length, z_end), rng.uniform(5.0, 24.0)))
    z += length
  glass = _glass_parts(cv, rng, light)
  door = cv.part(BUILDING, jitter(rng, "bark", 20), "glass", light)
  windows = {pid: [] for pid in glass + [door]}
  for z0, z1, hb in reversed(rows):
    z0c = max(z0, ZNEAR)
    if z1 < ZNEAR + 0.5:
      continue
    wall = quad_x(x, 0, hb, z0c, z1)
    end = quad_z(x, x + side * 25.0, 0, hb, z0)
    if not cv.cam.on_screen(np.stack([wall, end])):
      continue
    colour = jitter(rng, "facade", 18)
    if z0 > ZNEAR:  # The end wall facing the camera, seen across a gap.
      cv.fill(end, cv.part(BUILDING, colour, "plaster", light * 0.7))
    cv.fill(wall, cv.part(BUILDING, colour, "plaster", light))
    if rng.random() < 0.6:  # Cornice / roof edge.
      tone = rng.choice([0.6, 0.8, 1.2])
      cv.fill(quad_x(x, hb - rng.uniform(0.3, 0.8), hb, z0c, z1),
              cv.part(BUILDING, colour * tone, "plaster", light))
    if cv.cam.ppm(z1) < 0.5:  # Windows under 1.5 pixels at the far end.
      continue
    upper, lower, shops = facade_windows(rng, z0c + 0.3, z1, hb)
    main = int(rng.integers(3))
    bright = rng.random(len(upper)) < rng.uniform(0.0, 0.5)
    windows[glass[main]].append(_on_facade_x(upper[~bright], x))
    windows[glass[main + 3]].append(_on_facade_x(upper[bright], x))
    windows[glass[main] if shops else door].append(
        _on_facade_x(lower, x))
  for pid, quads in windows.items():
    if quads:
      cv.fill(np.concatenate(quads), pid)
  return rows


def draw_far_blocks(cv: Canvas, rng, z_end: float, light: float) -> None:
  """A row of buildings across the end of the street, facing the camera."""
  blocks = []
  x = rng.uniform(-220.0, -120.0)
  while x < 220.0:
    width = rng.uniform(10.0, 35.0)
    if rng.random() > 0.1:
      blocks.append((z_end + rng.uniform(0.0, 20.0), x, x + width,
                     rng.uniform(8.0, 40.0)))
    x += width
  blocks.sort(reverse=True)
  glass = _glass_parts(cv, rng, light * 0.9)
  for z, x0, x1, hb in blocks:  # Far to near: blocks differ in depth.
    wall = quad_z(x0, x1, 0, hb, z)
    if not cv.cam.on_screen(wall):
      continue
    cv.fill(wall, cv.part(BUILDING, jitter(rng, "facade", 18), "plaster",
                          light * 0.9))
    upper, lower, _ = facade_windows(rng, x0 + 0.5, x1 - 0.5, hb)
    cv.fill(_on_facade_z(np.concatenate([upper, lower]), z),
            glass[rng.integers(len(glass))])


def _bumpy(rng, n: int, low: float, high: float) -> np.ndarray:
  """A smooth random profile in [low, high] (tree-line silhouettes)."""
  t = np.linspace(0, 1, n)
  y = np.zeros(n)
  for k in (3, 7, 17, 41):
    y += np.sin(2 * np.pi * (k * t + rng.random())) / np.sqrt(k)
  y += 0.25 * rng.standard_normal(n)
  y = (y - y.min()) / max(np.ptp(y), 1e-6)
  return low + (high - low) * y


def draw_tree_line(cv: Canvas, rng, along_x: bool, pos: float, a0: float,
                   a1: float, light: float) -> None:
  """A continuous wall of foliage: across the street (plane z = pos) when
  along_x, else along the street (plane x = pos) from depth a0 to a1."""
  n = 90
  top = _bumpy(rng, n, rng.uniform(3.0, 7.0), rng.uniform(9.0, 16.0))
  if along_x:
    a = np.linspace(a0, a1, n)
    pts = np.stack([a, top, np.full(n, pos)], -1)
    base = np.array([[a1, 0, pos], [a0, 0, pos]])
  else:
    a = np.geomspace(max(a0, ZNEAR + 0.5), a1, n)
    pts = np.stack([np.full(n, pos), top, a], -1)
    base = np.array([[pos, 0, a1], [pos, 0, a[0]]])
  colour = jitter(rng, "leaves", 12)
  cv.fill(np.concatenate([pts, base]),
          cv.part(VEGETATION, colour, "leaves", light * rng.uniform(0.7, 1.0)))


def draw_hedge(cv: Canvas, rng, x: float, z0: float, z1: float,
               light: float) -> None:
  """A low hedge in the plane x along the street."""
  h = rng.uniform(0.7, 1.4)
  cv.fill(quad_x(x, 0, h, max(z0, ZNEAR), z1),
          cv.part(VEGETATION, jitter(rng, "leaves", 12), "leaves", light))


def draw_tree(cv: Canvas, rng, x: float, z: float, shade: float) -> None:
  """A trunk and a crown of overlapping discs (all vegetation)."""
  h_trunk, r = rng.uniform(1.8, 4.0), rng.uniform(1.3, 3.5)
  cv.fill(quad_z(x - 0.14, x + 0.14, 0, h_trunk + 0.6 * r, z),
          cv.part(VEGETATION, jitter(rng, "bark", 12), "bark", shade))
  colour = jitter(rng, "leaves", 12)
  dark = cv.part(VEGETATION, colour, "leaves", shade * 0.7)
  bright = cv.part(VEGETATION, colour, "leaves", shade * 1.05)
  n = rng.integers(5, 10)
  dx = rng.uniform(-0.7, 0.7, n) * r
  dy = rng.uniform(-0.6, 0.6, n) * r
  rad = rng.uniform(0.45, 0.75, n) * r
  for k in np.argsort(dy):  # Lower (shaded) clumps first.
    cv.disc((x + dx[k], h_trunk + r + dy[k], z), rad[k],
            bright if dy[k] > 0 else dark)


def draw_pole(cv: Canvas, rng, x: float, z: float, toward: int,
              shade: float) -> None:
  """A pole with a street lamp, a sign or a traffic light (all pole)."""
  h, r = rng.uniform(3.5, 9.0), rng.uniform(0.05, 0.13)
  pid = cv.part(POLE, jitter(rng, "metal", 12), "metal", shade)
  cv.fill(quad_z(x - r, x + r, 0, h, z), pid)
  kind = rng.random()
  if kind < 0.4:  # Street lamp: an arm over the road and a head.
    xe = x + toward * rng.uniform(0.8, 2.5)
    cv.lines([[[x, h - 0.3, z], [xe, h + 0.2, z]]], pid, 1.5 * r, z)
    cv.fill(quad_z(xe - 0.35, xe + 0.35, h + 0.05, h + 0.3, z), pid)
  elif kind < 0.75:  # Traffic sign.
    colour = [(200, 30, 30), (30, 70, 160), (230, 230, 225),
              (230, 190, 30)][rng.integers(4)]
    sign = cv.part(POLE, colour, "paint", shade)
    ys, rs = min(h - 0.4, rng.uniform(2.2, 3.0)), rng.uniform(0.3, 0.45)
    if rng.random() < 0.5:
      cv.disc((x, ys, z - 0.05), rs, sign)
    else:
      cv.fill(quad_z(x - rs, x + rs, ys - rs, ys + rs, z - 0.05), sign)
  elif kind < 0.9:  # Traffic light.
    y1 = h
    box = cv.part(POLE, (30, 32, 34), "metal", shade)
    cv.fill(quad_z(x - 0.18, x + 0.18, y1 - 1.0, y1, z - 0.05), box)
    lit = rng.integers(3)
    for k, col in enumerate([(220, 40, 30), (230, 170, 30), (60, 200, 90)]):
      dim = 1.0 if k == lit else 0.3
      cv.disc((x, y1 - 0.2 - 0.3 * k, z - 0.1), 0.1,
              cv.part(POLE, col, "paint", dim))


def draw_pedestrian(cv: Canvas, rng, x: float, z: float, shade: float) -> None:
  """An articulated walking figure: legs, torso, arms, head (pedestrian)."""
  h = rng.uniform(1.5, 1.95)
  crossing = rng.random() < 0.4  # Walking across the view: legs swing wide.
  phase = rng.uniform(0, 2 * np.pi)
  part = lambda pal, tex: cv.part(PEDESTRIAN, jitter(rng, pal, 12), tex, shade)
  legs, shirt, skin = part("cloth", "cloth"), part("cloth", "cloth"), part(
      "skin", "cloth")
  hair = cv.part(PEDESTRIAN, jitter(rng, "bark", 20) * rng.uniform(0.3, 1.0),
                 "cloth", shade)
  p = lambda a, y: [x + a * h, y * h, z]
  sw = np.sin(phase)
  if crossing:
    direction = rng.choice([-1.0, 1.0])
    hip, shoulder = (0.0, 0.52), (0.0, 0.8)
    limbs_leg, limbs_arm = [], []
    for sgn in (1.0, -1.0):
      th = 0.45 * sgn * sw
      bend = 0.4 * max(0.0, -sgn * np.cos(phase))
      knee = (hip[0] + 0.25 * np.sin(th) * direction, 0.52 - 0.25 * np.cos(th))
      foot = (knee[0] + 0.25 * np.sin(th - bend) * direction,
              knee[1] - 0.25 * np.cos(th - bend))
      limbs_leg += [[p(*hip), p(*knee)], [p(*knee), p(*foot)]]
      ta = -0.5 * sgn * sw
      elbow = (0.17 * np.sin(ta) * direction, 0.8 - 0.17 * np.cos(ta))
      hand = (elbow[0] + 0.16 * np.sin(ta + 0.3) * direction,
              elbow[1] - 0.16 * np.cos(ta + 0.3))
      limbs_arm += [[p(*shoulder), p(*elbow)], [p(*elbow), p(*hand)]]
    half_s, half_h = 0.065, 0.06
  else:
    lift = 0.03 * sw
    limbs_leg = [[p(s * 0.045, 0.52), p(s * 0.05, 0.27 + max(0, s * lift))]
                 for s in (-1, 1)]
    limbs_leg += [[p(s * 0.05, 0.27 + max(0, s * lift)),
                   p(s * 0.055, 0.02 + max(0, s * lift))] for s in (-1, 1)]
    limbs_arm = [[p(s * 0.1, 0.79), p(s * 0.125, 0.62)] for s in (-1, 1)]
    limbs_arm += [[p(s * 0.125, 0.62), p(s * 0.125, 0.46)] for s in (-1, 1)]
    half_s, half_h = 0.11, 0.09
  cv.lines(limbs_leg, legs, 0.085 * h, z)
  coat = 0.33 if rng.random() < 0.2 else 0.5  # Long coats cover the thighs.
  cv.fill([p(-half_h, coat), p(half_h, coat), p(half_s, 0.82),
           p(-half_s, 0.82)], shirt)
  cv.lines(limbs_arm, shirt, 0.06 * h, z)
  cv.disc(p(0, 0.925), 0.067 * h, hair)
  if rng.random() < 0.6:  # Face visible (walking towards the camera).
    cv.disc(p(0, 0.905), 0.057 * h, skin)
  if rng.random() < 0.2:  # A bag in one hand.
    end = limbs_arm[-1][1]
    cv.fill(quad_z(end[0] - 0.12, end[0] + 0.12, end[1] - 0.3, end[1],
                   z - 0.05), part("cloth", "cloth"))


def draw_car(cv: Canvas, rng, xc: float, z0: float, oncoming: bool,
             shade: float) -> float:
  """A car or van at lateral centre xc, rear at depth z0; returns its far z."""
  van = rng.random() < 0.15
  w = rng.uniform(1.9, 2.1) if van else rng.uniform(1.65, 1.95)
  length = rng.uniform(4.8, 5.8) if van else rng.uniform(3.8, 4.9)
  hb = rng.uniform(0.8, 1.0)
  ht = rng.uniform(1.9, 2.4) if van else rng.uniform(1.35, 1.6)
  z1 = z0 + length
  xl, xr = xc - 0.5 * w, xc + 0.5 * w
  paint = jitter(rng, "paint", 10)
  rear = cv.part(CAR, paint, "paint", shade * 0.92)
  side = cv.part(CAR, paint, "paint", shade * 0.75)
  glass = cv.part(CAR, jitter(rng, "glass", 10), "glass", shade)
  tyre = cv.part(CAR, (28, 28, 30), "rubber", shade)
  if van:
    cz0b, cz0t, cz1t, cz1b = z0 + 0.02, z0 + 0.1, z1 - 0.9, z1 - 0.6
  else:
    cz0b = z0 + rng.uniform(0.4, 0.7)
    cz0t = cz0b + rng.uniform(0.35, 0.6)
    cz1t, cz1b = z1 - rng.uniform(1.3, 1.7), z1 - rng.uniform(0.8, 1.1)
  ins = 0.08
  cv.darken(quad_ground(xl - 0.15, xr + 0.15, z0 - 0.3, z1 + 0.2),
            rng.uniform(0.3, 0.55))
  # Top surfaces first (the camera is always above the bonnet and boot).
  top = cv.part(CAR, paint, "paint", shade * 1.05)
  cv.fill([[xl, hb, z0], [xr, hb, z0], [xr, hb, z1], [xl, hb, z1]], top)
  ri = ins + 0.12  # The roof is as narrow as the top of the rear window.
  cv.fill([[xl + ri, ht, cz0t], [xr - ri, ht, cz0t], [xr - ri, ht, cz1t],
           [xl + ri, ht, cz1t]], top)
  xs = xl if xl > 0.3 else (xr if xr < -0.3 else None)
  if xs is not None:  # The side facing the camera.
    inward = 1.0 if xs == xl else -1.0
    cv.fill(quad_x(xs, 0.25, hb, z0, z1), side)
    # The cabin side leans in, from the body edge (ins) to the roof edge (ri).
    xb, xt = xs + inward * ins, xs + inward * ri
    cabin = np.array([[xb, hb, cz0b], [xt, ht, cz0t], [xt, ht, cz1t],
                      [xb, hb, cz1b]])
    cv.fill(cabin, side)
    centre = cabin.mean(0)
    cv.fill(centre + (cabin - centre) * [1, 0.78, 0.86], glass)
    rim = cv.part(CAR, (150, 150, 152), "metal", shade)
    for zw in (z0 + 0.8, z1 - 0.85):
      cv.fill(ellipse_x(xs, 0.33, zw, 0.33), tyre)
      cv.fill(ellipse_x(xs, 0.33, zw, 0.18), rim)
  cv.fill([quad_z(xl + 0.1, xl + 0.38, 0, 0.35, z0 + 0.7),
           quad_z(xr - 0.38, xr - 0.1, 0, 0.35, z0 + 0.7)], tyre)
  back = np.array([[xl + ins, hb, cz0b], [xr - ins, hb, cz0b],
                   [xr - ri, ht, cz0t], [xl + ri, ht, cz0t]])
  cv.fill(back, rear)
  centre = back.mean(0)
  cv.fill(centre + (back - centre) * [0.85, 0.75, 0.75], glass)
  cv.fill(quad_z(xl, xr, 0.25, hb, z0), rear)
  cv.fill(quad_z(xl, xr, 0.25, 0.42, z0),
          cv.part(CAR, paint * rng.uniform(0.3, 0.7), "rubber", shade))
  lamp = (235, 235, 200) if oncoming else (200, 30, 25)
  lid = cv.part(CAR, lamp, "paint", max(shade, 0.8))
  cv.fill([quad_z(xl + 0.05, xl + 0.35, hb - 0.25, hb - 0.08, z0),
           quad_z(xr - 0.35, xr - 0.05, hb - 0.25, hb - 0.08, z0)], lid)
  cv.fill(quad_z(xc - 0.26, xc + 0.26, 0.45, 0.57, z0),
          cv.part(CAR, (215, 215, 205), "paint", shade))
  return z1
