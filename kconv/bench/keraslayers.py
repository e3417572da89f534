"""The other layer kinds (depthwise, separable, transposed convolutions), kconv's Keras layer against Keras's own,
each pass compiled.

The convolution table (convs.py) calls kconv's ops and tf.nn's directly. These kinds are timed through the Keras
layers instead, as a model runs them: kconv.DepthwiseConv2D against keras.layers.DepthwiseConv2D (TensorFlow's
tf.nn.depthwise_conv2d), kconv.SeparableConv2D against keras.layers.SeparableConv2D (tf.nn.separable_conv2d: a
depthwise then a 1x1 convolution), kconv.Conv2DTranspose against keras.layers.Conv2DTranspose
(tf.nn.conv2d_transpose), and their 1-D versions, all with bias and ReLU. Keras's layers add the bias and apply
the activation after TensorFlow's op (grappler fuses what its remapper knows how to); kconv's layer fuses them
where its op can.

Both layers of a pair are built on the same input shape and called with `stateless_call`, the weights given as
tensors: the two run the same weights by construction, and the weights rotate between calls like the inputs,
kconv's kept filter transforms off (convs.training_weights: a training step's forward). Two passes, each a
`tf.function`:

    forward      y = layer(x)
    train step   y = layer(x) under a GradientTape, then the gradients of every weight and of x given dy
                 (forward + both gradients: what a layer costs in the middle of a network's training step)

A graph chains `inner` passes, each with its own inputs, for about `graph_s` seconds per call, as in convs.py;
the figures are per pass. The timing is the suite's (alternating blocks after a pause and a discarded warm call,
medians over rounds). max err: max |kconv - Keras| / max |Keras| over the pass's outputs (y; or each gradient).
The train step's error is that of the same pair of layers without the ReLU: where a pre-activation is within
rounding of 0, the two float32 results can fall on either side of the ReLU's kink, and that one element moves
every gradient it feeds by a whole term (seen: 4e-2 on dx of a 3x3/2 transposed layer, with kconv the one that
agreed with float64). The forward's error is the ReLU layers' own.
"""
import math

import numpy as np

from .convs import chained, max_rel_error, time_pass, training_weights

PASSES = ("forward", "train step")

# (kind, rank) -> the keras.layers class, and the TensorFlow op that Keras's layer runs (TF backend)
CLASSES = {("depthwise", 1): "DepthwiseConv1D", ("depthwise", 2): "DepthwiseConv2D",
           ("separable", 1): "SeparableConv1D", ("separable", 2): "SeparableConv2D",
           ("transpose", 1): "Conv1DTranspose", ("transpose", 2): "Conv2DTranspose"}
TF_OPS = {"depthwise": "tf.nn.depthwise_conv2d", "separable": "tf.nn.separable_conv2d",
          "transpose": "tf.nn.conv2d_transpose"}


class Unavailable(Exception):
    """kconv has no layer of this kind (yet)."""


def class_name(layer):
    return CLASSES[(layer.kind, layer.nd)]


def kconv_class(layer):
    """kconv's twin of the layer's Keras class; Unavailable where this kconv has none."""
    import kconv
    name = class_name(layer)
    try:
        return getattr(kconv, name)
    except AttributeError:
        raise Unavailable(f"kconv has no {name}") from None


def available(layer):
    try:
        kconv_class(layer)
        return True
    except Unavailable:
        return False


def layer_kwargs(layer, activation="relu"):
    kw = dict(kernel_size=layer.kernel, strides=layer.stride, padding=layer.padding.lower(),
              dilation_rate=layer.dilation, activation=activation, use_bias=True)
    if layer.kind != "depthwise":
        kw["filters"] = layer.k
    return kw


