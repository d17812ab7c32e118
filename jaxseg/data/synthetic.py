"""Procedural street scenes: the embedded demo dataset (no files needed).

`render_scene(seed, height, width)` draws a pinhole-camera view of a straight
street: a perspective road with lane markings, sidewalks, building facades
with windows, vegetation, sky with clouds, and cars, poles and pedestrians
placed in 3-D and painted back to front. Every quantity is in metres and
projected, so object sizes follow perspective and any (height, width) works.

Drawing happens on an instance raster: each painted part (a facade, a car's
windows, a pedestrian's shirt, ...) gets an id with its class, colour and
texture amplitudes in look-up tables, so the image is composed in a few
whole-image numpy operations at the end. Colour distributions deliberately
overlap across classes (grey facades, grey road, grey cars, grey poles),
and texture, cast shadows, illumination gradients, tone jitter and sensor
noise keep a colour look-up from solving the task.

Pixels just outside car, pole and pedestrian silhouettes are labelled 255
(ignore): the image there mixes object and background after the optical blur.
"""
import operator
from typing import Any, SupportsIndex

import cv2
import numpy as np

from jaxseg.data import synthetic_objects as objs
from jaxseg.data.synthetic_canvas import BUILDING
from jaxseg.data.synthetic_canvas import CAR
from jaxseg.data.synthetic_canvas import PEDESTRIAN
from jaxseg.data.synthetic_canvas import POLE
from jaxseg.data.synthetic_canvas import ROAD
from jaxseg.data.synthetic_canvas import SIDEWALK
from jaxseg.data.synthetic_canvas import SKY
from jaxseg.data.synthetic_canvas import VEGETATION
from jaxseg.data.synthetic_canvas import ZFAR
from jaxseg.data.synthetic_canvas import ZNEAR
from jaxseg.data.synthetic_canvas import Camera
from jaxseg.data.synthetic_canvas import Canvas
from jaxseg.data.synthetic_canvas import compose
from jaxseg.data.synthetic_canvas import jitter
from jaxseg.data.synthetic_canvas import lookup

__all__ = [
    "BUILDING", "CAR", "CLASS_COLORS", "CLASS_NAMES", "IGNORE_LABEL",
    "NUM_CLASSES", "PEDESTRIAN", "POLE", "ROAD", "SIDEWALK", "SKY",
    "SyntheticStreetScenes", "VEGETATION", "render_scene"]

NUM_CLASSES = 8
IGNORE_LABEL = 255
CLASS_NAMES = ("sky", "road", "sidewalk", "building", "vegetation", "car",
               "pole", "pedestrian")
# Cityscapes colours of the same classes (person for pedestrian).
CLASS_COLORS = np.array(
    [[70, 130, 180], [128, 64, 128], [244, 35, 232], [70, 70, 70],
     [107, 142, 35], [0, 0, 142], [153, 153, 153], [220, 20, 60]], np.uint8)
CLASS_COLORS.setflags(write=False)

_MIN_SIZE = 16


def _check_size(where: str, height: int, width: int) -> tuple[int, int]:
  height, width = operator.index(height), operator.index(width)
  if height < _MIN_SIZE or width < _MIN_SIZE:
    raise ValueError(f"{where}: height and width must be >= {_MIN_SIZE}, "
                     f"got height={height}, width={width}")
  return height, width


def _check_seed(where: str, seed: int) -> int:
  seed = operator.index(seed)
  if seed < 0:
    raise ValueError(
        f"{where}: seed must be a non-negative integer, got {seed}")
  return seed


def _ground_quads(x0, x1, z0, z1) -> np.ndarray:
  """Ground rectangles (N, 4, 3) from broadcast corner coordinates."""
  n = max(np.size(x0), np.size(x1), np.size(z0), np.size(z1))
  out = np.zeros((n, 4, 3))
  out[:, 0, 0] = out[:, 3, 0] = x0
  out[:, 1, 0] = out[:, 2, 0] = x1
  out[:, 0, 2] = out[:, 1, 2] = z0
  out[:, 2, 2] = out[:, 3, 2] = z1
  return out


