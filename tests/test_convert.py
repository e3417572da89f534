"""kconv.serving.convert (keras.layers convolutions -> kconv's twins) and to_keras, its inverse.

- the twin table: every layer class in kconv.layers.__all__ has a keras.layers twin, both directions agree,
  and every twin has an example model in this file (so a new kconv layer is tested, never skipped);
- round trips convert -> to_keras on Sequential, functional (branches, a shared layer), nested models,
  1-D and 2-D, channels_first, groups, use_bias=False, fused and unfused activations, and on a model of
  every twin: kconv's outputs and gradients match the Keras original, and the way back gives the original's
  config and weights exactly;
- non-conv layers (Dense, BatchNormalization, Embedding) keep their weights; user subclasses of Keras layers
  are left alone; algorithm= / threads= reach every converted layer;
- training (train_on_batch), the original untouched, single layers (built, unbuilt, built without a build
  config), errors (subclassed model, unbuilt model, bad arguments), .keras save / load.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import kconv  # noqa: E402,F401  (registers kconv's layers for load_model)
from kconv import layers as kl  # noqa: E402
from kconv import serving  # noqa: E402
from kconv.serving import convert, to_keras  # noqa: E402

L = keras.layers
TWINS = serving.twins()                                   # kconv class -> keras class
KERAS_TWINS = {keras_cls: cls for cls, keras_cls in TWINS.items()}
TOL = 1e-5                                                # kconv against Keras, relative to max |Keras|

# One example of every Keras layer kconv may have a twin for: (constructor arguments, input shape).
# The arguments differ from the defaults where kconv runs a different path (groups, causal, dilation,
# strides, no bias, fused and unfused activations); the 2-D ones chain in this order in one model.
EXAMPLES = {
    "Conv1D": (dict(filters=6, kernel_size=3, padding="causal", dilation_rate=2, activation="relu"), (12, 4)),
    "Conv1DTranspose": (dict(filters=4, kernel_size=3, strides=2, padding="same", activation="tanh"), (12, 4)),
    "DepthwiseConv1D": (dict(kernel_size=3, depth_multiplier=2, padding="same", use_bias=False), (12, 4)),
    "SeparableConv1D": (dict(filters=5, kernel_size=3, depth_multiplier=2, activation="softplus"), (12, 4)),
    "Conv2D": (dict(filters=6, kernel_size=3, padding="same", groups=2, activation="gelu"), (8, 8, 4)),
    "Conv2DTranspose": (dict(filters=4, kernel_size=3, strides=2, padding="same", use_bias=False), (8, 8, 4)),
    "DepthwiseConv2D": (dict(kernel_size=3, depth_multiplier=2, padding="same", activation="relu"), (8, 8, 4)),
    "SeparableConv2D": (dict(filters=5, kernel_size=3, padding="same", activation="softplus"), (8, 8, 4)),
    "BatchNormalization": (dict(momentum=0.9, epsilon=1e-2), (8, 8, 4)),
    "ReLU": (dict(max_value=6.0), (8, 8, 4)),
}
TWIN_NAMES = sorted(cls.__name__ for cls in KERAS_TWINS)


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _all_layers(model):
    """Every layer of a model, nested models' layers included (and the nested models themselves)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _randomize(model, rng):
    """Random weights (biases and BatchNormalization's statistics too, so that they matter)."""
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) if "variance" in w.path
                       else (0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in model.weights])
    return model


def _check_converted(model, converted):
    """converted has kconv layers where model has Keras twins, everything else the same class, all weights
    equal, and no Keras layer of a twinned type left."""
    pairs = list(zip(_all_layers(model), _all_layers(converted)))
    assert len(pairs) == len(list(_all_layers(model))) == len(list(_all_layers(converted)))
    n_twins = 0
    for old, new in pairs:
        assert new is not old and new.name == old.name
        assert type(new) not in KERAS_TWINS
        if type(old) in KERAS_TWINS:
            n_twins += 1
            assert type(new) is KERAS_TWINS[type(old)]
            config = new.get_config()
            assert {k: v for k, v in config.items() if k not in ("algorithm", "threads")} == old.get_config()
        else:
            assert type(new) is type(old)
        if not isinstance(old, keras.Model):
            assert len(new.weights) == len(old.weights)
            for a, b in zip(new.weights, old.weights):
                assert a is not b and np.array_equal(a.numpy(), b.numpy()), a.path
    assert n_twins > 0
    return n_twins


