"""Issue 7, point 1: bad input through every public entry point, where tests/test_validation.py left gaps.

  * zero-length sequences / images give correctly shaped empty outputs (numpy ops, TF op and its gradient);
  * a kernel larger than a VALID input raises a clear ValueError through the TF ops and the layers too;
  * a rank-3 input to a 2-D op (which aborts TensorFlow 2.21's own CPU conv) raises ValueError;
  * NaN and Inf reach exactly the outputs whose window reads them, for the forward pass, the input
    gradient and the filter gradient, with every algorithm; every other output stays right;
  * a request too large for memory raises MemoryError (ResourceExhaustedError in a graph) at once,
    before anything is allocated or computed;
  * inputs are never modified, through the TF op (eager and tf.function) too.
"""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import reference as ref
from conftest import assert_close
from kconv import ops

ALGOS = ["auto", "direct", "winograd", "winograd2", "winograd4", "winograd6"]
F32 = np.float32

# Some tests request terabytes: with vm.overcommit_memory=1 the kernel could grant them, so skip there.
_OVERCOMMIT_ALWAYS = (open("/proc/sys/vm/overcommit_memory").read().strip() == "1"
                      if os.path.exists("/proc/sys/vm/overcommit_memory") else False)
huge_ok = pytest.mark.skipif(_OVERCOMMIT_ALWAYS, reason="vm.overcommit_memory=1 could grant a terabyte request")


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def kconv_tf(tf):
    import kconv
    return kconv


# ---------------------------------------------------------------------------------------
# Zero-length sequences and images
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CAUSAL", [(1, 0)]])
@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_zero_length_sequence_numpy(padding, data_format):
    x = np.ones((2, 0, 3) if data_format == "NWC" else (2, 3, 0), F32)
    f = np.ones((3, 3, 4), F32)
    out_shape = (2, 0, 4) if data_format == "NWC" else (2, 4, 0)
    y = ops.conv1d(x, f, padding=padding, data_format=data_format)
    assert y.shape == out_shape and y.dtype == F32
    dx = ops.conv1d_backprop_input(x.shape, f, np.ones(out_shape, F32), padding=padding, data_format=data_format)
    assert dx.shape == x.shape and dx.dtype == F32
    dw = ops.conv1d_backprop_filter(x, f.shape, np.ones(out_shape, F32), padding=padding, data_format=data_format)
    assert dw.shape == f.shape
    np.testing.assert_array_equal(dw, 0)


@pytest.mark.parametrize("x_shape, out_shape", [((2, 0, 5, 3), (2, 0, 3, 4)), ((2, 5, 0, 3), (2, 3, 0, 4))])
@pytest.mark.parametrize("algorithm", ["auto", "direct"])
def test_zero_height_or_width_image(x_shape, out_shape, algorithm):
    x, f = np.ones(x_shape, F32), np.ones((3, 3, 3, 4), F32)
    assert ops.conv2d(x, f, algorithm=algorithm).shape == out_shape
    assert ops.conv2d_backprop_input(x_shape, f, np.ones(out_shape, F32), algorithm=algorithm).shape == x_shape
    np.testing.assert_array_equal(ops.conv2d_backprop_filter(x, f.shape, np.ones(out_shape, F32),
                                                             algorithm=algorithm), 0)


@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4", "direct"])
def test_empty_image_padded_to_an_output_gives_the_bias(tf, kconv_tf, algorithm):
    """A 0-row image padded by 2 + 2 rows has a 2-row output that reads only padding: bias + zeros, from
    tiles that read no pixel (TensorFlow hands an empty tensor over as NULL: no pointer may be formed from it)."""
    x = tf.zeros((2, 0, 6, 16), tf.float64)
    w = tf.ones((3, 3, 16, 16), tf.float64)
    b = tf.range(16, dtype=tf.float64)
    for _ in range(2):      # the second call with the same weights may run the kept-transform (staged) path
        y = kconv_tf.conv2d(x, w, 1, [[0, 0], [2, 2], [1, 1], [0, 0]], bias=b, algorithm=algorithm)
        assert tuple(y.shape) == (2, 2, 6, 16)
        np.testing.assert_array_equal(y.numpy(), np.broadcast_to(np.arange(16.0), (2, 2, 6, 16)))


