"""Shapeset-3x2: the paper's online, infinite data set of 32x32 grey images with 1 or 2 filled shapes.

This is an independent, batched re-implementation of the Shapeset-3x2 configuration of the authors' own
generator (repository glorotxa/Shapeset, ``Polygongen`` with the parameters of its ``simpleexemple.py``),
following the paper's description (docs/science.md, "Shapeset-3x2"):

* 1 or 2 objects with probability 1/2 each; each object's type is uniform over triangle (3 vertices),
  parallelogram (4) and "ellipse" (a 20-vertex polygon);
* a shape is the regular n-gon on a circle of radius 1/2 (with a horizontal base edge), pre-rotated by a
  random multiple of 2*pi/255 within one symmetry sector, scaled anisotropically by U[0.2, 0.8]*32 px per
  axis (larger factor on x), rotated back so that the base is horizontal again, then rotated by a global
  angle k*2*pi/255, k uniform in {0..254}; it is translated uniformly so that every vertex stays inside
  [1, 31] px (a 1-px margin);
* grey levels: with probability 1/2 the background is dark (integer level in [0, 114], i.e. <= 0.45 after
  /255) and the shapes light ([141, 255], >= 0.55), otherwise the reverse; every shape draws its own level;
* overlap: the second shape is re-drawn (size and position; type and rotations kept) while the generator's
  overlap estimate exceeds 0.5 of the first shape's area; when 50 candidates in a row are rejected the
  image keeps only its first shape, and the label says so (label = the set of shapes actually drawn);
* filled, no anti-aliasing: a pixel takes a shape's level when its centre lies inside the polygon;
* pixels are level/255 in [0, 1], mapped linearly to ``input_range``.

Classes (the paper's order): 0 triangle, 1 parallelogram, 2 ellipse, 3 tri+par, 4 par+ell, 5 tri+ell,
6 two triangles, 7 two parallelograms, 8 two ellipses.

Randomness and determinism. Every random quantity of image number ``i`` is a pure function of
``(seed, stream, i, slot)``: a counter-based generator (the SplitMix64 output function applied to a
counter). So the images do not depend on how a request is chunked, ``generate(n, seed)`` is the first
``n`` images of ``generate(m, seed)`` for any ``m > n``, a :class:`ShapesetStream` yields exactly those
images in order whatever its chunk size, and nothing touches numpy's or torch's global RNG.
Different ``stream`` numbers give independent image sequences from the same seed; ``glorot_core.data``
uses stream 0 for training, :data:`STREAM_TEST` for the test (and monitor) set and
:data:`STREAM_VALIDATION` for a validation set.

Deviations from the authors' generator (all documented, none changes the class priors):

* shape grey levels start at 141 (= ceil(0.55*255)) instead of the original ``int(0.55*255) = 140``
  (140/255 = 0.549 would break the stated [0.55, 1] range);
* rasterisation samples pixel centres (pygame's scan-line fill also draws the outline, so its shapes are
  about half a pixel fatter), images are stored row-major (pygame's surfarray is column-major, a fixed
  transposition), and the global rotation takes 255 values where the original's ``randint`` took 254;
* the pre-rotation is uniform over the integer steps in [-floor(255/2n), +floor(255/2n)], the symmetric
  sector that the original's index arithmetic approximates (it maps one edge value twice).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from glorot_core.data._files import check_range

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIDE",
    "INPUT_DIM",
    "NUM_CLASSES",
    "STREAM_TEST",
    "STREAM_TRAIN",
    "STREAM_VALIDATION",
    "ShapesetStream",
    "generate",
    "generate_range",
]

IMAGE_SIDE = 32
INPUT_DIM = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 9
CLASS_NAMES: tuple[str, ...] = (
    "triangle",
    "parallelogram",
    "ellipse",
    "triangle+parallelogram",
    "parallelogram+ellipse",
    "triangle+ellipse",
    "two triangles",
    "two parallelograms",
    "two ellipses",
)

STREAM_TRAIN = 0
STREAM_TEST = 1
STREAM_VALIDATION = 2

N_VERTICES: tuple[int, ...] = (3, 4, 20)  # triangle, parallelogram, "ellipse"
ROTATION_STEPS = 255
SCALE_MIN, SCALE_MAX = 0.2, 0.8
OVERLAP_MAX = 0.5
MAX_CANDIDATES = 50  # the second shape is dropped after this many rejected candidates
DARK_LEVELS = (0, math.floor(0.45 * 255))  # (0, 114)
LIGHT_LEVELS = (math.ceil(0.55 * 255), 255)  # (141, 255)

# class of an unordered pair of types (i, j); singles are their type
_PAIR_CLASS = np.array([[6, 3, 5], [3, 7, 4], [5, 4, 8]], dtype=np.int64)
_MAX_V = max(N_VERTICES)

# ---------------------------------------------------------------- counter-based random numbers
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix_int(x: int) -> int:
    """SplitMix64 output function on a Python int (used for the per-slot keys)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 output function, vectorised over a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(_M1)
    x ^= x >> np.uint64(27)
    x *= np.uint64(_M2)
    x ^= x >> np.uint64(31)
    return x