def _check_round_trip(model, x, tol=TOL):
    """convert, compare with the original, to_keras back, compare again; returns the converted model."""
    converted = convert(model)
    _check_converted(model, converted)
    want = model.predict(x, verbose=0)
    assert _rel_err(converted.predict(x, verbose=0), want) < tol
    back = to_keras(converted)
    for old, new in zip(_all_layers(model), _all_layers(back)):
        assert type(new) is type(old) and new.get_config() == old.get_config()
    for a, b in zip(back.weights, model.weights):
        assert np.array_equal(a.numpy(), b.numpy())
    assert _rel_err(back.predict(x, verbose=0), want) < 1e-6
    return converted


def _grads(model, x, y):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    return [loss] + tape.gradient(loss, [x] + model.trainable_weights)


def _check_gradients(model, converted, x, rng):
    x = tf.constant(x)
    y = tf.constant(rng.standard_normal(model(x).shape).astype(np.float32))
    got, want = _grads(converted, x, y), _grads(model, x, y)
    assert len(got) == len(want) and len(want) > 2
    for g, w, v in zip(got, want, ["loss", "input"] + [v.path for v in model.trainable_weights]):
        assert _rel_err(g, w) < 1e-4, v


# ------------------------------------------------------------------------------------------ the twin table

def test_every_kconv_layer_has_a_twin():
    classes = [getattr(kl, name) for name in kl.__all__]
    layer_classes = [cls for cls in classes if isinstance(cls, type) and issubclass(cls, keras.layers.Layer)]
    assert {kl.Conv1D, kl.Conv2D} <= set(layer_classes)
    for cls in layer_classes:
        assert cls in TWINS, f"kconv.layers.{cls.__name__} has no keras.layers twin"
        twin = TWINS[cls]
        assert issubclass(cls, twin) and getattr(keras.layers, twin.__name__) is twin
        assert twin.__name__ == cls.__name__
    assert set(TWINS) == set(layer_classes)
    assert len(KERAS_TWINS) == len(TWINS), "two kconv layers claim the same Keras twin"
    assert serving._TO_KERAS == TWINS and serving._TO_KCONV == KERAS_TWINS
    missing = set(TWIN_NAMES) - set(EXAMPLES)
    assert not missing, f"add an example of {sorted(missing)} to EXAMPLES in this file"


# ------------------------------------------------------------------------------------------ every twin

def _example(name, **overrides):
    kwargs, shape = EXAMPLES[name]
    return getattr(L, name)(**{**kwargs, **overrides}), shape


@pytest.mark.parametrize("name", TWIN_NAMES)
def test_round_trip_every_twin(name, rng):
    layer, shape = _example(name)
    model = _randomize(keras.Sequential([keras.Input(shape), layer, L.Flatten(), L.Dense(3)]), rng)
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    converted = _check_round_trip(model, x)
    _check_gradients(model, converted, x, rng)


@pytest.mark.parametrize("name", TWIN_NAMES)
def test_single_layer_every_twin(name, rng, monkeypatch):
    layer, shape = _example(name)
    x = rng.standard_normal((2,) + shape).astype(np.float32)
    layer(x)
    layer.set_weights([(np.abs(rng.standard_normal(w.shape)) + 0.5 if "variance" in w.path   # BatchNorm's
                        else rng.standard_normal(w.shape)).astype(np.float32) for w in layer.weights])
    ours = convert(layer, threads=1)
    assert type(ours) is KERAS_TWINS[type(layer)]
    assert ours.built or not layer.weights           # a layer without weights (ReLU) builds on its first call
    assert getattr(ours, "threads", 1) == 1
    assert all(np.array_equal(a, b) for a, b in zip(ours.get_weights(), layer.get_weights()))
    assert _rel_err(ours(x), layer(x)) < TOL
    back = to_keras(ours)
    assert type(back) is type(layer) and back.get_config() == layer.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), layer.get_weights()))
    # a built layer without a build config (built by hand, restored by other tools): its input spec says
    monkeypatch.setattr(type(layer), "get_build_config", lambda self: None)
    ours = convert(layer)
    assert [w.shape for w in ours.weights] == [w.shape for w in layer.weights]
    assert _rel_err(ours(x), layer(x)) < TOL
    # an unbuilt layer gives an unbuilt twin with the same config
    monkeypatch.undo()
    fresh, _ = _example(name)
    twin = convert(fresh)
    assert type(twin) is KERAS_TWINS[type(fresh)] and twin.built == fresh.built   # ReLU: built from the start