def test_zero_filters_gives_empty_channels():
    x = np.ones((2, 5, 5, 3), F32)
    assert ops.conv2d(x, np.ones((3, 3, 3, 0), F32)).shape == (2, 3, 3, 0)
    assert ops.conv1d(np.ones((2, 5, 3), F32), np.ones((3, 3, 0), F32)).shape == (2, 3, 0)


def test_zero_length_sequence_tf_op_and_gradient(tf, kconv_tf):
    x = tf.zeros((2, 0, 3))
    w = tf.Variable(tf.ones((3, 3, 4)))
    for padding in ["VALID", "SAME", "CAUSAL"]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = kconv_tf.conv1d(x, w, 1, padding)
            loss = tf.reduce_sum(y)
        assert tuple(y.shape) == (2, 0, 4)
        dx, dw = tape.gradient(loss, [x, w])
        assert tuple(dx.shape) == (2, 0, 3) and tuple(dw.shape) == (3, 3, 4)
        assert float(tf.reduce_sum(tf.abs(dw))) == 0.0
    fn = tf.function(lambda a: kconv_tf.conv1d(a, w, 1, "SAME"))
    assert tuple(fn(x).shape) == (2, 0, 4)


def test_zero_length_sequence_layer_same(tf, kconv_tf):
    assert tuple(kconv_tf.Conv1D(4, 3, padding="same")(np.ones((2, 0, 3), F32)).shape) == (2, 0, 4)
    assert tuple(kconv_tf.Conv1D(4, 3, padding="causal")(np.ones((2, 0, 3), F32)).shape) == (2, 0, 4)


# ---------------------------------------------------------------------------------------
# Kernel larger than a VALID input, and wrong ranks, through the TF ops and the layers
# ---------------------------------------------------------------------------------------


def _graph(tf, fn, *specs):
    return tf.function(fn, input_signature=list(specs), autograph=False)


def test_kernel_larger_than_valid_input_tf_op(tf, kconv_tf):
    x, w = tf.ones((1, 2, 5, 3)), tf.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"larger than the padded input.*"):
        kconv_tf.conv2d(x, w, 1, "VALID")
    with pytest.raises(ValueError, match=r"\(1, 2, 5, 3\).*\(3, 3, 3, 4\)"):   # static shapes: at trace time
        tf.function(lambda a, b: kconv_tf.conv2d(a, b, 1, "VALID"), autograph=False)(x, w)
    # unknown static sizes: the kernel's check runs, TF reports it as InvalidArgumentError with the message
    fn = _graph(tf, lambda a, b: kconv_tf.conv2d(a, b, 1, "VALID"),
                tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([3, 3, 3, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the padded input"):
        fn(x, w)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kconv_tf.conv1d(tf.ones((2, 2, 3)), tf.ones((3, 3, 4)), 1, "VALID")
    with pytest.raises(ValueError, match="larger than the padded input"):   # dilated span 5 > 4
        kconv_tf.conv1d(tf.ones((2, 4, 3)), tf.ones((3, 3, 4)), 1, "VALID", dilations=2)


def test_kernel_larger_than_valid_input_layer(tf, kconv_tf):
    """Built on a known shape, Keras's own check speaks; on an unknown one (None, None), kconv's does."""
    import keras
    with pytest.raises(ValueError):
        kconv_tf.Conv2D(4, 3)(np.ones((1, 2, 5, 3), F32))
    with pytest.raises(ValueError):
        kconv_tf.Conv1D(4, 5)(np.ones((1, 3, 3), F32))
    model = keras.Sequential([keras.Input((None, None, 3)), kconv_tf.Conv2D(4, 3)])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="larger than the padded input"):
        model.predict(np.ones((1, 2, 5, 3), F32), verbose=0)
    model1 = keras.Sequential([keras.Input((None, 3)), kconv_tf.Conv1D(4, 3)])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="larger than the padded input"):
        model1(np.ones((1, 2, 3), F32))


def test_rank3_input_to_2d_tf_op_raises(tf, kconv_tf):
    """tf.nn.conv2d on the CPU aborts the process here; kconv raises ValueError naming the input."""
    x, w = tf.ones((5, 5, 3)), tf.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"input must be rank 4.*\(5, 5, 3\)"):
        kconv_tf.conv2d(x, w, 1, "VALID")
    with pytest.raises(ValueError, match=r"input must be rank 4"):
        tf.function(lambda a, b: kconv_tf.conv2d(a, b, 1, "VALID"), autograph=False)(x, w)
    fn = _graph(tf, lambda a, b: kconv_tf.conv2d(a, b, 1, "SAME"), tf.TensorSpec(None), tf.TensorSpec(None))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be rank 4"):
        fn(x, w)
    with pytest.raises(ValueError, match=r"filters must be rank 4"):
        kconv_tf.conv2d(tf.ones((1, 5, 5, 3)), tf.ones((3, 3, 3)), 1, "VALID")
    with pytest.raises(ValueError, match=r"input must be rank 3"):
        kconv_tf.conv1d(tf.ones((2, 1, 5, 3)), tf.ones((3, 3, 4)), 1, "VALID")
    with pytest.raises(ValueError, match=r"input must be rank 3"):
        kconv_tf.conv1d(tf.ones((5, 3)), tf.ones((3, 3, 4)), 1, "VALID")


