"""kconv.BatchNormalization and its kernel (pyx/batch_norm.pxi): one op forward, one backward.

The kernel against a float64 reference (rows below, at and above a chunk of 256, channel counts that are not
a multiple of a vector, a mean far from 0, outputs poisoned with NaN), bitwise the same on 1 and 2 threads,
its gradient against finite differences; the layer against keras.layers.BatchNormalization (outputs,
gradients, moving statistics, ranks 2-5, training and inference, float64 and mixed precision), the cases that
run Keras's own code, saving, convert / to_keras, and the op's errors.
"""
import numpy as np
import pytest

from conftest import assert_close, randn
from kconv._backend import core

EPS = 1e-3
SIZES = [(1, 3), (7, 5), (255, 17), (256, 16), (257, 33), (1000, 1), (4100, 24)]


def reference(x, gamma, beta, eps=EPS, mean=None, var=None):
    """(y, mean, biased variance, inv) in float64; mean / var given: inference."""
    x = x.astype(np.float64)
    if mean is None:
        mean, var = x.mean(0), x.var(0)
    inv = 1 / np.sqrt(var + eps)
    return (x - mean) * inv * gamma + beta, mean, var, inv


def reference_grad(dy, x, gamma, eps=EPS, training=True, mean=None, var=None):
    """(dx, dgamma, dbeta) in float64."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    if training:
        mean, var = x.mean(0), x.var(0)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    dbeta, dgamma = dy.sum(0), (dy * xhat).sum(0)
    if training:
        dx = gamma * inv * (dy - dbeta / len(x) - xhat * dgamma / len(x))
    else:
        dx = gamma * inv * dy
    return dx, dgamma, dbeta


def run(x, gamma, beta, training=True, mean=None, var=None, threads=0):
    C = x.shape[1]
    mean_in = np.zeros(C, x.dtype) if mean is None else mean.astype(x.dtype)
    var_in = np.ones(C, x.dtype) if var is None else var.astype(x.dtype)
    y = np.full_like(x, np.nan)
    out = [np.full(C, np.nan, x.dtype) for _ in range(3)]
    core.batch_norm(x, gamma, beta, mean_in, var_in, EPS, training, y, *out, threads=threads)
    return (y, *out)


def run_grad(dy, x, mean, inv, gamma, training=True, threads=0):
    dx = np.full_like(x, np.nan)
    dgamma, dbeta = np.full(x.shape[1], np.nan, x.dtype), np.full(x.shape[1], np.nan, x.dtype)
    core.batch_norm_grad(dy, x, mean, inv, gamma, training, dx, dgamma, dbeta, threads=threads)
    return dx, dgamma, dbeta


def inputs(rng, rows, C, dtype, offset=0.0):
    x = (randn(rng, (rows, C)) * 2 + offset).astype(dtype)
    gamma = (rng.random(C) + 0.5).astype(dtype)
    beta = randn(rng, C, dtype)
    return x, gamma, beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,C", SIZES)
def test_forward_matches_float64_reference(rows, C, dtype, rng):
    x, gamma, beta = inputs(rng, rows, C, dtype, offset=30.0)   # a mean far from 0: the shifted sums
    before = x.copy()
    y, mean, var, inv = run(x, gamma, beta)
    Y, M, V, INV = reference(x, gamma, beta)
    assert_close(y, Y, dtype, "y")
    assert_close(mean, M, dtype, "mean")
    assert_close(var, V, dtype, "variance", floor=1.0)
    assert_close(inv, INV, dtype, "inv_std")
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,C", SIZES[1:4])
def test_inference_uses_the_given_statistics(rows, C, dtype, rng):
    x, gamma, beta = inputs(rng, rows, C, dtype)
    mean, var = randn(rng, C), rng.random(C) + 0.1
    y, m, v, inv = run(x, gamma, beta, training=False, mean=mean, var=var)
    Y, M, V, INV = reference(x, gamma, beta, mean=mean.astype(dtype), var=var.astype(dtype))
    assert_close(y, Y, dtype, "y")
    np.testing.assert_array_equal(m, mean.astype(dtype))
    np.testing.assert_array_equal(v, var.astype(dtype))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,C", SIZES)
def test_gradient_matches_float64_reference(rows, C, dtype, training, rng):
    x, gamma, beta = inputs(rng, rows, C, dtype, offset=5.0)
    mean, var = randn(rng, C), rng.random(C) + 0.1
    _, m, v, inv = run(x, gamma, beta, training, mean, var)
    dy = randn(rng, (rows, C), dtype)
    before = dy.copy()
    dx, dgamma, dbeta = run_grad(dy, x, m, inv, gamma, training)
    DX, DG, DB = reference_grad(dy, x, gamma, training=training, mean=m.astype(np.float64),
                                var=v.astype(np.float64))
    # dx = gamma * inv * (dy - ...): its terms are of size |gamma * inv * dy| even where they cancel to 0
    assert_close(dx, DX, dtype, "dx", floor=np.abs(dy).max() * float((gamma * inv).max()))
    assert_close(dgamma, DG, dtype, "dgamma", floor=np.sqrt(rows))
    assert_close(dbeta, DB, dtype, "dbeta", floor=np.sqrt(rows))
    np.testing.assert_array_equal(dy, before)


def test_gradient_matches_finite_differences(rng):
    rows, C, h = 37, 3, 1e-6
    x, gamma, beta = inputs(rng, rows, C, np.float64)
    dy = randn(rng, (rows, C))

    def loss(x, gamma, beta):
        return float((run(x, gamma, beta)[0] * dy).sum())

    _, m, _, inv = run(x, gamma, beta)
    dx, dgamma, dbeta = run_grad(dy, x, m, inv, gamma)
    for arg, grad in ((0, dx), (1, dgamma), (2, dbeta)):
        values = [x, gamma, beta]
        flat = values[arg].reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            plus, minus = [v.copy() for v in values], [v.copy() for v in values]
            plus[arg].reshape(-1)[i] += h
            minus[arg].reshape(-1)[i] -= h
            numeric = (loss(*plus) - loss(*minus)) / (2 * h)
            assert abs(numeric - grad.reshape(-1)[i]) <= 1e-6 * max(1.0, abs(numeric)), (arg, i)


@pytest.mark.parametrize("rows,C", [(257, 33), (4100, 24), (20000, 64)])
def test_results_do_not_depend_on_the_thread_count(rows, C, rng):
    x, gamma, beta = inputs(rng, rows, C, np.float32, offset=3.0)
    dy = randn(rng, (rows, C), np.float32)
    one, two = run(x, gamma, beta, threads=1), run(x, gamma, beta, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    m, inv = one[1], one[3]
    for a, b in zip(run_grad(dy, x, m, inv, gamma, threads=1), run_grad(dy, x, m, inv, gamma, threads=2)):
        np.testing.assert_array_equal(a, b)


def test_a_constant_channel_has_zero_variance_and_zero_output(rng):
    x, gamma, beta = inputs(rng, 300, 4, np.float32)
    x[:, 2] = 7.25
    y, mean, var, inv = run(x, gamma, beta)
    assert mean[2] == 7.25 and var[2] == 0
    np.testing.assert_allclose(y[:, 2], beta[2], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------- the layer

keras = pytest.importorskip("keras")


@pytest.fixture
def kconv_bn(tf):
    import kconv
    if kconv.load_op_library()["path"] != "native":
        pytest.skip("kconv's op library is not available here")
    return kconv.BatchNormalization


def _pair(kconv_bn, shape, rng, **kwargs):
    ours, theirs = kconv_bn(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(shape)
    theirs.build(shape)
    C = shape[kwargs.get("axis", -1)]
    weights = [w for w in theirs.get_weights()]
    for i, w in enumerate(weights):      # gamma, beta (if any), moving mean, moving variance: not the defaults
        weights[i] = (rng.random(w.shape) + 0.5).astype(w.dtype) if i != len(weights) - 2 else \
            randn(rng, w.shape, w.dtype)
    assert all(w.shape == (C,) for w in weights)
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs


def _step(tf, layer, x, dy, training):
    """y, and the gradients of sum(y * dy) in x and the layer's trainable weights, in a tf.function."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * dy)
        return [y] + tape.gradient(loss, [x] + layer.trainable_weights)
    return [np.asarray(v, np.float64) for v in step(x)]


