"""Bad arguments raise the documented error, and the message names the argument and shows the shapes.

TypeError for dtypes (non-float, or input / filters / out_backprop that disagree), ValueError for
everything else.  Then: a NaN in the input reaches exactly the outputs whose window reads it.
"""

import re

import numpy as np
import pytest

import reference as ref
from conftest import assert_message, shape_re
from kconv import ops


def msg_has_shape(shape):
    return re.compile(shape_re(shape))


@pytest.fixture
def x2(rng):
    return rng.standard_normal((2, 9, 9, 6))


@pytest.fixture
def f2(rng):
    return rng.standard_normal((3, 3, 6, 4))


@pytest.fixture
def dy2(rng):
    return rng.standard_normal((2, 7, 7, 4))  # VALID output of x2, f2


# ---------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------


def test_conv2d_input_of_wrong_rank(f2):
    x = np.ones((9, 9, 6))
    with pytest.raises(ValueError) as e:
        ops.conv2d(x, f2)
    assert_message(e, "input", msg_has_shape(x.shape))


def test_conv2d_filters_of_wrong_rank(x2):
    f = np.ones((3, 6, 4))
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f)
    assert_message(e, "filters", msg_has_shape(f.shape))


def test_conv1d_input_of_wrong_rank():
    x = np.ones((2, 1, 9, 6))
    with pytest.raises(ValueError) as e:
        ops.conv1d(x, np.ones((3, 6, 4)))
    assert_message(e, "input", msg_has_shape(x.shape))


def test_conv1d_filters_of_wrong_rank():
    f = np.ones((1, 3, 6, 4))
    with pytest.raises(ValueError) as e:
        ops.conv1d(np.ones((2, 9, 6)), f)
    assert_message(e, "filters", msg_has_shape(f.shape))


def test_out_backprop_of_wrong_rank(x2, f2):
    dy = np.ones((2, 7, 4))
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(x2.shape, f2, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy.shape))
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, f2.shape, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy.shape))


@pytest.mark.parametrize("sizes", [(2, 9, 9), (2, 9, 9, 6, 1), (2, -9, 9, 6)])
def test_bad_input_sizes(sizes, f2, dy2):
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(sizes, f2, dy2)
    assert_message(e, "input_sizes")


@pytest.mark.parametrize("sizes", [(3, 3, 6), (3, 3, 6, 4, 1), (3, 3, -6, 4)])
def test_bad_filter_sizes(sizes, x2, dy2):
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, sizes, dy2)
    assert_message(e, "filter_sizes")


# ---------------------------------------------------------------------------------------
# Channels and groups
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cg", [4, 5, 7, 12])
def test_input_channels_not_a_multiple_of_filter_channels(cg, x2):
    """C = 6 with filters of C/groups = 4, 5, 7 or 12: no integer group count."""
    f = np.ones((3, 3, cg, 4))
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f)
    assert_message(e, "input", "filters", msg_has_shape(x2.shape), msg_has_shape(f.shape))


def test_input_channels_mismatch_in_backprop_input(f2, dy2):
    sizes = (2, 9, 9, 5)
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(sizes, f2, dy2)
    assert_message(e, "input_sizes", "filters", msg_has_shape(sizes), msg_has_shape(f2.shape))


def test_filter_channels_mismatch_in_backprop_filter(x2, dy2):
    sizes = (3, 3, 4, 4)
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, sizes, dy2)
    assert_message(e, "filter_sizes", msg_has_shape(sizes), msg_has_shape(x2.shape))


def test_output_channels_not_divisible_by_groups(x2):
    """C = 6, filters (3, 3, 2, 4): groups = 3, and 4 outputs do not split into 3 groups."""
    f = np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f)
    assert_message(e, "filters", msg_has_shape(f.shape))


def test_conv1d_channel_mismatch():
    x, f = np.ones((2, 9, 6)), np.ones((3, 4, 4))
    with pytest.raises(ValueError) as e:
        ops.conv1d(x, f)
    assert_message(e, "input", "filters", msg_has_shape(x.shape), msg_has_shape(f.shape))


# ---------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------


