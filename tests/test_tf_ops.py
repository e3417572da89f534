"""kconv.tf_ops.conv2d / conv1d: the TensorFlow ops, against tf.nn and finite differences.

- forward and GradientTape gradients (input, filters) against tf.nn.conv2d / conv1d (compiled with XLA,
  the only CPU path TensorFlow has for grouped and dilated gradients), eagerly and inside tf.function;
- tf.test.compute_gradient (float64) against finite differences;
- static output shapes (unknown batch, unknown sizes), dtypes (float16 / bfloat16 through float32),
  thread counts, argument forms (4-long strides, explicit padding), empty batch, variables;
- errors: dtype mismatch / integer dtypes (TypeError), bad geometry (ValueError, when the graph is built),
  algorithm names.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

from kconv import tf_ops  # noqa: E402


def _rand(rng, shape, dtype=np.float32):
    return tf.constant(rng.standard_normal(shape).astype(dtype))


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


# (input shape, filter shape, strides, padding, data_format, dilations)
CASES_2D = [
    ((2, 7, 8, 3), (3, 3, 3, 5), 1, "VALID", "NHWC", None),
    ((2, 7, 8, 3), (3, 3, 3, 5), 1, "SAME", "NHWC", None),
    ((2, 9, 8, 3), (3, 2, 3, 4), [2, 3], "SAME", "NHWC", None),
    ((1, 9, 10, 4), (3, 3, 2, 6), 2, "VALID", "NHWC", None),             # groups = 2
    ((2, 9, 10, 4), (2, 3, 1, 8), 1, "SAME", "NHWC", [2, 3]),            # depthwise-like, dilated
    ((2, 3, 7, 6), (3, 3, 3, 4), [1, 1, 2, 2], "SAME", "NCHW", None),    # NCHW, 4-long strides
    ((2, 7, 6, 2), (2, 2, 2, 3), 1, [[0, 0], [1, 2], [0, 1], [0, 0]], "NHWC", None),   # explicit padding
    ((3, 5, 5, 2), (5, 5, 2, 3), 1, "VALID", "NHWC", None),               # 1x1 output
]
CASES_1D = [
    ((2, 11, 3), (3, 3, 4), 1, "VALID", "NWC", None),
    ((2, 11, 3), (4, 3, 5), 2, "SAME", "NWC", None),
    ((2, 11, 4), (3, 2, 6), 1, "SAME", "NWC", 2),                        # groups 2, dilated
    ((2, 4, 10), (3, 4, 2), 3, "VALID", "NCW", None),
]


def _tf_reference(nd, x, w, strides, padding, data_format, dilations):
    """tf.nn's result and gradients (XLA: TensorFlow's CPU kernels lack grouped/dilated gradients)."""
    @tf.function(jit_compile=True)
    def run(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            if nd == 2:
                y = tf.nn.conv2d(x, w, strides, padding, data_format=data_format, dilations=dilations)
            else:
                y = tf.nn.conv1d(x, w, strides, padding, data_format=data_format, dilations=dilations)
            loss = tf.reduce_sum(y * tf.sin(y))
        return y, tape.gradient(loss, [x, w])
    return run(x, w)


def _kconv_run(nd, x, w, strides, padding, data_format, dilations, in_function):
    op = tf_ops.conv2d if nd == 2 else tf_ops.conv1d

    def run(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = op(x, w, strides, padding, data_format=data_format, dilations=dilations)
            loss = tf.reduce_sum(y * tf.sin(y))
        return y, tape.gradient(loss, [x, w])
    return tf.function(run)(x, w) if in_function else run(x, w)


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("case", CASES_2D + CASES_1D, ids=lambda c: None)
def test_matches_tf_nn(case, in_function, rng):
    x_shape, w_shape, strides, padding, data_format, dilations = case
    nd = len(x_shape) - 2
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)
    y_ref, (dx_ref, dw_ref) = _tf_reference(nd, x, w, strides, padding, data_format, dilations)
    y, (dx, dw) = _kconv_run(nd, x, w, strides, padding, data_format, dilations, in_function)
    assert y.shape == y_ref.shape and y.dtype == tf.float32
    assert _rel_err(y, y_ref) < 1e-5
    assert _rel_err(dx, dx_ref) < 1e-4
    assert _rel_err(dw, dw_ref) < 1e-4


@pytest.mark.parametrize("case", [
    ((2, 5, 6, 4), (3, 2, 2, 4), [1, 2], "SAME", "NHWC", None),
    ((1, 4, 5, 6), (2, 3, 2, 4), 1, "VALID", "NCHW", [2, 1]),
    ((2, 7, 4), (3, 2, 4), 2, "SAME", "NWC", None),
    ((2, 7, 3), (3, 3, 2), 1, "CAUSAL", "NWC", 2),
], ids=["2d-groups-strided", "2d-nchw-dilated-groups", "1d-groups", "1d-causal"])
def test_compute_gradient_matches_finite_differences(case, rng):
    x_shape, w_shape, strides, padding, data_format, dilations = case
    op = tf_ops.conv2d if len(x_shape) == 4 else tf_ops.conv1d
    x, w = _rand(rng, x_shape, np.float64), _rand(rng, w_shape, np.float64)
    theoretical, numerical = tf.test.compute_gradient(
        lambda x, w: op(x, w, strides, padding, data_format=data_format, dilations=dilations), [x, w])
    for t, n in zip(theoretical, numerical):
        assert _rel_err(t, n) < 1e-6


def test_causal_is_left_padding(rng):
    x, w = _rand(rng, (2, 9, 3)), _rand(rng, (3, 3, 4))
    y = tf_ops.conv1d(x, w, 1, "CAUSAL", dilations=2)
    want = tf.nn.conv1d(tf.pad(x, [[0, 0], [4, 0], [0, 0]]), w, 1, "VALID", dilations=2)
    assert _rel_err(y, want) < 1e-5


def test_static_shapes_in_function(rng):
    w = _rand(rng, (3, 3, 4, 6))
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([None, 10, 9, 4], tf.float32)])
    def known_sizes(x):
        y = tf_ops.conv2d(x, w, 2, "SAME")
        seen["known"] = y.shape.as_list()
        return y

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32)])
    def unknown_sizes(x):
        y = tf_ops.conv2d(x, w, 1, "VALID")
        seen["unknown"] = y.shape.as_list()
        return y

    @tf.function(input_signature=[tf.TensorSpec([None, 4, None, None], tf.float32)])
    def unknown_nchw(x):
        y = tf_ops.conv2d(x, w, 1, "VALID", data_format="NCHW")
        seen["nchw"] = y.shape.as_list()
        return y

    x = _rand(rng, (3, 10, 9, 4))
    assert known_sizes(x).shape == (3, 5, 5, 6)
    assert unknown_sizes(x).shape == (3, 8, 7, 6)
    assert unknown_nchw(tf.transpose(x, [0, 3, 1, 2])).shape == (3, 6, 8, 7)
    assert seen == {"known": [None, 5, 5, 6], "unknown": [None, None, None, 6], "nchw": [None, 6, None, None]}


def test_graph_runs_kconvs_native_ops_only(rng):
    """Forward and both gradients are kconv's own graph ops: no numpy_function, no TensorFlow convolution."""
    x, w = _rand(rng, (1, 5, 5, 2)), _rand(rng, (3, 3, 2, 2))

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf_ops.conv2d(x, w, 1, "SAME")
        return tape.gradient(y, [x, w])
    graph = tf.function(step).get_concrete_function(x, w).graph
    types = {op.type for op in graph.get_operations()}
    assert {"KconvConv", "KconvConvBackpropInput", "KconvConvBackpropFilter"} <= types
    assert not {"PyFunc", "PyFuncStateless", "EagerPyFunc"} & types
    assert not {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"} & types


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "function"])
def test_half_precision_computed_in_float32(dtype, in_function, rng):
    x32, w32 = _rand(rng, (2, 6, 6, 3)), _rand(rng, (3, 3, 3, 4))
    x, w = tf.cast(x32, dtype), tf.cast(w32, dtype)

    def run(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf_ops.conv2d(x, w, 1, "SAME")
        return y, tape.gradient(y, [x, w])
    y, (dx, dw) = (tf.function(run) if in_function else run)(x, w)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    want = tf.nn.conv2d(tf.cast(x, tf.float32), tf.cast(w, tf.float32), 1, "SAME")
    assert _rel_err(tf.cast(y, tf.float32), want) < (1e-2 if dtype == tf.bfloat16 else 2e-3)


def test_float64_exact_dtype(rng):
    x, w = _rand(rng, (2, 6, 6, 3), np.float64), _rand(rng, (3, 3, 3, 4), np.float64)
    y = tf_ops.conv2d(x, w, 1, "SAME")
    assert y.dtype == tf.float64
    assert _rel_err(y, tf.nn.conv2d(x, w, 1, "SAME")) < 1e-12


def test_variables_and_numpy_inputs(rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf_ops.conv2d(x, w, 1, "VALID")
        loss = tf.reduce_sum(y ** 2)
    dw = tape.gradient(loss, w)
    with tf.GradientTape() as tape:
        loss_ref = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "VALID") ** 2)
    assert _rel_err(dw, tape.gradient(loss_ref, w)) < 1e-4