@pytest.mark.parametrize("rank", [1, 2])
def test_round_trip_all_twins_in_one_model(rank, rng):
    """Every twin of this rank, chained (Conv2DTranspose, DepthwiseConv2D, SeparableConv2D with Conv2D,
    as far as kconv has them)."""
    names = [name for name in EXAMPLES if name in TWIN_NAMES and name[-2] == str(rank)]
    assert names
    shape = EXAMPLES[names[0]][1]
    model = keras.Sequential([keras.Input(shape)] + [_example(name)[0] for name in names] + [L.Flatten(),
                                                                                               L.Dense(2)])
    _randomize(model, rng)
    x = rng.standard_normal((2,) + shape).astype(np.float32)
    converted = _check_round_trip(model, x)
    assert _check_converted(model, converted) == len(names)
    _check_gradients(model, converted, x, rng)


# ------------------------------------------------------------------------------------------ model kinds

def _image_model(data_format="channels_last"):
    first = data_format == "channels_first"
    return keras.Sequential([
        keras.Input((4, 9, 9) if first else (9, 9, 4)),
        L.Conv2D(6, 3, groups=2, use_bias=False, data_format=data_format, name="grouped"),
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu", data_format=data_format, name="strided"),
        L.Conv2D(4, 1, activation="softplus", data_format=data_format, name="unfused"),
        L.GlobalAveragePooling2D(data_format=data_format),
        L.Dense(3, name="head"),
    ], name="image")


def test_sequential_2d(rng):
    model = _randomize(_image_model(), rng)
    x = rng.standard_normal((4, 9, 9, 4)).astype(np.float32)
    converted = _check_round_trip(model, x)
    assert converted.name == model.name and isinstance(converted, keras.Sequential)
    assert [type(layer) for layer in converted.layers[:3]] == [kl.Conv2D] * 3
    _check_gradients(model, converted, x, rng)


def test_channels_first(rng):
    """TensorFlow's CPU kernels lack channels_first convolutions, so the Keras side runs channels_last with
    the same weights (the kernel layout does not depend on data_format); kconv runs channels_first."""
    model = _randomize(_image_model("channels_first"), rng)
    reference = _image_model("channels_last")
    reference.set_weights(model.get_weights())
    x = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    converted = convert(model)
    _check_converted(model, converted)
    assert all(layer.data_format == "channels_first" for layer in converted.layers[:3])
    want = reference.predict(np.moveaxis(x, 1, -1), verbose=0)
    assert _rel_err(converted.predict(x, verbose=0), want) < TOL
    back = to_keras(converted)
    assert [layer.get_config() for layer in back.layers] == [layer.get_config() for layer in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))


def test_channels_first_1d(rng):
    def make(data_format):
        first = data_format == "channels_first"
        return keras.Sequential([keras.Input((4, 11) if first else (11, 4)),
                                 L.Conv1D(6, 3, dilation_rate=2, groups=2, data_format=data_format),
                                 L.Conv1D(3, 2, strides=2, use_bias=False, activation="elu", data_format=data_format),
                                 L.Flatten(data_format=data_format)])
    model = _randomize(make("channels_first"), rng)
    reference = make("channels_last")
    reference.set_weights(model.get_weights())
    x = rng.standard_normal((2, 4, 11)).astype(np.float32)
    converted = convert(model)
    _check_converted(model, converted)
    want = reference.predict(np.moveaxis(x, 1, -1), verbose=0)      # Flatten puts channels last
    assert _rel_err(converted.predict(x, verbose=0), want) < TOL


def test_functional_with_branches_and_a_shared_layer(rng):
    inputs = keras.Input((10, 10, 3))
    stem = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    left = L.Conv2D(8, 3, padding="same", use_bias=False, name="left")(stem)
    right = L.Conv2D(8, 1, activation="silu", name="right")(stem)
    merged = L.BatchNormalization(name="bn")(L.Add()([left, right]))
    shared = L.Conv2D(8, 3, padding="same", activation="tanh", name="shared")
    twice = shared(shared(merged))
    outputs = L.Dense(2, name="head")(L.GlobalMaxPooling2D()(L.Concatenate()([twice, merged])))
    model = _randomize(keras.Model(inputs, outputs, name="branches"), rng)
    x = rng.standard_normal((3, 10, 10, 3)).astype(np.float32)
    converted = _check_round_trip(model, x)
    assert converted.name == "branches"
    assert len(converted.weights) == len(model.weights)                 # `shared` is still one layer
    assert type(converted.get_layer("shared")) is kl.Conv2D
    _check_gradients(model, converted, x, rng)