class _Layout:
  """The street cross-section: lanes, sidewalks, facades, far background."""

  def __init__(self, rng: np.random.Generator):
    self.lane_w = rng.uniform(2.8, 3.6)
    self.n_lanes = int(rng.integers(2, 5))
    cam_lane = int(rng.integers(self.n_lanes))  # The camera drives in it.
    left = -(cam_lane + rng.uniform(0.3, 0.7)) * self.lane_w
    self.road = (left, left + self.n_lanes * self.lane_w)
    has_walk = rng.random(2) < 0.8
    if not has_walk.any():  # At least one sidewalk per scene.
      has_walk[rng.integers(2)] = True
    self.walk = np.where(has_walk, rng.uniform(1.8, 5.0, 2), 0.0)
    # A grass verge; always one where there is no sidewalk, so that facades
    # never stand right on the road edge.
    verge = np.where((rng.random(2) < 0.3) | ~has_walk,
                     rng.uniform(0.8, 4.0, 2), 0.0)
    self.built = rng.random(2) < 0.85
    self.facade = (self.road[0] - self.walk[0] - verge[0],
                   self.road[1] + self.walk[1] + verge[1])
    self.z_end = rng.uniform(50.0, 250.0)
    self.far = ("blocks", "trees", "open")[rng.choice(3, p=[0.5, 0.3, 0.2])]
    self.sunny = rng.random() < 0.6
    self.sun_side = int(rng.choice([-1, 1]))

  def edge(self, side: int) -> float:
    return self.road[0] if side < 0 else self.road[1]

  def walk_w(self, side: int) -> float:
    return float(self.walk[0 if side < 0 else 1])


def _draw_ground(cv: Canvas, rng, lay: _Layout) -> None:
  """Grass everywhere below the horizon, then sidewalks, road and markings."""
  cv.fill_uv(cv.ground_uv(),
             cv.part(VEGETATION, jitter(rng, "leaves"), "leaves", 0.9, True))
  for side in (-1, 1):
    sw, edge = lay.walk_w(side), lay.edge(side)
    if sw <= 0:
      continue
    colour = jitter(rng, "paving")
    outer = edge + side * sw
    cv.fill(_ground_quads(edge, outer, ZNEAR, ZFAR),
            cv.part(SIDEWALK, colour, "paving", 1.0, True))
    step = rng.uniform(0.8, 2.5)  # Paving joints, visible only near by.
    zs = np.arange(ZNEAR + rng.uniform(0, step), 40.0, step)
    cv.fill(_ground_quads(edge, outer, zs, zs + 0.06),
            cv.part(SIDEWALK, colour, "paving", rng.uniform(0.6, 0.85), True))
    cv.fill(_ground_quads(edge, edge + side * 0.25, ZNEAR, ZFAR),  # Kerb.
            cv.part(SIDEWALK, colour, "paving", rng.uniform(0.7, 1.3), True))
  asphalt = jitter(rng, "asphalt")
  x0, x1 = lay.road
  cv.fill(_ground_quads(x0, x1, ZNEAR, ZFAR),
          cv.part(ROAD, asphalt, "asphalt", 1.0, True))
  n = rng.integers(0, 5)  # Repaired patches of a different tone.
  if n:
    px = rng.uniform(x0, x1 - 1.0, n)
    pz = rng.uniform(2.0, 40.0, n)
    cv.fill(_ground_quads(px, px + rng.uniform(1, 4, n), pz,
                          pz + rng.uniform(2, 12, n)),
            cv.part(ROAD, asphalt, "asphalt", rng.uniform(0.75, 1.25), True))
  white = cv.part(ROAD, jitter(rng, "paving", 8) * [1.3, 1.3, 1.3], "marking",
                  1.0, True)
  quads = []
  period, dash = rng.uniform(8.0, 13.0), rng.uniform(2.0, 4.0)
  zs = np.arange(ZNEAR + rng.uniform(0, period), 200.0, period)
  for k in range(1, lay.n_lanes):
    xm = x0 + k * lay.lane_w
    quads.append(_ground_quads(xm - 0.07, xm + 0.07, zs, zs + dash))
  if rng.random() < 0.5:  # Solid edge lines.
    quads.append(_ground_quads([x0 + 0.25, x1 - 0.4], [x0 + 0.4, x1 - 0.25],
                               ZNEAR, ZFAR))
  if rng.random() < 0.25:  # Zebra crossing.
    zc = rng.uniform(5.0, 25.0)
    xs = np.arange(x0 + 0.3, x1 - 0.5, 1.0)
    quads.append(_ground_quads(xs, xs + 0.5, zc, zc + rng.uniform(2.5, 4.0)))
  if quads:
    cv.fill(np.concatenate(quads), white)


