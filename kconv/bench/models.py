"""Whole models, compiled: the same Keras model built twice, once on kconv.Conv1D/Conv2D and once on
keras.layers.Conv1D/Conv2D, with identical weights (set_weights), timed as Keras runs them: the compiled
train_on_batch (forward, loss, backward, SGD update: one tf.function) and predict_on_batch.

Each builder takes the convolution class, so both twins are built by the same code. Method (GUIDE section 6,
"Fair timing"): both twins warmed up (traced, planned), then timed in alternating blocks, each after a pause
and a discarded warm call, medians over rounds; three input batches rotate. ratio = keras.layers time / kconv
time (> 1: kconv faster). max err = max |kconv - keras| / max |keras| of predict_on_batch on the same batch,
before any training step.
"""
from dataclasses import dataclass, field

import numpy as np

from .timing import blocks, calls_for, estimate


# ---------------------------------------------------------------------------------------------- the zoo

def image_cnn(conv2d, width=32, input_shape=(28, 28, 1)):
    """The demo's image CNN (kconv.demo.build_image_model): conv 5x5 (C = 1) and three 3x3, MNIST 28x28."""
    from kconv.demo import build_image_model
    return build_image_model(conv2d, input_shape, 10, width)


def text_cnn(conv1d, vocab=20000, length=400, dim=128, filters=100, kernel_sizes=(3, 4, 5), classes=5):
    """The demo's text CNN (Kim 2014; kconv.demo.build_text_model): Conv1D k = 3, 4, 5 x 100 over 128-d
    embeddings of 400 tokens, max over time, dropout, softmax over BBC News's 5 topics."""
    from kconv.demo import build_text_model
    return build_text_model(conv1d, vocab, length, classes, dim, filters, kernel_sizes)


def resnet20(conv2d, widths=(16, 32, 64), blocks_per_stage=3, input_shape=(32, 32, 3), classes=10):
    """He et al. (2016) CIFAR ResNet-20: 3x3 stem, three stages of basic blocks (3x3 conv, BatchNorm, ReLU;
    3x3 conv, BatchNorm; add; ReLU), the first block of stages 2 and 3 with a stride-2 3x3 and a 1x1 stride-2
    projection shortcut (+ BatchNorm); every conv use_bias=False; global average pooling, softmax."""
    import keras
    L = keras.layers

    def conv_bn(h, filters, kernel, stride=1, relu=True):
        h = conv2d(filters, kernel, strides=stride, padding="same", use_bias=False)(h)
        h = L.BatchNormalization()(h)
        return L.ReLU()(h) if relu else h

    inputs = keras.Input(input_shape)
    h = conv_bn(inputs, widths[0], 3)
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            r = conv_bn(h, filters, 3, stride)
            r = conv_bn(r, filters, 3, relu=False)
            shortcut = h if stride == 1 and h.shape[-1] == filters else conv_bn(h, filters, 1, stride, relu=False)
            h = L.ReLU()(L.Add()([shortcut, r]))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(classes, activation="softmax")(h), name="resnet20")


def vgg_cifar(conv2d, widths=(32, 64, 128), input_shape=(32, 32, 3), classes=10):
    """A VGG-style CIFAR net: per stage two 3x3 SAME convs with bias and ReLU (fused into kconv's epilogue),
    then 2x2 max pooling; a 256-unit dense layer, dropout, softmax. Half VGG's usual widths (32-64-128) so a
    2-core training step stays near 0.1 s."""
    import keras
    L = keras.layers
    stack = [keras.Input(input_shape)]
    for filters in widths:
        stack += [conv2d(filters, 3, padding="same", activation="relu"),
                  conv2d(filters, 3, padding="same", activation="relu"), L.MaxPooling2D()]
    stack += [L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.5), L.Dense(classes, activation="softmax")]
    return keras.Sequential(stack, name="vgg_cifar")


