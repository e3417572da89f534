"""Whole models, compiled: the same Keras model twice, once on keras.layers and once with every convolution
kconv has a twin for on kconv's layer, with identical weights, timed as Keras runs them: the compiled
train_on_batch (forward, loss, backward, SGD update: one tf.function) and predict_on_batch.

Each builder takes the namespace its convolution classes come from (`nn`: keras.layers by default). The
keras.layers twin is built from it; the kconv twin is `kconv.serving.convert(keras_twin)` (a copy with every
conv layer kconv has a twin for swapped for it, same weights), or, where this kconv has no convert, the same
builder run on kconv's classes (keras.layers' where kconv has none) from the same seed, with set_weights.
Either way the row says how many of the model's conv layers run on kconv ("kconv convs"), and how many of its
BatchNormalization layers ("kconv BN": kconv.BatchNormalization; `--convolutions-only` keeps Keras's BatchNorm
and ReLU layers).

Method (GUIDE section 6, "Fair timing"): both twins warmed up (traced, planned), then timed in alternating
blocks, each after a pause and a discarded warm call, medians over rounds; three input batches rotate. ratio =
keras.layers time / kconv time (> 1: kconv faster). max err = max |kconv - keras| / max |keras| of
predict_on_batch on the same batch, before any training step.
"""
from dataclasses import dataclass, field

import numpy as np

from .timing import blocks, calls_for, estimate


# ---------------------------------------------------------------------------------------------- the zoo

def _keras_layers(nn):
    import keras
    return keras.layers if nn is None else nn


def image_cnn(nn=None, width=32, input_shape=(28, 28, 1)):
    """The demo's image CNN (kconv.demo.build_image_model): conv 5x5 (C = 1) and three 3x3, MNIST 28x28."""
    from kconv.demo import build_image_model
    return build_image_model(_keras_layers(nn).Conv2D, input_shape, 10, width)


def text_cnn(nn=None, vocab=20000, length=400, dim=128, filters=100, kernel_sizes=(3, 4, 5), classes=5):
    """The demo's text CNN (Kim 2014; kconv.demo.build_text_model): Conv1D k = 3, 4, 5 x 100 over 128-d
    embeddings of 400 tokens, max over time, dropout, softmax over BBC News's 5 topics."""
    from kconv.demo import build_text_model
    return build_text_model(_keras_layers(nn).Conv1D, vocab, length, classes, dim, filters, kernel_sizes)


def resnet20(nn=None, widths=(16, 32, 64), blocks_per_stage=3, input_shape=(32, 32, 3), classes=10):
    """He et al. (2016) CIFAR ResNet-20: 3x3 stem, three stages of basic blocks (3x3 conv, BatchNorm, ReLU;
    3x3 conv, BatchNorm; add; ReLU), the first block of stages 2 and 3 with a stride-2 3x3 and a 1x1 stride-2
    projection shortcut (+ BatchNorm); every conv use_bias=False; global average pooling, softmax."""
    import keras
    L = keras.layers
    conv2d = _keras_layers(nn).Conv2D

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


def vgg_cifar(nn=None, widths=(32, 64, 128), input_shape=(32, 32, 3), classes=10):
    """A VGG-style CIFAR net: per stage two 3x3 SAME convs with bias and ReLU (fused into kconv's epilogue),
    then 2x2 max pooling; a 256-unit dense layer, dropout, softmax. Half VGG's usual widths (32-64-128) so a
    2-core training step stays near 0.1 s."""
    import keras
    L = keras.layers
    conv2d = _keras_layers(nn).Conv2D
    stack = [keras.Input(input_shape)]
    for filters in widths:
        stack += [conv2d(filters, 3, padding="same", activation="relu"),
                  conv2d(filters, 3, padding="same", activation="relu"), L.MaxPooling2D()]
    stack += [L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.5), L.Dense(classes, activation="softmax")]
    return keras.Sequential(stack, name="vgg_cifar")