@pytest.mark.parametrize("shape", [(6, 5), (4, 33, 7), (3, 9, 10, 16), (2, 4, 5, 6, 3)],
                         ids=["rank2", "rank3", "rank4", "rank5"])
@pytest.mark.parametrize("training", [True, False])
def test_layer_matches_keras(kconv_bn, shape, training, tf, rng):
    ours, theirs = _pair(kconv_bn, shape, rng, momentum=0.9, epsilon=1e-3)
    x = tf.constant(randn(rng, shape, np.float32) * 3 + 2)
    dy = tf.constant(randn(rng, shape))
    got, want = _step(tf, ours, x, dy, training), _step(tf, theirs, x, dy, training)
    for name, g, w in zip(["y", "dx", "dgamma", "dbeta"], got, want):
        assert_close(g.astype(np.float32), w, np.float32, name, floor=np.abs(w).max() * 10)
    for name, g, w in zip(["moving_mean", "moving_variance"], ours.get_weights()[2:], theirs.get_weights()[2:]):
        assert_close(g, w, np.float32, name)


@pytest.mark.parametrize("kwargs", [dict(center=False), dict(scale=False), dict(center=False, scale=False)])
def test_layer_without_gamma_or_beta_matches_keras(kconv_bn, kwargs, tf, rng):
    shape = (8, 6, 6, 5)
    ours, theirs = _pair(kconv_bn, shape, rng, **kwargs)
    x, dy = tf.constant(randn(rng, shape, np.float32)), tf.constant(randn(rng, shape))
    for g, w in zip(_step(tf, ours, x, dy, True), _step(tf, theirs, x, dy, True)):
        assert_close(g.astype(np.float32), w, np.float32, floor=np.abs(w).max() * 10)


