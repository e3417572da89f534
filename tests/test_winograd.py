"""Winograd F(m, 3): its matrices, its transform routine, and every variant against the float64 reference.

Edge tiles matter most: output sizes below, at, above and not a multiple of each tile m, and tile counts
below, at and above one thread block, so partial tiles and partial blocks are both exercised.
"""
import numpy as np
import pytest

from cases import Conv1dCase, Conv2dCase, check_against_reference
from kconv import _winograd, ops
from kconv._backend import core

TILES = [2, 4, 6]


@pytest.mark.parametrize("m", TILES)
def test_matrices_compute_a_correlation(m):
    """A^T [(G g) * (B^T d)] = sum_k d[i + k] g[k], exactly up to float64 rounding."""
    at, g, bt = _winograd.matrices(m)
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, w = rng.standard_normal(m + 2), rng.standard_normal(3)
        want = np.array([d[i:i + 3] @ w for i in range(m)])
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), want, rtol=0, atol=1e-13)


def test_f43_matrices_are_the_published_ones():
    """F(4,3) on points 0, +-1, +-2 is Lavin & Gray's B^T, whose first row is 4, 0, -5, 0, 1, 0."""
    at, g, bt = _winograd.matrices(4)
    np.testing.assert_array_equal(bt[0], [4, 0, -5, 0, 1, 0])
    np.testing.assert_array_equal(bt[5], [0, 4, 0, -5, 0, 1])
    np.testing.assert_allclose(g[0], [1 / 4, 0, 0])
    np.testing.assert_array_equal(at[3], [0, 1, -1, 8, -8, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["A^T", "G", "B^T"])
@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("width", [1, 7, 8, 9, 64, 67])
def test_transform_routine_applies_each_explicit_matrix(m, which, width, dtype):
    """The one routine all 1-D and 2-D transforms run on computes matrix @ vectors of channels."""
    at, g, bt = _winograd.matrices(m)
    matrix = {"A^T": at, "G": g, "B^T": bt}[which]
    src = np.random.default_rng(width).standard_normal((matrix.shape[1], width)).astype(dtype)
    got = core.transform_rows(np.ascontiguousarray(matrix), src)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, matrix @ src.astype(np.float64), rtol=tol, atol=tol * np.abs(src).max() * 8)


# Sizes around the tiles: outputs 1..13 cover below/at/above/non-multiples of 2, 4 and 6.
WINOGRAD_2D = [
    Conv2dCase(n, h, w, c, k, 3, 3, padding=pad, data_format=fmt, dtype=dt, algorithm=f"winograd{m}")
    for m in TILES
    for (n, h, w, c, k, pad, fmt, dt) in [
        (1, 3, 3, 1, 1, "VALID", "NHWC", np.float64),        # one output pixel
        (2, 5, 7, 3, 5, "SAME", "NHWC", np.float64),
        (3, 8, 8, 16, 17, "SAME", "NCHW", np.float64),
        (2, 13, 11, 20, 33, "VALID", "NHWC", np.float64),
        (1, 9, 14, 7, 6, ((2, 0), (1, 2)), "NHWC", np.float64),
        (5, 12, 12, 24, 24, "SAME", "NHWC", np.float64),      # hundreds of tiles: several blocks
        (2, 10, 10, 32, 16, "SAME", "NHWC", np.float32),
        (2, 5, 7, 64, 72, "SAME", "NHWC", np.float64),        # few tiles, many channels: the staged path
        (1, 4, 4, 96, 40, "VALID", "NCHW", np.float32),
    ]
    if not (m == 6 and dt == np.float32)   # F(6x6) float32 error is tabled in the README, not contracted
]
WINOGRAD_1D = [
    Conv1dCase(n, w, c, k, 3, padding=pad, data_format=fmt, dtype=dt, algorithm=f"winograd{m}")
    for m in TILES
    for (n, w, c, k, pad, fmt, dt) in [
        (1, 3, 1, 1, "VALID", "NWC", np.float64),
        (3, 11, 5, 7, "CAUSAL", "NWC", np.float64),
        (2, 50, 16, 20, "SAME", "NCW", np.float64),
        (4, 97, 33, 15, ((2, 1),), "NWC", np.float64),
        (8, 64, 24, 40, "SAME", "NWC", np.float32),
    ]
    if not (m == 6 and dt == np.float32)
]


@pytest.mark.parametrize("op", ["forward", "backprop_input", "backprop_filter"])
@pytest.mark.parametrize("case", WINOGRAD_2D + WINOGRAD_1D, ids=lambda c: c.id + "-" + c.algorithm)
def test_winograd_matches_the_float64_reference(case, op, rng):
    check_against_reference(case, op, rng)


@pytest.mark.parametrize("m", TILES)
def test_filter_gradient_does_not_depend_on_thread_count(m, rng):
    """Tiles are summed chunk by chunk in a fixed order: 1 and 2 threads agree bit for bit."""
    x, dy = rng.standard_normal((4, 20, 20, 24)), rng.standard_normal((4, 20, 20, 40))
    one, two = (ops.conv2d_backprop_filter(x, (3, 3, 24, 40), dy, padding="SAME", algorithm=f"winograd{m}",
                                           threads=t) for t in (1, 2))
    np.testing.assert_array_equal(one, two)


