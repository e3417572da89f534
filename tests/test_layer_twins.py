"""kconv's Conv1DTranspose / Conv2DTranspose, DepthwiseConv1D / 2D and SeparableConv1D / 2D against their
keras.layers twins, and kconv.tf_ops.conv1d_transpose / conv2d_transpose against tf.nn.

- conformance over a covering grid (strides, padding valid / same, output_padding, dilation, strides with
  dilation where Keras allows it, depth_multiplier, data_format both ways, use_bias, fused activations
  (relu, gelu, ...) and an unfused one (softplus), odd sizes, 1-D and 2-D): the same weights via set_weights,
  outputs and gradients (input and every weight) agree to 1e-4 relative, eagerly and in tf.function;
- weights (names, shapes, order), get_config / from_config, output shapes and invalid arguments are Keras's
  (the same exception type); sizes known only at run time;
- the transposed ops: against tf.nn, output_shape forms, errors, graphs of kconv's ops only (the forward is
  the input-gradient pass), half precision;
- mixed_float16; a .keras file with all six layers round-trips in a fresh process; the numpy_function
  fallback (KCONV_NATIVE_OP=0) computes the same in a fresh process.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import kconv  # noqa: E402
from conftest import assert_layer_matches_keras, build_error_type  # noqa: E402
from kconv import serving, tf_ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_LAYERS = ["Conv1DTranspose", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
              "SeparableConv2D"]


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _forward_backward(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * dy)
    return [y] + tape.gradient(loss, [x] + layer.trainable_weights)


CF = dict(data_format="channels_first")
GRID = [  # (layer, input shape, arguments): every argument of each layer somewhere, not their product
    ("Conv2DTranspose", (2, 5, 6, 3), dict(filters=4, kernel_size=3)),
    ("Conv2DTranspose", (2, 5, 7, 3), dict(filters=4, kernel_size=3, strides=2, padding="same", activation="relu")),
    ("Conv2DTranspose", (2, 5, 6, 3), dict(filters=5, kernel_size=(3, 2), strides=(2, 3), output_padding=(1, 2),
                                           activation="gelu")),
    ("Conv2DTranspose", (2, 6, 5, 2), dict(filters=3, kernel_size=2, strides=2, padding="same", output_padding=1)),
    ("Conv2DTranspose", (2, 5, 6, 3), dict(filters=4, kernel_size=3, dilation_rate=2, padding="same",
                                           use_bias=False, activation="softplus")),
    ("Conv2DTranspose", (2, 3, 5, 6), dict(filters=4, kernel_size=3, strides=2, activation="tanh", **CF)),
    ("Conv2DTranspose", (2, 3, 4, 5), dict(filters=2, kernel_size=4, strides=3, padding="same", output_padding=2,
                                           dilation_rate=1, activation="sigmoid", **CF)),
    ("Conv2DTranspose", (1, 17, 13, 5), dict(filters=7, kernel_size=5, strides=2, padding="same",
                                             activation="leaky_relu")),
    ("Conv2DTranspose", (2, 4, 5, 3), dict(filters=4, kernel_size=1, strides=2)),                  # k < stride
    ("Conv2DTranspose", (2, 6, 7, 8), dict(filters=8, kernel_size=3, padding="same", algorithm="winograd")),
    ("Conv1DTranspose", (2, 7, 3), dict(filters=4, kernel_size=3)),
    ("Conv1DTranspose", (2, 9, 3), dict(filters=4, kernel_size=4, strides=3, padding="same", activation="relu")),
    ("Conv1DTranspose", (2, 7, 3), dict(filters=5, kernel_size=3, strides=2, output_padding=1, activation="silu")),
    ("Conv1DTranspose", (2, 7, 3), dict(filters=4, kernel_size=3, dilation_rate=3, padding="same", use_bias=False)),
    ("Conv1DTranspose", (2, 3, 9), dict(filters=4, kernel_size=5, strides=2, padding="same", output_padding=0,
                                        activation="softplus", **CF)),
    ("Conv1DTranspose", (3, 5, 2), dict(filters=3, kernel_size=2, strides=4, activation="elu")),
    ("DepthwiseConv2D", (2, 8, 9, 3), dict(kernel_size=3)),
    ("DepthwiseConv2D", (2, 9, 8, 3), dict(kernel_size=3, depth_multiplier=2, strides=2, padding="same",
                                           activation="relu")),
    ("DepthwiseConv2D", (2, 10, 9, 4), dict(kernel_size=(2, 3), depth_multiplier=3, dilation_rate=(2, 1),
                                            activation="gelu")),
    ("DepthwiseConv2D", (2, 9, 9, 3), dict(kernel_size=3, strides=2, dilation_rate=2, padding="same")),
    ("DepthwiseConv2D", (2, 3, 8, 9), dict(kernel_size=3, depth_multiplier=2, strides=(1, 2), padding="same",
                                           use_bias=False, activation="softplus", **CF)),
    ("DepthwiseConv2D", (1, 17, 15, 5), dict(kernel_size=5, strides=2, activation="relu6")),
    ("DepthwiseConv2D", (2, 5, 6, 2), dict(kernel_size=1, depth_multiplier=4, activation="swish", **CF)),
    ("DepthwiseConv1D", (2, 11, 3), dict(kernel_size=3)),
    ("DepthwiseConv1D", (2, 11, 4), dict(kernel_size=4, depth_multiplier=2, strides=2, padding="same",
                                         activation="sigmoid")),
    ("DepthwiseConv1D", (2, 13, 3), dict(kernel_size=3, dilation_rate=2, padding="same", use_bias=False,
                                         activation="softplus")),
    ("DepthwiseConv1D", (2, 3, 12), dict(kernel_size=3, depth_multiplier=3, activation="elu", **CF)),
    ("DepthwiseConv1D", (2, 17, 3), dict(kernel_size=3, strides=3, dilation_rate=2, activation="selu")),
    ("SeparableConv2D", (2, 8, 9, 3), dict(filters=4, kernel_size=3)),
    ("SeparableConv2D", (2, 9, 8, 3), dict(filters=5, kernel_size=3, depth_multiplier=2, strides=2, padding="same",
                                           activation="relu")),
    ("SeparableConv2D", (2, 10, 9, 4), dict(filters=6, kernel_size=(3, 2), dilation_rate=2, use_bias=False,
                                            activation="gelu")),
    ("SeparableConv2D", (2, 3, 8, 9), dict(filters=4, kernel_size=3, depth_multiplier=2, padding="same",
                                           activation="softplus", **CF)),
    ("SeparableConv2D", (1, 11, 13, 3), dict(filters=4, kernel_size=3, strides=2, dilation_rate=2, padding="same",
                                             activation="tanh")),
    ("SeparableConv1D", (2, 11, 3), dict(filters=4, kernel_size=3)),
    ("SeparableConv1D", (2, 12, 3), dict(filters=5, kernel_size=4, depth_multiplier=2, strides=2, padding="same",
                                         activation="selu")),
    ("SeparableConv1D", (2, 3, 11), dict(filters=4, kernel_size=3, dilation_rate=2, padding="same",
                                         use_bias=False, activation="softplus", **CF)),
    ("SeparableConv1D", (2, 13, 4), dict(filters=3, kernel_size=3, strides=2, dilation_rate=3, activation="relu")),
]


def _grid_id(case):
    name, shape, kwargs = case
    return name + "-" + "x".join(map(str, shape)) + "-" + "-".join(
        f"{k}={v}" for k, v in kwargs.items() if k not in ("filters", "kernel_size"))


@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_conformance_with_keras(case, rng):
    name, shape, kwargs = case
    keras_kwargs = {k: v for k, v in kwargs.items() if k not in ("algorithm", "threads")}
    ours, theirs = getattr(kconv, name)(**kwargs), getattr(keras.layers, name)(**keras_kwargs)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    ours(x)
    y_ref = theirs(x)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    dy = tf.constant(rng.standard_normal(y_ref.shape).astype(np.float32))
    want = _forward_backward(theirs, x, dy)
    got_eager = _forward_backward(ours, x, dy)
    got_fn = tf.function(lambda x, dy: _forward_backward(ours, x, dy))(x, dy)
    names = ["output", "input gradient"] + [f"{w.name} gradient" for w in ours.trainable_weights]
    assert len(want) == len(got_eager) == len(got_fn) == len(names)
    for what, w, ge, gf in zip(names, want, got_eager, got_fn):
        assert _rel_err(ge, w) < 1e-4, f"{what} (eager)"
        assert _rel_err(gf, w) < 1e-4, f"{what} (tf.function)"
    assert ours.compute_output_shape(shape) == theirs.compute_output_shape(shape)   # Keras's (a list, for some)
    assert tuple(theirs.compute_output_shape(shape)) == tuple(y_ref.shape)


def test_channels_first_bias_is_per_channel_when_width_equals_channels(rng):
    """The one case where kconv and keras.layers differ: channels_first with as many output channels as the
    last spatial size. Keras 3.15's ops.add on TensorFlow takes any bias-like (1, C, 1) operand for a
    channels-last bias when the last axis has C entries, so Keras adds the bias along the width there; kconv
    adds it per channel, as the layer means (the grid above avoids that coincidence)."""
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)     # 9 channels out, width 9
    ours = kconv.DepthwiseConv1D(3, depth_multiplier=3, data_format="channels_first")
    ours(x)
    kernel, bias = rng.standard_normal((3, 3, 3)).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    ours.set_weights([kernel, bias])
    plain = keras.layers.DepthwiseConv1D(3, depth_multiplier=3, data_format="channels_first", use_bias=False)
    plain(x)
    plain.set_weights([kernel])
    assert _rel_err(ours(x), plain(x).numpy() + bias[None, :, None]) < 1e-5


def _pass_counts():
    try:
        from kconv._backend import core
        return dict(core.pass_counts())
    except (ImportError, AttributeError):
        return None


def test_conv_transpose_runs_the_input_gradient_pass_forward():
    """The transposed layer's forward is kconv's input-gradient pass (bias and activation fused); its input
    gradient is the forward pass and its kernel gradient the filter pass, separate ops, so a kernel gradient
    alone runs no forward pass."""
    if not tf_ops.native_op_in_use() or _pass_counts() is None:
        pytest.skip("needs the native op library and kconv's pass counters")
    layer = kconv.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")
    x = tf.zeros((1, 5, 5, 3))
    layer(x)

    @tf.function
    def kernel_gradient_only(x):
        with tf.GradientTape() as tape:
            y = layer(x)
        return y, tape.gradient(y, layer.kernel)
    graph = kernel_gradient_only.get_concrete_function(x).graph
    types = {op.type for op in graph.get_operations()}
    assert {"KconvConvTranspose", "KconvBiasActivationGrad", "KconvConvBackpropFilter"} <= types
    # bias and relu are fused into the transposed op: no BiasAdd / Relu of TensorFlow's in the graph
    assert not {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "PyFunc", "EagerPyFunc", "BiasAdd",
                "Relu"} & types
    kernel_gradient_only(x)
    before = _pass_counts()
    kernel_gradient_only(x)
    after = _pass_counts()
    assert {k: after[k] - before[k] for k in after} == {"forward": 0, "input": 1, "filter": 1}


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_weights_config_and_shapes_match_keras(name, rng):
    rank = 1 if "1D" in name else 2
    shape = (2,) + (9,) * rank + (4,)
    kwargs = dict(kernel_size=3, padding="same", activation="relu", use_bias=True, name="twin", dtype="float32",
                  bias_initializer="ones", bias_regularizer=keras.regularizers.L1(0.1), activity_regularizer="l1",
                  bias_constraint="non_neg", trainable=True)
    if "Transpose" in name:
        kwargs.update(filters=5, strides=2, output_padding=1, kernel_initializer="he_normal",
                      kernel_regularizer="l2", kernel_constraint=keras.constraints.MaxNorm(2.0))
    else:
        kwargs.update(depth_multiplier=2, depthwise_initializer="he_normal", depthwise_regularizer="l2",
                      depthwise_constraint=keras.constraints.MaxNorm(2.0))
        if "Separable" in name:
            kwargs.update(filters=5, pointwise_initializer="lecun_normal", pointwise_regularizer="l1",
                          pointwise_constraint="unit_norm")
    ours, theirs = getattr(kconv, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    assert_layer_matches_keras(ours, theirs, rng.standard_normal(shape).astype(np.float32))
    assert ours.supports_jit is False
    cls = getattr(kconv, name)
    clone = cls.from_config(cls(**(kwargs | dict(algorithm="direct", threads=1))).get_config())
    assert (clone.algorithm, clone.threads, type(clone)) == ("direct", 1, cls)
    assert serving.twins()[cls] is getattr(keras.layers, name)     # kconv.to_keras / convert know it
    # the defaults are Keras's
    minimal = dict(kernel_size=3) | ({} if name.startswith("Depthwise") else dict(filters=4))
    ours, theirs = cls(**minimal).get_config(), getattr(keras.layers, name)(**minimal).get_config()
    for config in (ours, theirs):
        config.pop("name")
    assert {k: v for k, v in ours.items() if k not in ("algorithm", "threads")} == theirs


INVALID = [  # (layer, input shape, arguments): each raises in Keras, at construction, build or call
    ("Conv2DTranspose", (6, 6, 3), dict(filters=0, kernel_size=3)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=0)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, strides=0)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, strides=2, output_padding=-1)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, strides=2, output_padding=2)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, strides=(2, 1), output_padding=(1, 1))),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, strides=2, dilation_rate=2)),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, padding="causal")),
    ("Conv2DTranspose", (6, 6, 3), dict(filters=4, kernel_size=3, data_format="nhwc")),
    ("Conv1DTranspose", (6, 3), dict(filters=4, kernel_size=3, padding="causal")),
    ("Conv1DTranspose", (6, 3), dict(filters=-1, kernel_size=3)),
    ("Conv1DTranspose", (6, 3), dict(filters=4, kernel_size=3, strides=3, output_padding=3)),
    ("DepthwiseConv2D", (6, 6, 3), dict(kernel_size=3, depth_multiplier=0)),
    ("DepthwiseConv2D", (6, 6, 3), dict(kernel_size=0)),
    ("DepthwiseConv2D", (6, 6, 3), dict(kernel_size=3, strides=0)),
    ("DepthwiseConv2D", (6, 6, 3), dict(kernel_size=3, padding="causal")),
    ("DepthwiseConv2D", (2, 2, 3), dict(kernel_size=3)),                            # kernel larger than input
    ("DepthwiseConv1D", (6, 3), dict(kernel_size=3, padding="causal")),
    ("DepthwiseConv1D", (6, 3), dict(kernel_size=3, depth_multiplier=-2)),
    ("SeparableConv2D", (6, 6, 3), dict(filters=0, kernel_size=3)),
    ("SeparableConv2D", (6, 6, 3), dict(filters=4, kernel_size=3, depth_multiplier=0)),
    ("SeparableConv2D", (6, 6, 3), dict(filters=4, kernel_size=3, padding="full")),
    ("SeparableConv1D", (6, 3), dict(filters=4, kernel_size=3, padding="causal")),
    ("SeparableConv1D", (2, 3), dict(filters=4, kernel_size=3)),                      # kernel larger than input
]


@pytest.mark.parametrize("name, shape, kwargs", INVALID, ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID)])
def test_invalid_arguments_raise_like_keras(name, shape, kwargs):
    keras_error = build_error_type(getattr(keras.layers, name), kwargs, shape)
    assert keras_error is not None
    assert build_error_type(getattr(kconv, name), kwargs, shape) is keras_error


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_kconv_arguments_validated(name):
    args = dict(kernel_size=3) | ({} if name.startswith("Depthwise") else dict(filters=4))
    with pytest.raises(ValueError, match="algorithm"):
        getattr(kconv, name)(**args, algorithm="fast")
    with pytest.raises(ValueError, match="threads"):
        getattr(kconv, name)(**args, threads=0)


@pytest.mark.parametrize("name, kwargs", [
    ("Conv2DTranspose", dict(filters=3, kernel_size=3, strides=2, padding="same", output_padding=1)),
    ("Conv2DTranspose", dict(filters=3, kernel_size=2, strides=2, data_format="channels_first")),
    ("DepthwiseConv2D", dict(kernel_size=3, depth_multiplier=2, strides=2, padding="same")),
    ("SeparableConv2D", dict(filters=3, kernel_size=3, data_format="channels_first")),
])
def test_sizes_known_only_at_run_time(name, kwargs, rng):
    """A model on Input((None, None, C)): the output size (Keras's, for the transposes) comes from the run-time
    shape, and each new size is planned when it occurs."""
    channels_first = kwargs.get("data_format") == "channels_first"
    spec = (4, None, None) if channels_first else (None, None, 4)
    models = []
    for module in (kconv, keras.layers):
        inputs = keras.Input(spec)
        models.append(keras.Model(inputs, getattr(module, name)(**kwargs)(inputs)))
    ours, theirs = models
    ours.set_weights(theirs.get_weights())
    for hw in [(5, 6), (8, 7)]:
        shape = (2,) + ((4,) + hw if channels_first else hw + (4,))
        x = rng.standard_normal(shape).astype(np.float32)
        want = theirs.predict_on_batch(x)
        assert _rel_err(ours.predict_on_batch(x), want) < 1e-5
    assert ours.output.shape == theirs.output.shape


# ---------------------------------------------------------------------------------------------- tf_ops

TRANSPOSE_CASES = [  # (input shape, filter shape, output_shape, strides, padding, data_format, dilations)
    ((2, 5, 6, 3), (3, 3, 4, 3), (2, 7, 8, 4), 1, "VALID", "NHWC", None),
    ((2, 5, 6, 3), (3, 3, 4, 3), (2, 10, 12, 4), 2, "SAME", "NHWC", None),
    ((2, 5, 6, 3), (3, 2, 4, 3), (2, 11, 13, 4), [2, 2], "VALID", "NHWC", None),
    ((2, 3, 5, 6), (3, 3, 4, 3), (2, 4, 10, 11), [1, 1, 2, 2], "SAME", "NCHW", None),
    ((2, 5, 6, 3), (3, 3, 4, 3), (2, 9, 10, 4), 1, "VALID", "NHWC", 2),
    ((2, 5, 6, 3), (3, 3, 2, 3), (2, 6, 8, 2), 1, [[0, 0], [1, 0], [0, 0], [0, 0]], "NHWC", None),
    ((2, 7, 3), (4, 5, 3), (2, 14, 5), 2, "SAME", "NWC", None),
    ((2, 3, 7), (3, 2, 3), (2, 2, 16), 2, "VALID", "NCW", None),
]


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: None)
def test_transpose_ops_match_tf_nn(case, in_function, rng):
    x_shape, w_shape, out_shape, strides, padding, data_format, dilations = case
    x = tf.constant(rng.standard_normal(x_shape).astype(np.float32))
    w = tf.constant(rng.standard_normal(w_shape).astype(np.float32))
    nd = len(x_shape) - 2

    def run(op):
        def f(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = op(x, w, out_shape, strides, padding, data_format=data_format, dilations=dilations)
                loss = tf.reduce_sum(y * tf.sin(y))
            return y, tape.gradient(loss, [x, w])
        return f
    tf_op = tf.nn.conv2d_transpose if nd == 2 else tf.nn.conv1d_transpose
    if data_format.startswith("NC"):   # TensorFlow's NCW transpose has no gradient: its reference runs NWC
        last, first = [0] + list(range(2, nd + 2)) + [1], [0, nd + 1] + list(range(1, nd + 1))

        def tf_op(x, w, output_shape, strides, padding, data_format, dilations):
            output_shape = [output_shape[i] for i in last]
            strides = [strides[i] for i in last] if np.ndim(strides) and len(strides) == nd + 2 else strides
            y = (tf.nn.conv2d_transpose if nd == 2 else tf.nn.conv1d_transpose)(
                tf.transpose(x, last), w, output_shape, strides, padding, dilations=dilations)
            return tf.transpose(y, first)
    # TensorFlow's reference through XLA: its CPU kernels lack some of these cases
    reference = tf.function(run(tf_op), jit_compile=True)
    ours = run(tf_ops.conv2d_transpose if nd == 2 else tf_ops.conv1d_transpose)
    y_ref, (dx_ref, dw_ref) = reference(x, w)
    y, (dx, dw) = (tf.function(ours) if in_function else ours)(x, w)
    assert _rel_err(y, y_ref) < 1e-5
    assert _rel_err(dx, dx_ref) < 1e-4 and _rel_err(dw, dw_ref) < 1e-4


def test_transpose_bias_activation_and_output_shape_forms(rng):
    x = tf.constant(rng.standard_normal((2, 5, 6, 3)).astype(np.float32))
    w = tf.constant(rng.standard_normal((3, 3, 4, 3)).astype(np.float32))
    b = tf.constant(rng.standard_normal(4).astype(np.float32))
    want = tf.nn.gelu(tf.nn.conv2d_transpose(x, w, (2, 10, 12, 4), 2, "SAME") + b, approximate=False)
    for output_shape in [(2, 10, 12, 4), [2, 10, 12, 4], np.array([2, 10, 12, 4]), tf.constant([2, 10, 12, 4]),
                         tf.TensorShape([2, 10, 12, 4]), [tf.shape(x)[0], 10, 12, tf.constant(4, tf.int64)]]:
        y = tf_ops.conv2d_transpose(x, w, output_shape, 2, "SAME", bias=b, activation="gelu")
        assert _rel_err(y, want) < 1e-5
    y = kconv.conv2d_transpose(tf.transpose(x, [0, 3, 1, 2]), w, [2, 4, 10, 12], 2, "SAME", data_format="NCHW",
                               bias=b, activation="gelu")
    assert _rel_err(tf.transpose(y, [0, 2, 3, 1]), want) < 1e-5

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 6, 3])])
    def unknown_batch(x):
        y = tf_ops.conv2d_transpose(x, w, [tf.shape(x)[0], 10, 12, 4], 2, "SAME", bias=b)
        assert y.shape.as_list() == [None, 10, 12, 4]
        return y
    assert unknown_batch(x).shape == (2, 10, 12, 4)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_transpose_half_precision_computed_in_float32(dtype, rng):
    x32 = tf.constant(rng.standard_normal((2, 5, 5, 3)).astype(np.float32))
    w32 = tf.constant(rng.standard_normal((3, 3, 4, 3)).astype(np.float32))
    x, w = tf.cast(x32, dtype), tf.cast(w32, dtype)
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = tf_ops.conv2d_transpose(x, w, [2, 10, 10, 4], 2, "SAME")
    dx, dw = tape.gradient(y, [x, w])
    assert y.dtype == dx.dtype == dw.dtype == dtype
    want = tf.nn.conv2d_transpose(tf.cast(x, tf.float32), tf.cast(w, tf.float32), [2, 10, 10, 4], 2, "SAME")
    assert _rel_err(tf.cast(y, tf.float32), want) < (1e-2 if dtype == tf.bfloat16 else 2e-3)


def test_transpose_errors_name_the_shapes(rng):
    x = tf.zeros((2, 5, 6, 3))
    w = tf.zeros((3, 3, 4, 3))
    with pytest.raises(ValueError, match=r"output_shape \(2, 9, 12, 4\).*\(2, 4, 5, 3\)"):
        tf_ops.conv2d_transpose(x, w, [2, 9, 12, 4], 2, "VALID")       # its convolution is 4x5, not 5x6
    with pytest.raises(ValueError, match="input shape"):
        tf_ops.conv2d_transpose(x, tf.zeros((3, 3, 4, 2)), [2, 10, 12, 4], 2, "SAME")   # 3 channels, not 2
    with pytest.raises(ValueError, match="output_shape must be 4 sizes"):
        tf_ops.conv2d_transpose(x, w, [10, 12, 4], 2, "SAME")
    with pytest.raises(ValueError, match="output_shape must hold ints"):
        tf_ops.conv2d_transpose(x, w, [2, 10.0, 12, 4], 2, "SAME")
    with pytest.raises(ValueError, match="CAUSAL"):
        tf_ops.conv1d_transpose(tf.zeros((2, 5, 3)), tf.zeros((3, 4, 3)), [2, 5, 4], 1, "CAUSAL")
    with pytest.raises(TypeError, match="dtype"):
        tf_ops.conv2d_transpose(x, tf.zeros((3, 3, 4, 3), tf.float64), [2, 10, 12, 4], 2, "SAME")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    def run_time_sizes(x):
        return tf_ops.conv2d_transpose(x, w, [tf.shape(x)[0], 9, 12, 4], 2, "VALID")
    with pytest.raises(tf.errors.InvalidArgumentError, match="out_backprop"):
        run_time_sizes(x)


# ------------------------------------------------------------------------------------- fresh processes

def _run(code, env=None, timeout=300):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=full_env, timeout=timeout)
    assert result.returncode == 0, f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _all_six(module):
    """One functional model with every new layer: a 2-D branch and a 1-D branch."""
    keras.utils.set_random_seed(4)
    image, sequence = keras.Input((7, 6, 3)), keras.Input((9, 4))
    a = module.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1, activation="relu")(image)
    a = module.DepthwiseConv2D(3, depth_multiplier=2, data_format="channels_last", activation="gelu")(a)
    a = module.SeparableConv2D(3, 3, strides=2, padding="same", activation="softplus")(a)
    b = module.Conv1DTranspose(5, 3, strides=2, activation="tanh")(sequence)
    b = module.DepthwiseConv1D(3, padding="same", use_bias=False)(b)
    b = module.SeparableConv1D(2, 3, depth_multiplier=2, dilation_rate=2)(b)
    return keras.Model([image, sequence], [keras.layers.Flatten()(a), keras.layers.Flatten()(b)])


def test_to_keras_and_convert_swap_all_six(rng):
    model = _all_six(kconv)
    x = [rng.standard_normal((2, 7, 6, 3)).astype(np.float32), rng.standard_normal((2, 9, 4)).astype(np.float32)]
    want = model.predict_on_batch(x)
    plain = kconv.to_keras(model)
    assert not any(type(layer).__module__.startswith("kconv") for layer in plain.layers)
    back = kconv.convert(plain)
    assert sorted(type(layer).__name__ for layer in back.layers if type(layer).__module__ == "kconv.layers") == \
        sorted(NEW_LAYERS)
    for other in (plain, back):
        for got, w in zip(other.predict_on_batch(x), want):
            assert _rel_err(got, w) < 1e-5


def test_keras_file_round_trip_in_fresh_process(tmp_path, rng):
    model = _all_six(kconv)
    layers = {type(layer).__name__: layer for layer in model.layers if type(layer).__module__ == "kconv.layers"}
    assert sorted(layers) == sorted(NEW_LAYERS)
    layers["Conv2DTranspose"].threads = 1
    layers["DepthwiseConv1D"].algorithm = "direct"
    x = [rng.standard_normal((3, 7, 6, 3)).astype(np.float32), rng.standard_normal((3, 9, 4)).astype(np.float32)]
    np.savez(tmp_path / "x.npz", *x)
    np.savez(tmp_path / "y.npz", *model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    out = _run(f"""
        import json, numpy as np, keras
        import kconv.layers   # registers kconv>Conv2DTranspose, kconv>DepthwiseConv2D, ...
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        layers = {{type(l).__module__ + "." + type(l).__name__: l for l in model.layers
                   if type(l).__module__.startswith("kconv")}}
        x, y = np.load({str(tmp_path / "x.npz")!r}), np.load({str(tmp_path / "y.npz")!r})
        got = model.predict([x["arr_0"], x["arr_1"]], verbose=0)
        err = max(float(np.abs(g - y[k]).max()) for g, k in zip(got, ["arr_0", "arr_1"]))
        print(json.dumps(dict(kinds=sorted(layers), err=err,
                              threads=layers["kconv.layers.Conv2DTranspose"].threads,
                              algorithm=layers["kconv.layers.DepthwiseConv1D"].algorithm)))
    """, timeout=180)
    assert out["kinds"] == sorted("kconv.layers." + name for name in NEW_LAYERS)
    assert out["err"] < 1e-5 and out["threads"] == 1 and out["algorithm"] == "direct"


def test_fallback_path_computes_the_same(tmp_path):
    """KCONV_NATIVE_OP=0: the six layers run through tf.numpy_function, outputs and gradients as Keras's."""
    out = _run("""
        import json, numpy as np, tensorflow as tf, keras
        import kconv
        from kconv import _oplib, layers as kl
        rng = np.random.default_rng(0)
        cases = [("Conv2DTranspose", (2, 5, 6, 3), dict(filters=4, kernel_size=3, strides=2, padding="same",
                                                         output_padding=1, activation="relu")),
                 ("Conv2DTranspose", (2, 3, 5, 6), dict(filters=4, kernel_size=2, strides=2,
                                                         data_format="channels_first", activation="softplus")),
                 ("Conv1DTranspose", (2, 7, 3), dict(filters=4, kernel_size=3, dilation_rate=2, padding="same")),
                 ("DepthwiseConv2D", (2, 7, 6, 3), dict(kernel_size=3, depth_multiplier=2, activation="gelu")),
                 ("DepthwiseConv1D", (2, 3, 9), dict(kernel_size=3, data_format="channels_first")),
                 ("SeparableConv2D", (2, 8, 7, 3), dict(filters=4, kernel_size=3, strides=2, activation="relu")),
                 ("SeparableConv1D", (2, 3, 9), dict(filters=4, kernel_size=3, data_format="channels_first"))]
        errors, types = {}, set()
        for name, shape, kwargs in cases:
            ours, theirs = getattr(kconv, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
            x = tf.constant(rng.standard_normal(shape).astype(np.float32))
            ours(x), theirs(x)
            ours.set_weights(theirs.get_weights())
            def run(layer, x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(y * tf.sin(y))
                return [y] + tape.gradient(loss, [x] + layer.trainable_weights)
            f = tf.function(lambda x: run(ours, x))
            types |= {op.type for op in f.get_concrete_function(x).graph.get_operations()}
            errors[f"{name} {len(errors)}"] = max(
                float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(f(x), run(theirs, x)))
        print(json.dumps(dict(path=_oplib.info()["path"], errors=errors, kconv_ops=any("Kconv" in t for t in types),
                              pyfunc=any("PyFunc" in t for t in types))))
    """, env={"KCONV_NATIVE_OP": "0"}, timeout=180)
    assert out["path"] == "numpy_function" and out["pyfunc"] and not out["kconv_ops"]
    assert max(out["errors"].values()) < 1e-4, out["errors"]


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_mixed_precision(name, rng, mixed_float16):
    """float16 compute with float32 weights: kconv computes in float32 and casts back."""
    rank = 1 if "1D" in name else 2
    x = tf.constant(rng.standard_normal((2,) + (7,) * rank + (3,)).astype(np.float32))
    kwargs = dict(kernel_size=3, padding="same", activation="relu") | \
        ({} if name.startswith("Depthwise") else dict(filters=4)) | (dict(strides=2) if "Transpose" in name else {})
    ours, theirs = getattr(kconv, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    ours(x)
    theirs(x)
    ours.set_weights(theirs.get_weights())
    assert ours.compute_dtype == "float16" and all(w.dtype == "float32" for w in ours.weights)
    dy = tf.ones(theirs(x).shape, tf.float16)
    got, want = _forward_backward(ours, x, dy), _forward_backward(theirs, x, dy)
    assert got[0].dtype == want[0].dtype == tf.float16
    assert [g.dtype for g in got[2:]] == [tf.float32] * len(got[2:])
    for g, w in zip(got, want):
        assert _rel_err(tf.cast(g, tf.float32), tf.cast(w, tf.float32)) < 1e-2