def test_input_and_filters_dtype_mismatch(x2, f2, dy2):
    with pytest.raises(TypeError) as e:
        ops.conv2d(x2.astype(np.float32), f2)
    assert_message(e, "float32", "float64")
    with pytest.raises(TypeError) as e:
        ops.conv2d_backprop_input(x2.shape, f2.astype(np.float32), dy2)
    assert_message(e, "float32", "float64")
    with pytest.raises(TypeError) as e:
        ops.conv2d_backprop_filter(x2, f2.shape, dy2.astype(np.float32))
    assert_message(e, "float32", "float64")
    with pytest.raises(TypeError) as e:
        ops.conv1d(np.ones((2, 9, 6), np.float32), np.ones((3, 6, 4)))
    assert_message(e, "float32", "float64")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.complex128, np.bool_])
def test_unsupported_dtypes(dtype, x2, f2, dy2):
    with pytest.raises(TypeError) as e:
        ops.conv2d(x2.astype(dtype), f2.astype(dtype))
    assert_message(e, np.dtype(dtype).name)
    with pytest.raises(TypeError) as e:
        ops.conv2d_backprop_input(x2.shape, f2.astype(dtype), dy2.astype(dtype))
    assert_message(e, np.dtype(dtype).name)
    with pytest.raises(TypeError) as e:
        ops.conv2d_backprop_filter(x2.astype(dtype), f2.shape, dy2.astype(dtype))
    assert_message(e, np.dtype(dtype).name)
    with pytest.raises(TypeError) as e:
        ops.conv1d(np.ones((2, 9, 6), dtype), np.ones((3, 6, 4), dtype))
    assert_message(e, np.dtype(dtype).name)


def test_integer_input_with_float_filters(x2, f2):
    with pytest.raises(TypeError) as e:
        ops.conv2d(x2.astype(np.int64), f2)
    assert_message(e, "int64")


# ---------------------------------------------------------------------------------------
# padding / strides / dilations / data_format
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["FULL", "", "CAUSAL", "SAME "])
def test_bad_padding_string_2d(padding, x2, f2):
    """Unknown strings, and CAUSAL (1-D only), are rejected by name."""
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, padding=padding)
    assert_message(e, "padding", repr(padding))


def test_bad_padding_string_1d():
    with pytest.raises(ValueError) as e:
        ops.conv1d(np.ones((2, 9, 6)), np.ones((3, 6, 4)), padding="CAUSUAL")
    assert_message(e, "padding", "CAUSUAL")


@pytest.mark.parametrize(
    "padding",
    [
        [(1, 1)],  # one pair for 2-D
        [(1, 1), (1, 1), (1, 1)],  # three pairs
        [(1, 1, 1), (1, 1)],  # a triple
        [(1,), (1,)],  # singles
        [[1, 0], [0, 0], [0, 0], [0, 0]],  # tf 4-pair form padding the batch
        [[0, 0], [0, 0], [0, 0], [0, 1]],  # tf 4-pair form padding the channels (NHWC)
        [(1.5, 1), (1, 1)],  # not an int
        7,  # not a sequence
    ],
    ids=["one-pair", "three-pairs", "triple", "singles", "pad-batch", "pad-channels", "float", "scalar"],
)
def test_bad_explicit_padding_2d(padding, x2, f2):
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, padding=padding)
    assert_message(e, "padding")


@pytest.mark.parametrize("padding", [[(-1, 0), (0, 0)], [(0, 0), (0, -2)]])
def test_negative_padding(padding, x2, f2, dy2):
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, padding=padding)
    assert_message(e, "padding")
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, f2.shape, dy2, padding=padding)
    assert_message(e, "padding")


@pytest.mark.parametrize("padding", [[(1, 1), (1, 1)], [(-1, 0)], [(1, 2, 3)]], ids=["two-pairs", "negative", "triple"])
def test_bad_explicit_padding_1d(padding):
    with pytest.raises(ValueError) as e:
        ops.conv1d(np.ones((2, 9, 6)), np.ones((3, 6, 4)), padding=padding)
    assert_message(e, "padding")


@pytest.mark.parametrize("arg", ["strides", "dilations"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (0, 2), [1, 0, 1, 1], (1, 2, 3)], ids=str)
def test_bad_strides_and_dilations_2d(arg, value, x2, f2, dy2):
    """Zero or negative values, the wrong count, and a 0 inside tf's 4-long form."""
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, **{arg: value})
    assert_message(e, arg)
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(x2.shape, f2, dy2, **{arg: value})
    assert_message(e, arg)
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, f2.shape, dy2, **{arg: value})
    assert_message(e, arg)