class _CounterRNG:
    """Uniform numbers indexed by (image index, slot): ``u = mix(key(seed, stream, slot) + index * gamma)``.

    For a fixed slot the sequence over indices is exactly a SplitMix64 sequence seeded with the slot key,
    so each slot is a good-quality generator, and any subset of indices can be drawn in any order.
    """

    def __init__(self, seed: int, stream: int) -> None:
        self._base = _mix_int(_mix_int(int(seed) ^ 0x5DEECE66D) + (int(stream) + 1) * _GAMMA)

    def uniform(self, slot: int, idx: np.ndarray) -> np.ndarray:
        """float64 in [0, 1) for each uint64 index in ``idx``."""
        key = np.uint64(_mix_int(self._base + (slot + 1) * 0xD1B54A32D192ED03))
        x = _mix(idx * np.uint64(_GAMMA) + key)
        return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, slot: int, idx: np.ndarray, low: int, high: int) -> np.ndarray:
        """int64 uniform on the closed range [low, high]."""
        u = self.uniform(slot, idx)
        return low + np.minimum(np.floor(u * (high - low + 1)).astype(np.int64), high - low)


# slots: fixed per image, then 4 per candidate shape (scale a, scale b, x, y)
_S_INVERT, _S_COUNT, _S_BG, _S_FG0, _S_FG1, _S_TYPE0, _S_TYPE1 = range(7)
_S_ROT1 = (7, 8)
_S_ROT3 = (9, 10)
_S_CAND0 = 11  # first shape: slots 11..14; second shape candidate r: 15 + 4r .. 18 + 4r


def _base_polygons() -> np.ndarray:
    """(3, 20, 2) regular n-gons of radius 1/2 with a horizontal base edge, padded by repeating a vertex."""
    out = np.empty((len(N_VERTICES), _MAX_V, 2))
    for k, n in enumerate(N_VERTICES):
        ang = 2.0 * np.pi * (np.arange(n) / n + 1.0 / (2 * n) + 0.25)
        pts = 0.5 * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        out[k, :n] = pts
        out[k, n:] = pts[-1]  # repeats change neither the support function nor the filled area
    return out


