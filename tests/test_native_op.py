"""kconv's native TensorFlow op library: Keras conformance with fused bias and activation, gradients,
shapes known only at run time, SavedModel export, the numpy_function fallback and concurrency."""
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import kconv  # noqa: E402
from kconv import ops, tf_ops  # noqa: E402
from kconv._backend import core  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.native_op_in_use(), reason="kconv's op library could not be built here")

ACTIVATIONS = ["linear", "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "silu", "swish", "gelu"]
LAYERS = {
    "conv2d": dict(cls=(kconv.Conv2D, keras.layers.Conv2D), shape=(3, 9, 8, 16), filters=16, kernel_size=3,
                   padding="same"),
    "conv2d_stride2_groups": dict(cls=(kconv.Conv2D, keras.layers.Conv2D), shape=(2, 9, 9, 8), filters=12,
                                  kernel_size=3, strides=2, groups=2, padding="valid"),
    "conv2d_dilated_nchw": dict(cls=(kconv.Conv2D, keras.layers.Conv2D), shape=(2, 5, 10, 10), filters=4,
                                kernel_size=(3, 2), dilation_rate=2, data_format="channels_first"),
    "conv1d_causal": dict(cls=(kconv.Conv1D, keras.layers.Conv1D), shape=(3, 17, 16), filters=16, kernel_size=3,
                          padding="causal", dilation_rate=2),
    "conv1d_k5": dict(cls=(kconv.Conv1D, keras.layers.Conv1D), shape=(2, 20, 6), filters=7, kernel_size=5,
                      padding="same"),
}


def _twins(name, activation, use_bias=True, seed=0):
    spec = dict(LAYERS[name])
    (ours, theirs), shape = spec.pop("cls"), spec.pop("shape")
    a = ours(activation=activation, use_bias=use_bias, **spec)
    b = theirs(activation=activation, use_bias=use_bias, **spec)
    a.build(shape)
    b.build(shape)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in b.get_weights()]
    a.set_weights(weights)
    b.set_weights(weights)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    return a, b, x


def _forward_and_gradients(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * y)     # dy = 2y: a different value at every output
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [y] + grads


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_keras_with_every_fused_activation(name, activation, in_function):
    ours, theirs, x = _twins(name, activation)
    run = tf.function(_forward_and_gradients) if in_function else _forward_and_gradients
    got, want = run(ours, x), _forward_and_gradients(theirs, x)
    assert len(got) == len(want) == 4           # output, input gradient, kernel gradient, bias gradient
    for what, g, w in zip(["output", "input grad", "kernel grad", "bias grad"], got, want):
        assert g.shape == w.shape, what
        assert _rel(g, w) < 5e-5, (what, _rel(g, w))


def test_layer_without_bias_and_with_an_unfused_activation():
    ours, theirs, x = _twins("conv2d", lambda z: z * tf.sigmoid(2 * z), use_bias=False)
    for g, w in zip(tf.function(_forward_and_gradients)(ours, x), _forward_and_gradients(theirs, x)):
        assert _rel(g, w) < 5e-5


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_activation_gradient_writes_into_dy_only_when_nothing_else_reads_it(activation):
    """The op may take dy's buffer for dz (as TensorFlow's ReluGrad does): a temporary dy gives the right dz,
    and a dy that is also read afterwards, or held by the caller, keeps its values."""
    rng = np.random.default_rng(5)
    t = tf.constant(rng.standard_normal((4, 6, 6, 8)).astype(np.float32))
    y = tf.constant(np.abs(rng.standard_normal((4, 6, 6, 8))).astype(np.float32) * (rng.random((4, 6, 6, 8)) > 0.3))
    y = tf.sigmoid(y) if activation == "sigmoid" else y
    lib = kconv._oplib.load()
    none = tf.zeros([0])
    slope = (y > 0).numpy() if activation == "relu" else (y * (1 - y)).numpy()
    want_dz = 2 * t.numpy() * slope

    @tf.function
    def temporary_dy(t, y):
        return lib.kconv_bias_activation_grad(2 * t, y, none, activation=activation)

    @tf.function
    def dy_read_afterwards(t, y):
        dy = 2 * t
        dz, db = lib.kconv_bias_activation_grad(dy, y, none, activation=activation)
        return dz, db, dy + 0

    for dz, db in [temporary_dy(t, y), dy_read_afterwards(t, y)[:2]]:
        np.testing.assert_allclose(dz, want_dz, rtol=1e-6)
        np.testing.assert_allclose(db, want_dz.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(dy_read_afterwards(t, y)[2], 2 * t.numpy())
    held = 2 * t
    lib.kconv_bias_activation_grad(held, y, none, activation=activation)
    np.testing.assert_array_equal(held, 2 * t.numpy())


def test_linear_activation_gradient_hands_dy_on_and_sums_it():
    rng = np.random.default_rng(6)
    dy = tf.constant(rng.standard_normal((3, 5, 7, 20)).astype(np.float32))
    lib = kconv._oplib.load()
    dz, db = tf.function(lambda dy: lib.kconv_bias_activation_grad(dy, dy, tf.zeros([0]), activation="linear"))(dy)
    np.testing.assert_array_equal(dz, dy)
    np.testing.assert_allclose(db, dy.numpy().astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "elu", "sigmoid", "gelu"])