def tcn(conv1d, length=512, channels=1, filters=64, dilations=(1, 2, 4, 8, 16, 32)):
    """A TCN (Bai et al. 2018) / WaveNet-style stack for next-step prediction of a univariate series: a causal
    k=3 conv (C = 1), then residual blocks of two causal k=3 convs with dilation 1, 2, 4, ... 32 (ReLU), and a
    1x1 conv to one output per step."""
    import keras
    L = keras.layers
    inputs = keras.Input((length, channels))
    h = conv1d(filters, 3, padding="causal", activation="relu")(inputs)
    for d in dilations:
        r = conv1d(filters, 3, padding="causal", dilation_rate=d, activation="relu")(h)
        r = conv1d(filters, 3, padding="causal", dilation_rate=d, activation="relu")(r)
        h = L.Add()([h, r])
    return keras.Model(inputs, conv1d(1, 1)(h), name="tcn")


def rgb_stem(conv2d, size=128, widths=(32, 64, 128), classes=10):
    """An ImageNet-style net on 128x128 RGB: the 7x7 stride-2 stem (C = 3) + BatchNorm + ReLU, 3x3 stride-2
    max pooling, two 3x3 convs, a stride-2 3x3, a 3x3, global average pooling, softmax."""
    import keras
    L = keras.layers
    inputs = keras.Input((size, size, 3))
    h = conv2d(widths[0], 7, strides=2, padding="same", use_bias=False)(inputs)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.MaxPooling2D(3, strides=2, padding="same")(h)
    h = conv2d(widths[1], 3, padding="same", activation="relu")(h)
    h = conv2d(widths[1], 3, padding="same", activation="relu")(h)
    h = conv2d(widths[2], 3, strides=2, padding="same", activation="relu")(h)
    h = conv2d(widths[2], 3, padding="same", activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(classes, activation="softmax")(h), name="rgb_stem")


def _labels(rng, b, classes=10):
    return rng.integers(0, classes, b).astype(np.int32)


def image_data(default_shape):
    """Random images of the builder's input_shape (default_shape if the size does not say) and labels."""
    def make(size, rng, b):
        shape = tuple(size.get("input_shape", default_shape))
        return rng.standard_normal((b,) + shape, dtype=np.float32), _labels(rng, b)
    return make


def stem_data(size, rng, b):
    side = size.get("size", 128)
    return rng.standard_normal((b, side, side, 3), dtype=np.float32), _labels(rng, b)


def text_data(size, rng, b):
    """Token ids (0 is padding, never drawn) and topic labels."""
    tokens = rng.integers(1, size.get("vocab", 20000), (b, size.get("length", 400))).astype(np.int32)
    return tokens, _labels(rng, b, size.get("classes", 5))


def series_data(size, rng, b):
    """Random walks; the target is the next value at every step."""
    length, channels = size.get("length", 512), size.get("channels", 1)
    walk = np.cumsum(rng.standard_normal((b, length + 1, channels), dtype=np.float32), axis=1) / 10
    return walk[:, :-1].astype(np.float32), walk[:, 1:, :1].astype(np.float32)


@dataclass
class Model:
    key: str            # the --models selector
    title: str          # the table's name
    rank: int           # 1: Conv1D, 2: Conv2D
    build: object       # build(conv_class, **size) -> keras.Model
    batch: int
    data: object        # data(size, rng, batch) -> (x, y)
    loss: str
    size: dict = field(default_factory=dict)    # the builder's arguments (the default is the real model)
    smoke: dict = field(default_factory=dict)   # a tiny version for --smoke (the CLI test)
    smoke_batch: int = 4

    def inputs(self, rng, batch, smoke=False):
        return self.data(self.smoke if smoke else self.size, rng, batch)


CCE = "sparse_categorical_crossentropy"
MODELS = [
    Model("image", "image CNN (demo, MNIST 28x28x1)", 2, image_cnn, 64, image_data((28, 28, 1)), CCE,
          smoke=dict(width=4, input_shape=(12, 12, 1))),
    Model("text", "text CNN (demo, Kim 2014, 400 tokens)", 1, text_cnn, 50, text_data, CCE,
          smoke=dict(vocab=100, length=32, dim=8, filters=8)),
    Model("resnet20", "ResNet-20 (CIFAR 32x32x3, BatchNorm)", 2, resnet20, 32, image_data((32, 32, 3)), CCE,
          smoke=dict(widths=(4, 8, 8), blocks_per_stage=1, input_shape=(12, 12, 3))),
    Model("vgg", "VGG-style CIFAR net (32x32x3)", 2, vgg_cifar, 32, image_data((32, 32, 3)), CCE,
          smoke=dict(widths=(4, 8), input_shape=(12, 12, 3))),
    Model("tcn", "TCN, dilated causal k=3 (512 steps)", 1, tcn, 16, series_data, "mse",
          smoke=dict(length=32, filters=8, dilations=(1, 2))),
    Model("stem", "RGB 7x7/2 stem net (128x128x3)", 2, rgb_stem, 16, stem_data, CCE,
          smoke=dict(size=24, widths=(4, 8, 8))),
]

