"""Winograd F(m, 3): its matrices, its register tile transforms, and every variant against the float64 reference.

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
@pytest.mark.parametrize("kind", ["input", "output", "filter", "output_gradient"])
@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("width", [1, 7, 8, 9, 16, 17, 64, 67])
def test_register_transforms_apply_the_explicit_matrices(m, kind, width, dtype):
    """Each tile transform (microkernel.h, kc_wino_*) is its matrix product along both axes, for channel
    counts below, at and above a vector of either width, tails included."""
    at, g, bt = _winograd.matrices(m)
    left = {"input": bt, "output": at, "filter": g, "output_gradient": at.T}[kind]
    src = np.random.default_rng(width).standard_normal((left.shape[1], left.shape[1], width)).astype(dtype)
    got = core.winograd_tile_transform(kind, m, src)
    want = np.einsum("ai,ijc,bj->abc", left, src.astype(np.float64), left)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(left).sum(1).max() ** 2 * np.abs(src).max())


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
        (3, 16, 16, 24, 36, "SAME", "NHWC", np.float32),      # 32 + 4 filters: the last 4 on the transposed tail
        # the input gradient's turned filter is gathered by blocks of 16 (AVX-512) or 8 channels (its K,
        # the forward's filters), transposed 16 or 8 of its filters (C) at a time: fewer, one block and
        # some, a whole number of blocks
        (2, 9, 9, 17, 7, "SAME", "NHWC", np.float32),
        (2, 6, 6, 5, 48, "SAME", "NHWC", np.float32),
    ]
    if not (m == 6 and dt == np.float32)   # F(6x6) float32 error is tabled in the README, not contracted
]
# 1-D sizes (the first: a single output)
SHAPES_1D = [
    (1, None, 1, 1, "VALID", "NWC", np.float64),
    (3, 11, 5, 7, "CAUSAL", "NWC", np.float64),
    (2, 50, 16, 20, "SAME", "NCW", np.float64),
    (4, 97, 33, 15, ((2, 1),), "NWC", np.float64),
    (8, 64, 24, 40, "SAME", "NWC", np.float32),
    (4, 200, 48, 100, "VALID", "NWC", np.float32),   # Kim's 100 filters (3 x 32 + 4), blocks of 4 to 8 panels
]
WINOGRAD_1D = [
    Conv1dCase(n, w or 3, c, k, 3, padding=pad, data_format=fmt, dtype=dt, algorithm=f"winograd{m}")
    for m in TILES
    for (n, w, c, k, pad, fmt, dt) in SHAPES_1D
    if not (m == 6 and dt == np.float32)
]
# 5x5: F(4x4, 5x5) (alpha 8, what "winograd" picks) and F(2x2, 5x5) (alpha 6)
WINOGRAD_5X5 = [
    Conv2dCase(n, h, w, c, k, 5, 5, padding=pad, data_format=fmt, dtype=dt, algorithm=algorithm)
    for algorithm in ("winograd", "winograd2")
    for (n, h, w, c, k, pad, fmt, dt) in [
        (1, 5, 5, 1, 1, "VALID", "NHWC", np.float64),        # one output pixel
        (2, 7, 9, 3, 5, "SAME", "NHWC", np.float64),
        (3, 8, 8, 16, 17, "SAME", "NCHW", np.float64),
        (2, 13, 11, 20, 33, "VALID", "NHWC", np.float64),
        (1, 9, 14, 7, 6, ((2, 0), (1, 3)), "NHWC", np.float64),
        (2, 10, 10, 32, 16, "SAME", "NHWC", np.float32),
    ]
]
# 1-D kernels of 4 to 7 taps: F(5, 4), F(4, 5), F(3, 6) and F(2, 7) (alpha 8, what "winograd" picks), F(2, 5)
# (alpha 6)
WINOGRAD_1D_WIDE = [
    Conv1dCase(n, w or taps, c, k, taps, padding=pad, data_format=fmt, dtype=dt, algorithm=algorithm)
    for taps, algorithm in [(4, "winograd"), (5, "winograd"), (5, "winograd2"), (5, "winograd4"), (6, "winograd"),
                            (7, "winograd"), (7, "winograd2")]
    for (n, w, c, k, pad, fmt, dt) in SHAPES_1D
]


# Dilated 1-D kernels (TCN / WaveNet layers): d interleaved undilated convolutions, tiles of outputs d apart.
# Lengths below, at and past d * m, rows whose last residues get fewer tile columns (or none), and inputs
# shorter than the dilated kernel's reach on one side (padding).
WINOGRAD_1D_DILATED = [
    Conv1dCase(n, w, c, k, taps, dilation=d, padding=pad, data_format=fmt, dtype=dt, algorithm=algorithm)
    for taps, algorithm in [(3, "winograd2"), (3, "winograd4"), (3, "winograd6"), (4, "winograd"), (5, "winograd"),
                            (7, "winograd")]
    for (n, w, c, k, d, pad, fmt, dt) in [
        (1, 17, 3, 2, 4, "VALID", "NWC", np.float64),          # 5 taps: one output, fewer than the residues
        (2, 37, 8, 5, 2, "CAUSAL", "NWC", np.float64),
        (3, 50, 16, 7, 4, "SAME", "NCW", np.float64),
        (2, 41, 9, 11, 5, ((7, 3),), "NWC", np.float64),       # pads narrower and wider than the reach
        (1, 30, 3, 2, 7, "CAUSAL", "NWC", np.float64),
        (4, 64, 24, 40, 3, "SAME", "NWC", np.float32),
    ]
    if not (algorithm == "winograd6" and dt == np.float32) and not (pad == "VALID" and (taps - 1) * d >= w)
]


@pytest.mark.parametrize("op", ["forward", "backprop_input", "backprop_filter"])
@pytest.mark.parametrize("case", WINOGRAD_2D + WINOGRAD_5X5 + WINOGRAD_1D + WINOGRAD_1D_WIDE + WINOGRAD_1D_DILATED,
                         ids=lambda c: c.id + "-" + c.algorithm)
def test_winograd_matches_the_float64_reference(case, op, rng):
    check_against_reference(case, op, rng)


@pytest.mark.parametrize("m", TILES)
def test_filter_gradient_does_not_depend_on_thread_count(m, rng):
    """Tiles are summed chunk by chunk in a fixed order: 1 and 2 threads agree bit for bit."""
    x, dy = rng.standard_normal((4, 20, 20, 24)), rng.standard_normal((4, 20, 20, 40))
    one, two = (ops.conv2d_backprop_filter(x, (3, 3, 24, 40), dy, padding="SAME", algorithm=f"winograd{m}",
                                           threads=t) for t in (1, 2))
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("shape, kernel", [
    ((32, 400, 128), (6, 128, 100)),    # Kim k6: 536 row panels, 67 blocks of 8 -> 68 on two threads, 69 on three
    ((3, 50, 24), (3, 24, 16)),         # the narrow tile (16 filters): 13 tiles a row, blocks of 16-row panels
    ((1, 9, 64), (3, 64, 64)),          # one panel: fewer blocks than threads
    ((2, 31, 33, 32), (3, 3, 32, 48)),  # 2-D F(4x4): tiles not a multiple of the row panel
])
def test_forward_and_input_gradient_do_not_depend_on_thread_count(shape, kernel, rng):
    """The blocks of tiles are cut to a multiple of the threads; a tile's result never depends on its block."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(kernel).astype(np.float32)
    conv, grad = (ops.conv1d, ops.conv1d_backprop_input) if len(shape) == 3 else (ops.conv2d, ops.conv2d_backprop_input)
    ys = [conv(x, w, padding="SAME", algorithm="winograd", threads=t) for t in (1, 2, 3)]
    dy = rng.standard_normal(ys[0].shape).astype(np.float32)
    dxs = [grad(shape, w, dy, padding="SAME", algorithm="winograd", threads=t) for t in (1, 2, 3)]
    for y, dx in zip(ys[1:], dxs[1:]):
        np.testing.assert_array_equal(y, ys[0])
        np.testing.assert_array_equal(dx, dxs[0])
    want = conv(x.astype(np.float64), w.astype(np.float64), padding="SAME", algorithm="direct")
    assert np.abs(ys[0] - want).max() <= 1e-4 * np.abs(want).max()