def test_rank3_input_to_conv2d_layer(tf, kconv_tf):
    with pytest.raises(ValueError, match="ndim"):
        kconv_tf.Conv2D(4, 3)(np.ones((5, 5, 3), F32))


# ---------------------------------------------------------------------------------------
# NaN and Inf propagate only where a window reads them (all three passes, every algorithm)
# ---------------------------------------------------------------------------------------

X_SHAPE, F_SHAPE = (2, 10, 11, 16), (3, 3, 16, 16)          # Winograd-shaped (every algorithm runs it)
PADS = ((1, 1), (1, 1))                                     # SAME for 3x3
BAD_X = [((0, 4, 5, 3), np.nan), ((1, 0, 10, 15), np.inf), ((1, 7, 2, 0), -np.inf)]
BAD_DY = [((0, 3, 6, 2), np.nan), ((1, 9, 0, 11), np.inf)]


def _plant(a, bad):
    a = a.copy()
    marker = np.zeros(a.shape)
    for where, value in bad:
        a[where] = value
        marker[where] = 1
    return a, marker


def _check_nonfinite(got, touched, reference, dtype, what):
    bad = ~np.isfinite(got)
    assert np.array_equal(bad, touched), (
        f"{what}: {np.count_nonzero(bad & ~touched)} outputs non-finite without reading a non-finite value, "
        f"{np.count_nonzero(touched & ~bad)} read one and are finite")
    assert_close(np.where(touched, 0, got), np.where(touched, 0, reference), dtype, what=f"{what} (finite part)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ALGOS)
def test_nonfinite_forward(algorithm, dtype, rng):
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    f = rng.standard_normal(F_SHAPE).astype(dtype)
    xb, marker = _plant(x, BAD_X)
    y = ops.conv2d(xb, f, padding="SAME", algorithm=algorithm)
    touched = ref.conv2d(marker, np.ones(F_SHAPE), (1, 1), PADS) > 0
    _check_nonfinite(y, touched, ref.conv2d(np.where(marker > 0, 0, x), f, (1, 1), PADS), dtype, "y")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ALGOS)
def test_nonfinite_input_gradient(algorithm, dtype, rng):
    f = rng.standard_normal(F_SHAPE).astype(dtype)
    dy = rng.standard_normal(X_SHAPE[:3] + (F_SHAPE[3],)).astype(dtype)
    dyb, marker = _plant(dy, BAD_DY)
    dx = ops.conv2d_backprop_input(X_SHAPE, f, dyb, padding="SAME", algorithm=algorithm)
    touched = ref.conv2d_backprop_input(X_SHAPE, np.ones(F_SHAPE), marker, (1, 1), PADS) > 0
    _check_nonfinite(dx, touched, ref.conv2d_backprop_input(X_SHAPE, f, np.where(marker > 0, 0, dy), (1, 1), PADS),
                     dtype, "dx")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("where", ["input", "out_backprop"])
