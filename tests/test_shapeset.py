"""Shapeset-3x2 generator: the paper's §2 parameters, checked on generated images (not on the code's own constants).

Everything here runs in a few seconds: 20,000 images take well under a second to generate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import glorot_core.data.shapeset as shapeset
from glorot_core.data import ShapesetStream, generate, generate_range, open_dataset

N_PRIOR = 20_000


@pytest.fixture(scope="module")
def big() -> tuple[torch.Tensor, torch.Tensor]:
    """20,000 images in [0, 1] (so grey level / 255 is read off directly), seed 12345."""
    return generate(N_PRIOR, seed=12345, input_range=(0.0, 1.0))


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, 32, 32)


def test_shapes_dtypes_and_range() -> None:
    x, y = generate(500, seed=0)
    assert x.shape == (500, 1024) and x.dtype == torch.float32
    assert y.shape == (500,) and y.dtype == torch.int64
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert int(y.min()) >= 0 and int(y.max()) <= 8
    # input_range is a linear map of the same [0, 1] image
    x01, y01 = generate(500, seed=0, input_range=(0.0, 1.0))
    x23, _ = generate(500, seed=0, input_range=(2.0, 3.0))
    assert torch.equal(y, y01)
    torch.testing.assert_close(x, 2 * x01 - 1, atol=1e-6, rtol=0)
    torch.testing.assert_close(x23, x01 + 2, atol=1e-6, rtol=0)
    # pixels are integer grey levels / 255
    levels = x01 * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)


def test_empty_and_bad_arguments() -> None:
    x, y = generate(0)
    assert x.shape == (0, 1024) and y.shape == (0,)
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(10, input_range=(1.0, -1.0))


def test_class_priors(big) -> None:
    """Priors 1/6 per single, 1/9 per mixed pair, 1/18 per same pair, within ±0.01 on 20,000 images.

    The multinomial sampling error of a frequency is sqrt(p(1-p)/n): 0.0026 for p = 1/6, 0.0022 for
    p = 1/9, 0.0016 for p = 1/18 at n = 20,000, so ±0.01 is at least 3.8 standard errors for every class
    (and the seed is fixed, so the test is deterministic). A generator with uniform priors (1/9 each)
    or one that dropped second shapes too often would be off by ≥ 0.05 on some class.
    """
    _, y = big
    freq = np.bincount(y.numpy(), minlength=9) / N_PRIOR
    expected = np.array([1 / 6] * 3 + [1 / 9] * 3 + [1 / 18] * 3)
    assert np.all(np.abs(freq - expected) < 0.01), freq
    # the majority-class error the paper quotes (≈83 %)
    assert 1 - freq.max() == pytest.approx(0.83, abs=0.01)


def test_grey_level_gap_in_every_image(big) -> None:
    """Background on one side of [0.45, 0.55], every shape pixel on the other, both polarities present."""
    img = _images(big[0])
    bg = img[:, 0, 0]
    others = img != bg[:, None, None]
    dark_bg = bg <= 0.45 + 1e-6
    assert torch.all(dark_bg | (bg >= 0.55 - 1e-6))
    # in dark-background images no pixel is between the background and 0.55, and vice versa
    lo_img, hi_img = img[dark_bg], img[~dark_bg]
    assert torch.all((lo_img == bg[dark_bg][:, None, None]) | (lo_img >= 0.55 - 1e-6))
    assert torch.all((hi_img == bg[~dark_bg][:, None, None]) | (hi_img <= 0.45 + 1e-6))
    assert torch.all(others.flatten(1).any(1)), "every image shows at least one shape pixel"
    assert 0.48 < float(dark_bg.float().mean()) < 0.52  # inversion with probability 1/2


def test_one_pixel_margin(big) -> None:
    img = _images(big[0])
    bg = img[:, 0, 0][:, None]
    for border in (img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]):
        assert torch.all(border == bg)
    # the margin is one pixel, not more: shapes do reach the rows and columns next to the border
    shape_px = img != img[:, 0, 0][:, None, None]
    for inner in (shape_px[:, 1, :], shape_px[:, -2, :], shape_px[:, :, 1], shape_px[:, :, -2]):
        assert float(inner.any(1).float().mean()) > 0.01


def test_labels_match_number_of_grey_regions(big) -> None:
    """Single-shape classes show exactly 2 grey levels; pair classes 3 (2 when both shapes share a level)."""
    x, y = big
    levels = torch.tensor([len(torch.unique(im)) for im in x[:4000]])
    yy = y[:4000]
    single, pair = yy < 3, yy >= 3
    assert torch.all(levels[single] == 2)
    assert torch.all((levels[pair] == 2) | (levels[pair] == 3))
    # two shapes draw the same of 115 levels with probability 1/115; allow some hidden shapes on top
    assert float((levels[pair] == 3).float().mean()) > 0.97


def test_single_shape_area_and_type(big) -> None:
    """Single-shape area is plausible, and its mean per class matches that class's polygon.

    A regular n-gon of circumradius 1/2 has area (n/2)·(1/4)·sin(2π/n); scaling by (32a, 32b) multiplies
    it by 1024·a·b, whose mean over a, b ~ U[0.2, 0.8] is 256. So the mean area is 83.1 px² (triangle),
    128.0 (parallelogram), 197.8 (20-gon). Matching these within 4 % (pixel-centre sampling is unbiased)
    ties each label to the right number of vertices and checks the scale range.
    """
    x, y = big
    img = _images(x)
    area = (img != img[:, 0, 0][:, None, None]).flatten(1).sum(1)
    for cls, n_vert in enumerate((3, 4, 20)):
        a = area[y == cls].double()
        theory = 256 * (n_vert / 2) * 0.25 * math.sin(2 * math.pi / n_vert)
        assert abs(float(a.mean()) / theory - 1) < 0.04, (cls, float(a.mean()), theory)
        assert int(a.min()) >= 4, "smallest shape: a 6.4 px triangle, about 13 px²"
        # largest: 0.8*32 = 25.6 px on both axes, area ≤ π/4 * 25.6² ≈ 515 px²
        assert int(a.max()) <= 515


def test_determinism_and_no_global_rng() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()
    x1, y1 = generate(300, seed=7)
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], n_state[1])
    torch.manual_seed(999)
    np.random.seed(999)
    x2, y2 = generate(300, seed=7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = generate(300, seed=8)
    assert not torch.equal(x1, x3)


def test_independent_of_chunking() -> None:
    x, y = generate(900, seed=3)
    xs, ys = generate(250, seed=3)
    assert torch.equal(xs, x[:250]) and torch.equal(ys, y[:250])
    xr, yr = generate_range(3, 400, 300)
    assert torch.equal(xr, x[400:700]) and torch.equal(yr, y[400:700])
    for chunk, batch in ((7, 10), (1000, 33), (64, 64)):
        stream = ShapesetStream(3, (-1.0, 1.0), chunk=chunk)
        got = [stream.next_batch(batch) for _ in range(900 // batch)]
        gx = torch.cat([g[0] for g in got])
        gy = torch.cat([g[1] for g in got])
        assert torch.equal(gx, x[: gx.shape[0]]) and torch.equal(gy, y[: gy.shape[0]])
        assert stream.position == gx.shape[0]
    resumed = ShapesetStream(3, chunk=50, start=123)
    assert torch.equal(resumed.next_batch(10)[0], x[123:133])


def test_stream_batches_are_fresh_tensors() -> None:
    stream = ShapesetStream(0, chunk=100)
    x, _ = stream.next_batch(10)
    x.fill_(5.0)
    again = ShapesetStream(0, chunk=100)
    assert float(again.next_batch(10)[0].max()) <= 1.0
    assert float(stream.next_batch(10)[0].max()) <= 1.0


def test_rasteriser_matches_brute_force_point_in_polygon() -> None:
    """Scan-line spans equal an independent per-pixel half-plane test at pixel centres (float64)."""
    n = 300
    pts, types, count, _, _, _ = shapeset._sample_scenes(11, 0, 0, n)
    ones = np.ones(n, dtype=np.int64)
    centres = np.stack(np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5, indexing="xy"), axis=-1)  # (row, col, 2)
    mismatches = total = 0
    for j in range(2):
        sel = np.flatnonzero(count >= j + 1)
        masks = shapeset._render(pts[sel][:, [j, j]], types[sel][:, [j, j]], ones[sel], np.zeros(len(sel)),
                                 np.full((len(sel), 2), 255)) > 0
        for m, p, t in zip(masks, pts[sel, j], types[sel, j], strict=True):
            poly = p[: shapeset.N_VERTICES[t]]
            edges = np.roll(poly, -1, axis=0) - poly
            rel = centres[:, :, None, :] - poly[None, None]
            cross = edges[None, None, :, 0] * rel[..., 1] - edges[None, None, :, 1] * rel[..., 0]
            inside = np.all(cross >= 0, axis=-1) | np.all(cross <= 0, axis=-1)
            mismatches += int((inside != m).sum())
            total += m.size
    assert mismatches <= total * 1e-4, mismatches


def _true_overlap(n: int, seed: int) -> np.ndarray:
    """Fraction of the first shape's pixels covered by the second, for the two-shape scenes."""
    pts, types, count, _, _, _ = shapeset._sample_scenes(seed, 0, 0, n)
    sel = np.flatnonzero(count == 2)
    ones, zero, white = np.ones(len(sel), dtype=np.int64), np.zeros(len(sel)), np.full((len(sel), 2), 255)
    m0 = shapeset._render(pts[sel][:, [0, 0]], types[sel][:, [0, 0]], ones, zero, white) > 0
    m1 = shapeset._render(pts[sel][:, [1, 1]], types[sel][:, [1, 1]], ones, zero, white) > 0
    return (m0 & m1).sum((1, 2)) / m0.sum((1, 2))