def test_float64_layer_matches_keras(kconv_bn, tf, rng):
    shape = (5, 7, 7, 6)
    ours = kconv_bn(dtype="float64")
    theirs = keras.layers.BatchNormalization(dtype="float64")
    ours.build(shape)
    theirs.build(shape)
    x, dy = tf.constant(randn(rng, shape)), tf.constant(randn(rng, shape))
    # the op's epsilon is a TensorFlow float attr (32 bits): 1e-3 + 4.7e-11, which moves y by ~3e-11 relative
    for g, w in zip(_step(tf, ours, x, dy, True), _step(tf, theirs, x, dy, True)):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-9 * np.abs(w).max())


def test_mixed_precision_computes_in_float32_like_keras(kconv_bn, tf, rng):
    shape = (4, 6, 6, 8)
    ours = kconv_bn(dtype="mixed_float16")
    theirs = keras.layers.BatchNormalization(dtype="mixed_float16")
    x = tf.constant(randn(rng, shape, np.float16))
    got, want = ours(x, training=True), theirs(x, training=True)
    assert got.dtype == want.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=4e-3)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-5)


@pytest.mark.parametrize("kwargs,call", [(dict(axis=1), {}), (dict(renorm=True), {}), ({}, "mask")],
                         ids=["axis1", "renorm", "mask"])
def test_what_kconv_does_not_run_goes_to_keras_unchanged(kconv_bn, kwargs, call, tf, rng):
    shape = (4, 5, 6)
    ours, theirs = kconv_bn(**kwargs), keras.layers.BatchNormalization(**kwargs)
    x = tf.constant(randn(rng, shape, np.float32))
    extra = dict(mask=tf.constant(rng.random(shape[:2]) > 0.3)) if call == "mask" else {}
    got, want = ours(x, training=True, **extra), theirs(x, training=True, **extra)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_trainable_false_normalizes_with_the_moving_statistics(kconv_bn, tf, rng):
    shape = (8, 4, 4, 3)
    ours, theirs = _pair(kconv_bn, shape, rng)
    ours.trainable = theirs.trainable = False
    x = tf.constant(randn(rng, shape, np.float32))
    before = ours.get_weights()
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), rtol=1e-5, atol=1e-5)
    for a, b in zip(before, ours.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_model_trains_like_keras_and_round_trips(kconv_bn, tf, rng, tmp_path):
    import kconv

    def model(bn):
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
        h = keras.layers.ReLU()(bn()(h))
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(2)(h))

    theirs = model(keras.layers.BatchNormalization)
    ours = kconv.convert(theirs)
    assert sum(type(layer) is kconv_bn for layer in ours.layers) == 1
    assert sum(type(layer) is kconv_bn for layer in kconv.convert(theirs, convolutions_only=True).layers) == 0
    assert not any(type(layer) is kconv_bn for layer in kconv.to_keras(ours).layers)
    x, y = randn(rng, (16, 8, 8, 3), np.float32), randn(rng, (16, 2), np.float32)
    for m in (ours, theirs):
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        m.train_on_batch(x, y)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    path = str(tmp_path / "bn.keras")
    ours.save(path)
    loaded = keras.models.load_model(path)
    assert any(type(layer) is kconv_bn for layer in loaded.layers)
    np.testing.assert_array_equal(loaded.predict_on_batch(x), ours.predict_on_batch(x))


