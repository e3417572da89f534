"""Bias and activation fused into the forward pass, and their gradient (dz, db) in one pass over dy.

Each fused activation is checked against the float64 reference convolution followed by the activation
written out in numpy, on every algorithm (the epilogue sits in the direct store, the Winograd fused blocks
and the Winograd staged stage 3), and its derivative against central finite differences in float64.
"""
import math

import numpy as np
import pytest

import reference as ref
from kconv import ops
from kconv._backend import core

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)

ACTIVATION_FUNCTIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "relu6": lambda z: np.clip(z, 0, 6),
    "leaky_relu": lambda z: np.where(z < 0, 0.2 * z, z),
    "elu": lambda z: np.where(z < 0, np.expm1(z), z),
    "selu": lambda z: SELU_SCALE * np.where(z < 0, SELU_ALPHA * np.expm1(z), z),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "silu": lambda z: z / (1 + np.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1 + _erf(z / math.sqrt(2))),
}
assert tuple(ACTIVATION_FUNCTIONS) == ops.ACTIVATIONS


def _layer(rng, n=2, hw=(9, 10), c=16, k=20, kernel=3, dtype=np.float64):
    x = rng.standard_normal((n,) + hw + (c,)).astype(dtype)
    w = (rng.standard_normal((kernel, kernel, c, k)) / kernel / math.sqrt(c)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("algorithm", ["direct", "winograd2", "winograd4"])
def test_fused_forward_equals_activation_of_conv_plus_bias(activation, algorithm, rng):
    x, w, b = _layer(rng)
    got = ops.conv2d(x, w, padding="SAME", algorithm=algorithm, bias=b, activation=activation)
    z = ref.conv2d(x, w, pads=((1, 1), (1, 1))) + b
    np.testing.assert_allclose(got, ACTIVATION_FUNCTIONS[activation](z), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu"])
def test_fused_forward_on_the_staged_winograd_path_and_in_float32(activation, rng):
    x, w, b = _layer(rng, n=1, hw=(4, 4), c=96, k=40, dtype=np.float32)   # few tiles, many channels: staged
    got = ops.conv2d(x, w, padding="SAME", algorithm="winograd4", bias=b, activation=activation)
    z = ref.conv2d(x.astype(np.float64), w.astype(np.float64), pads=((1, 1), (1, 1))) + b
    want = ACTIVATION_FUNCTIONS[activation](z)
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu"])
@pytest.mark.parametrize("kernel, k", [(1, 1024), (3, 100)])
def test_fused_forward_of_a_late_layer_whose_columns_are_split_between_threads(activation, kernel, k, rng):
    # 7x7 at batch 1 is one block of rows: its column panels become the tasks, and each value gets its bias
    # and activation once (1x1 K = 1024 also copies the filter's far-apart rows together first).
    x, w, b = _layer(rng, n=1, hw=(7, 7), c=128, k=k, kernel=kernel, dtype=np.float32)
    got = ops.conv2d(x, w, padding="SAME", algorithm="direct", bias=b, activation=activation, threads=2)
    pad = kernel // 2
    z = ref.conv2d(x.astype(np.float64), w.astype(np.float64), pads=((pad, pad), (pad, pad))) + b
    want = ACTIVATION_FUNCTIONS[activation](z)
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


def test_fused_1d_causal_with_bias(rng):
    x = rng.standard_normal((3, 17, 8))
    w = rng.standard_normal((3, 8, 5))
    b = rng.standard_normal(5)
    got = ops.conv1d(x, w, padding="CAUSAL", dilations=2, bias=b, activation="tanh")
    z = ref.conv1d(x, w, pad=(4, 0), dilation=2) + b
    np.testing.assert_allclose(got, np.tanh(z), rtol=1e-12, atol=1e-12)


# The transposed convolution's pass (the input gradient) with bias and activation fused: on the direct
# kernel with one stride phase and with several, on Winograd, on the depthwise kernel (with a multiplier,
# whose epilogue runs after the copies are added), and with an empty dy.
TRANSPOSED = {
    "direct": dict(x=(2, 9, 10, 6), w=(3, 3, 6, 5), strides=1, algorithm="direct"),
    "phases": dict(x=(2, 11, 10, 7), w=(3, 3, 7, 5), strides=2, algorithm="direct"),
    "few channels": dict(x=(1, 12, 9, 3), w=(5, 5, 3, 8), strides=2, algorithm="direct"),
    "winograd": dict(x=(1, 10, 12, 32), w=(3, 3, 32, 33), strides=1, algorithm="winograd4"),
    "depthwise": dict(x=(2, 9, 8, 17), w=(3, 3, 1, 17), strides=2, algorithm="auto"),
    "multiplier": dict(x=(1, 7, 9, 5), w=(3, 3, 1, 15), strides=1, algorithm="auto"),
}


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("kind", TRANSPOSED)
def test_fused_transposed_pass_equals_activation_of_input_gradient_plus_bias(kind, activation, rng):
    spec = TRANSPOSED[kind]
    xs, ws, s = spec["x"], spec["w"], spec["strides"]
    w = rng.standard_normal(ws)
    conv = ops._describe(2, xs, ws, s, "SAME", "NHWC", 1)
    plan = ops._plan(conv, np.dtype(np.float64), spec["algorithm"], None, ops._args.activation(activation))
    if kind == "depthwise" or kind == "multiplier":
        assert plan.depthwise
    ho, wo = plan.out_hw
    dy = rng.standard_normal((xs[0], ho, wo, ws[3]))
    b = rng.standard_normal(xs[3])
    y, z = np.full(xs, np.nan), np.full(xs, np.nan)
    plan.backprop_input(w, dy, y, b, z)
    pads = ref.pad_pairs_2d("SAME", xs[1:3], ws[:2], (s, s), (1, 1))
    want_z = ref.conv2d_backprop_input(xs, w, dy, (s, s), pads) + b
    np.testing.assert_allclose(y, ACTIVATION_FUNCTIONS[activation](want_z), rtol=1e-10, atol=1e-10)
    if activation in ("silu", "gelu"):
        np.testing.assert_allclose(z, want_z, rtol=1e-10, atol=1e-10)


def test_fused_transposed_pass_of_an_empty_gradient_is_the_activation_of_the_bias(rng):
    """No input channels to the transposed convolution (K = 0): its result is act(bias) everywhere."""
    conv = ops._describe(2, (1, 4, 5, 3), (3, 3, 3, 0), 1, "SAME", "NHWC", 1)
    plan = ops._plan(conv, np.dtype(np.float64), "direct", None, ops._args.activation("sigmoid"))
    b = rng.standard_normal(3)
    y = np.full((1, 4, 5, 3), np.nan)
    plan.backprop_input(np.zeros((3, 3, 3, 0)), np.zeros((1, 4, 5, 0)), y, b)
    np.testing.assert_allclose(y, np.broadcast_to(1 / (1 + np.exp(-b)), y.shape), rtol=1e-12)


def test_bias_must_have_one_value_per_filter(rng):
    x, w, b = _layer(rng)
    with pytest.raises(ValueError, match=r"bias must have shape \(20,\)"):
        ops.conv2d(x, w, bias=b[:5])
    with pytest.raises(ValueError, match="activation must be"):
        ops.conv2d(x, w, activation="softmax")


def _grad(activation, dy, y, z):
    dz, db = np.full_like(dy, np.nan), np.full(dy.shape[1], np.nan, dy.dtype)
    code = ops.ACTIVATIONS.index(activation)
    core.activation_grad(code, dy, y, z if activation in ("silu", "gelu") else None, dz, db)
    return dz, db


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_activation_gradient_matches_finite_differences(activation, rng):
    rows, k = 600, 7                      # more rows than one 256-row chunk of the bias sum
    z = rng.standard_normal((rows, k)) * 3
    z[np.abs(z) < 1e-3] = 0.5             # keep finite differences away from relu's kink
    z[np.abs(z - 6) < 1e-3] = 5.0
    f = ACTIVATION_FUNCTIONS[activation]
    dy = rng.standard_normal((rows, k))
    dz, db = _grad(activation, dy, f(z), z)
    eps = 1e-6
    numeric = (f(z + eps) - f(z - eps)) / (2 * eps)
    np.testing.assert_allclose(dz, dy * numeric, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, (dy * numeric).sum(axis=0), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("k", [1, 15, 16, 32, 33, 48, 100])
@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_float32_bias_gradient_sums_in_float64_blocks(activation, k, rng):
    """float32 rows go 16 at a time through vector sums of 1-2 vectors of channels (and a scalar rest),
    then into float64: rows not a multiple of 16, several 256-row chunks, every channel count path."""
    rows = 16 * 40 + 7
    dy = rng.standard_normal((rows, k)).astype(np.float32) + 0.5
    y = rng.standard_normal((rows, k)).astype(np.float32)
    dz, db = _grad(activation, dy, y, None)
    want_dz = np.where(y > 0, dy, 0) if activation == "relu" else dy
    np.testing.assert_array_equal(dz, want_dz)
    want_db = want_dz.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(db, want_db, rtol=2e-6, atol=2e-6 * np.abs(want_dz).sum(axis=0).max())


@pytest.mark.parametrize("k", [1, 16, 33, 100])
def test_linear_bias_gradient_without_dz_sums_dy_alone(k, rng):
    """A linear activation's dz is dy: passing no dz asks only for its column sums (the native op then hands
    dy on as dz); the same sums as with dz, in float64 blocks, whatever the thread count."""
    dy = rng.standard_normal((16 * 40 + 7, k)).astype(np.float32) + 0.5
    linear = ops.ACTIVATIONS.index("linear")
    with_dz = _grad("linear", dy, dy, None)[1]
    for threads in (1, 2):
        db = np.full(k, np.nan, np.float32)
        core.activation_grad(linear, dy, dy, None, None, db, threads)
        np.testing.assert_array_equal(db, with_dz)
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=0), rtol=2e-6,
                               atol=2e-6 * np.abs(dy).sum(axis=0).max())
    with pytest.raises(ValueError, match="linear"):
        core.activation_grad(ops.ACTIVATIONS.index("relu"), dy, dy, None, None, db)


def test_activation_gradient_does_not_depend_on_threads(rng):
    dy, z = rng.standard_normal((5000, 33)).astype(np.float32), rng.standard_normal((5000, 33)).astype(np.float32)
    y = z / (1 + np.exp(-z))
    results = []
    for threads in (1, 2, 3):
        dz, db = np.empty_like(dy), np.empty(33, np.float32)
        core.activation_grad(ops.ACTIVATIONS.index("silu"), dy, y, z, dz, db, threads)
        results.append((dz, db))
    for dz, db in results[1:]:
        np.testing.assert_array_equal(dz, results[0][0])
        np.testing.assert_array_equal(db, results[0][1])


def test_activation_gradient_of_an_empty_batch_is_zero_bias_gradient():
    dz, db = _grad("relu", np.empty((0, 4)), np.empty((0, 4)), None)
    assert dz.shape == (0, 4) and np.array_equal(db, np.zeros(4))