def out_spatial(layer):
    """A layer's output size (Keras's rules: SAME keeps ceil(n / s) for a convolution and n * s transposed)."""
    span = layer.dilation * (layer.kernel - 1) + 1
    if layer.kind == "transpose":
        if layer.padding == "SAME":
            return tuple(n * layer.stride for n in layer.spatial)
        return tuple((n - 1) * layer.stride + span for n in layer.spatial)
    if layer.padding == "SAME":
        return tuple(-(-n // layer.stride) for n in layer.spatial)
    return tuple((n - span) // layer.stride + 1 for n in layer.spatial)


def flops(layer, pass_name="forward"):
    """A direct computation's flops (2 per multiply-add) of the forward; a train step counts three times that
    (forward, input gradient, weight gradient), as for a convolution."""
    taps = layer.kernel ** layer.nd
    if layer.kind == "transpose":     # every input pixel spreads over taps x K outputs
        f = 2.0 * layer.batch * math.prod(layer.spatial) * layer.c * layer.k * taps
    else:
        out = layer.batch * math.prod(out_spatial(layer))
        f = 2.0 * out * layer.c * taps
        if layer.kind == "separable":
            f += 2.0 * out * layer.c * layer.k
    return f * (3 if pass_name == "train step" else 1)


def make_pair(layer, activation="relu"):
    """{"kconv": kconv's layer, "tf": keras.layers' layer}, built on the layer's input shape."""
    import keras
    kwargs = layer_kwargs(layer, activation)
    pair = {"kconv": kconv_class(layer)(**kwargs), "tf": getattr(keras.layers, class_name(layer))(**kwargs)}
    shape = (layer.batch,) + tuple(layer.spatial) + (layer.c,)
    for lay in pair.values():
        lay.build(shape)
    got = [tuple(v.shape) for v in pair["kconv"].trainable_variables]
    want = [tuple(v.shape) for v in pair["tf"].trainable_variables]
    if got != want:
        raise RuntimeError(f"{class_name(layer)}: kconv's weights {got} are not Keras's {want}")
    return pair


def _scale(layer, path, shape):
    """A weight's standard deviation: 1 / sqrt(fan-in); biases 0.1."""
    if len(shape) == 1:
        return 0.1
    taps = layer.kernel ** layer.nd
    if layer.kind == "depthwise" or "depthwise" in path:
        fan_in = taps
    elif "pointwise" in path:
        fan_in = layer.c
    else:   # transposed: each output sums about taps / stride^nd input pixels of C channels
        fan_in = max(1, taps // layer.stride ** layer.nd) * layer.c
    return 1 / math.sqrt(fan_in)


def make_inputs(tf, layer, variables, count, seed=0):
    """`count` independent input sets (x, *weights, dy) as tensors; weights in the layer's variable order."""
    rng = np.random.default_rng(seed)
    x_shape = (layer.batch,) + tuple(layer.spatial) + (layer.c,)
    y_shape = (layer.batch,) + out_spatial(layer) + (layer.k,)
    sets = []
    for _ in range(count):
        arrays = [rng.standard_normal(x_shape, dtype=np.float32)]
        for v in variables:
            shape = tuple(v.shape)
            arrays.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(_scale(layer, v.path, shape)))
        arrays.append(rng.standard_normal(y_shape, dtype=np.float32))
        sets.append(tuple(tf.constant(a) for a in arrays))
    return sets


def pass_functions(tf, pair):
    """{pass: {"kconv": f, "tf": f}}: each f takes one input set (x, *weights, dy)."""
    def forward(lay):
        def f(x, *rest):
            return lay.stateless_call(list(rest[:-1]), [], x)[0]
        return f

    def train_step(lay):
        def f(x, *rest):
            weights, dy = list(rest[:-1]), rest[-1]
            with tf.GradientTape() as tape:
                tape.watch([x] + weights)
                y = lay.stateless_call(weights, [], x)[0]
            return tape.gradient(y, [x] + weights, output_gradients=dy)
        return f

    return {"forward": {who: forward(lay) for who, lay in pair.items()},
            "train step": {who: train_step(lay) for who, lay in pair.items()}}


def _error(got, want):
    if isinstance(want, (list, tuple)):
        return max(max_rel_error(g, w) for g, w in zip(got, want))
    return max_rel_error(got, want)


@training_weights()
def time_layer(tf, layer, rounds=5, pause=0.05, block_s=0.05, graph_s=0.003, max_inner=16, check=True):
    """Rows, one per pass (forward, train step): ms per pass of kconv's layer and of Keras's (median of
    `rounds` alternating blocks, each after a `pause` and a discarded warm call, each block about `block_s`
    seconds of graph calls, each graph call chaining `inner` passes for about `graph_s` seconds), ratio =
    Keras time / kconv time, GFLOP/s of each, and max relative error of kconv against Keras. Unavailable if
    kconv has no layer of this kind."""
    pair = make_pair(layer)
    fns = pass_functions(tf, pair)
    variables = pair["tf"].trainable_variables
    sets = make_inputs(tf, layer, variables, 3)
    rows = []
    for pass_name in PASSES:
        single = {who: chained(tf, fn) for who, fn in fns[pass_name].items()}
        outs = {who: g([sets[0]])[0] for who, g in single.items()}    # trace, plan, first touch; check
        err = _error(outs["kconv"], outs["tf"]) if check and pass_name == "forward" else None
        if check and pass_name == "train step":   # without the ReLU's kink (see the module's doc)
            linear = pass_functions(tf, make_pair(layer, activation=None))[pass_name]
            err = _error(*(tf.function(linear[who], autograph=False)(*sets[0]) for who in ("kconv", "tf")))
        del outs
        for g in single.values():
            g([sets[1]])
        kc_t, tf_t, inner, n = time_pass(
            tf, fns[pass_name], single, sets, 1,
            lambda count, seed: make_inputs(tf, layer, variables, count, seed=seed),
            rounds, pause, block_s, graph_s, max_inner)
        f = flops(layer, pass_name)
        rows.append(dict(layer=layer.name, group=layer.group, kind=layer.kind, keras_class=class_name(layer),
                         batch=layer.batch, pass_=pass_name, kconv_ms=kc_t * 1e3, tf_ms=tf_t * 1e3,
                         ratio=tf_t / kc_t, kconv_gflops=f / kc_t / 1e9, tf_gflops=f / tf_t / 1e9, max_err=err,
                         inner=inner, calls=n, rounds=rounds))
    return rows