def test_nested_and_persistent_tapes(rng):
    x, w = _rand(rng, (1, 5, 5, 2)), _rand(rng, (3, 3, 2, 3))
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(w)
            y = tf_ops.conv2d(x, w, 1, "SAME")
            loss = tf.reduce_sum(y)
    dw = inner.gradient(loss, w)
    dx1 = outer.gradient(loss, x)
    dx2 = outer.gradient(loss, x)
    assert _rel_err(dx1, dx2) == 0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        loss_ref = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME"))
    assert _rel_err(dx1, tape.gradient(loss_ref, x)) < 1e-5
    assert _rel_err(dw, tape.gradient(loss_ref, w)) < 1e-5


def test_no_tape_no_gradient_work(rng):
    # Without a tape the eager op records nothing (and still gives the right values).
    x, w = _rand(rng, (1, 4, 4, 1)), _rand(rng, (1, 1, 1, 1))
    assert _rel_err(tf_ops.conv2d(x, w, 1, "VALID"), x * w[0, 0, 0, 0]) < 1e-6


def test_threads_do_not_change_results(rng):
    x, w = _rand(rng, (4, 16, 16, 8)), _rand(rng, (3, 3, 8, 16))
    y1 = tf_ops.conv2d(x, w, 1, "SAME", threads=1)
    y2 = tf_ops.conv2d(x, w, 1, "SAME", threads=2)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_empty_batch(rng):
    x, w = tf.zeros((0, 5, 5, 2)), _rand(rng, (3, 3, 2, 4))
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = tf_ops.conv2d(x, w, 1, "SAME")
    dx, dw = tape.gradient(y, [x, w])
    assert y.shape == (0, 5, 5, 4) and dx.shape == x.shape and dw.shape == w.shape
    assert not np.any(dw.numpy())


