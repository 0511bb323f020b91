# SPDX-License-Identifier: GPL-2.0-or-later
"""The packed R*Tree's float32 boxes and its STR order (core.rtree)."""

import numpy as np

from civic311.processing.core import rtree


def test_boxes_round_outwards_to_the_nearest_float32():
    """SQLite stores an R*Tree box in float32, minimums rounded down and maximums up: each bound is the nearest
    float32 on its side (equal when the value is a float32), for points (_down_up) and boxes alike."""
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.uniform(-88, -87, 5000), rng.uniform(-1e7, 1e7, 5000), [0.0, -0.0, 1.5, -2.25, 1e-40],
                        rng.uniform(-88, -87, 100).astype(np.float32).astype(np.float64)])
    for down, up in (rtree._down_up(v), (rtree._down(v), rtree._up(v))):
        assert down.dtype == up.dtype == np.float32
        assert (down.astype(float) <= v).all() and (up.astype(float) >= v).all()
        exact = down.astype(float) == v
        assert (up[exact] == down[exact]).all()
        # nothing between: the next float32 beyond each bound is on the other side of the value
        assert (np.nextafter(down[~exact], np.float32(np.inf)).astype(float) > v[~exact]).all()
        assert (np.nextafter(up[~exact], np.float32(-np.inf)).astype(float) < v[~exact]).all()
    assert rtree._down_up(v[-100:])[0].astype(float).tolist() == v[-100:].tolist()  # float32 values stay


def test_str_order_is_a_permutation_in_compact_slices():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 1, 100_000), rng.uniform(0, 1, 100_000)
    order = rtree.str_order(x, y)
    assert np.array_equal(np.sort(order), np.arange(100_000))
    # leaves of 51 consecutive entries are small: their boxes cover a few thousandths of the square on average
    n = len(order) // 51 * 51
    gx, gy = x[order[:n]].reshape(-1, 51), y[order[:n]].reshape(-1, 51)
    area = (gx.max(1) - gx.min(1)) * (gy.max(1) - gy.min(1))
    assert area.mean() < 0.002