def _draw_background(cv: Canvas, rng, lay: _Layout) -> None:
  """Far background, facades (or parks) on both sides, and their shadows."""
  light = rng.uniform(0.85, 1.1)
  if lay.far == "blocks":
    objs.draw_far_blocks(cv, rng, lay.z_end, light)
  elif lay.far == "trees":
    objs.draw_tree_line(cv, rng, True, lay.z_end, -300.0, 300.0, light)
  for side in (-1, 1):
    x = lay.facade[0 if side < 0 else 1]
    lit = light * (0.7 if (lay.sunny and side == lay.sun_side) else 1.0)
    if lay.built[0 if side < 0 else 1]:
      rows = objs.draw_building_row(cv, rng, x, side, lay.z_end, lit)
      if rng.random() < 0.2:
        objs.draw_hedge(cv, rng, x - side * 0.5, 0.0, lay.z_end, lit)
      if lay.sunny and side == lay.sun_side:
        k, dark = rng.uniform(0.25, 1.0), rng.uniform(0.45, 0.7)
        for z0, z1, hb in rows:
          cv.darken(_ground_quads(x, x - side * hb * k, max(z0, ZNEAR), z1),
                    dark)
    else:
      objs.draw_tree_line(cv, rng, False, x + side * rng.uniform(6.0, 25.0),
                          ZNEAR, lay.z_end, lit)


def _place_objects(cv: Canvas, rng, lay: _Layout) -> list:
  """Samples cars, pedestrians, poles and trees with disjoint footprints;
  returns (depth, draw function, x, z, extra args) to paint far to near."""
  occupied, items = [], []
  cam = cv.cam

  def claim(x0, x1, z0, z1) -> bool:
    for a0, a1, b0, b1 in occupied:
      if x0 < a1 and a0 < x1 and z0 < b1 and b0 < z1:
        return False
    occupied.append((x0, x1, z0, z1))
    return True

  x0, x1 = lay.road
  lanes = x0 + lay.lane_w * (np.arange(lay.n_lanes) + 0.5)
  parking = [lay.edge(s) - s * 1.1 for s in (-1, 1)
             if lay.walk_w(s) > 0 and rng.random() < 0.6]
  n_cars = int(rng.integers(1, 10))
  for _ in range(6 * n_cars):
    if len([i for i in items if i[1] is objs.draw_car]) >= n_cars:
      break
    if parking and rng.random() < 0.45:
      x, z = parking[rng.integers(len(parking))], rng.uniform(3.0, 60.0)
    else:
      lane = rng.integers(lay.n_lanes)
      x = lanes[lane] + rng.uniform(-0.3, 0.3)
      z = rng.uniform(7.0 if abs(x) < 1.5 else 4.0, 90.0)
    if cam.visible(x, z, 0.1) and claim(x - 1.1, x + 1.1, z - 0.5, z + 6.0):
      items.append((z, objs.draw_car, x, z, (bool(x < -0.6 * lay.lane_w),)))
  walk_sides = [s for s in (-1, 1) if lay.walk_w(s) >= 1.0]

  def place(kind, count, sample, size, tries=8):
    placed = 0
    for _ in range(tries * count):
      if placed >= count:
        break
      sampled = sample()
      if sampled is None:
        continue
      x, z, extra = sampled
      if cam.visible(x, z, 0.0) and claim(x - size, x + size, z - size,
                                          z + size):
        items.append((z, kind, x, z, extra))
        placed += 1

  def pedestrian():
    if rng.random() < 0.1:  # Crossing the road.
      return rng.uniform(x0, x1), rng.uniform(5.0, 30.0), ()
    s = walk_sides[rng.integers(len(walk_sides))]
    sw = lay.walk_w(s)
    return lay.edge(s) + s * rng.uniform(0.4, sw - 0.4), rng.uniform(
        2.5, 45.0), ()

  def room(s: int) -> float:
    """Free width between the road edge and the facade (inf for a park)."""
    i = 0 if s < 0 else 1
    return abs(lay.facade[i] - lay.edge(s)) if lay.built[i] else np.inf

  def pole():
    s = int(rng.choice([-1, 1]))
    if room(s) < 0.8:
      return None
    far_side = lay.walk_w(s) > 1.5 and rng.random() < 0.3
    off = lay.walk_w(s) - 0.3 if far_side else 0.4  # Else at the kerb.
    return lay.edge(s) + s * off, rng.uniform(4.0, 70.0), (-s,)

  def tree():
    s = int(rng.choice([-1, 1]))
    if room(s) < 2.0:
      return None
    lo = lay.walk_w(s) - 0.8 if lay.walk_w(s) > 2.5 else lay.walk_w(s) + 0.5
    hi = min(room(s) - 0.6, lo + 15.0)
    if hi < lo:
      return None
    return lay.edge(s) + s * rng.uniform(lo, hi), rng.uniform(4.0, 90.0), ()

  place(objs.draw_pedestrian, int(rng.integers(1, 9)), pedestrian, 0.35)
  place(objs.draw_pole, int(rng.integers(1, 6)), pole, 0.3)
  n_trees = int(rng.integers(0, 5)) + 5 * int((~lay.built).sum())
  place(objs.draw_tree, n_trees, tree, 0.8, tries=3)
  items.sort(key=lambda item: -item[0])
  return items