def test_filter_gradient_with_a_nan_matches_direct(rng):
    """A NaN in the input reaches exactly the filter taps direct convolution lets it reach."""
    x, dy = rng.standard_normal((1, 9, 9, 4)), rng.standard_normal((1, 9, 9, 4))
    x[0, 0, 0, 1] = np.nan    # a corner pixel: only some taps read it
    got = ops.conv2d_backprop_filter(x, (3, 3, 4, 4), dy, padding="SAME", algorithm="winograd4")
    want = ops.conv2d_backprop_filter(x, (3, 3, 4, 4), dy, padding="SAME", algorithm="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("kwargs, reason", [
    (dict(strides=2), "strides"),
    (dict(dilations=2), "dilations"),
])
def test_forcing_winograd_on_a_shape_it_cannot_run_says_why(kwargs, reason):
    x = np.ones((1, 9, 9, 4), np.float32)
    with pytest.raises(ValueError, match=reason):
        ops.conv2d(x, np.ones((3, 3, 4, 4), np.float32), algorithm="winograd", **kwargs)


@pytest.mark.parametrize("filters_shape, reason", [((5, 5, 4, 4), "kernel"), ((3, 3, 2, 4), "groups")])
def test_forcing_winograd_on_other_kernels_or_groups_says_why(filters_shape, reason):
    with pytest.raises(ValueError, match=reason):
        ops.conv2d(np.ones((1, 9, 9, 4), np.float32), np.ones(filters_shape, np.float32), algorithm="winograd4")


def test_padding_wider_than_the_kernel_is_refused_for_the_input_gradient():
    dy = np.ones((1, 11, 9, 2), np.float32)   # 9 + 3 + 1 - 2 rows, 9 + 1 + 1 - 2 columns
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d_backprop_input((1, 9, 9, 2), np.ones((3, 3, 2, 2), np.float32), dy, padding=[(3, 1), (1, 1)],
                                  algorithm="winograd")


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm"):
        ops.conv2d(np.ones((1, 5, 5, 1), np.float32), np.ones((3, 3, 1, 1), np.float32), algorithm="fft")


@pytest.mark.parametrize("m", TILES)
def test_a_nan_stays_in_the_windows_that_read_it(m):
    """Winograd would smear a NaN over its tile; kconv recomputes such a call directly."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 12, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    x[1, 5, 6, 3] = np.nan
    y = ops.conv2d(x, w, padding="SAME", algorithm=f"winograd{m}")
    touched = np.zeros(y.shape, bool)
    touched[1, 4:7, 5:8, :] = True
    np.testing.assert_array_equal(np.isnan(y), touched)
    np.testing.assert_allclose(y[0], ops.conv2d(x, w, padding="SAME", algorithm="direct")[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 4, 4, 96, 40), (3, 6, 5, 64, 64)])
def test_staged_and_fused_paths_agree(shape, monkeypatch):
    """Few tiles with many channels run in three stages; forcing the fused blocks gives the same result."""
    n, h, w, c, k = shape
    rng = np.random.default_rng(3)
    x, f = rng.standard_normal((n, h, w, c)), rng.standard_normal((3, 3, c, k))
    staged = ops.conv2d(x, f, padding="SAME", algorithm="winograd4")
    monkeypatch.setattr(_winograd._buffers, "take", lambda *a: None)   # never staged
    fused = ops.conv2d(x, f, padding="SAME", algorithm="winograd4")
    np.testing.assert_allclose(staged, fused, rtol=1e-13, atol=1e-13)


def test_auto_uses_winograd_only_where_it_applies(monkeypatch):
    """auto: Winograd for 3x3 stride 1 with enough channels; direct otherwise (spied on the kernels)."""
    used = []
    real_forward = _winograd.forward
    monkeypatch.setattr(_winograd, "forward", lambda *a, **k: used.append(a[6]) or real_forward(*a, **k))
    x = np.ones((1, 8, 8, 32), np.float32)
    ops.conv2d(x, np.ones((3, 3, 32, 32), np.float32), padding="SAME")
    assert used == [4]
    ops.conv2d(x, np.ones((3, 3, 32, 32), np.float32), strides=2, padding="SAME")
    ops.conv2d(x, np.ones((5, 5, 32, 32), np.float32), padding="SAME")
    ops.conv2d(x[..., :8], np.ones((3, 3, 8, 8), np.float32), padding="SAME")
    assert used == [4]


class TestTransformedFilterCache:
    """Inference transforms filters once; changed weights are never served from the cache."""

    def setup_method(self):
        _winograd._filter_cache.clear()

    def _spy(self, monkeypatch):
        calls = []
        real = core.winograd_filter_panels
        monkeypatch.setattr(core, "winograd_filter_panels", lambda *a, **k: calls.append(1) or real(*a, **k))
        return calls

    def test_repeated_weights_are_transformed_twice_then_reused(self, monkeypatch, rng):
        calls = self._spy(monkeypatch)
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        results = [ops.conv2d(x, w, padding="SAME", algorithm="winograd4") for _ in range(4)]
        assert len(calls) == 2       # first sight: fingerprint only; second: kept; then reused
        for y in results[1:]:
            np.testing.assert_array_equal(y, results[0])

    def test_weights_changed_in_place_are_transformed_again(self, monkeypatch, rng):
        calls = self._spy(monkeypatch)
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        for _ in range(3):
            ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        w[1, 1, 5, 7] += 1.0      # not one of the sampled values, or maybe one: either way caught
        y = ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        assert len(calls) == 3
        np.testing.assert_allclose(y, ops.conv2d(x, w, padding="SAME", algorithm="direct"), rtol=1e-10, atol=1e-10)

    def test_training_like_updates_keep_no_copies(self, rng):
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        for step in range(5):
            ops.conv2d(x, w + step, padding="SAME", algorithm="winograd4")
        assert not _winograd._filter_cache.entries