def test_dilated_1d_filter_gradient_does_not_depend_on_thread_count(rng):
    x, dy = rng.standard_normal((4, 300, 64)), rng.standard_normal((4, 300, 64))
    one, two = (ops.conv1d_backprop_filter(x, (3, 64, 64), dy, padding="CAUSAL", dilations=4, algorithm="winograd",
                                           threads=t) for t in (1, 2))
    np.testing.assert_array_equal(one, two)


def test_auto_runs_a_wide_dilated_1d_layer_by_winograd(rng):
    """A TCN layer (64 channels, dilation 4): every pass on F(4, 3), the forward within float32 Winograd's error."""
    plan = ops._plan(ops._describe(1, (16, 512, 64), (3, 64, 64), 1, "CAUSAL", "NWC", 4), np.dtype(np.float32),
                     "auto", None)
    assert plan.tiles == (4, 4, 4)
    x = rng.standard_normal((16, 512, 64)).astype(np.float32)
    w = rng.standard_normal((3, 64, 64)).astype(np.float32)
    got = ops.conv1d(x, w, padding="CAUSAL", dilations=4)
    want = ops.conv1d(x.astype(np.float64), w.astype(np.float64), padding="CAUSAL", dilations=4, algorithm="direct")
    assert np.abs(got - want).max() <= 5e-6 * np.abs(want).max()