QUICK_KEYS = ["image", "text", "resnet20", "tcn"]
SMOKE_KEYS = ["resnet20", "tcn"]


def select(spec, quick=False, smoke=False):
    """Models for --models SPEC: comma-separated keys (image, text, resnet20, vgg, tcn, stem), "all", "none",
    or text in a model's title. Without SPEC: all models, or the quick / smoke subset."""
    if spec is None:
        keys = SMOKE_KEYS if smoke else QUICK_KEYS if quick else [m.key for m in MODELS]
        return [m for m in MODELS if m.key in keys]
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if not part or part == "none":
            continue
        if part == "all":
            rows = list(MODELS)
        else:
            rows = [m for m in MODELS if m.key == part] or [m for m in MODELS if part.lower() in m.title.lower()]
            if not rows:
                raise ValueError(f"--models: {part!r} is neither a model ({', '.join(m.key for m in MODELS)}), "
                                 f"all, none, nor part of a model's title")
        chosen += [m for m in rows if m not in chosen]
    return chosen


# ----------------------------------------------------------------------------------------------- timing

def twins(spec, smoke=False, seed=0):
    """(kconv model, keras model), built by the same builder from the same seed; kconv's gets the keras
    twin's weights."""
    import keras
    import kconv
    size = spec.smoke if smoke else spec.size
    ours_cls = kconv.Conv1D if spec.rank == 1 else kconv.Conv2D
    theirs_cls = keras.layers.Conv1D if spec.rank == 1 else keras.layers.Conv2D
    keras.utils.set_random_seed(seed)
    theirs = spec.build(theirs_cls, **size)
    keras.utils.set_random_seed(seed)
    ours = spec.build(ours_cls, **size)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _max_rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def time_model(spec, rounds=5, pause=0.05, block_s=0.1, batch=None, smoke=False, seed=0):
    """One row: the model's train_on_batch and predict_on_batch, kconv twin against keras.layers twin."""
    import keras
    import tensorflow as tf
    b = batch or (spec.smoke_batch if smoke else spec.batch)
    rng = np.random.default_rng(seed)
    ours, theirs = twins(spec, smoke, seed)
    data = [tuple(tf.constant(a) for a in spec.inputs(rng, b, smoke)) for _ in range(3)]
    for m in (ours, theirs):
        m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=spec.loss, jit_compile=False)
    err = _max_rel_error(ours.predict_on_batch(data[0][0]), theirs.predict_on_batch(data[0][0]))
    models = {"kconv": ours, "keras": theirs}
    state = {}

    def stepper(kind, who):
        model = models[who]
        key = (kind, who)
        state[key] = 0

        def train():
            state[key] = (state[key] + 1) % 3
            model.train_on_batch(*data[state[key]])

        def predict():
            state[key] = (state[key] + 1) % 3
            model.predict_on_batch(data[state[key]][0])
        return train if kind == "train" else predict

    row = dict(model=spec.title, key=spec.key, batch=b, max_err=err, rounds=rounds)
    for kind in ("train", "predict"):
        fns = {who: stepper(kind, who) for who in models}
        for fn in fns.values():   # trace and warm up
            fn()
            fn()
        per_call = {who: estimate(fn, 2) for who, fn in fns.items()}
        calls = min(calls_for(t, block_s, most=20) for t in per_call.values())   # the slower one sets it
        times = blocks(fns, rounds=rounds, calls=calls, pause=pause)
        kc_t, tf_t = float(np.median(times["kconv"])), float(np.median(times["keras"]))
        row.update({f"{kind}_kconv_ms": kc_t * 1e3, f"{kind}_keras_ms": tf_t * 1e3, f"{kind}_ratio": tf_t / kc_t,
                    f"{kind}_calls": calls})
    return row