@pytest.mark.parametrize("algorithm", ["auto", "direct", "winograd", "winograd2", "winograd4", "winograd6"])
def test_algorithms(algorithm, rng):
    """Every algorithm, forward and both gradients, eagerly and in a tf.function, against tf.nn."""
    x, w = _rand(rng, (2, 9, 7, 16)), _rand(rng, (3, 3, 16, 8))

    def both(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w, 1, "SAME")
        return (y,) + tuple(tape.gradient(y, [x, w]))

    want = both(tf.nn.conv2d)
    for got in (both(lambda *a: tf_ops.conv2d(*a, algorithm=algorithm)),
                tf.function(lambda: both(lambda *a: tf_ops.conv2d(*a, algorithm=algorithm)))()):
        for g, t in zip(got, want):
            assert _rel_err(g, t) < 2e-5


def test_winograd_on_a_shape_it_cannot_run_says_why(rng):
    x, w = _rand(rng, (1, 6, 6, 2)), _rand(rng, (3, 3, 2, 2))
    with pytest.raises(ValueError, match="strides"):
        tf_ops.conv2d(x, w, 2, "SAME", algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm"):
        tf_ops.conv1d(x[0], w[0], 1, "SAME", algorithm="fft")


def test_dtype_errors(rng):
    x, w = _rand(rng, (1, 6, 6, 2)), _rand(rng, (3, 3, 2, 2), np.float64)
    with pytest.raises(TypeError, match="float32.*float64|dtype"):
        tf_ops.conv2d(x, w, 1, "SAME")
    with pytest.raises(TypeError, match="int32"):
        tf_ops.conv2d(tf.ones((1, 6, 6, 2), tf.int32), tf.ones((3, 3, 2, 2), tf.int32), 1, "SAME")


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, match", [
    ((1, 6, 6, 3), (3, 3, 2, 4), {}, "multiple"),                        # 3 channels, 2 per group
    ((1, 6, 6, 4), (3, 3, 2, 3), {}, "divisible"),                       # 3 filters, 2 groups
    ((1, 2, 2, 2), (3, 3, 2, 2), {}, "larger"),                          # kernel larger than input
    ((1, 6, 6, 2), (3, 3, 2, 2), {"padding": "CAUSAL"}, "padding"),      # causal is 1-D only
    ((1, 6, 6, 2), (3, 3, 2, 2), {"strides": 0}, "strides"),
    ((1, 6, 6, 2), (3, 3, 2, 2), {"data_format": "NCW"}, "data_format"),
    ((6, 6, 2), (3, 3, 2, 2), {}, "rank"),
])
def test_geometry_errors(x_shape, w_shape, kwargs, match, in_function):
    args = {"strides": 1, "padding": "VALID"} | kwargs
    x, w = tf.ones(x_shape), tf.ones(w_shape)
    run = (lambda: tf_ops.conv2d(x, w, **args))
    if in_function:   # raised when the graph is built, from the static shapes
        run = tf.function(run).get_concrete_function
    with pytest.raises(ValueError, match=match):
        run()


def test_unused_input_gradient_is_not_computed(rng):
    # In a tf.function the two gradients are separate ops: a first layer's input gradient is pruned.
    from kconv._backend import core
    x = _rand(rng, (2, 6, 6, 3))
    w = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))

    @tf.function
    def filter_gradient_only(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf_ops.conv2d(x, w, 1, "SAME") ** 2)
        return tape.gradient(loss, w)
    filter_gradient_only(x)
    before = core.pass_counts()
    dw = filter_gradient_only(x)
    after = core.pass_counts()
    assert {k: after[k] - before[k] for k in after} == {"forward": 1, "input": 0, "filter": 1}
    with tf.GradientTape() as tape:
        loss_ref = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME") ** 2)
    assert _rel_err(dw, tape.gradient(loss_ref, w)) < 1e-4