def test_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal((2, 6, 5, 3)))
    w = tf.constant(rng.standard_normal((3, 3, 3, 4)) * 0.5)
    b = tf.constant(rng.standard_normal(4))
    f = lambda x, w, b: kconv.conv2d(x, w, 1, "SAME", bias=b, activation=activation)   # noqa: E731
    theoretical, numerical = tf.test.compute_gradient(f, [x, w, b], delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-5)


def test_unknown_batch_and_spatial_sizes_plan_at_run_time():
    rng = np.random.default_rng(4)
    w = tf.constant(rng.standard_normal((3, 3, 5, 6)).astype(np.float32))
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 5], tf.float32)])
    def conv(x):
        y = kconv.conv2d(x, w, 2, "SAME", activation="relu")
        seen["static"] = y.shape.as_list()
        return y

    for shape in [(1, 7, 9, 5), (4, 12, 5, 5), (0, 6, 6, 5), (2, 1, 1, 5)]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = conv(x).numpy()
        np.testing.assert_allclose(y, np.maximum(ops.conv2d(x, w.numpy(), 2, "SAME"), 0), rtol=1e-5, atol=1e-5)
    assert seen["static"] == [None, None, None, 6]


def test_static_shapes_are_kept():
    spec = tf.TensorSpec([None, 10, 12, 4], tf.float32)
    w = tf.zeros((3, 3, 4, 8))
    graph = tf.function(lambda x: kconv.conv2d(x, w, (1, 2), "VALID", bias=tf.zeros(8))).get_concrete_function(spec)
    assert graph.outputs[0].shape.as_list() == [None, 8, 5, 8]


def test_run_time_shape_errors_name_both_shapes():
    w = tf.zeros((5, 5, 3, 2))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def conv(x):
        return kconv.conv2d(x, w, 1, "VALID")

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input shape \[1,3,3,3\] and filter shape \[5,5,3,2\]"):
        conv(tf.zeros((1, 3, 3, 3)))