def test_overlap_rejection(monkeypatch) -> None:
    frac = _true_overlap(3000, 1)
    assert np.mean(frac > 0.5) < 0.01  # the estimate is a heuristic, so allow rare misses
    assert np.mean(frac > 0) > 0.3  # shapes still touch and overlap often
    monkeypatch.setattr(shapeset, "OVERLAP_MAX", 1e9)  # rejection off: the check above would fail
    assert np.mean(_true_overlap(3000, 1) > 0.5) > 0.1


def test_too_many_rejections_keep_the_first_shape_only(monkeypatch) -> None:
    """When every candidate second shape is rejected, images hold one shape and say so in their label."""
    monkeypatch.setattr(shapeset, "OVERLAP_MAX", -1.0)  # every candidate is rejected
    x, y = generate(3000, seed=4, input_range=(0.0, 1.0))
    assert int(y.max()) <= 2
    freq = np.bincount(y.numpy(), minlength=3) / 3000
    assert np.all(np.abs(freq - 1 / 3) < 0.03)
    levels = torch.tensor([len(torch.unique(im)) for im in x[:500]])
    assert torch.all(levels == 2)


def test_open_dataset_shapeset_fixed_sets() -> None:
    ds = open_dataset("shapeset3x2", input_range=(-1.0, 1.0), seed=5)
    train_x = torch.cat([ds.next_batch(10)[0] for _ in range(200)])
    test_x, test_y = ds.fixed_set("test", 1000)
    mon_x, mon_y = ds.fixed_set("monitor", 300)
    val_x, _ = ds.fixed_set("validation", 300)
    assert test_x.shape == (1000, 1024) and mon_x.shape == (300, 1024)
    # monitor = first 300 test examples (the paper's "300 test examples"), deterministic across objects
    assert torch.equal(mon_x, test_x[:300]) and torch.equal(mon_y, test_y[:300])
    again = open_dataset("shapeset", seed=5)
    assert torch.equal(again.fixed_set("test", 1000)[0], test_x)
    assert torch.equal(again.next_batch(10)[0], train_x[:10])
    # disjoint: no test or validation image equals a training image; other seeds give other sets
    def rows(t: torch.Tensor) -> set[bytes]:
        return {r.tobytes() for r in t.numpy()}

    assert len(rows(test_x)) == 1000  # no duplicates inside the set either
    assert not rows(test_x) & rows(train_x)
    assert not rows(val_x) & (rows(test_x) | rows(train_x))
    assert not torch.equal(open_dataset("shapeset3x2", seed=6).fixed_set("monitor", 300)[0], mon_x)
    with pytest.raises(ValueError):
        ds.fixed_set("test")
    assert ds.fixed_set("monitor")[0].shape == (300, 1024)
