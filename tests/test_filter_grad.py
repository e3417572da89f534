"""The direct filter gradient (pyx/filter_grad.pxi) at the edges of its own blocking.

It cuts the output pixels into chunks (whole output rows of one image, or pieces of one long row), the input
channels into blocks, and the pixel range into splits; it reads dY in place or packs it (a partial last panel
of filters, or rows that do not keep vectors aligned), and copies the input window each chunk reads, zeros
where the window leaves the image. Each case below sits on one of those edges; every result is checked
against the float64 reference, written into an output poisoned with NaN, and must come out bit for bit the
same on 1, 2 and 3 threads.
"""

import numpy as np
import pytest

import reference as ref
from cases import Conv1dCase, Conv2dCase, check_against_reference
from conftest import assert_close
from kconv import ops

# (N, H, W, C, K, kernel (kh, kw), strides, dilations, padding, groups), algorithm forced to direct
CASES = {
    "rows longer than a chunk (1-D, 900 wide)": (2, 1, 900, 8, 32, (1, 3), 1, 1, "SAME", 1),
    "rows longer than a chunk, strided, causal-like pad": (2, 1, 1001, 5, 24, (1, 4), (1, 2), 1, ((0, 0), (3, 0)), 1),
    "chunks of several rows, last one short": (3, 23, 17, 12, 40, (3, 3), 1, 1, "SAME", 1),
    "several channel blocks (many filters)": (1, 7, 7, 72, 520, (3, 3), 1, 1, "SAME", 1),
    "partial last panel, unaligned dY rows": (4, 9, 11, 20, 100, (3, 3), 1, 1, "SAME", 1),
    "narrow tile (<= half a panel of filters)": (5, 13, 12, 16, 16, (3, 3), 1, 1, "SAME", 1),
    "one input channel, 5x5": (6, 15, 14, 1, 32, (5, 5), 1, 1, "SAME", 1),
    "RGB 7x7 stride 2": (2, 33, 30, 3, 32, (7, 7), 2, 1, "SAME", 1),
    "1x1 stride 2 (window rows between taps)": (3, 14, 15, 24, 48, (1, 1), 2, 1, "VALID", 1),
    "dilated, asymmetric explicit padding": (2, 12, 16, 9, 33, (3, 2), 1, (2, 3), ((1, 3), (0, 2)), 1),
    "window wider than the image (big pads)": (2, 4, 5, 6, 8, (3, 3), 1, 1, ((4, 2), (3, 5)), 1),
    "groups": (3, 10, 9, 24, 48, (3, 3), 1, 1, "SAME", 3),
    "stride larger than the kernel": (2, 17, 19, 10, 20, (2, 2), 3, 1, "VALID", 1),
    "kernel narrower than the stride along rows only": (2, 15, 16, 12, 40, (1, 3), 2, 1, "SAME", 1),
    "1x1 stride 3 on rows longer than a chunk (1-D)": (2, 1, 1300, 16, 32, (1, 1), 3, 1, "SAME", 1),
    # a last panel of at most 8 filters runs transposed (channels across the lanes) in blocks of whole vectors
    "a few filters past whole panels (100 = 3 x 32 + 4)": (3, 9, 11, 32, 100, (3, 3), 1, 1, "SAME", 1),
    "a few filters past a panel, 1-D rows longer than a chunk": (2, 1, 900, 16, 36, (1, 5), 1, 1, "VALID", 1),
    "8 filters past a panel, strided": (2, 14, 15, 48, 40, (3, 3), 2, 1, "SAME", 1),
    "8 filters past a panel, 16 pixel splits": (8, 32, 32, 32, 40, (3, 3), 1, 1, "SAME", 1),
    "one filter past a panel in each group": (2, 10, 9, 64, 66, (3, 3), 1, 1, "SAME", 2),
    "channel blocks of whole vectors and a partial one": (2, 6, 7, 72, 100, (3, 3), 1, 1, "SAME", 1),
}