def tcn(nn=None, length=512, channels=1, filters=64, dilations=(1, 2, 4, 8, 16, 32)):
    """A TCN (Bai et al. 2018) / WaveNet-style stack for next-step prediction of a univariate series: a causal
    k=3 conv (C = 1), then residual blocks of two causal k=3 convs with dilation 1, 2, 4, ... 32 (ReLU), and a
    1x1 conv to one output per step."""
    import keras
    L = keras.layers
    conv1d = _keras_layers(nn).Conv1D
    inputs = keras.Input((length, channels))
    h = conv1d(filters, 3, padding="causal", activation="relu")(inputs)
    for d in dilations:
        r = conv1d(filters, 3, padding="causal", dilation_rate=d, activation="relu")(h)
        r = conv1d(filters, 3, padding="causal", dilation_rate=d, activation="relu")(r)
        h = L.Add()([h, r])
    return keras.Model(inputs, conv1d(1, 1)(h), name="tcn")


def rgb_stem(nn=None, size=128, widths=(32, 64, 128), classes=10):
    """An ImageNet-style net on 128x128 RGB: the 7x7 stride-2 stem (C = 3) + BatchNorm + ReLU, 3x3 stride-2
    max pooling, two 3x3 convs, a stride-2 3x3, a 3x3, global average pooling, softmax."""
    import keras
    L = keras.layers
    conv2d = _keras_layers(nn).Conv2D
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


# MobileNet-v2's inverted residual blocks as (expansion t, output channels c, repeats n, first stride s), at
# about half its width and with fewer repeats, so a 2-core training step of batch 16 at 96x96 stays near 0.2 s.
MOBILENET_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1), (6, 160, 2, 2))


def mobilenet_v2(nn=None, input_shape=(96, 96, 3), stem=16, blocks=MOBILENET_BLOCKS, last=320, classes=10):
    """A MobileNet-v2-style net (Sandler et al. 2018): a 3x3 stride-2 stem (C = 3) + BatchNorm + ReLU6, then
    inverted residual blocks: 1x1 expansion (t x channels) + BatchNorm + ReLU6 (none when t = 1), a 3x3
    DepthwiseConv2D (stride 1, or 2 on a stage's first block) + BatchNorm + ReLU6, a 1x1 linear projection +
    BatchNorm, and the residual add when stride 1 keeps the shape; a last 1x1 + BatchNorm + ReLU6, global average
    pooling, softmax. Every conv use_bias=False (BatchNorm follows), as in keras.applications.MobileNetV2."""
    import keras
    L = keras.layers
    nn = _keras_layers(nn)

    def bn_relu6(h, relu=True):
        h = L.BatchNormalization()(h)
        return L.ReLU(6.0)(h) if relu else h

    inputs = keras.Input(input_shape)
    h = bn_relu6(nn.Conv2D(stem, 3, strides=2, padding="same", use_bias=False)(inputs))
    for t, c, n, s in blocks:
        for i in range(n):
            stride = s if i == 0 else 1
            cin = h.shape[-1]
            r = h if t == 1 else bn_relu6(nn.Conv2D(cin * t, 1, use_bias=False)(h))
            r = bn_relu6(nn.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(r))
            r = bn_relu6(nn.Conv2D(c, 1, use_bias=False)(r), relu=False)
            h = L.Add()([h, r]) if stride == 1 and cin == c else r
    h = bn_relu6(nn.Conv2D(last, 1, use_bias=False)(h))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(classes, activation="softmax")(h), name="mobilenet_v2")


