"""kconv.ops against TensorFlow itself: tf.nn.conv2d / conv1d and GradientTape gradients, same inputs.

TensorFlow's CPU kernels run NHWC only (NCHW results are compared through a transpose) and have no
gradients for grouped or dilated convolutions, so gradients are compared on the cases TF supports.
The tolerance is twice the accuracy contract, relative to max|TF|: both sides may err by the contract.
"""

import dataclasses

import numpy as np
import pytest

from cases import Conv1dCase, Conv2dCase
from conftest import DTYPES, RTOL
from kconv import ops


def assert_close_to_tf(got, want, dtype, what):
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype == dtype, (got.shape, want.shape, got.dtype)
    if want.size == 0:
        return
    scale = float(np.max(np.abs(want.astype(np.float64))))
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert err <= 2 * RTOL[np.dtype(dtype)] * scale, f"{what}: max |kconv - tf| = {err:.3e}, max|tf| = {scale:.3e}"


def _tf_padding(case):
    return case.padding if isinstance(case.padding, str) else [[0, 0], *map(list, case.padding), [0, 0]]


def _nhwc(a, case):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if case.channels_first else a


def _user(a, case):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if case.channels_first else a


FORWARD_2D = [
    Conv2dCase(4, 16, 16, 32, 32, 3, 3, padding="SAME"),
    Conv2dCase(2, 15, 17, 17, 33, 3, 3, padding="VALID"),
    Conv2dCase(2, 14, 14, 64, 16, 5, 5, strides=(2, 2), padding="SAME"),
    Conv2dCase(3, 12, 13, 6, 7, 2, 3, strides=(1, 2), padding=((1, 2), (0, 3))),
    Conv2dCase(2, 12, 12, 16, 8, 3, 3, dilations=(2, 3), padding="SAME"),
    Conv2dCase(2, 13, 13, 8, 8, 3, 3, strides=(2, 2), dilations=(2, 2), padding="SAME"),
    Conv2dCase(2, 10, 10, 16, 32, 3, 3, groups=4, padding="SAME"),
    Conv2dCase(2, 10, 11, 8, 6, 1, 7, groups=2, strides=(2, 1), padding="VALID"),
    Conv2dCase(1, 9, 9, 100, 10, 3, 3, padding="SAME", data_format="NCHW"),
    Conv2dCase(0, 9, 9, 4, 5, 3, 3, padding="SAME"),
]
FORWARD_2D = [dataclasses.replace(c, dtype=d) for c in FORWARD_2D for d in DTYPES]


@pytest.mark.parametrize("case", FORWARD_2D, ids=[c.id for c in FORWARD_2D])
def test_conv2d_forward_matches_tf(case, tf, rng):
    x, f, _ = case.inputs(rng)
    got = case.forward(x, f)
    try:
        want = tf.nn.conv2d(_nhwc(x, case), f, [1, *case.strides, 1], _tf_padding(case),
                            dilations=[1, *case.dilations, 1]).numpy()  # fmt: skip
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        pytest.skip(f"TF's CPU conv2d does not run this case: {str(e).splitlines()[0][:100]}")
    if case.n == 0 and want.shape != case.output_shape:
        pytest.skip(f"TF returns the wrong shape {want.shape} for an empty batch (kconv: {got.shape})")
    assert_close_to_tf(got, _user(want, case), case.dtype, f"conv2d {case.id}")


GRAD_2D = [c for c in FORWARD_2D if c.groups == 1 and c.dilations == (1, 1) and c.n > 0]


@pytest.mark.parametrize("case", GRAD_2D, ids=[c.id for c in GRAD_2D])
def test_conv2d_gradients_match_tf_gradient_tape(case, tf, rng):
    """d/dx and d/dw of sum(conv2d(x, w) * dy) from GradientTape vs kconv's backprop ops."""
    x, f, dy = case.inputs(rng)
    xt, ft = tf.constant(_nhwc(x, case)), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        y = tf.nn.conv2d(xt, ft, [1, *case.strides, 1], _tf_padding(case))
        loss = tf.reduce_sum(y * _nhwc(dy, case))
    dx, df = tape.gradient(loss, [xt, ft])
    assert_close_to_tf(case.backprop_input(f, dy), _user(dx.numpy(), case), case.dtype, "input gradient")
    assert_close_to_tf(case.backprop_filter(x, dy), df.numpy(), case.dtype, "filter gradient")


CASES_1D = [
    Conv1dCase(4, 60, 64, 100, 3, padding="VALID"),
    Conv1dCase(4, 60, 64, 100, 5, padding="SAME"),
    Conv1dCase(3, 41, 17, 33, 4, stride=2, padding="SAME"),
    Conv1dCase(3, 41, 16, 16, 3, dilation=3, padding="SAME"),
    Conv1dCase(3, 41, 16, 8, 3, groups=4, padding="VALID"),
    Conv1dCase(2, 30, 8, 6, 3, stride=3, padding="VALID", data_format="NCW"),
]
CASES_1D = [dataclasses.replace(c, dtype=d) for c in CASES_1D for d in DTYPES]


@pytest.mark.parametrize("case", CASES_1D, ids=[c.id for c in CASES_1D])
def test_conv1d_matches_tf(case, tf, rng):
    """Forward always; gradients where TF's CPU kernels have them (no groups, no dilation)."""
    x, f, dy = case.inputs(rng)
    xt, ft = tf.constant(_nhwc(x, case)), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        y = tf.nn.conv1d(xt, ft, case.stride, case.padding, dilations=case.dilation)
        loss = tf.reduce_sum(y * _nhwc(dy, case))
    assert_close_to_tf(case.forward(x, f), _user(y.numpy(), case), case.dtype, "conv1d")
    if case.groups > 1 or case.dilation > 1:
        return
    dx, df = tape.gradient(loss, [xt, ft])
    assert_close_to_tf(case.backprop_input(f, dy), _user(dx.numpy(), case), case.dtype, "input gradient")
    assert_close_to_tf(case.backprop_filter(x, dy), df.numpy(), case.dtype, "filter gradient")


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv1d_matches_keras_causal_padding(dtype, tf, rng):
    """CAUSAL is Keras's: left-pad dilation*(k-1), then VALID."""
    x = rng.standard_normal((2, 30, 8)).astype(dtype)
    f = rng.standard_normal((3, 8, 5)).astype(dtype)
    want = tf.nn.conv1d(tf.pad(x, [[0, 0], [4, 0], [0, 0]]), f, 1, "VALID", dilations=2).numpy()
    assert_close_to_tf(ops.conv1d(x, f, padding="CAUSAL", dilations=2), want, dtype, "causal conv1d")
