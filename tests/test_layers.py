"""kconv.layers.Conv1D / Conv2D against their keras.layers twins, and kconv.serving.to_keras.

- conformance over a grid covering every argument (strides, padding incl. causal, dilation, groups,
  data_format, use_bias, activation): same weights via set_weights, outputs and gradients (input, kernel,
  bias) agree to 1e-4 relative, eagerly and in tf.function;
- config: weight names / shapes / order, get_config / from_config, compute_output_shape, regularizers and
  constraints, set_weights both ways; invalid configurations raise the error type Keras raises;
- training: model.fit on a Sequential follows its Keras twin; jit_compile=True falls back with a warning;
- .keras save / load in a fresh process; mixed_float16; to_keras (same outputs, no kconv layer left, export).
"""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import assert_layer_matches_keras, build_error_type  # noqa: E402
from kconv import layers as kl  # noqa: E402
from kconv import serving  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _twins(cls, keras_cls, x, rng, **kwargs):
    """A kconv layer and its Keras twin, built on x, with the same random weights (bias included)."""
    ours, theirs = cls(**kwargs), keras_cls(**kwargs)
    ours(x)
    theirs(x)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def _forward_backward(layer, x, dy, call=None):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = (call or layer)(x)
        loss = tf.reduce_sum(y * dy)
    return [y] + tape.gradient(loss, [x] + layer.trainable_weights)


def _keras_reference(keras_cls, kwargs, x_shape, rank):
    """The Keras twin and how to call it: TensorFlow's CPU kernels lack channels_first, so Keras runs
    channels_last on transposed data there (the kernel layout does not depend on data_format)."""
    if kwargs.get("data_format") != "channels_first":
        layer = keras_cls(**kwargs)
        return layer, layer
    layer = keras_cls(**(kwargs | {"data_format": "channels_last"}))
    to_last, to_first = [0] + list(range(2, rank + 2)) + [1], [0, rank + 1] + list(range(1, rank + 1))
    return layer, lambda x: tf.transpose(layer(tf.transpose(x, to_last)), to_first)


CONV2D = [  # (input shape, layer arguments)
    ((2, 8, 9, 3), dict(filters=4, kernel_size=3)),
    ((2, 8, 9, 3), dict(filters=4, kernel_size=(3, 2), strides=2)),
    ((2, 9, 8, 3), dict(filters=5, kernel_size=3, strides=(2, 3), padding="same")),
    ((2, 8, 8, 3), dict(filters=4, kernel_size=2, padding="same")),          # even kernel, SAME
    ((2, 9, 9, 2), dict(filters=3, kernel_size=3, dilation_rate=2, padding="same")),
    ((2, 10, 9, 2), dict(filters=3, kernel_size=(2, 3), dilation_rate=(3, 2))),
    ((2, 7, 7, 4), dict(filters=6, kernel_size=3, groups=2, padding="same")),
    ((2, 8, 8, 4), dict(filters=8, kernel_size=3, groups=4, strides=2, padding="same", activation="relu")),
    ((2, 3, 8, 9), dict(filters=4, kernel_size=3, data_format="channels_first")),
    ((2, 4, 9, 8), dict(filters=4, kernel_size=3, data_format="channels_first", groups=2, dilation_rate=2,
                        padding="same")),
    ((2, 4, 9, 8), dict(filters=6, kernel_size=(1, 3), data_format="channels_first", strides=2,
                        padding="same", use_bias=False)),
    ((2, 6, 6, 3), dict(filters=4, kernel_size=1, activation="tanh")),
    ((3, 5, 5, 2), dict(filters=3, kernel_size=5, use_bias=False, activation="sigmoid")),   # 1x1 output
]
CONV1D = [
    ((2, 11, 3), dict(filters=4, kernel_size=3)),
    ((2, 11, 3), dict(filters=4, kernel_size=4, strides=2, padding="same")),
    ((2, 11, 3), dict(filters=4, kernel_size=3, padding="causal")),
    ((2, 11, 4), dict(filters=6, kernel_size=3, padding="causal", dilation_rate=2, groups=2)),
    ((2, 12, 3), dict(filters=5, kernel_size=2, strides=3, use_bias=False, activation="relu")),
    ((2, 12, 4), dict(filters=4, kernel_size=3, dilation_rate=3, groups=4)),
    ((2, 4, 11), dict(filters=3, kernel_size=3, data_format="channels_first", padding="same")),
    ((2, 4, 11), dict(filters=4, kernel_size=3, data_format="channels_first", padding="causal", groups=2,
                      dilation_rate=2)),
]
GRID = [(kl.Conv2D, keras.layers.Conv2D, s, kw) for s, kw in CONV2D] + \
       [(kl.Conv1D, keras.layers.Conv1D, s, kw) for s, kw in CONV1D]


def _grid_id(case):
    cls, _, shape, kwargs = case
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("filters",))


