"""Depthwise convolution (groups == input channels): the channel-vectorised kernels of pyx/depthwise.pxi.

Every pass is checked against the float64 reference at sizes below, at and above the kernels' blocks:
channels around one and two vectors (16 / 32 floats on AVX-512, 8 / 16 on AVX2) plus odd tails, output
widths around the tile's MR pixels (8 or 6), strides, dilations, every padding, depth multipliers (which run
on an expanded copy of the input), and the fused epilogue (bias with relu / relu6 inside the tile, every
other activation after it). Outputs are poisoned with NaN before the call, and results must be the same
bit for bit on 1, 2 and 3 threads.
"""
import numpy as np
import pytest

import reference as ref
from cases import Conv1dCase, Conv2dCase, check_against_reference
from conftest import assert_close
from kconv import ops
from kconv._backend import core
from test_epilogue import ACTIVATION_FUNCTIONS

OPS = ("forward", "backprop_input", "backprop_filter")

CASES_2D = [
    # channels around the vector blocks, widths around MR (6 / 8) and the pointer-table edges
    Conv2dCase(n=2, h=9, w=9, c=16, k=16, kh=3, kw=3, groups=16, padding="SAME"),
    Conv2dCase(n=1, h=7, w=17, c=32, k=32, kh=3, kw=3, groups=32, padding="SAME"),
    Conv2dCase(n=2, h=6, w=8, c=33, k=33, kh=3, kw=3, groups=33, padding="VALID"),
    Conv2dCase(n=1, h=5, w=25, c=47, k=47, kh=3, kw=3, groups=47, padding="SAME"),
    Conv2dCase(n=3, h=4, w=6, c=2, k=2, kh=3, kw=3, groups=2, padding="SAME"),
    Conv2dCase(n=1, h=10, w=31, c=65, k=65, kh=3, kw=3, groups=65, padding="SAME"),
    # MobileNet's strided 3x3, and even sizes where SAME pads only after
    Conv2dCase(n=2, h=16, w=16, c=24, k=24, kh=3, kw=3, strides=(2, 2), groups=24, padding="SAME"),
    Conv2dCase(n=1, h=15, w=19, c=40, k=40, kh=3, kw=3, strides=(2, 2), groups=40, padding="VALID"),
    Conv2dCase(n=1, h=9, w=13, c=8, k=8, kh=5, kw=5, strides=(3, 2), groups=8, padding="SAME"),
    # dilation, other kernels, explicit padding wider than the kernel
    Conv2dCase(n=1, h=12, w=12, c=20, k=20, kh=3, kw=3, dilations=(2, 2), groups=20, padding="SAME"),
    Conv2dCase(n=1, h=11, w=9, c=18, k=18, kh=7, kw=7, groups=18, padding="SAME"),
    Conv2dCase(n=2, h=6, w=7, c=12, k=12, kh=1, kw=5, groups=12, padding=((1, 2), (4, 3))),
    Conv2dCase(n=1, h=3, w=3, c=16, k=16, kh=5, kw=5, groups=16, padding="SAME"),   # taps mostly padding
    # depth multipliers: output channel c * dm + m reads input channel c
    Conv2dCase(n=2, h=8, w=9, c=16, k=32, kh=3, kw=3, groups=16, padding="SAME"),
    Conv2dCase(n=1, h=7, w=10, c=5, k=15, kh=3, kw=3, strides=(2, 2), groups=5, padding="SAME"),
    Conv2dCase(n=1, h=6, w=6, c=3, k=24, kh=2, kw=2, groups=3, padding="VALID"),
    # widths whose columns with every tap inside the image number MR, MR + 1, 2 MR + 3 (run tiles and
    # pointer-table tiles side by side), and stride-2 input gradients of 15 and 19 columns a phase
    Conv2dCase(n=1, h=4, w=10, c=32, k=32, kh=3, kw=3, groups=32, padding="SAME"),
    Conv2dCase(n=2, h=3, w=11, c=16, k=16, kh=3, kw=3, groups=16, padding="SAME"),
    Conv2dCase(n=1, h=5, w=21, c=20, k=20, kh=3, kw=3, groups=20, padding="SAME"),
    Conv2dCase(n=1, h=30, w=30, c=24, k=24, kh=3, kw=3, strides=(2, 2), groups=24, padding="SAME"),
    Conv2dCase(n=1, h=9, w=38, c=16, k=16, kh=5, kw=5, strides=(2, 2), groups=16, padding="SAME"),
    # float64 (4 / 8 lanes), channels first
    Conv2dCase(n=2, h=9, w=11, c=9, k=9, kh=3, kw=3, groups=9, padding="SAME", dtype=np.float64),
    Conv2dCase(n=1, h=8, w=8, c=17, k=34, kh=3, kw=3, strides=(2, 2), groups=17, padding="SAME",
               dtype=np.float64),
    Conv2dCase(n=2, h=7, w=9, c=24, k=24, kh=3, kw=3, groups=24, padding="SAME", data_format="NCHW"),
    # rows with at least MR inside columns: the edge pixels one at a time (channels in groups of four
    # vectors, then one, then single values), the last tile moved back over the one before it
    Conv2dCase(n=2, h=5, w=24, c=72, k=72, kh=3, kw=3, groups=72, padding="SAME"),
    Conv2dCase(n=1, h=6, w=26, c=144, k=144, kh=3, kw=3, dilations=(2, 2), groups=144, padding="SAME"),
    Conv2dCase(n=1, h=7, w=30, c=68, k=68, kh=5, kw=5, groups=68, padding="SAME", dtype=np.float64),
    Conv2dCase(n=2, h=9, w=33, c=96, k=96, kh=3, kw=3, strides=(2, 2), groups=96, padding="SAME"),
]