def test_op_rejects_mismatched_shapes_with_a_clear_message(kconv_bn, tf):
    from kconv import _oplib
    lib = _oplib.load()
    x = tf.zeros([4, 5])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError),
                       match=r"input shape \[4,5\] and gamma shape \[4\]"):
        lib.kconv_batch_norm(x, tf.ones([4]), tf.zeros([5]), tf.zeros([5]), tf.ones([5]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank >= 2"):
        lib.kconv_batch_norm(tf.zeros([5]), tf.ones([5]), tf.zeros([5]), tf.zeros([5]), tf.ones([5]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="epsilon"):
        lib.kconv_batch_norm(x, tf.ones([5]), tf.zeros([5]), tf.zeros([5]), tf.ones([5]), epsilon=0.0)


def test_threads_argument_is_checked_and_kept_in_the_config(kconv_bn, tf, rng):
    with pytest.raises(ValueError, match="threads must be a positive int"):
        kconv_bn(threads=0)
    layer = kconv_bn(threads=1)
    assert layer.get_config()["threads"] == 1
    assert type(kconv_bn.from_config(layer.get_config())) is kconv_bn
    x = randn(rng, (300, 8), np.float32)
    np.testing.assert_array_equal(layer(x, training=True), kconv_bn(threads=2)(x, training=True))


# ----------------------------------------------------------------- inference folded into the convolution

FOLD_CASES = {
    "conv2d": ("Conv2D", dict(filters=6, kernel_size=3, strides=2, padding="same", use_bias=True), (9, 10, 4)),
    "conv2d_groups": ("Conv2D", dict(filters=8, kernel_size=3, groups=2, use_bias=False), (8, 8, 4)),
    "conv1d_causal": ("Conv1D", dict(filters=5, kernel_size=3, padding="causal", dilation_rate=2), (16, 3)),
    "depthwise": ("DepthwiseConv2D", dict(kernel_size=3, depth_multiplier=2, padding="same"), (8, 8, 3)),
    "separable": ("SeparableConv2D", dict(filters=7, kernel_size=3, use_bias=False), (9, 9, 4)),
}


def _conv_bn_model(module, conv_name, conv_kwargs, shape, bn, extra_output=False):
    inputs = keras.Input(shape)
    conv = getattr(module, conv_name)(**conv_kwargs)(inputs)
    outputs = [keras.layers.ReLU()(bn()(conv))]
    if extra_output:          # the convolution's output read by another layer before the BatchNorm
        outputs = [keras.layers.GlobalAveragePooling1D()(keras.layers.Reshape((-1, conv.shape[-1]))(conv))] + \
            outputs
    return keras.Model(inputs, outputs)


def _ops_run_in_inference(tf, model, x):
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(x).graph
    return [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("case", sorted(FOLD_CASES))
def test_inference_right_after_a_kconv_convolution_is_folded_into_it(kconv_bn, case, tf, rng):
    import kconv
    conv_name, conv_kwargs, shape = FOLD_CASES[case]
    theirs = _conv_bn_model(keras.layers, conv_name, conv_kwargs, shape, keras.layers.BatchNormalization)
    theirs.set_weights([np.abs(w) + 0.5 if "variance" in v.path else w + 0.3 * randn(rng, w.shape, np.float32)
                        for w, v in zip(theirs.get_weights(), theirs.weights)])
    ours = kconv.convert(theirs)
    x = tf.constant(randn(rng, (3,) + shape, np.float32))
    ops = _ops_run_in_inference(tf, ours, x)
    assert "KconvBatchNorm" not in ops and "KconvConv" in ops
    want = theirs.predict_on_batch(x)
    np.testing.assert_allclose(ours.predict_on_batch(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())

    # gradients still flow (fine-tuning with the BatchNorm frozen: training=False under a tape)
    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False) ** 2)
        return tape.gradient(loss, model.trainable_weights)
    got, expected = tf.function(lambda: grads(ours))(), tf.function(lambda: grads(theirs))()
    for g, e, v in zip(got, expected, theirs.trainable_weights):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=v.path)


def test_a_convolution_also_read_elsewhere_gives_both_readers_the_right_values(kconv_bn, tf, rng):
    """Whether the other reader is traced before the BatchNorm (no fold) or after (the folded convolution and
    the original one both run), every output is Keras's."""
    import kconv
    theirs = _conv_bn_model(keras.layers, "Conv2D", dict(filters=4, kernel_size=3), (6, 6, 2),
                            keras.layers.BatchNormalization, extra_output=True)
    theirs.set_weights([np.abs(w) + 0.5 if "variance" in v.path else w + 0.3 * randn(rng, w.shape, np.float32)
                        for w, v in zip(theirs.get_weights(), theirs.weights)])
    ours = kconv.convert(theirs)
    x = tf.constant(randn(rng, (2, 6, 6, 2), np.float32))
    for g, w in zip(ours.predict_on_batch(x), theirs.predict_on_batch(x)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def test_training_and_eager_calls_are_not_folded(kconv_bn, tf, rng):
    import kconv
    theirs = _conv_bn_model(keras.layers, "Conv2D", dict(filters=4, kernel_size=3), (6, 6, 2),
                            keras.layers.BatchNormalization)
    ours = kconv.convert(theirs)
    x = tf.constant(randn(rng, (2, 6, 6, 2), np.float32))
    graph = tf.function(lambda x: ours(x, training=True)).get_concrete_function(x).graph
    assert "KconvBatchNorm" in [op.type for op in graph.get_operations()]
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- ReLU folded into the convolution

def _fused_activations(tf, model, x, training):
    graph = tf.function(lambda x: model(x, training=training)).get_concrete_function(x).graph
    ops = graph.get_operations()
    live = {op.name for op in ops if op.type == "KconvConv"}
    return [op.type for op in ops], sorted(op.get_attr("activation").decode() for op in ops
                                           if op.type == "KconvConv" and op.name in live)


@pytest.mark.parametrize("max_value,tf_op,fused", [(None, "Relu", "relu"), (6.0, "Relu6", "relu6")])
def test_relu_after_a_folded_batchnorm_is_fused_into_the_convolution(kconv_bn, max_value, tf_op, fused, tf, rng):
    import kconv
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, use_bias=False)(inputs))
    theirs = keras.Model(inputs, keras.layers.ReLU(max_value)(h))
    theirs.set_weights([np.abs(w) + 0.5 if "variance" in v.path else w + randn(rng, w.shape, np.float32)
                        for w, v in zip(theirs.get_weights(), theirs.weights)])
    ours = kconv.convert(theirs)
    assert any(type(layer) is kconv.ReLU for layer in ours.layers)
    x = tf.constant(randn(rng, (2, 8, 8, 3), np.float32) * 3)
    ops, activations = _fused_activations(tf, ours, x, training=False)
    assert tf_op not in ops and "KconvBatchNorm" not in ops and fused in activations
    want = theirs.predict_on_batch(x)
    assert (want == 0).any() and (max_value is None or (want == 6).any())      # the clamp matters
    np.testing.assert_allclose(ours.predict_on_batch(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert not any(type(layer) is kconv.ReLU for layer in kconv.convert(theirs, convolutions_only=True).layers)


def test_relu_right_after_a_convolution_is_fused_in_training_too(kconv_bn, tf, rng):
    import kconv
    inputs = keras.Input((9, 9, 4))
    h = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    theirs = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.ReLU()(h))))
    ours = kconv.convert(theirs)
    x = tf.constant(randn(rng, (3, 9, 9, 4), np.float32))
    ops, _ = _fused_activations(tf, ours, x, training=True)
    assert "Relu" not in ops

    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        return tape.gradient(loss, model.trainable_weights)
    for g, e, v in zip(tf.function(lambda: grads(ours))(), tf.function(lambda: grads(theirs))(),
                       theirs.trainable_weights):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=v.path)


@pytest.mark.parametrize("kwargs", [dict(negative_slope=0.1), dict(threshold=0.5), dict(max_value=3.0)])
def test_relus_kconv_cannot_fuse_run_as_keras(kconv_bn, kwargs, tf, rng):
    import kconv
    inputs = keras.Input((6, 6, 2))
    theirs = keras.Model(inputs, keras.layers.ReLU(**kwargs)(keras.layers.Conv2D(3, 3)(inputs)))
    ours = kconv.convert(theirs)
    x = tf.constant(randn(rng, (2, 6, 6, 2), np.float32))
    ops, activations = _fused_activations(tf, ours, x, training=False)
    assert activations == ["linear"]
    np.testing.assert_allclose(ours.predict_on_batch(x), theirs.predict_on_batch(x), rtol=1e-5, atol=1e-5)