def test_filter_gradient_error_stays_small_over_a_whole_batch_of_tiles(rng):
    """F(4x4)'s filter gradient sums 1568 tiles (four chunks): in float64 over runs of 64 its float32 error
    stays near F(4x4)'s forward error (3e-6 of max|dW|; one float32 sum over every tile gave 1.6e-5), and
    the chunks and runs are fixed by the shape, so 1 and 2 threads agree bit for bit."""
    x = rng.standard_normal((8, 56, 56, 32)).astype(np.float32)
    dy = rng.standard_normal((8, 56, 56, 32)).astype(np.float32)
    want = ops.conv2d_backprop_filter(x.astype(np.float64), (3, 3, 32, 32), dy.astype(np.float64),
                                      padding="SAME", algorithm="direct")
    one, two = (ops.conv2d_backprop_filter(x, (3, 3, 32, 32), dy, padding="SAME", algorithm="winograd4",
                                           threads=t) for t in (1, 2))
    assert np.abs(one - want).max() <= 6e-6 * np.abs(want).max()
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


@pytest.mark.parametrize("filters_shape, reason", [((7, 7, 4, 4), "kernel"), ((5, 3, 4, 4), "kernel"),
                                                   ((3, 3, 2, 4), "groups")])
def test_forcing_winograd_on_other_kernels_or_groups_says_why(filters_shape, reason):
    with pytest.raises(ValueError, match=reason):
        ops.conv2d(np.ones((1, 9, 9, 4), np.float32), np.ones(filters_shape, np.float32), algorithm="winograd4")