@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_conformance_with_keras(case, rng):
    cls, keras_cls, shape, kwargs = case
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    ours = cls(**kwargs)
    theirs, call_theirs = _keras_reference(keras_cls, kwargs, shape, ours.rank)
    ours(x)
    y_ref = call_theirs(x)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    dy = tf.constant(rng.standard_normal(y_ref.shape).astype(np.float32))
    want = _forward_backward(theirs, x, dy, call_theirs)
    got_eager = _forward_backward(ours, x, dy)
    got_fn = tf.function(lambda x, dy: _forward_backward(ours, x, dy))(x, dy)
    names = ["output", "input gradient", "kernel gradient", "bias gradient"]
    assert len(want) == len(got_eager) == len(got_fn) == 3 + ours.use_bias
    for name, w, ge, gf in zip(names, want, got_eager, got_fn):
        assert _rel_err(ge, w) < 1e-4, f"{name} (eager)"
        assert _rel_err(gf, w) < 1e-4, f"{name} (tf.function)"
    assert ours.compute_output_shape(shape) == keras_cls(**kwargs).compute_output_shape(shape) == tuple(y_ref.shape)


def test_weights_config_and_shapes_match_keras(rng):
    x = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    kwargs = dict(filters=6, kernel_size=3, groups=2, strides=2, padding="same", activation="relu",
                  kernel_initializer="he_normal", bias_initializer="ones", kernel_regularizer="l2",
                  bias_regularizer=keras.regularizers.L1(0.1), activity_regularizer="l1",
                  kernel_constraint=keras.constraints.MaxNorm(2.0), bias_constraint="non_neg",
                  name="c", dtype="float32", trainable=True)
    ours, theirs = kl.Conv2D(**kwargs), keras.layers.Conv2D(**kwargs)
    assert_layer_matches_keras(ours, theirs, x)
    # from_config round trip keeps kconv's arguments
    clone = kl.Conv2D.from_config(kl.Conv2D(4, 3, algorithm="direct", threads=1).get_config())
    assert (clone.algorithm, clone.threads, type(clone)) == ("direct", 1, kl.Conv2D)
    assert kl.Conv1D(4, 3).supports_jit is False


def test_defaults_match_keras():
    ours, theirs = kl.Conv1D(3, 2).get_config(), keras.layers.Conv1D(3, 2).get_config()
    for config in (ours, theirs):
        config.pop("name")
    assert {k: v for k, v in ours.items() if k not in ("algorithm", "threads")} == theirs


INVALID = [
    ((8, 8, 3), dict(filters=5, kernel_size=3, groups=2)),               # filters % groups
    ((8, 8, 3), dict(filters=4, kernel_size=3, groups=2)),               # channels % groups (build)
    ((8, 8, 3), dict(filters=4, kernel_size=3, strides=2, dilation_rate=2)),
    ((8, 8, 3), dict(filters=0, kernel_size=3)),
    ((8, 8, 3), dict(filters=4, kernel_size=0)),
    ((8, 8, 3), dict(filters=4, kernel_size=3, strides=0)),
    ((8, 8, 3), dict(filters=4, kernel_size=3, groups=0)),
    ((8, 8, 3), dict(filters=4, kernel_size=3, padding="causal")),       # causal is 1-D only
    ((8, 8, 3), dict(filters=4, kernel_size=3, padding="full")),
    ((8, 8, 3), dict(filters=4, kernel_size=3, data_format="nhwc")),
    ((2, 2, 3), dict(filters=4, kernel_size=3)),                          # kernel larger than input
]


@pytest.mark.parametrize("shape, kwargs", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_configurations_raise_like_keras(shape, kwargs):
    keras_error = build_error_type(keras.layers.Conv2D, kwargs, shape)
    assert keras_error is not None
    assert build_error_type(kl.Conv2D, kwargs, shape) is keras_error


def test_kconv_arguments_validated():
    with pytest.raises(ValueError, match="algorithm"):
        kl.Conv1D(4, 3, algorithm="fast")
    with pytest.raises(ValueError, match="threads"):
        kl.Conv2D(4, 3, threads=0)


def _cnn(module, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        module.Conv2D(8, 3, activation="relu", padding="same"),
        module.Conv2D(8, 3, strides=2, groups=2, activation="relu"),
        keras.layers.Reshape((25, 8)),
        module.Conv1D(4, 3, padding="causal", dilation_rate=2),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])


def test_fit_follows_keras_twin(rng):
    x = rng.standard_normal((32, 12, 12, 3)).astype(np.float32)
    y = rng.standard_normal((32, 2)).astype(np.float32)
    histories, weights = [], []
    for module in (kl, keras.layers):
        model = _cnn(module, seed=7)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        if weights:
            model.set_weights(weights[0])
        weights.append(model.get_weights())
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        histories.append(history.history["loss"])
        weights.append(model.get_weights())
    ours, theirs = histories
    assert np.allclose(ours, theirs, rtol=1e-3), (ours, theirs)
    assert ours[-1] < ours[0]
    for a, b in zip(weights[1], weights[3]):
        assert _rel_err(a, b) < 1e-3