def test_nonfinite_filter_gradient(where, algorithm, dtype, rng):
    """dW[t, c, k] = sum_p dY[p, k] X[p + t, c]: non-finite exactly where a product reads a non-finite value."""
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    dy = rng.standard_normal(X_SHAPE[:3] + (F_SHAPE[3],)).astype(dtype)
    if where == "input":
        xb, marker = _plant(x, BAD_X)
        dw = ops.conv2d_backprop_filter(xb, F_SHAPE, dy, padding="SAME", algorithm=algorithm)
        touched = ref.conv2d_backprop_filter(marker, F_SHAPE, np.ones(dy.shape), (1, 1), PADS) > 0
        expect = ref.conv2d_backprop_filter(np.where(marker > 0, 0, x), F_SHAPE, dy, (1, 1), PADS)
    else:
        dyb, marker = _plant(dy, BAD_DY)
        dw = ops.conv2d_backprop_filter(x, F_SHAPE, dyb, padding="SAME", algorithm=algorithm)
        # every dW[t, c, k] sums dY[p, k] over all p (taps in the padding multiply it by 0: Inf * 0 = NaN)
        touched = np.broadcast_to(marker.any(axis=(0, 1, 2)), F_SHAPE)
        expect = ref.conv2d_backprop_filter(x, F_SHAPE, np.where(marker > 0, 0, dy), (1, 1), PADS)
    _check_nonfinite(dw, touched, expect, dtype, "dw")


@pytest.mark.parametrize("algorithm", ALGOS)
def test_nonfinite_conv1d_all_passes(algorithm, rng):
    x = rng.standard_normal((2, 30, 16)).astype(F32)
    f = rng.standard_normal((3, 16, 16)).astype(F32)
    dy = rng.standard_normal((2, 30, 16)).astype(F32)
    xb, dyb = x.copy(), dy.copy()
    xb[1, 12, 5] = np.inf
    dyb[0, 20, 3] = np.nan
    y = ops.conv1d(xb, f, padding="SAME", algorithm=algorithm)
    touched = np.zeros(y.shape, bool)
    touched[1, 11:14] = True
    assert np.array_equal(~np.isfinite(y), touched)
    dx = ops.conv1d_backprop_input(x.shape, f, dyb, padding="SAME", algorithm=algorithm)
    touched = np.zeros(dx.shape, bool)
    touched[0, 19:22] = True
    assert np.array_equal(~np.isfinite(dx), touched)
    dw = ops.conv1d_backprop_filter(xb, f.shape, dy, padding="SAME", algorithm=algorithm)
    touched = np.zeros(dw.shape, bool)
    touched[:, 5, :] = True          # x[1, 12, 5] is read by every tap of some output
    assert np.array_equal(~np.isfinite(dw), touched)


def test_nonfinite_through_tf_op_gradients(tf, kconv_tf, rng):
    x = rng.standard_normal(X_SHAPE).astype(F32)
    f = rng.standard_normal(F_SHAPE).astype(F32)
    xb, marker = _plant(x, BAD_X)
    xt, wt = tf.constant(xb), tf.Variable(f)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = kconv_tf.conv2d(xt, wt, 1, "SAME")
    dx, dw = tape.gradient(y, [xt, wt], output_gradients=tf.ones_like(y))
    touched = ref.conv2d(marker, np.ones(F_SHAPE), (1, 1), PADS) > 0
    assert np.array_equal(~np.isfinite(y.numpy()), touched)
    # dx does not read x: finite everywhere; dw reads x: non-finite for the channels holding Inf/NaN
    assert np.isfinite(dx.numpy()).all()
    touched_w = ref.conv2d_backprop_filter(marker, F_SHAPE, np.ones(y.shape), (1, 1), PADS) > 0
    assert np.array_equal(~np.isfinite(dw.numpy()), touched_w)