def unet(nn=None, input_shape=(64, 64, 3), widths=(16, 32, 64, 128), classes=4, up_kernel=2):
    """A small U-Net (Ronneberger et al. 2015) for per-pixel classification: per encoder level two 3x3 SAME
    convs with bias and ReLU, then 2x2 max pooling; two 3x3 convs at the bottom; per decoder level a
    Conv2DTranspose (up_kernel x up_kernel, stride 2, SAME, linear) doubling the size, concatenated with the
    encoder's map of that size (the skip), two 3x3 convs; a 1x1 conv with a per-pixel softmax over `classes`."""
    import keras
    L = keras.layers
    nn = _keras_layers(nn)

    def double_conv(h, filters):
        h = nn.Conv2D(filters, 3, padding="same", activation="relu")(h)
        return nn.Conv2D(filters, 3, padding="same", activation="relu")(h)

    inputs = keras.Input(input_shape)
    h, skips = inputs, []
    for filters in widths[:-1]:
        h = double_conv(h, filters)
        skips.append(h)
        h = L.MaxPooling2D()(h)
    h = double_conv(h, widths[-1])
    for filters, skip in zip(reversed(widths[:-1]), reversed(skips)):
        h = nn.Conv2DTranspose(filters, up_kernel, strides=2, padding="same")(h)
        h = double_conv(L.Concatenate()([skip, h]), filters)
    return keras.Model(inputs, nn.Conv2D(classes, 1, activation="softmax")(h), name="unet")


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


def segmentation_data(size, rng, b):
    """Random images and a class per pixel."""
    shape = tuple(size.get("input_shape", (64, 64, 3)))
    x = rng.standard_normal((b,) + shape, dtype=np.float32)
    return x, rng.integers(0, size.get("classes", 4), (b,) + shape[:2]).astype(np.int32)


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
    build: object       # build(nn, **size) -> keras.Model, its conv layers from the namespace nn
    batch: int
    data: object        # data(size, rng, batch) -> (x, y)
    loss: str
    size: dict = field(default_factory=dict)    # the builder's arguments (the default is the real model)
    smoke: dict = field(default_factory=dict)   # a tiny version for --smoke (the CLI test)
    smoke_batch: int = 4
    # SGD's step (momentum 0.9): timed steps must stay finite, or every twin times NaN arithmetic and kconv
    # its recompute of non-finite Winograd outputs (the TCN diverged to NaN within 15 steps at 0.01)
    learning_rate: float = 0.01

    def inputs(self, rng, batch, smoke=False):
        return self.data(self.smoke if smoke else self.size, rng, batch)


CCE = "sparse_categorical_crossentropy"
MODELS = [
    Model("image", "image CNN (demo, MNIST 28x28x1)", image_cnn, 64, image_data((28, 28, 1)), CCE,
          smoke=dict(width=4, input_shape=(12, 12, 1))),
    Model("text", "text CNN (demo, Kim 2014, 400 tokens)", text_cnn, 50, text_data, CCE,
          smoke=dict(vocab=100, length=32, dim=8, filters=8)),
    Model("resnet20", "ResNet-20 (CIFAR 32x32x3, BatchNorm)", resnet20, 32, image_data((32, 32, 3)), CCE,
          smoke=dict(widths=(4, 8, 8), blocks_per_stage=1, input_shape=(12, 12, 3))),
    Model("vgg", "VGG-style CIFAR net (32x32x3)", vgg_cifar, 32, image_data((32, 32, 3)), CCE,
          smoke=dict(widths=(4, 8), input_shape=(12, 12, 3))),
    Model("tcn", "TCN, dilated causal k=3 (512 steps)", tcn, 16, series_data, "mse",
          smoke=dict(length=32, filters=8, dilations=(1, 2)), learning_rate=0.001),
    Model("stem", "RGB 7x7/2 stem net (128x128x3)", rgb_stem, 16, stem_data, CCE,
          smoke=dict(size=24, widths=(4, 8, 8))),
    Model("mobilenet", "MobileNet-v2-style (96x96x3, depthwise 3x3)", mobilenet_v2, 16, image_data((96, 96, 3)),
          CCE, smoke=dict(input_shape=(16, 16, 3), stem=8, blocks=((1, 8, 1, 1), (2, 8, 2, 2)), last=16)),
    Model("unet", "U-Net (64x64x3, 2x2/2 transposed convs)", unet, 8, segmentation_data, CCE,
          smoke=dict(input_shape=(16, 16, 3), widths=(4, 8), classes=3)),
]