def test_empty_batch_gives_empty_output_and_zero_filter_gradient():
    w = tf.Variable(tf.ones((3, 3, 2, 4)))
    b = tf.Variable(tf.ones(4))
    x = tf.zeros((0, 5, 5, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kconv.conv2d(x, w, 1, "SAME", bias=b, activation="tanh")
    dx, dw, db = tape.gradient(y, [x, w, b])
    assert y.shape == (0, 5, 5, 4) and dx.shape == x.shape
    assert not np.any(dw.numpy()) and not np.any(db.numpy())


def test_second_order_gradients_raise_a_clear_error():
    x = tf.constant(np.random.default_rng(5).standard_normal((1, 5, 5, 2)).astype(np.float32))
    w = tf.constant(np.ones((3, 3, 2, 2), np.float32))
    with pytest.raises(NotImplementedError, match="second-order"):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(kconv.conv2d(x, w, 1, "SAME") ** 2)
            g = inner.gradient(y, x)
        outer.gradient(g, x)


def test_invalid_call_does_not_poison_the_op_cache():
    """strides=True is refused, and a later strides=1 call (1, 1.0 and True hash alike) still works."""
    x, w = tf.ones((1, 5, 5, 1)), tf.ones((3, 3, 1, 1))
    with pytest.raises(TypeError):
        kconv.conv2d(x, w, True, "SAME")
    with pytest.raises(TypeError):
        kconv.conv2d(x, w, 1.0, "SAME")
    assert kconv.conv2d(x, w, 1, "SAME").shape == (1, 5, 5, 1)


@pytest.mark.parametrize("api", ["ops", "tf_ops", "layer"])
def test_upper_case_algorithm_is_refused_everywhere(api):
    x, w = np.ones((1, 5, 5, 16), np.float32), np.ones((3, 3, 16, 16), np.float32)
    call = {"ops": lambda: ops.conv2d(x, w, algorithm="AUTO"),
            "tf_ops": lambda: kconv.conv2d(x, w, 1, "SAME", algorithm="AUTO"),
            "layer": lambda: kconv.Conv2D(4, 3, algorithm="AUTO")}[api]
    with pytest.raises(ValueError, match="algorithm must be one of"):
        call()


def test_four_threads_predicting_with_one_model_agree_with_sequential_predictions():
    model = keras.Sequential([keras.Input((16, 16, 3)), kconv.Conv2D(16, 3, padding="same", activation="relu"),
                              kconv.Conv2D(16, 3, strides=2, activation="gelu"), keras.layers.Flatten(),
                              keras.layers.Dense(5)])
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((b, 16, 16, 3)).astype(np.float32) for b in (1, 3, 4, 8)]
    want = [model.predict_on_batch(b) for b in batches]
    got = [[None] * 5 for _ in batches]

    def worker(i):
        for r in range(5):
            got[i][r] = model.predict_on_batch(batches[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for results, w in zip(got, want):
        for r in results:
            np.testing.assert_array_equal(r, w)
    assert core.threads_held() == 0


def _run(code, env=None, timeout=300):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def _exported_model(tmp_path):
    model = keras.Sequential([keras.Input((12, 12, 3)), kconv.Conv2D(8, 3, activation="relu", padding="same"),
                              kconv.Conv2D(4, 3, strides=2, activation="silu"), keras.layers.GlobalAveragePooling2D()])
    x = np.random.default_rng(7).standard_normal((2, 12, 12, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict_on_batch(x))
    model.export(str(tmp_path / "saved"), verbose=False)
    return tmp_path


def test_exported_savedmodel_runs_in_a_fresh_process_after_import_kconv(tmp_path):
    path = _exported_model(tmp_path)
    result = _run(f"""
        import numpy as np, tensorflow as tf
        import kconv
        m = tf.saved_model.load({str(path / 'saved')!r})
        y = m.serve(np.load({str(path / 'x.npy')!r}))
        print(float(np.abs(y.numpy() - np.load({str(path / 'y.npy')!r})).max()))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5


def test_loading_the_savedmodel_without_kconv_names_kconv(tmp_path):
    path = _exported_model(tmp_path)
    result = _run(f"""
        import tensorflow as tf
        tf.saved_model.load({str(path / 'saved')!r})
    """)
    assert result.returncode != 0 and "Kconv" in result.stderr


def test_fallback_path_when_forced_computes_the_same_and_refuses_export(tmp_path):
    result = _run(f"""
        import json, numpy as np, tensorflow as tf, keras
        import kconv
        from kconv import _oplib
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal((2, 8, 8, 4)).astype(np.float32))
        w = tf.constant(rng.standard_normal((3, 3, 4, 5)).astype(np.float32))
        b = tf.constant(rng.standard_normal(5).astype(np.float32))
        f = tf.function(lambda x: kconv.conv2d(x, w, 1, "SAME", bias=b, activation="relu"))
        types = {{op.type for op in f.get_concrete_function(x).graph.get_operations()}}
        y = f(x).numpy()
        ref = np.maximum(kconv.ops.conv2d(x.numpy(), w.numpy(), 1, "SAME") + b.numpy(), 0)
        model = keras.Sequential([keras.Input((8, 8, 4)), kconv.Conv2D(5, 3)])
        try:
            model.export({str(tmp_path / 'saved')!r}, verbose=False)
            export = "written"
        except Exception as e:
            export = str(e)
        import os
        print(json.dumps(dict(path=_oplib.info()["path"], pyfunc=any("PyFunc" in t for t in types),
                              err=float(np.abs(y - ref).max()), export=export,
                              files=os.path.exists({str(tmp_path / 'saved')!r}))))
    """, env={"KCONV_NATIVE_OP": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["path"] == "numpy_function" and out["pyfunc"] and out["err"] < 1e-5
    assert "to_keras" in out["export"] and not out["files"]