_BASE = _base_polygons()
_AREA_RATIO = np.array([n * math.sin(2 * math.pi / n) / (2 * math.pi) for n in N_VERTICES])
_PREROT_HALF = np.array([ROTATION_STEPS // (2 * n) for n in N_VERTICES], dtype=np.int64)  # 42, 31, 6


def _shape_points(types: np.ndarray, k1: np.ndarray, k3: np.ndarray, ua: np.ndarray, ub: np.ndarray):
    """Vertices (S, 20, 2) relative to the shape's centre, and its area proxy s0*s1*ratio(n)."""
    sa = (SCALE_MIN + (SCALE_MAX - SCALE_MIN) * ua) * IMAGE_SIDE
    sb = (SCALE_MIN + (SCALE_MAX - SCALE_MIN) * ub) * IMAGE_SIDE
    s0, s1 = np.maximum(sa, sb), np.minimum(sa, sb)  # larger factor on the base (x) axis
    step = 2.0 * math.pi / ROTATION_STEPS
    th1 = k1 * step
    th2 = -np.arctan(s1 / s0 * np.tan(th1))  # exact inverse: the base edge is horizontal again
    th23 = th2 + k3 * step
    base = _BASE[types]
    c1, n1 = np.cos(th1)[:, None], np.sin(th1)[:, None]
    x = (base[..., 0] * c1 - base[..., 1] * n1) * s0[:, None]
    y = (base[..., 0] * n1 + base[..., 1] * c1) * s1[:, None]
    c2, n2 = np.cos(th23)[:, None], np.sin(th23)[:, None]
    pts = np.stack([x * c2 - y * n2, x * n2 + y * c2], axis=-1)
    return pts, s0 * s1 * _AREA_RATIO[types]


def _translate(pts: np.ndarray, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Centre (S, 2) drawn uniformly so that all vertices stay in [1, 31] (1-px margin)."""
    lo = np.maximum(0.0, 1.0 - pts.min(axis=1))
    hi = np.minimum(float(IMAGE_SIDE), IMAGE_SIDE - 1.0 - pts.max(axis=1))
    return lo + np.stack([ux, uy], axis=1) * (hi - lo)


def _overlap_too_big(p_old, c_old, a_old, p_new, c_new, a_new) -> np.ndarray:
    """The generator's overlap estimate (relative to the old shape's area) exceeds OVERLAP_MAX.

    Along the line joining the centres, the shapes' extents (support functions) are summed; if they reach
    past the centre distance d by g >= 0, the overlapping fraction of the new shape is estimated as
    1 - 2^(-g/d), and the overlapping area relative to the old shape's area is compared to OVERLAP_MAX.
    """
    v = c_new - c_old
    d = np.maximum(np.hypot(v[:, 0], v[:, 1]), 1e-9)
    u = v / d[:, None]
    reach_old = np.einsum("svk,sk->sv", p_old, u).max(axis=1)
    reach_new = np.einsum("svk,sk->sv", p_new, -u).max(axis=1)
    gap = reach_old + reach_new - d
    factor = np.where(gap >= 0.0, -np.expm1(-gap * math.log(2.0) / d), 0.0)
    return a_new * factor / a_old > OVERLAP_MAX


def _sample_scenes(seed: int, stream: int, start: int, n: int):
    """Draw the scene parameters of images start..start+n-1 (numpy, float64)."""
    rng = _CounterRNG(seed, stream)
    idx = np.arange(start, start + n, dtype=np.uint64)
    invert = rng.uniform(_S_INVERT, idx) < 0.5
    two = rng.uniform(_S_COUNT, idx) < 0.5
    dark = (rng.integers(_S_BG, idx, *DARK_LEVELS), rng.integers(_S_FG0, idx, *DARK_LEVELS),
            rng.integers(_S_FG1, idx, *DARK_LEVELS))
    light = (rng.integers(_S_BG, idx, *LIGHT_LEVELS), rng.integers(_S_FG0, idx, *LIGHT_LEVELS),
             rng.integers(_S_FG1, idx, *LIGHT_LEVELS))
    bg = np.where(invert, light[0], dark[0])
    fg = np.stack([np.where(invert, dark[1], light[1]), np.where(invert, dark[2], light[2])], axis=1)

    types = np.stack([rng.integers(_S_TYPE0, idx, 0, 2), rng.integers(_S_TYPE1, idx, 0, 2)], axis=1)
    k1 = np.empty((n, 2), dtype=np.int64)
    k3 = np.empty((n, 2), dtype=np.int64)
    for j in range(2):
        half = _PREROT_HALF[types[:, j]]
        k1[:, j] = -half + np.minimum(np.floor(rng.uniform(_S_ROT1[j], idx) * (2 * half + 1)).astype(np.int64),
                                      2 * half)
        k3[:, j] = rng.integers(_S_ROT3[j], idx, 0, ROTATION_STEPS - 1)

    pts = np.zeros((n, 2, _MAX_V, 2))
    centre = np.zeros((n, 2, 2))
    p0, a0 = _shape_points(types[:, 0], k1[:, 0], k3[:, 0], rng.uniform(_S_CAND0, idx),
                           rng.uniform(_S_CAND0 + 1, idx))
    c0 = _translate(p0, rng.uniform(_S_CAND0 + 2, idx), rng.uniform(_S_CAND0 + 3, idx))
    pts[:, 0] = p0
    centre[:, 0] = c0

    # second shape: batched rejection; only still-pending images draw another candidate
    pending = np.flatnonzero(two)
    for r in range(MAX_CANDIDATES):
        if pending.size == 0:
            break
        pidx = idx[pending]
        slot = _S_CAND0 + 4 * (r + 1)
        p1, a1 = _shape_points(types[pending, 1], k1[pending, 1], k3[pending, 1],
                               rng.uniform(slot, pidx), rng.uniform(slot + 1, pidx))
        c1 = _translate(p1, rng.uniform(slot + 2, pidx), rng.uniform(slot + 3, pidx))
        reject = _overlap_too_big(p0[pending], c0[pending], a0[pending], p1, c1, a1)
        ok = pending[~reject]
        pts[ok, 1] = p1[~reject]
        centre[ok, 1] = c1[~reject]
        pending = pending[reject]
    count = np.where(two, 2, 1)
    count[pending] = 1  # 50 rejections in a row: the image keeps its first shape only

    label = np.where(count == 2, _PAIR_CLASS[types[:, 0], types[:, 1]], types[:, 0])
    pts += centre[:, :, None, :]
    return pts, types, count, bg, fg, label


# ---------------------------------------------------------------- rasterisation
# numpy, single-threaded on purpose: torch's intra-op threads collapse when the cores are shared
# (measured 20x slower with 2 threads on a loaded 2-core machine), and per-op work here is small.
_CENTRES = np.arange(IMAGE_SIDE, dtype=np.float32) + np.float32(0.5)


def _row_spans(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row filled x-interval [left, right] (S, 32) of convex polygons (S, V, 2) in pixel units.

    The vertices run counter-clockwise in the numeric (x, y) frame, so the interior lies left of every
    edge: an edge going up in y (dy > 0) bounds x from above at each row, one going down (dy < 0) from
    below, and horizontal edges only limit the polygon's y-range. At the row centre y the interval is
    [max of lower bounds, min of upper bounds]; rows outside [ymin, ymax] are empty (left = +inf).
    Pixel (row, col) is filled when its centre col + 0.5 lies in the interval: no anti-aliasing.
    """
    x0, y0 = pts[..., 0], pts[..., 1]
    dx = np.roll(x0, -1, axis=1) - x0
    dy = np.roll(y0, -1, axis=1) - y0
    flat = dy == 0
    slope = dx / np.where(flat, np.float32(1.0), dy)
    icpt = x0 - y0 * slope  # the edge's line: x = icpt + slope * y
    down, up = dy < 0, dy > 0
    yc = _CENTRES[None, None, :]
    lo_i = np.where(down, icpt, -np.inf).astype(np.float32)[..., None]
    lo_s = np.where(down, slope, 0.0).astype(np.float32)[..., None]
    hi_i = np.where(up, icpt, np.inf).astype(np.float32)[..., None]
    hi_s = np.where(up, slope, 0.0).astype(np.float32)[..., None]
    left = (lo_s * yc + lo_i).max(axis=1)
    right = (hi_s * yc + hi_i).min(axis=1)
    rows = _CENTRES[None, :]
    outside = (rows < y0.min(axis=1, keepdims=True)) | (rows > y0.max(axis=1, keepdims=True))
    left[outside] = np.inf
    return left, right


def _render(pts: np.ndarray, types: np.ndarray, count: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """uint8 images (n, 32, 32): background, then shape 0, then shape 1 painted over it."""
    n = count.shape[0]
    pts32 = pts.astype(np.float32)
    img = np.empty((n, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    img[:] = bg.astype(np.uint8)[:, None, None]
    cols = _CENTRES[None, None, :]
    for j in range(2):
        present = np.ones(n, dtype=bool) if j == 0 else count == 2
        for k, v in enumerate(N_VERTICES):
            sel = np.flatnonzero(present & (types[:, j] == k))
            if sel.size == 0:
                continue
            left, right = _row_spans(pts32[sel, j, :v])
            inside = (cols >= left[..., None]) & (cols <= right[..., None])
            sub = img[sel]
            np.copyto(sub, fg[sel, j].astype(np.uint8)[:, None, None], where=inside)
            img[sel] = sub
    return img


# ---------------------------------------------------------------- public API
_BLOCK = 4096  # images rendered per internal step (bounds the temporaries' memory)


def generate_range(
    seed: int,
    start: int,
    n: int,
    input_range: tuple[float, float] = (-1.0, 1.0),
    stream: int = STREAM_TRAIN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``start .. start+n-1`` of the sequence defined by ``(seed, stream)``.

    Returns x float32 (n, 1024) (32x32, row-major) in ``input_range`` and y int64 (n,) class labels.
    The same arguments always give the same tensors, whatever else ran before.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    lo, hi = check_range(input_range)
    scale = np.float32((hi - lo) / 255.0)  # grey level / 255 mapped linearly from [0, 1] to [lo, hi]
    x = np.empty((n, INPUT_DIM), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for b in range(0, n, _BLOCK):
        m = min(_BLOCK, n - b)
        pts, types, count, bg, fg, label = _sample_scenes(seed, stream, start + b, m)
        xb = x[b:b + m]
        np.multiply(_render(pts, types, count, bg, fg).reshape(m, INPUT_DIM), scale, out=xb, dtype=np.float32)
        if lo != 0.0:
            xb += np.float32(lo)
        y[b:b + m] = label
    return torch.from_numpy(x), torch.from_numpy(y)


def generate(
    n: int, seed: int = 0, input_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Shapeset-3x2 training images of ``seed``: x float32 (n, 1024), y int64 (n,) in 0..8.

    Pixels are grey level / 255 mapped linearly from [0, 1] to ``input_range``. Deterministic:
    ``generate(n, s)`` equals ``generate(m, s)[:n]`` for ``m >= n``.
    """
    return generate_range(seed, 0, n, input_range, STREAM_TRAIN)


class ShapesetStream:
    """An endless stream of Shapeset-3x2 training batches from a seed.

    ``ShapesetStream(seed, input_range, chunk=10_000).next_batch(10)`` returns the next 10 images of the
    sequence ``generate_range(seed, 0, inf, input_range, stream)``. Images are generated ``chunk`` at a
    time (batched generation is what makes it fast) and handed out in slices, so the per-batch cost of a
    training loop with mini-batches of 10 is a slice and a copy. The images do not depend on ``chunk``.
    ``position`` is the index of the next image; pass it back as ``start`` to resume a run exactly.
    """

    def __init__(
        self,
        seed: int = 0,
        input_range: tuple[float, float] = (-1.0, 1.0),
        chunk: int = 10_000,
        *,
        start: int = 0,
        stream: int = STREAM_TRAIN,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.seed = int(seed)
        self.input_range = check_range(input_range)
        self.chunk = int(chunk)
        self.stream = int(stream)
        self._buf_start = start
        self._x = torch.empty(0, INPUT_DIM)
        self._y = torch.empty(0, dtype=torch.int64)
        self._pos = start

    @property
    def position(self) -> int:
        """Index (in the stream's sequence) of the next image ``next_batch`` will return."""
        return self._pos

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` images and labels (fresh tensors the caller may modify)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        xs, ys = [], []
        need = batch_size
        while need > 0:
            offset = self._pos - self._buf_start
            if offset >= self._x.shape[0]:
                self._buf_start = self._pos
                self._x, self._y = generate_range(self.seed, self._pos, self.chunk, self.input_range, self.stream)
                offset = 0
            take = min(need, self._x.shape[0] - offset)
            xs.append(self._x[offset:offset + take])
            ys.append(self._y[offset:offset + take])
            self._pos += take
            need -= take
        if len(xs) == 1:
            return xs[0].clone(), ys[0].clone()
        return torch.cat(xs), torch.cat(ys)