@pytest.mark.parametrize("arg", ["strides", "dilations"])
def test_four_long_form_must_be_one_on_batch_and_channels(arg, x2, f2):
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, **{arg: [2, 1, 1, 1]})
    assert_message(e, arg)
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, **{arg: [1, 1, 1, 2]})
    assert_message(e, arg)


@pytest.mark.parametrize("arg, value", [("stride", 0), ("stride", -2), ("dilations", 0), ("stride", (1, 1))])
def test_bad_stride_and_dilations_1d(arg, value):
    with pytest.raises(ValueError) as e:
        ops.conv1d(np.ones((2, 9, 6)), np.ones((3, 6, 4)), **{arg: value})
    assert_message(e, arg)


@pytest.mark.parametrize("fmt", ["NWHC", "CHWN", "NWC", "NCW", ""])
def test_bad_data_format_2d(fmt, x2, f2):
    with pytest.raises(ValueError) as e:
        ops.conv2d(x2, f2, data_format=fmt)
    assert_message(e, "data_format", repr(fmt))


@pytest.mark.parametrize("fmt", ["NHWC", "WNC", "NCHW"])
def test_bad_data_format_1d(fmt):
    with pytest.raises(ValueError) as e:
        ops.conv1d(np.ones((2, 9, 6)), np.ones((3, 6, 4)), data_format=fmt)
    assert_message(e, "data_format", repr(fmt))


# ---------------------------------------------------------------------------------------
# Kernel larger than the (padded) input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, f_shape, kwargs",
    [
        ((1, 2, 5, 1), (3, 3, 1, 1), {}),
        ((1, 5, 2, 1), (3, 3, 1, 1), {}),
        ((1, 5, 5, 1), (3, 3, 1, 1), {"dilations": 3}),  # dilated span 7 > 5
        ((1, 3, 3, 1), (5, 5, 1, 1), {"padding": [(0, 1), (1, 0)]}),  # padded 4 < 5
    ],
    ids=["short", "narrow", "dilated", "explicit"],
)
def test_kernel_larger_than_valid_input(x_shape, f_shape, kwargs):
    x, f = np.ones(x_shape), np.ones(f_shape)
    with pytest.raises(ValueError) as e:
        ops.conv2d(x, f, **kwargs)
    assert_message(e, msg_has_shape(x_shape), msg_has_shape(f_shape))
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(x_shape, f, np.ones((1, 1, 1, 1)), **kwargs)
    assert_message(e, msg_has_shape(x_shape), msg_has_shape(f_shape))
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x, f_shape, np.ones((1, 1, 1, 1)), **kwargs)
    assert_message(e, msg_has_shape(x_shape), msg_has_shape(f_shape))


def test_kernel_larger_than_valid_input_1d():
    x, f = np.ones((2, 4, 3)), np.ones((5, 3, 2))
    with pytest.raises(ValueError) as e:
        ops.conv1d(x, f)
    assert_message(e, msg_has_shape(x.shape), msg_has_shape(f.shape))


def test_same_padding_accepts_a_kernel_larger_than_the_input(rng):
    """SAME pads enough for any kernel: not an error."""
    x, f = rng.standard_normal((1, 2, 3, 2)), rng.standard_normal((5, 5, 2, 3))
    pads = ref.pad_pairs_2d("SAME", (2, 3), (5, 5), (1, 1), (1, 1))
    np.testing.assert_allclose(ops.conv2d(x, f, padding="SAME"), ref.conv2d(x, f, (1, 1), pads), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# out_backprop / sizes inconsistent with each other
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dy_shape",
    [(2, 9, 9, 4), (2, 7, 8, 4), (3, 7, 7, 4), (2, 7, 7, 5)],
    ids=["same-sized", "wrong-width", "wrong-batch", "wrong-channels"],
)
def test_out_backprop_of_the_wrong_shape(dy_shape, x2, f2):
    """VALID 3x3 on 9x9 gives (2, 7, 7, 4): anything else is named, with the expected shape."""
    dy = np.ones(dy_shape)
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input(x2.shape, f2, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy_shape), msg_has_shape((2, 7, 7, 4)))
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, f2.shape, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy_shape), msg_has_shape((2, 7, 7, 4)))


def test_input_sizes_inconsistent_with_out_backprop(f2, dy2):
    """input_sizes for a 12x12 image with out_backprop of a 9x9 one."""
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_input((2, 12, 12, 6), f2, dy2, strides=2)
    assert_message(e, "out_backprop", msg_has_shape(dy2.shape))


