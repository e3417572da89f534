"""kconv's convolutions against TensorFlow's (oneDNN), side by side in one process.

    python benchmarks/bench_layers.py                        # Winograd layers, kconv's auto choice
    python benchmarks/bench_layers.py --set direct --algorithm direct   # direct convolution on its layers
    python benchmarks/bench_layers.py --quick                # two small layers, a few seconds

For each layer and pass: median milliseconds of kconv and of tf.nn (interleaved, inputs rotated),
speedup = TF time / kconv time, kconv GFLOP/s (direct-equivalent: the flops of a direct convolution, so
Winograd may exceed the roof) and its share of this machine's FMA roof (kconv.measure_roof, at the vector
width kconv runs), and kconv's max error against TF relative to max|TF|. "backward" is both gradients
(input and filter); "train" is forward + both gradients, a training step's convolution work. "forward" is
inference with fixed weights (kconv keeps their Winograd transform); backward and train forget it before
every call, as weights change every training step.
With a Winograd algorithm, `--phases` also times the products alone (alpha^2 GEMMs of the same sizes on the
micro-kernel) to split the time between transforms and products.
"""
import argparse
import json
import os
import sys

import numpy as np

from kconv.bench.timing import interleaved, rotating  # noqa: E402

# (name, batch, spatial, C, K, kernel, stride); spatial is (H, W) for 2-D, (W,) for 1-D.
SETS = {
    "direct": [   # the core issue's layers
        ("3x3 56x56 64->64", 8, (56, 56), 64, 64, 3, 1),
        ("3x3 28x28 128->128", 8, (28, 28), 128, 128, 3, 1),
        ("3x3 14x14 256->256", 8, (14, 14), 256, 256, 3, 1),
        ("3x3/2 56x56 64->128", 8, (56, 56), 64, 128, 3, 2),
        ("1x1 28x28 256->64", 8, (28, 28), 256, 64, 1, 1),
        ("5x5 28x28 32->64", 8, (28, 28), 32, 64, 5, 1),
        ("text k3 400 128->100", 64, (400,), 128, 100, 3, 1),
        ("text k5 400 128->100", 64, (400,), 128, 100, 5, 1),
    ],
    "winograd": [   # the Winograd issue's layers: 3x3 and k=3, stride 1
        ("3x3 56x56 64->64", 8, (56, 56), 64, 64, 3, 1),
        ("3x3 28x28 128->128", 8, (28, 28), 128, 128, 3, 1),
        ("3x3 14x14 256->256", 8, (14, 14), 256, 256, 3, 1),
        ("3x3 7x7 512->512 b16", 16, (7, 7), 512, 512, 3, 1),
        ("3x3 32x32 32->32 b32", 32, (32, 32), 32, 32, 3, 1),
        ("text k3 400 128->100", 64, (400,), 128, 100, 3, 1),
    ],
    "quick": [
        ("3x3 14x14 32->32", 4, (14, 14), 32, 32, 3, 1),
        ("text k3 100 32->16", 8, (100,), 32, 16, 3, 1),
    ],
}


def layer_flops(batch, out_spatial, c, k, kernel, nd):
    return 2.0 * batch * np.prod(out_spatial) * c * k * kernel ** nd


def run_layer(tf, ops, layer, repeats, threads, algorithm, phases):
    name, batch, spatial, c, k, kernel, stride = layer
    nd = len(spatial)
    rng = np.random.default_rng(0)
    x_shape, w_shape = (batch,) + spatial + (c,), (kernel,) * nd + (c, k)

    def make():
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        y = ops.conv2d(x, w, stride, "SAME") if nd == 2 else ops.conv1d(x, w, stride, "SAME")
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        return dict(x=x, w=w, dy=dy, xt=tf.constant(x), wt=tf.constant(w), dyt=tf.constant(dy))
    inputs = rotating(make)
    strides = [1] + [stride] * nd + [1]

    if nd == 2:
        kw = dict(threads=threads, algorithm=algorithm)
        kc_fwd = lambda a: ops.conv2d(a["x"], a["w"], stride, "SAME", **kw)
        tf_fwd = lambda a: tf.nn.conv2d(a["xt"], a["wt"], stride, "SAME").numpy()
        kc_bwd = lambda a: (ops.conv2d_backprop_input(x_shape, a["w"], a["dy"], stride, "SAME", **kw),
                            ops.conv2d_backprop_filter(a["x"], w_shape, a["dy"], stride, "SAME", **kw))
        tf_bwd = lambda a: (tf.compat.v1.nn.conv2d_backprop_input(x_shape, a["wt"], a["dyt"], strides, "SAME").numpy(),
                            tf.compat.v1.nn.conv2d_backprop_filter(a["xt"], w_shape, a["dyt"], strides, "SAME").numpy())
    else:
        kw = dict(threads=threads, algorithm=algorithm)
        kc_fwd = lambda a: ops.conv1d(a["x"], a["w"], stride, "SAME", **kw)
        tf_fwd = lambda a: tf.nn.conv1d(a["xt"], a["wt"], stride, "SAME").numpy()
        kc_bwd = lambda a: (ops.conv1d_backprop_input(x_shape, a["w"], a["dy"], stride, "SAME", **kw),
                            ops.conv1d_backprop_filter(a["x"], w_shape, a["dy"], stride, "SAME", **kw))
        tf_bwd = lambda a: _tf_conv1d_grads(tf, a, stride)

    sample = inputs()
    out_spatial = ops.conv2d(sample["x"][:1], sample["w"], stride, "SAME").shape[1:-1] if nd == 2 else \
        ops.conv1d(sample["x"][:1], sample["w"], stride, "SAME").shape[1:-1]
    flops = layer_flops(batch, out_spatial, c, k, kernel, nd)
    # forward: inference, weights fixed (kconv keeps transformed filters); backward and train: a training
    # step, weights new every step, so nothing may be reused from a previous call
    kc_fwd_infer, kc_bwd_step = kc_fwd, kc_bwd
    kc_bwd = lambda a: (ops.clear_cache(), kc_bwd_step(a))[1]
    kc_train = lambda a: (ops.clear_cache(), (kc_fwd_infer(a),) + kc_bwd_step(a))[1]
    tf_train = lambda a: (tf_fwd(a),) + tf_bwd(a)
    rows = []
    for pass_name, kc_fn, tf_fn, pass_flops in (("forward", kc_fwd, tf_fwd, flops),
                                                 ("backward", kc_bwd, tf_bwd, 2 * flops),
                                                 ("train", kc_train, tf_train, 3 * flops)):
        times = interleaved({"kconv": lambda: kc_fn(inputs()), "tf": lambda: tf_fn(inputs())}, repeats=repeats)
        kc_t, tf_t = np.median(times["kconv"]), np.median(times["tf"])
        err = _max_rel_error(kc_fn(sample), tf_fn(sample))
        rows.append(dict(layer=name, pass_=pass_name, kconv_ms=kc_t * 1e3, tf_ms=tf_t * 1e3,
                         speedup=tf_t / kc_t, gflops=pass_flops / kc_t / 1e9, max_rel_err=err))
    if phases and stride == 1 and kernel == 3:
        rows[0]["products_share"] = _products_time(ops, batch, out_spatial, c, k, algorithm, threads, repeats) \
            / (rows[0]["kconv_ms"] / 1e3)
    return rows