def test_nested_models_and_non_conv_layers(rng):
    """A Sequential inside a functional model inside a functional model; Embedding, BatchNormalization and
    Dense keep their weights (text CNN, 1-D)."""
    inner = keras.Sequential([keras.Input((20, 8)), L.Conv1D(8, 3, padding="causal", dilation_rate=2, name="c1"),
                              L.BatchNormalization(name="bn1")], name="inner")
    tokens = keras.Input((20,), dtype="int32")
    hidden = inner(L.Embedding(50, 8, name="embed")(tokens))
    branch = keras.Model(tokens, [L.Conv1D(6, 5, activation="relu", name="c2")(hidden), hidden], name="branch")
    outer_tokens = keras.Input((20,), dtype="int32")
    conv_out, hidden_out = branch(outer_tokens)
    pooled = L.Concatenate()([L.GlobalMaxPooling1D()(conv_out), L.GlobalAveragePooling1D()(hidden_out)])
    model = keras.Model(outer_tokens, L.Dense(5, name="head")(pooled), name="text")
    _randomize(model, rng)
    x = rng.integers(0, 50, (4, 20)).astype(np.int32)
    converted = _check_round_trip(model, x)
    nested = converted.get_layer("branch")
    assert isinstance(nested, keras.Model) and nested is not branch
    assert type(nested.get_layer("inner").get_layer("c1")) is kl.Conv1D
    assert type(nested.get_layer("c2")) is kl.Conv1D
    for name in ("embed", "head"):
        layer = converted.get_layer(name) if name == "head" else nested.get_layer(name)
        ref = model.get_layer(name) if name == "head" else branch.get_layer(name)
        assert type(layer) is type(ref)
        assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), ref.get_weights()))
    bn = nested.get_layer("inner").get_layer("bn1")
    assert all(np.array_equal(a, b) for a, b in
               zip(bn.get_weights(), inner.get_layer("bn1").get_weights()))


def test_several_inputs_keep_their_names_and_structure(rng):
    """Input layers keep their names, those Keras chose included (clone_model alone renames those)."""
    image, side, extra = keras.Input((6, 6, 2), name="image"), keras.Input((6, 6, 3), name="side"), keras.Input((2,))
    merged = L.Concatenate()([L.Conv2D(3, 3, padding="same")(image), side])
    outputs = L.Add()([L.Flatten()(L.Conv2D(2, 1)(merged)), L.Dense(72)(extra)])
    model = _randomize(keras.Model([{"image": image, "side": side}, extra], outputs), rng)
    converted = convert(model)
    _check_converted(model, converted)                          # same layer names, auto-named input too
    assert converted.get_config()["input_layers"] == model.get_config()["input_layers"]
    x = [{"image": rng.standard_normal((2, 6, 6, 2)).astype(np.float32),
          "side": rng.standard_normal((2, 6, 6, 3)).astype(np.float32)},
         rng.standard_normal((2, 2)).astype(np.float32)]
    assert _rel_err(converted(x), model(x)) < TOL


def test_sequential_inside_functional(rng):
    inner = keras.Sequential([keras.Input((9, 9, 4)), L.Conv2D(4, 3, padding="same", activation="relu"),
                              L.Conv2D(4, 3, padding="same")], name="block")
    inputs = keras.Input((9, 9, 4))
    outputs = L.Flatten()(L.Add()([inputs, inner(inputs)]))
    model = _randomize(keras.Model(inputs, outputs), rng)
    x = rng.standard_normal((2, 9, 9, 4)).astype(np.float32)
    converted = _check_round_trip(model, x)
    assert [type(layer) for layer in converted.get_layer("block").layers] == [kl.Conv2D, kl.Conv2D]


# ------------------------------------------------------------------------------------------ behaviour

def test_converted_model_trains_like_the_original(rng):
    model = _randomize(_image_model(), rng)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    converted = convert(model)
    assert converted.compiled
    x = rng.standard_normal((8, 9, 9, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    _check_gradients(model, converted, x, rng)
    before = [w.copy() for w in model.get_weights()]
    loss_ours = converted.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))   # separate weights
    loss_keras = model.train_on_batch(x, y)
    assert abs(loss_ours - loss_keras) <= 1e-5 * abs(loss_keras)
    for a, b in zip(converted.get_weights(), model.get_weights()):
        assert _rel_err(a, b) < 1e-4
    assert any(not np.array_equal(a, b) for a, b in zip(converted.get_weights(), before))