def _inputs(rng, case, dtype):
    n, h, w, c, k, (kh, kw), strides, dilations, padding, groups = case
    strides = (strides, strides) if isinstance(strides, int) else strides
    dilations = (dilations, dilations) if isinstance(dilations, int) else dilations
    fshape = (kh, kw, c // groups, k)
    pads = ref.pad_pairs_2d(padding, (h, w), (kh, kw), strides, dilations)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    y = ref.conv2d(x.astype(np.float64), rng.standard_normal(fshape), strides, pads, dilations)
    dy = rng.standard_normal(y.shape).astype(dtype)
    kpad = padding if isinstance(padding, str) else [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]
    return x, dy, fshape, dict(strides=strides, padding=kpad, dilations=dilations), (strides, pads, dilations)


def _run(x, dy, fshape, kwargs, threads):
    conv = ops._describe(2, x.shape, fshape, kwargs["strides"], kwargs["padding"], "NHWC", kwargs["dilations"])
    plan = ops._plan(conv, x.dtype, "direct", threads)
    dw = np.full(fshape, np.nan, x.dtype)
    plan.backprop_filter(x, dy, dw)
    return dw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_filter_gradient_matches_the_float64_reference_on_any_thread_count(name, dtype, rng):
    x, dy, fshape, kwargs, (strides, pads, dilations) = _inputs(rng, CASES[name], dtype)
    x_before, dy_before = x.copy(), dy.copy()
    runs = [_run(x, dy, fshape, kwargs, threads) for threads in (1, 2, 3)]
    want = ref.conv2d_backprop_filter(x.astype(np.float64), fshape, dy.astype(np.float64), strides, pads, dilations)
    assert_close(runs[0], want, dtype, what=f"filter gradient, {name}")
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


def test_filter_gradient_of_zero_pixels_is_zero(rng):
    """A window with no output pixels (kernel taller than the padded input is refused; a batch of 0 is not)."""
    x = rng.standard_normal((0, 8, 8, 4)).astype(np.float32)
    dy = np.zeros((0, 8, 8, 16), np.float32)
    dw = _run(x, dy, (3, 3, 4, 16), dict(strides=(1, 1), padding="SAME", dilations=(1, 1)), None)
    np.testing.assert_array_equal(dw, 0)


def test_a_dilation_far_past_the_input_still_gives_a_filter_gradient():
    """One output whose two taps both read SAME padding (d = 2**31 - 1): the filter gradient is zero. The
    direct pass sizes its input window by its taps' reach, so it leaves out taps that read only padding."""
    x, dy = np.ones((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32)
    dw = ops.conv1d_backprop_filter(x, (2, 1, 1), dy, stride=2**31 - 1, padding="SAME", dilations=2**31 - 1,
                                    algorithm="direct")
    np.testing.assert_array_equal(dw, np.zeros((2, 1, 1), np.float32))


def test_taps_over_padding_still_carry_a_nan_of_out_backprop():
    """0 * NaN is NaN: a tap that reads only padding gets NaN where dy's channel holds one, as direct
    convolution's products give it."""
    x, dy = np.ones((1, 1, 1), np.float32), np.array([[[np.nan, 1.0]]], np.float32)
    dw = ops.conv1d_backprop_filter(x, (2, 1, 2), dy, stride=2**31 - 1, padding="SAME", dilations=2**31 - 1,
                                    algorithm="direct")
    np.testing.assert_array_equal(np.isnan(dw), [[[True, False]], [[True, False]]])
    np.testing.assert_array_equal(dw[..., 1], 0)


@pytest.mark.parametrize("case", [
    Conv1dCase(2, 6, 3, 4, 3, dilation=5, padding="CAUSAL", algorithm="direct"),      # taps 0, 1 read padding only
    Conv1dCase(2, 5, 3, 4, 4, dilation=4, padding="SAME", algorithm="direct"),        # both ends
    Conv1dCase(1, 4, 2, 3, 3, stride=3, dilation=6, padding=((12, 12),), algorithm="direct"),
    Conv2dCase(2, 5, 6, 3, 2, 3, 3, dilations=(4, 3), padding=((8, 0), (0, 6)), algorithm="direct"),
    Conv2dCase(1, 4, 7, 4, 4, 2, 3, dilations=(5, 4), padding=((5, 0), (1, 1)), groups=2, algorithm="direct"),
], ids=lambda c: c.id)
def test_taps_that_read_only_padding_get_a_zero_gradient(case, rng):
    check_against_reference(case, "backprop_filter", rng)