def test_filter_sizes_inconsistent_with_out_backprop(x2, dy2):
    """filter_sizes with 5 output channels, out_backprop with 4."""
    with pytest.raises(ValueError) as e:
        ops.conv2d_backprop_filter(x2, (3, 3, 6, 5), dy2)
    assert_message(e, "out_backprop", msg_has_shape(dy2.shape))


def test_conv1d_out_backprop_of_the_wrong_shape():
    x, f, dy = np.ones((2, 9, 6)), np.ones((3, 6, 4)), np.ones((2, 8, 4))
    with pytest.raises(ValueError) as e:
        ops.conv1d_backprop_input(x.shape, f, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy.shape))
    with pytest.raises(ValueError) as e:
        ops.conv1d_backprop_filter(x, f.shape, dy)
    assert_message(e, "out_backprop", msg_has_shape(dy.shape))


# ---------------------------------------------------------------------------------------
# NaN propagates only where a window reads it
# ---------------------------------------------------------------------------------------

NAN_CASES = [
    # (x shape NHWC, filter shape, strides, dilations, padding, where the NaN goes)
    ((4, 12, 12, 16), (3, 3, 16, 16), (1, 1), (1, 1), "SAME", (1, 5, 6, 3)),  # Winograd-shaped
    ((4, 12, 12, 32), (3, 3, 32, 32), (1, 1), (1, 1), "SAME", (3, 0, 11, 31)),  # corner pixel
    ((4, 13, 13, 16), (3, 3, 16, 16), (1, 1), (1, 1), "VALID", (0, 6, 6, 0)),
    ((2, 11, 10, 8), (3, 2, 4, 6), (2, 2), (2, 1), [(1, 2), (0, 1)], (1, 5, 3, 5)),  # groups 2
    ((2, 11, 10, 8), (3, 2, 4, 6), (2, 2), (2, 1), [(1, 2), (0, 1)], (1, 4, 3, 5)),  # a row no window reads
    ((2, 9, 9, 20), (1, 1, 20, 7), (1, 1), (1, 1), "VALID", (0, 4, 4, 19)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", NAN_CASES, ids=[f"{c[0]}-{c[4]}-at{c[5]}".replace(" ", "") for c in NAN_CASES])
def test_nan_in_input_reaches_only_windows_that_read_it(case, dtype, rng):
    x_shape, f_shape, strides, dilations, padding, where = case
    x = rng.standard_normal(x_shape).astype(dtype)
    f = rng.standard_normal(f_shape).astype(dtype)
    x[where] = np.nan
    y = ops.conv2d(x, f, strides=strides, padding=padding, dilations=dilations)
    # Which outputs read x[where]: convolve its indicator with an all-ones kernel of the same grouping.
    marker = np.zeros(x_shape)
    marker[where] = 1
    pads = ref.pad_pairs_2d(padding, x_shape[1:3], f_shape[:2], strides, dilations)
    touched = ref.conv2d(marker, np.ones(f_shape), strides, pads, dilations) > 0
    got = np.isnan(y)
    assert np.array_equal(got, touched), (
        f"{np.count_nonzero(got & ~touched)} outputs are NaN without reading the NaN, "
        f"{np.count_nonzero(touched & ~got)} read it and are not NaN"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_out_backprop_reaches_only_inputs_it_came_from(dtype, rng):
    """The input gradient is NaN exactly at pixels whose windows include the NaN output."""
    x_shape, f_shape = (4, 12, 12, 16), (3, 3, 16, 16)
    f = rng.standard_normal(f_shape).astype(dtype)
    dy = rng.standard_normal((4, 12, 12, 16)).astype(dtype)
    dy[2, 7, 3, 5] = np.nan
    dx = ops.conv2d_backprop_input(x_shape, f, dy, padding="SAME")
    marker = np.zeros(dy.shape)
    marker[2, 7, 3, 5] = 1
    touched = ref.conv2d_backprop_input(x_shape, np.ones(f_shape), marker, (1, 1), ((1, 1), (1, 1))) > 0
    assert np.array_equal(np.isnan(dx), touched)


def test_nan_in_conv1d_input(rng):
    x = rng.standard_normal((3, 40, 32)).astype(np.float32)
    f = rng.standard_normal((3, 32, 32)).astype(np.float32)
    x[1, 17, 4] = np.nan
    y = ops.conv1d(x, f, padding="SAME")
    touched = np.zeros(y.shape, bool)
    touched[1, 16:19, :] = True
    assert np.array_equal(np.isnan(y), touched)