CASES_1D = [
    Conv1dCase(n=2, w=40, c=32, k=32, kw=3, groups=32, padding="SAME"),
    Conv1dCase(n=1, w=33, c=17, k=17, kw=5, groups=17, padding="CAUSAL", dilation=2),
    Conv1dCase(n=3, w=20, c=8, k=16, kw=3, stride=2, groups=8, padding="VALID"),
    Conv1dCase(n=2, w=23, c=16, k=16, kw=3, groups=16, padding="SAME"),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", CASES_2D + CASES_1D, ids=lambda c: c.id)
def test_depthwise_matches_the_float64_reference(case, op, rng):
    check_against_reference(case, op, rng)


@pytest.mark.parametrize("case", CASES_2D[:3] + CASES_2D[18:20], ids=lambda c: c.id)
def test_depthwise_layers_run_on_the_depthwise_kernel(case):
    conv = ops._describe(2, case.input_shape, case.filter_shape, case.strides, case.padding,
                         case.data_format, case.dilations)
    assert ops._plan(conv, np.dtype(case.dtype), "auto", None).depthwise
    assert ops._plan(conv, np.dtype(case.dtype), "direct", None).depthwise


def test_grouped_layers_with_several_channels_per_group_stay_on_the_gemm():
    conv = ops._describe(2, (1, 8, 8, 32), (3, 3, 2, 32), 1, "SAME", "NHWC", 1)
    assert not ops._plan(conv, np.dtype(np.float32), "auto", None).depthwise
    conv = ops._describe(2, (1, 8, 8, 1), (3, 3, 1, 32), 1, "SAME", "NHWC", 1)      # one channel, no groups
    assert not ops._plan(conv, np.dtype(np.float32), "auto", None).depthwise


def _plan_and_inputs(rng, shape=(2, 11, 13, 37), k=37, kernel=3, stride=1, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((kernel, kernel, 1, k)).astype(dtype)
    conv = ops._describe(2, x.shape, w.shape, stride, "SAME", "NHWC", 1)
    return conv, x, w


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("c, k", [(37, 37), (16, 48), (32, 32)])
def test_fused_bias_and_activation(activation, c, k, rng):
    x = rng.standard_normal((2, 9, 14, c)).astype(np.float32) * 3
    w = rng.standard_normal((3, 3, 1, k)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32) * 3
    got = ops.conv2d(x, w, 1, "SAME", bias=b, activation=activation)
    pads = ref.pad_pairs_2d("SAME", (9, 14), (3, 3), (1, 1), (1, 1))
    want = ACTIVATION_FUNCTIONS[activation](ref.conv2d(x, w, (1, 1), pads) + b)
    assert_close(got, want, np.float32, what=f"depthwise + bias + {activation}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_output_is_written(dtype, rng):
    """The plan's run methods fill outputs poisoned with NaN completely, in every pass."""
    conv, x, w = _plan_and_inputs(rng, shape=(2, 10, 19, 35), k=70, stride=2, dtype=dtype)
    plan = ops._plan(conv, np.dtype(dtype), "auto", None)
    ho, wo = plan.out_hw
    y = np.full((2, ho, wo, 70), np.nan, dtype)
    plan.forward(x, w, np.zeros(0, dtype), y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)
    plan.backprop_input(w, dy, dx)
    dw = np.full(w.shape, np.nan, dtype)
    plan.backprop_filter(x, dy, dw)
    assert np.isfinite(y).all() and np.isfinite(dx).all() and np.isfinite(dw).all()


@pytest.mark.parametrize("k", [40, 80])
def test_results_do_not_depend_on_the_thread_count(k, rng):
    x = rng.standard_normal((4, 23, 29, 40)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, k)).astype(np.float32)
    y = ops.conv2d(x, w, 1, "SAME")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    runs = []
    for threads in (1, 2, 3):
        runs.append((ops.conv2d(x, w, 1, "SAME", threads=threads),
                     ops.conv2d_backprop_input(x.shape, w, dy, 1, "SAME", threads=threads),
                     ops.conv2d_backprop_filter(x, w.shape, dy, 1, "SAME", threads=threads)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_inputs_are_not_modified(rng):
    conv, x, w = _plan_and_inputs(rng, k=74)
    x0, w0 = x.copy(), w.copy()
    y = ops.conv2d(x, w, 1, "SAME")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy0 = dy.copy()
    ops.conv2d_backprop_input(x.shape, w, dy, 1, "SAME")
    ops.conv2d_backprop_filter(x, w.shape, dy, 1, "SAME")
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dy, dy0)


def test_nan_reaches_only_the_windows_that_read_it(rng):
    x = rng.standard_normal((1, 12, 12, 32)).astype(np.float32)
    x[0, 5, 6, 3] = np.nan
    w = rng.standard_normal((3, 3, 1, 32)).astype(np.float32)
    y = ops.conv2d(x, w, 1, "SAME", activation="relu")
    bad = np.argwhere(np.isnan(y))
    assert {tuple(b) for b in bad} == {(0, i, j, 3) for i in (4, 5, 6) for j in (5, 6, 7)}


def test_pass_counts_see_the_depthwise_passes(rng):
    conv, x, w = _plan_and_inputs(rng)
    before = core.pass_counts()
    y = ops.conv2d(x, w, 1, "SAME")
    ops.conv2d_backprop_filter(x, w.shape, y, 1, "SAME")
    after = core.pass_counts()
    assert after["forward"] == before["forward"] + 1 and after["filter"] == before["filter"] + 1