# ---------------------------------------------------------------------------------------
# Requests too large for memory: MemoryError at once, nothing allocated
# ---------------------------------------------------------------------------------------

P6 = 500_000      # explicit padding that makes a 1x1 input a (10^6 + 1)^2 output: 10^12 elements
Q31 = 2 ** 31     # padding whose output's byte count does not even fit in 64 bits

HUGE_NUMPY = {
    "forward-1e12": lambda: ops.conv2d(np.ones((1, 1, 1, 1), F32), np.ones((1, 1, 1, 1), F32),
                                       padding=[(P6, P6), (P6, P6)]),
    "forward-past-int64": lambda: ops.conv2d(np.ones((1, 1, 1, 1), F32), np.ones((1, 1, 1, 1024), F32),
                                             padding=[(Q31, Q31), (Q31, Q31)]),
    "forward-winograd-1e12": lambda: ops.conv2d(np.ones((1, 1, 1, 16), F32), np.ones((3, 3, 16, 16), F32),
                                                padding=[(P6, P6), (P6, P6)], algorithm="winograd4"),
    "conv1d-1e12": lambda: ops.conv1d(np.ones((1, 1, 1), F32), np.ones((1, 1, 10 ** 6), F32),
                                      padding=[(P6, P6)]),
    "input-grad-1e12": lambda: ops.conv2d_backprop_input((1, 10 ** 6, 10 ** 6, 1), np.ones((1, 1, 1, 1), F32),
                                                         np.ones((1, 1, 1, 1), F32), strides=10 ** 6),
    "input-grad-past-int64": lambda: ops.conv2d_backprop_input((1, 2 ** 31 - 1, 2 ** 31 - 1, 1),
                                                               np.ones((1, 1, 1, 1), F32), np.ones((1, 1, 1, 1), F32),
                                                               strides=2 ** 31 - 1),
    # the filter gradient's partial-sum buffer (splits, groups, K, taps*C) = 10^12 values
    "filter-grad-partial-1e12": lambda: ops.conv2d_backprop_filter(
        np.broadcast_to(F32(1), (1, 1, 1, 10 ** 6)), (1, 1, 10 ** 6, 10 ** 6),
        np.broadcast_to(F32(1), (1, 1, 1, 10 ** 6))),
    # Winograd filter gradient: its (alpha^2, K, C) buffer is 16 x 2^36 values
    "filter-grad-winograd": lambda: ops.conv2d_backprop_filter(
        np.broadcast_to(F32(1), (1, 3, 3, 2 ** 18)), (3, 3, 2 ** 18, 2 ** 18),
        np.broadcast_to(F32(1), (1, 1, 1, 2 ** 18)), algorithm="winograd2"),
    # Winograd forward: the filters' transform of 2^36 (C, K) pairs
    "forward-winograd-filters": lambda: ops.conv2d(
        np.broadcast_to(F32(1), (1, 3, 3, 2 ** 18)), np.broadcast_to(F32(1), (3, 3, 2 ** 18, 2 ** 18)),
        algorithm="winograd2"),
}


@huge_ok
@pytest.mark.parametrize("case", list(HUGE_NUMPY))
def test_too_large_for_memory_numpy(case):
    t0 = time.perf_counter()
    with pytest.raises(MemoryError):
        HUGE_NUMPY[case]()
    assert time.perf_counter() - t0 < 2.0, "MemoryError must come at once, not after allocating or computing"