def _products_time(ops, batch, out_spatial, c, k, algorithm, threads, repeats):
    """Median seconds of the Winograd products alone: alpha^2 GEMMs [tiles x C] x [C x K] on the micro-kernel,
    run as one matmul of the same flops (the share of a forward call that is not transforms)."""
    m = int(algorithm[-1]) if algorithm[-1].isdigit() else 4
    tiles = batch * int(np.prod([-(-n // m) for n in out_spatial]))
    alpha2 = (m + 2) ** len(out_spatial)
    rng = np.random.default_rng(1)
    v = rng.standard_normal((alpha2 * tiles, c), dtype=np.float32)
    u = rng.standard_normal((c, k), dtype=np.float32)
    return float(np.median(interleaved({"p": lambda: ops.matmul(v, u, threads=threads)}, repeats=repeats)["p"]))


def _tf_conv1d_grads(tf, a, stride):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a["xt"])
        tape.watch(a["wt"])
        y = tf.nn.conv1d(a["xt"], a["wt"], stride, "SAME")
    dx, dw = tape.gradient(y, [a["xt"], a["wt"]], output_gradients=a["dyt"])
    return dx.numpy(), dw.numpy()


def _max_rel_error(got, want):
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    return max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)) for g, w in zip(got, want))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two small layers, a few seconds")
    parser.add_argument("--set", default="winograd", choices=sorted(SETS), help="which layers")
    parser.add_argument("--algorithm", default="auto", help="kconv algorithm: auto, direct, winograd4, ...")
    parser.add_argument("--phases", action="store_true", help="split Winograd time: products vs transforms")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per contender (median)")
    parser.add_argument("--threads", type=int, default=None, help="kconv threads (default: kconv's)")
    parser.add_argument("--layers", default=None, help="only layers whose name contains this text")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import kconv
    from kconv import ops

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    threads = args.threads or kconv.get_num_threads()
    roof = kconv.measure_roof(threads)
    cfg = kconv.config()
    print(f"kconv {cfg['version']} ({cfg['isa']}, {threads} threads, algorithm={args.algorithm}) vs TensorFlow "
          f"{tf.__version__}; fp32 FMA roof {roof:.1f} GFLOP/s on {threads} threads")
    layers = SETS["quick" if args.quick else args.set]
    if args.layers:
        layers = [layer for layer in layers if args.layers in layer[0]]
    header = f"{'layer':22s} {'pass':9s} {'kconv ms':>9s} {'TF ms':>9s} {'speedup':>8s} {'GFLOP/s':>8s} {'% roof':>7s} {'max err':>9s}"
    print(header)
    print("-" * len(header))
    all_rows = []
    for layer in layers:
        for row in run_layer(tf, ops, layer, args.repeats, threads, args.algorithm, args.phases):
            row["roof_pct"] = 100 * row["gflops"] / roof
            all_rows.append(row)
            print(f"{row['layer']:22s} {row['pass_']:9s} {row['kconv_ms']:9.2f} {row['tf_ms']:9.2f} "
                  f"{row['speedup']:7.2f}x {row['gflops']:8.1f} {row['roof_pct']:6.0f}% {row['max_rel_err']:9.1e}"
                  + (f"  products {100 * row['products_share']:.0f}% of the time" if "products_share" in row else ""),
                  flush=True)
    for pass_name in ("forward", "backward", "train"):
        ratios = [r["speedup"] for r in all_rows if r["pass_"] == pass_name]
        print(f"{pass_name}: geometric-mean speedup {np.exp(np.mean(np.log(ratios))):.2f}x, "
              f"slowest {min(ratios):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(roof_gflops=roof, threads=threads, config={k: str(v) for k, v in cfg.items()},
                           rows=all_rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
