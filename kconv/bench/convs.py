"""One layer, kconv against tf.nn: the callables, the algorithm kconv picks, the flops, the errors."""
import math

import numpy as np

from .timing import interleaved, rotating


def algorithm_of(layer, algorithm="auto"):
    """What kconv runs for this layer's forward pass: "direct", or "winograd F(4x4,3x3)" etc. Asks kconv.ops
    the plan its forward pass runs (ops._describe + ops._plan)."""
    from kconv import ops
    name, batch, spatial, c, k, kernel, stride, padding = layer
    nd = len(spatial)
    conv = ops._describe(nd, (batch,) + tuple(spatial) + (c,), (kernel,) * nd + (c, k), stride, padding,
                         "NHWC" if nd == 2 else "NWC", 1)
    tile = ops._plan(conv, np.dtype(np.float32), algorithm, None).tiles[0]
    if not tile:
        return "direct"
    return f"winograd F({tile}x{tile},3x3)" if nd == 2 else f"winograd F({tile},3)"


def out_spatial(layer):
    _, _, spatial, _, _, kernel, stride, padding = layer
    if padding == "SAME":
        return tuple(-(-n // stride) for n in spatial)
    return tuple((n - kernel) // stride + 1 for n in spatial)


def flops(layer):
    """A direct convolution's flops for the forward pass (2 per multiply-add). Winograd does fewer, so its
    GFLOP/s on this count can pass the roof."""
    _, batch, spatial, c, k, kernel, _, _ = layer
    return 2.0 * batch * math.prod(out_spatial(layer)) * c * k * kernel ** len(spatial)


def contenders(tf, layer, threads=None, algorithm="auto", seed=0):
    """(inputs, sample, {pass: (kconv_fn, tf_fn)}) for passes "forward" and "train" (forward + both
    gradients, a training step's convolution work). inputs() hands out one of 3 rotated input sets."""
    from kconv import ops
    name, batch, spatial, c, k, kernel, stride, padding = layer
    nd = len(spatial)
    rng = np.random.default_rng(seed)
    x_shape, w_shape = (batch,) + tuple(spatial) + (c,), (kernel,) * nd + (c, k)
    y_shape = (batch,) + out_spatial(layer) + (k,)

    def make():
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = (rng.standard_normal(w_shape, dtype=np.float32) / np.float32(np.sqrt(kernel ** nd * c))).astype(np.float32)
        dy = rng.standard_normal(y_shape, dtype=np.float32)
        return dict(x=x, w=w, dy=dy, xt=tf.constant(x), wt=tf.constant(w), dyt=tf.constant(dy))
    inputs = rotating(make)
    kw = dict(threads=threads, algorithm=algorithm)
    if nd == 2:
        strides = [1, stride, stride, 1]
        kc_fwd = lambda a: ops.conv2d(a["x"], a["w"], stride, padding, **kw)
        tf_fwd = lambda a: tf.nn.conv2d(a["xt"], a["wt"], stride, padding).numpy()
        kc_bwd = lambda a: (ops.conv2d_backprop_input(x_shape, a["w"], a["dy"], stride, padding, **kw),
                            ops.conv2d_backprop_filter(a["x"], w_shape, a["dy"], stride, padding, **kw))
        tf_bwd = lambda a: (
            tf.compat.v1.nn.conv2d_backprop_input(x_shape, a["wt"], a["dyt"], strides, padding).numpy(),
            tf.compat.v1.nn.conv2d_backprop_filter(a["xt"], w_shape, a["dyt"], strides, padding).numpy())
    else:
        kc_fwd = lambda a: ops.conv1d(a["x"], a["w"], stride, padding, **kw)
        tf_fwd = lambda a: tf.nn.conv1d(a["xt"], a["wt"], stride, padding).numpy()
        kc_bwd = lambda a: (ops.conv1d_backprop_input(x_shape, a["w"], a["dy"], stride, padding, **kw),
                            ops.conv1d_backprop_filter(a["x"], w_shape, a["dy"], stride, padding, **kw))
        tf_bwd = lambda a: _tf_conv1d_grads(tf, a, stride, padding)
    passes = {"forward": (kc_fwd, tf_fwd),
              # a training step: weights change every step, so no transformed filters are reused
              "train": (lambda a: (ops.clear_cache(), (kc_fwd(a),) + kc_bwd(a))[1],
                        lambda a: (tf_fwd(a),) + tf_bwd(a))}
    return inputs, passes


def _tf_conv1d_grads(tf, a, stride, padding):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a["xt"])
        tape.watch(a["wt"])
        y = tf.nn.conv1d(a["xt"], a["wt"], stride, padding)
    dx, dw = tape.gradient(y, [a["xt"], a["wt"]], output_gradients=a["dyt"])
    return dx.numpy(), dw.numpy()


def max_rel_error(got, want):
    """max |kconv - TF| / max |TF|, over every output of the pass."""
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    return max(float(np.abs(g - w).max() / max(float(np.abs(w).max()), 1e-30)) for g, w in zip(got, want))


def time_layer(tf, layer, repeats, warmup, threads=None, algorithm="auto"):
    """Rows for the forward and train passes: medians of kconv and TF, interleaved, inputs rotated."""
    inputs, passes = contenders(tf, layer, threads, algorithm)
    f = flops(layer)
    rows = []
    for pass_name, (kc_fn, tf_fn) in passes.items():
        times = interleaved({"kconv": lambda: kc_fn(inputs()), "tf": lambda: tf_fn(inputs())},
                            repeats=repeats, warmup=warmup)
        kc_t, tf_t = float(np.median(times["kconv"])), float(np.median(times["tf"]))
        sample = inputs()
        pass_flops = f if pass_name == "forward" else 3 * f
        rows.append(dict(pass_=pass_name, kconv_ms=kc_t * 1e3, tf_ms=tf_t * 1e3, speedup=tf_t / kc_t,
                         gflops=pass_flops / kc_t / 1e9, max_err=max_rel_error(kc_fn(sample), tf_fn(sample))))
    return rows


def products_seconds(layer, tile, threads, repeats):
    """Median seconds of a Winograd forward's products alone: its alpha^2 GEMMs [tiles x C] x [C x K], run as
    one kconv matmul of the same flops on the same micro-kernel. The rest of the forward time is the input,
    filter and output transforms (and packing)."""
    from kconv import ops
    _, batch, spatial, c, k, _, _, _ = layer
    outs = out_spatial(layer)
    tiles = batch * math.prod(-(-n // tile) for n in outs)
    alpha2 = (tile + 2) ** len(outs)
    rng = np.random.default_rng(1)
    v = rng.standard_normal((alpha2 * tiles, c), dtype=np.float32)
    u = rng.standard_normal((c, k), dtype=np.float32)
    t = interleaved({"p": lambda: ops.matmul(v, u, threads=threads)}, repeats=repeats, warmup=1)["p"]
    return float(np.median(t))