def test_huge_kernel_fails_fast_in_a_memory_limited_process():
    """A 10^6 x 10^6 kernel (only its sizes are given, to the filter gradient; or a broadcast view) must fail
    at once with MemoryError, not build 10^12 taps in Python first (which filled this machine's memory and got
    the process OOM-killed). Run under RLIMIT_AS = 4 GB so that a regression cannot take the machine down."""
    script = textwrap.dedent("""
        import resource, time, json
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        import numpy as np
        from kconv import ops
        f32 = np.float32
        out = {}
        cases = {
            "filter-grad": lambda: ops.conv2d_backprop_filter(np.ones((1, 1, 1, 1), f32), (10**6, 10**6, 1, 1),
                                                               np.ones((1, 1, 1, 1), f32), padding="SAME"),
            "forward": lambda: ops.conv2d(np.ones((1, 1, 1, 1), f32),
                                          np.broadcast_to(f32(1), (10**6, 10**6, 1, 1)), padding="SAME"),
        }
        for name, fn in cases.items():
            t0 = time.perf_counter()
            try:
                fn()
                out[name] = ["no error", 0]
            except BaseException as e:
                out[name] = [type(e).__name__, time.perf_counter() - t0]
        print(json.dumps(out))
    """)
    import kconv   # the subprocess imports the same kconv as this process
    root = os.path.dirname(os.path.dirname(os.path.abspath(kconv.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root] + sys.path))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env,
                              cwd=root)
    except subprocess.TimeoutExpired:
        pytest.fail("a 10^6 x 10^6 kernel did not fail within 30 s (taps built one by one in Python?)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (error, seconds) in results.items():
        assert error == "MemoryError", f"{name}: {error}"
        assert seconds < 2.0, f"{name}: MemoryError after {seconds:.1f} s"


@huge_ok
def test_too_large_for_memory_tf_op(tf, kconv_tf):
    x, w = tf.ones((1, 1, 1, 1)), tf.ones((1, 1, 1, 1))
    pads = [(P6, P6), (P6, P6)]
    t0 = time.perf_counter()
    with pytest.raises(tf.errors.ResourceExhaustedError):   # TensorFlow cannot allocate the output
        kconv_tf.conv2d(x, w, 1, pads)
    fn = _graph(tf, lambda a, b: kconv_tf.conv2d(a, b, 1, pads), tf.TensorSpec(None), tf.TensorSpec(None))
    with pytest.raises(tf.errors.ResourceExhaustedError):
        fn(x, w)
    assert time.perf_counter() - t0 < 10.0


# ---------------------------------------------------------------------------------------
# Inputs are never modified: the TF op (eager and graph), with its gradients
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["auto", "direct", "winograd"])
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_tf_op_does_not_modify_inputs(mode, algorithm, tf, kconv_tf, rng):
    x0 = rng.standard_normal((2, 8, 8, 16)).astype(F32)
    x0[0, 3, 3, 3] = np.nan       # the Winograd -> direct fallback path too
    w0 = rng.standard_normal((3, 3, 16, 16)).astype(F32)
    dy0 = rng.standard_normal((2, 8, 8, 16)).astype(F32)
    x, w, dy = tf.constant(x0), tf.Variable(w0), tf.constant(dy0)

    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = kconv_tf.conv2d(x, w, 1, "SAME", algorithm=algorithm)
        return (y,) + tuple(tape.gradient(y, [x, w], output_gradients=dy))

    if mode == "function":
        step = tf.function(step, autograph=False)
    for _ in range(2):
        results = step(x, dy)
    np.testing.assert_array_equal(x.numpy(), x0)
    np.testing.assert_array_equal(w.numpy(), w0)
    np.testing.assert_array_equal(dy.numpy(), dy0)
    assert all(r is not None for r in results)


def test_numpy_ops_do_not_modify_nonfinite_inputs(rng):
    """The NaN fallback (Winograd -> direct) must not write into the caller's arrays either."""
    x = rng.standard_normal(X_SHAPE).astype(F32)
    xb, _ = _plant(x, BAD_X)
    f = rng.standard_normal(F_SHAPE).astype(F32)
    dyb, _ = _plant(rng.standard_normal(X_SHAPE[:3] + (16,)).astype(F32), BAD_DY)
    saved = [a.copy() for a in (xb, f, dyb)]
    for algorithm in ("auto", "winograd4"):
        ops.conv2d(xb, f, padding="SAME", algorithm=algorithm)
        ops.conv2d_backprop_input(xb.shape, f, dyb, padding="SAME", algorithm=algorithm)
        ops.conv2d_backprop_filter(xb, f.shape, dyb, padding="SAME", algorithm=algorithm)
    for a, b in zip((xb, f, dyb), saved):
        np.testing.assert_array_equal(a, b)