QUICK_KEYS = ["image", "text", "resnet20", "tcn"]
SMOKE_KEYS = ["resnet20", "tcn"]


def select(spec, quick=False, smoke=False):
    """Models for --models SPEC: comma-separated keys (image, text, resnet20, vgg, tcn, stem, mobilenet, unet),
    "all", "none", or text in a model's title. Without SPEC: all models, or the quick / smoke subset."""
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

class _KconvLayers:
    """keras.layers with kconv's class where kconv has one (the fallback route, for a kconv without convert)."""

    def __getattr__(self, name):
        import keras
        import kconv
        try:
            return getattr(kconv, name)
        except AttributeError:
            return getattr(keras.layers, name)


def _convert():
    """kconv.serving.convert, or None where this kconv has none."""
    try:
        from kconv import serving
    except ImportError:
        return None
    return getattr(serving, "convert", None)


CONV_TYPES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
              "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def conv_layers(model):
    """The model's convolution layers (every keras.layers conv class, kconv's subclasses included)."""
    import keras
    types = tuple(getattr(keras.layers, n) for n in CONV_TYPES if hasattr(keras.layers, n))
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, types)]


def is_kconv(layer):
    return type(layer).__module__.split(".")[0] == "kconv"


def twins(spec, smoke=False, seed=0, route=None, convolutions_only=False):
    """(kconv model, keras model): the keras.layers twin built from `seed`, and its kconv twin, with the same
    weights. route "convert": kconv.serving.convert(keras twin); "build": the builder again on kconv's classes
    (keras.layers' where kconv has none) from the same seed, then set_weights. Default: convert where kconv
    has it. convolutions_only: the kconv twin keeps keras.layers' BatchNormalization and ReLU."""
    import keras
    size = spec.smoke if smoke else spec.size
    convert = _convert()
    route = route or ("convert" if convert is not None else "build")
    keras.utils.set_random_seed(seed)
    theirs = spec.build(keras.layers, **size)
    if route == "convert":
        if convert is None:
            raise RuntimeError("this kconv has no kconv.serving.convert")
        ours = convert(theirs, convolutions_only=True) if convolutions_only else convert(theirs)
    else:
        keras.utils.set_random_seed(seed)
        ours = spec.build(_KconvLayers(), **size)
        ours.set_weights(theirs.get_weights())
    return ours, theirs


def _max_rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def time_model(spec, rounds=5, pause=0.05, block_s=0.1, batch=None, smoke=False, seed=0,
               convolutions_only=False):
    """One row: the model's train_on_batch and predict_on_batch, kconv twin against keras.layers twin."""
    import keras
    import tensorflow as tf
    b = batch or (spec.smoke_batch if smoke else spec.batch)
    rng = np.random.default_rng(seed)
    ours, theirs = twins(spec, smoke, seed, convolutions_only=convolutions_only)
    data = [tuple(tf.constant(a) for a in spec.inputs(rng, b, smoke)) for _ in range(3)]
    for m in (ours, theirs):
        m.compile(optimizer=keras.optimizers.SGD(spec.learning_rate, momentum=0.9), loss=spec.loss,
                  jit_compile=False)
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

    convs = conv_layers(ours)
    norms = [layer for layer in ours._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    row = dict(model=spec.title, key=spec.key, batch=b, max_err=err, rounds=rounds,
               kconv_convs=f"{sum(map(is_kconv, convs))}/{len(convs)}",
               kconv_bn=f"{sum(map(is_kconv, norms))}/{len(norms)}" if norms else "")
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
    # timed steps on non-finite weights time NaN arithmetic (and kconv's recompute of such Winograd outputs)
    row["diverged"] = [who for who, m in models.items()
                       if not all(np.isfinite(w).all() for w in m.get_weights())]
    return row