def test_jit_compile_falls_back_with_warning(rng):
    model = _cnn(kl, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile("adam", "mse", jit_compile=True)
    assert model.jit_compile is False
    assert any("jit_compile" in str(w.message) for w in caught)
    x = rng.standard_normal((4, 12, 12, 3)).astype(np.float32)
    model.fit(x, np.zeros((4, 2)), epochs=1, verbose=0)


def test_keras_file_round_trip_in_fresh_process(tmp_path, rng):
    model = _cnn(kl, seed=3)
    model.layers[0].threads = 1
    x = rng.standard_normal((3, 12, 12, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import kconv.layers   # registers kconv>Conv1D / kconv>Conv2D
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        kinds = sorted({{type(l).__module__ + "." + type(l).__name__ for l in model.layers}})
        assert "kconv.layers.Conv2D" in kinds and "kconv.layers.Conv1D" in kinds, kinds
        assert model.layers[0].threads == 1 and model.layers[0].algorithm == "auto"
        y = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_allclose(y, np.load({str(tmp_path / "y.npy")!r}), rtol=1e-5, atol=1e-6)
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, (
        f"return code {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}")


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("cls, keras_cls, shape, kwargs", [
    (kl.Conv2D, keras.layers.Conv2D, (2, 8, 8, 4), dict(filters=6, kernel_size=3, groups=2, padding="same")),
    (kl.Conv1D, keras.layers.Conv1D, (2, 10, 3), dict(filters=4, kernel_size=3, padding="causal")),
])
def test_mixed_precision(cls, keras_cls, shape, kwargs, rng, mixed_float16):
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    ours, theirs = _twins(cls, keras_cls, x, rng, **kwargs)
    assert ours.kernel.dtype == "float32" and ours.compute_dtype == "float16"
    dy = tf.ones(theirs(x).shape, tf.float16)
    got, want = _forward_backward(ours, x, dy), _forward_backward(theirs, x, dy)
    assert got[0].dtype == want[0].dtype == tf.float16
    assert [g.dtype for g in got[2:]] == [tf.float32] * len(got[2:])
    for g, w in zip(got, want):
        assert _rel_err(tf.cast(g, tf.float32), tf.cast(w, tf.float32)) < 1e-2


def test_mixed_precision_fit(rng, mixed_float16):
    model = _cnn(kl, seed=5)
    model.compile("adam", "mse")
    x = rng.standard_normal((8, 12, 12, 3)).astype(np.float32)
    history = model.fit(x, np.zeros((8, 2), np.float32), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_to_keras_sequential_and_export(tmp_path, rng):
    model = _cnn(kl, seed=11)
    x = rng.standard_normal((3, 12, 12, 3)).astype(np.float32)
    plain = serving.to_keras(model)
    assert not any(type(l).__module__.startswith("kconv") for l in plain._flatten_layers())
    assert [l.name for l in plain.layers] == [l.name for l in model.layers]
    assert type(plain.layers[0]) is keras.layers.Conv2D and plain.layers[0].groups == 1
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(plain.predict(x, verbose=0), y, rtol=1e-5, atol=1e-6)
    # the original is untouched
    assert type(model.layers[0]) is kl.Conv2D
    plain.export(str(tmp_path / "saved"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(reloaded.serve(x).numpy(), y, rtol=1e-5, atol=1e-6)


def test_to_keras_functional_nested(rng):
    inner = keras.Sequential([keras.Input((10, 3)), kl.Conv1D(4, 3, padding="causal")], name="inner")
    inputs = keras.Input((10, 3))
    hidden = kl.Conv1D(3, 1, data_format="channels_last", activation="relu")(inputs)
    outputs = keras.layers.Add()([inner(hidden), kl.Conv1D(4, 3, padding="same")(hidden)])
    model = keras.Model(inputs, outputs)
    plain = serving.to_keras(model)
    assert not any(type(l).__module__.startswith("kconv") for l in plain._flatten_layers())
    x = rng.standard_normal((2, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(plain(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_to_keras_rejects_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = kl.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)
    net = Net()
    net(np.zeros((1, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        serving.to_keras(net)


def test_to_keras_single_layer(rng):
    layer = kl.Conv2D(4, 3, groups=2, padding="same", data_format="channels_first", threads=1)
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    y = layer(x)
    twin = serving.to_keras(layer)
    assert type(twin) is keras.layers.Conv2D and twin.get_config() == {
        k: v for k, v in layer.get_config().items() if k not in ("algorithm", "threads")}
    assert all(np.array_equal(a, b) for a, b in zip(twin.get_weights(), layer.get_weights()))
    # TensorFlow's CPU kernels lack channels_first: compare through channels_last
    twin_last = keras.layers.Conv2D.from_config(twin.get_config() | {"data_format": "channels_last"})
    twin_last.build((None, 7, 5, 6))
    twin_last.set_weights(twin.get_weights())
    y_ref = np.moveaxis(twin_last(np.moveaxis(x, 1, -1)).numpy(), -1, 1)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-5, atol=1e-5)