def test_padding_wider_than_the_kernel_runs_the_input_gradient_directly():
    """dx = dy * rot180(w) would need a negative padding of dy: that pass runs direct, still exact."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 3, 2, 2))
    dy = rng.standard_normal((1, 11, 9, 2))   # 9 + 3 + 1 - 2 rows, 9 + 1 + 1 - 2 columns
    pads = [(3, 1), (1, 1)]
    plan = _plan_of((1, 9, 9, 2), w.shape, pads, "winograd")
    assert plan.tiles[0] and not plan.tiles[1]
    np.testing.assert_allclose(ops.conv2d_backprop_input((1, 9, 9, 2), w, dy, padding=pads, algorithm="winograd"),
                               ops.conv2d_backprop_input((1, 9, 9, 2), w, dy, padding=pads, algorithm="direct"),
                               rtol=1e-12, atol=1e-12)


def _plan_of(x_shape, w_shape, padding, algorithm, dtype=np.float64):
    conv = ops._describe(2, x_shape, w_shape, 1, padding, "NHWC", 1)
    return ops._plan(conv, np.dtype(dtype), algorithm, None)


def test_a_tile_that_does_not_exist_for_the_kernel_is_refused_by_name():
    """F(m, r) needs alpha = m + r - 1 of 4, 6 or 8: 'winograd4' on 4 taps (alpha 7) says so, 'winograd' picks."""
    x, w = np.ones((1, 20, 8), np.float32), np.ones((4, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"F\(4, 4\) does not exist.*alpha 7"):
        ops.conv1d(x, w, padding="SAME", algorithm="winograd4")
    np.testing.assert_allclose(ops.conv1d(x, w, padding="SAME", algorithm="winograd"),
                               ops.conv1d(x, w, padding="SAME", algorithm="direct"), rtol=1e-5)
    with pytest.raises(ValueError, match="3x3 or 5x5 \\(1-D: 3 to 7\\)"):
        ops.conv1d(np.ones((1, 20, 8), np.float32), np.ones((8, 8, 8), np.float32), algorithm="winograd")


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


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("filters_shape, pads", [
    ((1, 3, 2, 3), ((0, 2), (3, 0))),     # a 1 x 3 kernel padded along H: whole tiles in the padding rows
    ((3, 3, 2, 3), ((3, 2), (2, 1))),     # 3 x 3: tiles whose rows or columns are all padding
])
def test_tiles_in_the_padding_read_zeros_not_old_scratch(m, filters_shape, pads, rng):
    """Tiles wholly or partly in the padding read zeros (made in registers, never loaded), whatever the
    scratch buffers held from the call before (a fuzz find: a padding row of a 1 x 3 kernel read them)."""
    big = np.full((4, 24, 24, 16), 1e30, np.float32)
    ops.conv2d(big, np.ones((3, 3, 16, 16), np.float32), padding="SAME", algorithm=f"winograd{m}")
    x = rng.standard_normal((2, 3, 7, 2)).astype(np.float32)
    w = rng.standard_normal(filters_shape).astype(np.float32)
    padding = [(0, 0), *pads, (0, 0)]
    want = ops.conv2d(x, w, padding=padding, algorithm="direct")
    for _ in range(3):
        got = ops.conv2d(x, w, padding=padding, algorithm=f"winograd{m}")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 4, 4, 96, 40), (3, 6, 5, 64, 64)])
def test_staged_path_agrees_with_direct(shape):
    """Few tiles with many channels run in three stages over all tiles instead of fused blocks."""
    n, h, w, c, k = shape
    rng = np.random.default_rng(3)
    x, f = rng.standard_normal((n, h, w, c)), rng.standard_normal((3, 3, c, k))
    assert _plan_of(x.shape, f.shape, "SAME", "winograd4").staged[0]
    ops.clear_cache()
    direct = ops.conv2d(x, f, padding="SAME", algorithm="direct")
    # new weights with so few tiles run direct (a fresh transform would cost more); from the second call
    # with the same weights their transform is kept and the staged Winograd path runs
    results = [ops.conv2d(x, f, padding="SAME", algorithm="winograd4") for _ in range(3)]
    assert ops.memory_info()["filter_cache_entries"] == 1
    for y in results:
        np.testing.assert_allclose(y, direct, rtol=1e-11, atol=1e-11)


def test_auto_uses_winograd_only_where_it_applies():
    """auto: Winograd for 3x3 and 5x5 stride 1 with at least 16 channels in and out (1-D k = 3 .. 7: 64); direct
    otherwise; F(4x4) (3x3 and 5x5) for 2-D filter gradients from 32 channels in and out, direct below and where
    few tiles meet many channels (tiles x (C + K) under 2 C K)."""
    assert _plan_of((2, 8, 8, 32), (3, 3, 32, 32), "SAME", "auto").tiles == (4, 4, 0)
    assert _plan_of((2, 8, 8, 32), (3, 3, 32, 64), "SAME", "auto").tiles == (4, 4, 0)
    # fewer F(4x4) tiles than the micro-kernel has rows, F(2x2) as wasteful: F(2x2)
    assert _plan_of((1, 8, 8, 32), (3, 3, 32, 32), "SAME", "auto").tiles == (2, 2, 0)
    assert _plan_of((1, 7, 7, 512), (3, 3, 512, 512), "SAME", "auto").tiles == (2, 2, 0)
    assert _plan_of((2, 7, 7, 512), (3, 3, 512, 512), "SAME", "auto").tiles == (4, 4, 0)
    assert _plan_of((32, 32, 32, 16), (3, 3, 16, 16), "SAME", "auto").tiles == (4, 4, 0)
    assert _plan_of((32, 32, 32, 16), (3, 3, 16, 8), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((32, 32, 32, 12), (3, 3, 12, 12), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((32, 32, 32, 3), (3, 3, 3, 16), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((16, 1, 200, 32), (1, 3, 32, 32), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((16, 1, 200, 64), (1, 3, 64, 64), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((32, 1, 400, 128), (1, 4, 128, 100), "SAME", "auto").tiles == (5, 5, 5)   # F(5, 4)
    assert _plan_of((32, 1, 400, 128), (1, 5, 128, 100), "SAME", "auto").tiles == (4, 4, 4)   # F(4, 5)
    assert _plan_of((32, 1, 400, 32), (1, 5, 32, 32), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((32, 1, 400, 128), (1, 6, 128, 100), "SAME", "auto").tiles == (3, 3, 3)   # F(3, 6)
    assert _plan_of((32, 1, 400, 128), (1, 7, 128, 100), "SAME", "auto").tiles == (2, 2, 2)   # F(2, 7)
    assert _plan_of((32, 1, 400, 32), (1, 7, 32, 32), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((32, 1, 400, 128), (1, 8, 128, 100), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((16, 28, 28, 32), (5, 5, 32, 32), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((16, 28, 28, 16), (5, 5, 16, 16), "SAME", "auto").tiles == (4, 4, 0)     # dW direct at 16
    assert _plan_of((16, 28, 28, 8), (5, 5, 8, 32), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((1, 14, 14, 64), (3, 3, 64, 64), "SAME", "auto").tiles == (2, 2, 0)
    assert _plan_of((4, 8, 8, 64), (3, 3, 64, 64), "SAME", "auto").tiles == (4, 4, 0)
    assert _plan_of((8, 28, 28, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((8, 8, 8, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 0)
    assert _plan_of((64, 7, 7, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((8, 14, 14, 256), (3, 3, 256, 256), "SAME", "auto").tiles == (2, 2, 0)
    # the filter gradient's tiles x (C + K) against 2 C K: below, direct; from it, F(4x4)
    assert _plan_of((8, 16, 16, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 4)    # = 2 C K
    assert _plan_of((32, 8, 8, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 4)     # = 2 C K
    assert _plan_of((16, 8, 8, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 0)     # = C K
    assert _plan_of((32, 16, 16, 128), (3, 3, 128, 128), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((8, 28, 28, 32), (3, 3, 32, 32), "SAME", "auto").tiles == (4, 4, 4)
    assert _plan_of((64, 14, 14, 32), (3, 3, 32, 32), "SAME", "auto").tiles == (2, 2, 4)     # dW by F(4x4) from 32
    conv = ops._describe(2, (1, 8, 8, 32), (3, 3, 32, 32), 2, "SAME", "NHWC", 1)
    assert ops._plan(conv, np.dtype(np.float32), "auto", None).tiles == (0, 0, 0)
    assert _plan_of((1, 8, 8, 32), (5, 5, 32, 32), "SAME", "auto").tiles == (4, 4, 0)      # F(4x4, 5x5)
    assert _plan_of((1, 8, 8, 512), (5, 5, 512, 32), "SAME", "auto").tiles == (0, 0, 0)    # its error at 512
    assert _plan_of((1, 8, 8, 8), (3, 3, 8, 8), "SAME", "auto").tiles == (0, 0, 0)
    assert _plan_of((8, 7, 7, 512), (3, 3, 512, 512), "SAME", "auto").tiles == (4, 4, 0)


class TestTransformedFilterCache:
    """Inference transforms filters once; changed weights are never served from the cache."""

    def setup_method(self):
        ops.clear_cache()

    def test_repeated_weights_are_kept_from_the_second_call(self, rng):
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        first = ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        assert ops.memory_info()["filter_cache_entries"] == 0      # first sight: a sample only
        results = [ops.conv2d(x, w, padding="SAME", algorithm="winograd4") for _ in range(3)]
        info = ops.memory_info()
        assert info["filter_cache_entries"] == 1 and info["filter_cache_bytes"] > w.nbytes
        for y in results:
            np.testing.assert_array_equal(y, first)

    @pytest.mark.parametrize("taps, alpha", [(3, 6), (5, 8)])
    def test_a_1d_plan_keeps_alpha_values_per_tile_not_alpha_squared(self, rng, taps, alpha):
        x, w = rng.standard_normal((2, 40, 16)).astype(np.float32), rng.standard_normal((taps, 16, 24))
        w = w.astype(np.float32)
        for _ in range(3):
            ops.conv1d(x, w, padding="SAME", algorithm="winograd")
        nr = core.tile_shape(np.float32)[1]
        kept = w.size + alpha * -(-24 // nr) * nr * 16      # the weights' copy + one panel set per point
        assert ops.memory_info()["filter_cache_bytes"] == 4 * kept

    def test_weights_changed_in_place_are_transformed_again(self, rng):
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        for _ in range(3):
            ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        assert ops.memory_info()["filter_cache_entries"] == 1
        w[1, 1, 5, 7] += 1.0      # not one of the sampled values, or maybe one: either way caught
        y = ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        np.testing.assert_allclose(y, ops.conv2d(x, w, padding="SAME", algorithm="direct"), rtol=1e-10, atol=1e-10)

    def test_with_the_cache_off_repeated_weights_are_transformed_every_call(self, rng):
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        first = ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        assert ops.set_filter_cache(False) is True
        try:
            results = [ops.conv2d(x, w, padding="SAME", algorithm="winograd4") for _ in range(3)]
            assert ops.memory_info()["filter_cache_entries"] == 0      # no copy kept, so none served
            assert ops.set_filter_cache(False) is False
        finally:
            ops.set_filter_cache(True)
        for y in results:
            np.testing.assert_array_equal(y, first)
        for _ in range(2):
            ops.conv2d(x, w, padding="SAME", algorithm="winograd4")
        assert ops.memory_info()["filter_cache_entries"] == 1          # on again: kept from the next repeat

    def test_the_cache_setting_takes_a_bool(self):
        with pytest.raises(TypeError, match="set_filter_cache: enabled must be True or False, got 'no'"):
            ops.set_filter_cache("no")

    def test_bench_passes_run_with_the_cache_off_and_restore_it(self):
        from kconv.bench.convs import training_weights
        with training_weights():
            assert ops.set_filter_cache(False) is False
        assert ops.set_filter_cache(True) is True

    def test_training_like_updates_keep_no_copies(self, rng):
        x, w = rng.standard_normal((2, 8, 8, 16)), rng.standard_normal((3, 3, 16, 16))
        for step in range(5):
            ops.conv2d(x, w + step, padding="SAME", algorithm="winograd4")
        assert ops.memory_info()["filter_cache_entries"] == 0


def test_compiled_matrices_equal_the_exact_construction():
    """pyx/winograd_matrices.pxi holds the matrices as constants, and microkernel.h B^T, A^T and G for its
    register transforms: they must be the Toom-Cook ones."""
    for m in TILES:
        at, g, bt = _winograd.matrices(m)
        got = core.winograd_constants(m)
        for name, want in (("AT", at), ("G", g), ("BT", bt), ("A", at.T), ("BT_registers", bt),
                           ("AT_registers", at), ("G_registers", g)):
            np.testing.assert_array_equal(got[name], want, err_msg=f"F({m}, 3) {name}")


# The Winograd filter gradient's two schedules (pyx/winograd_filter_grad.pxi): lanes, where each thread
# transforms and multiplies a share of the tiles fixed by the shape into float64 sums of its own (the lanes
# added in order at the end), and phases, where every thread transforms a chunk of tiles and the products
# then split by xi. Tile counts leave a partial last run of 64, lanes of unequal runs and several chunks.
# (rank, x shape, filter shape, padding, algorithm, schedule)
FILTER_GRAD_SCHEDULES = {
    "lanes, 1-D k6, 1072 tiles (16 runs and 48 tiles)": (1, (8, 400, 48), (6, 48, 40), "SAME", "winograd", "lanes"),
    "lanes, 3x3 F(4x4), 2025 tiles over 2 to 8 lanes": (2, (9, 60, 60, 24), (3, 3, 24, 20), "SAME", "winograd4", "lanes"),
    "phases, 3x3 F(4x4) 128 -> 128 (sums past the lanes' bytes), two chunks": (
        2, (4, 28, 28, 128), (3, 3, 128, 128), "SAME", "winograd4", "phases"),
    "phases, 1-D k3, few tiles per sum": (1, (5, 300, 64), (3, 64, 64), "CAUSAL", "winograd", "phases"),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FILTER_GRAD_SCHEDULES))
def test_filter_gradient_schedules_match_the_float64_reference_on_any_thread_count(name, dtype, rng):
    """Each schedule fills an output poisoned with NaN, within float32 Winograd's error of the float64
    reference, bit for bit the same on 1, 2 and 3 threads, and leaves its inputs as they were."""
    rank, x_shape, fshape, padding, algorithm, schedule = FILTER_GRAD_SCHEDULES[name]
    conv = ops._describe(rank, x_shape, fshape, 1, padding, "NHWC" if rank == 2 else "NWC", 1)
    x = rng.standard_normal(x_shape).astype(dtype)
    dy = rng.standard_normal(x_shape[:-1] + (fshape[-1],)).astype(dtype)
    x_before, dy_before = x.copy(), dy.copy()
    runs = []
    for threads in (1, 2, 3):
        plan = ops._plan(conv, np.dtype(dtype), algorithm, threads)
        assert (plan.filter_lanes >= 2) == (schedule == "lanes"), plan.filter_lanes
        dw = np.full(fshape, np.nan, dtype)
        plan.backprop_filter(conv.to_native(x), conv.to_native(dy), dw)
        runs.append(dw)
    backprop = ops.conv2d_backprop_filter if rank == 2 else ops.conv1d_backprop_filter
    want = backprop(x.astype(np.float64), fshape, dy.astype(np.float64), padding=padding, algorithm="direct")
    tolerance = 6e-6 if dtype == np.float32 else 1e-12
    assert np.abs(runs[0] - want).max() <= tolerance * np.abs(want).max()
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