def render_scene(seed: int, height: int, width: int, *,
                 ignore_borders: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Renders one street scene, a pure function of (seed, height, width).

  Args:
    seed: non-negative integer seed.
    height: image height in pixels (>= 16).
    width: image width in pixels (>= 16).
    ignore_borders: label the 1-pixel ring just outside cars, poles and
      pedestrians 255 (ignore), where the blurred image mixes two classes.

  Returns:
    (image uint8 (H, W, 3) RGB, labels uint8 (H, W) in {0..7, 255}).
  """
  seed = _check_seed("render_scene", seed)
  height, width = _check_size("render_scene", height, width)
  rng = np.random.default_rng(seed)
  cam = Camera(f=width * rng.uniform(0.7, 1.1),
               cx=width * rng.uniform(0.3, 0.7),
               cy=height * rng.uniform(0.33, 0.52),
               hc=rng.uniform(1.2, 1.9),
               roll=np.deg2rad(rng.uniform(-2.5, 2.5)),
               height=height, width=width)
  cv = Canvas(height, width, cam)
  lay = _Layout(rng)
  _draw_ground(cv, rng, lay)
  _draw_background(cv, rng, lay)
  for _, draw, x, z, extra in _place_objects(cv, rng, lay):
    draw(cv, rng, x, z, *extra, cv.shade_at(x, z))
  cv.render()
  look = lookup(cv.ids, len(cv.cls))
  image = compose(rng, cv, look)
  labels = look(np.asarray(cv.cls, np.uint8))
  if ignore_borders:
    things = (labels >= CAR).view(np.uint8)
    ring = cv2.dilate(things, np.ones((3, 3), np.uint8)) > things
    labels[ring] = IGNORE_LABEL
  return image, labels


class SyntheticStreetScenes:
  """A grain random-access data source of procedural street scenes.

  Item i is a pure function of (seed, i); train and validation splits use
  different seeds. Records are
  {'image': uint8 (H, W, 3), 'label': uint8 (H, W), 'name': 'synthetic_%06d'}.
  """

  def __init__(self, num_images: int, height: int, width: int, seed: int = 0,
               *, ignore_borders: bool = True):
    where = "SyntheticStreetScenes"
    self.num_images = operator.index(num_images)
    if self.num_images < 0:
      raise ValueError(f"{where}: num_images must be >= 0, got {num_images}")
    self.height, self.width = _check_size(where, height, width)
    self.seed = _check_seed(where, seed)
    self.ignore_borders = ignore_borders

  def __len__(self) -> int:
    return self.num_images

  def scene_seed(self, index: int) -> int:
    """The render_scene seed of item `index` (independent across seeds)."""
    state = np.random.SeedSequence([self.seed, index]).generate_state(1)
    return int(state[0])

  def __getitem__(self, index: SupportsIndex) -> dict[str, Any]:
    i = operator.index(index)
    if i < 0:
      i += self.num_images
    if not 0 <= i < self.num_images:
      raise IndexError(f"SyntheticStreetScenes: index {index} out of range "
                       f"for {self.num_images} images")
    image, label = render_scene(self.scene_seed(i), self.height, self.width,
                                ignore_borders=self.ignore_borders)
    return {"image": image, "label": label, "name": f"synthetic_{i:06d}"}

  def __repr__(self) -> str:
    return (f"SyntheticStreetScenes(num_images={self.num_images}, "
            f"height={self.height}, width={self.width}, seed={self.seed})")