def test_original_untouched(rng):
    model = _randomize(_image_model(), rng)
    layers = list(model.layers)
    configs = [layer.get_config() for layer in layers]
    weights = model.get_weights()
    variables = list(model.weights)
    converted = convert(model)
    converted.set_weights([w + 1 for w in converted.get_weights()])
    assert list(model.layers) == layers and [type(layer) for layer in layers[:3]] == [L.Conv2D] * 3
    assert [layer.get_config() for layer in model.layers] == configs
    assert list(model.weights) == variables
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
    assert not set(map(id, converted.weights)) & set(map(id, model.weights))


def test_algorithm_and_threads_reach_every_converted_layer(rng):
    model = _image_model()
    converted = convert(model, algorithm="direct", threads=1)
    convs = [layer for layer in converted.layers if type(layer) is kl.Conv2D]
    assert len(convs) == 3 and all(layer.algorithm == "direct" and layer.threads == 1 for layer in convs)
    defaults = convert(model)
    assert all(layer.algorithm == "auto" and layer.threads is None for layer in defaults.layers[:3])
    x = rng.standard_normal((2, 9, 9, 4)).astype(np.float32)
    assert _rel_err(converted(x), model(x)) < TOL
    with pytest.raises(ValueError, match="algorithm"):
        convert(model, algorithm="fastest")
    for threads in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            convert(model, threads=threads)


def test_subclasses_of_keras_layers_are_left_alone(rng):
    class MyConv(L.Conv2D):
        pass

    model = keras.Sequential([keras.Input((6, 6, 2)), MyConv(3, 3, name="mine"), L.Conv2D(2, 1, name="plain")])
    converted = convert(model)
    assert type(converted.get_layer("mine")) is MyConv
    assert type(converted.get_layer("plain")) is kl.Conv2D


def test_a_kconv_model_converts_to_itself(rng):
    model = keras.Sequential([keras.Input((6, 6, 2)), kl.Conv2D(3, 3, algorithm="winograd"), L.Conv2D(2, 1)])
    converted = convert(model, algorithm="direct")
    assert [type(layer) for layer in converted.layers] == [kl.Conv2D, kl.Conv2D]
    # a layer already kconv's keeps its own settings; the converted one takes convert's
    assert [layer.algorithm for layer in converted.layers] == ["winograd", "direct"]
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(converted(x), model(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ errors

def test_subclassed_model_explains_the_manual_route():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match="subclassed") as excinfo:
        convert(net)
    message = str(excinfo.value)
    assert "Net" in message and "kconv.Conv2D" in message and "set_weights" in message


def test_subclassed_model_nested_in_a_functional_one():
    class Block(keras.Model):
        def __init__(self):
            super().__init__(name="block")
            self.conv = L.Conv1D(2, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((7, 2))
    model = keras.Model(inputs, L.Conv1D(2, 1)(Block()(inputs)))
    with pytest.raises(ValueError, match="'block' \\(nested in the model\\) is a subclassed") as excinfo:
        convert(model)
    assert "kconv.Conv1D where it uses keras.layers.Conv1D" in str(excinfo.value)


def test_unbuilt_model_is_a_clear_error():
    model = keras.Sequential([L.Conv2D(2, 3), L.Dense(1)])
    with pytest.raises(ValueError, match="built") as excinfo:
        convert(model)
    assert "keras.Input" in str(excinfo.value)
    with pytest.raises(ValueError, match="built"):
        to_keras(keras.Sequential([kl.Conv2D(2, 3)]))


def test_not_a_model():
    with pytest.raises(TypeError, match="Dense"):
        convert(L.Dense(3))
    with pytest.raises(TypeError, match="ndarray"):
        convert(np.zeros(3))


# ------------------------------------------------------------------------------------------ saving

def test_converted_model_saves_and_loads(tmp_path, rng):
    model = _randomize(_image_model(), rng)
    converted = convert(model, threads=1)
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer) for layer in loaded.layers[:3]] == [kl.Conv2D] * 3
    assert all(layer.threads == 1 for layer in loaded.layers[:3])
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
    x = rng.standard_normal((2, 9, 9, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), converted.predict(x, verbose=0), rtol=1e-6,
                               atol=1e-6)
