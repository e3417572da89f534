"""The forward pass of the MobileNet-v2-style model's conv layers (kconv/bench/models.py, mobilenet_v2; 96x96
input, batch 16), kconv's layer against keras.layers', each inside one tf.function that calls it `--loop`
times (no Python between calls), alternating `--repeats` times; median ms per call and TensorFlow's time
over kconv's. No bias and no activation: BatchNorm follows every conv in that model.

    python benchmarks/mobilenet_layers.py [--repeats 9] [--loop 10] [--train [--only dx|dw]]

--train times what a training step runs for each layer instead: the forward and both gradients (the input's
and the kernel's, of a loss whose upstream gradient differs at every output). --only dx / dw asks for one
gradient: which pass loses (the difference to the forward's time is that pass, run alone on all threads).
"""
import argparse
import os
import time

import numpy as np

LAYERS = [   # (name, kind, map size, C, K, kernel, stride): the stem, then blocks of stages 1-4 and the last 1x1
    ("stem 3x3/2 96x96 3->16", "conv", 96, 3, 16, 3, 2),
    ("1x1 48x48 16->16", "conv", 48, 16, 16, 1, 1),
    ("dw 3x3 48x48x16", "dw", 48, 16, 16, 3, 1),
    ("1x1 48x48 16->96", "conv", 48, 16, 96, 1, 1),
    ("dw 3x3/2 48x48x96", "dw", 48, 96, 96, 3, 2),
    ("1x1 24x24 96->24", "conv", 24, 96, 24, 1, 1),
    ("1x1 24x24 24->144", "conv", 24, 24, 144, 1, 1),
    ("dw 3x3 24x24x144", "dw", 24, 144, 144, 3, 1),
    ("1x1 24x24 144->24", "conv", 24, 144, 24, 1, 1),
    ("dw 3x3/2 24x24x144", "dw", 24, 144, 144, 3, 2),
    ("1x1 12x12 144->32", "conv", 12, 144, 32, 1, 1),
    ("1x1 12x12 32->192", "conv", 12, 32, 192, 1, 1),
    ("dw 3x3 12x12x192", "dw", 12, 192, 192, 3, 1),
    ("1x1 12x12 192->32", "conv", 12, 192, 32, 1, 1),
    ("1x1 6x6 64->384", "conv", 6, 64, 384, 1, 1),
    ("dw 3x3 6x6x384", "dw", 6, 384, 384, 3, 1),
    ("1x1 6x6 384->64", "conv", 6, 384, 64, 1, 1),
    ("1x1 3x3 160->320", "conv", 3, 160, 320, 1, 1),
]


def looped(tf, layer, loop, train, only=None):
    """A tf.function running the layer `loop` times: forward, or (train) forward and the gradients; `only`
    ("dx" or "dw") asks for that one gradient alone."""
    @tf.function
    def run(x):
        total = 0.0
        for _ in tf.range(loop):
            if not train:
                total += tf.reduce_sum(layer(x)[:1, :1, :1, :1])
                continue
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            if only == "dx":
                total += tape.gradient(loss, x)[0, 0, 0, 0]
            elif only == "dw":
                total += tf.reshape(tape.gradient(loss, layer.trainable_weights[0]), [-1])[0]
            else:
                dx, dw = tape.gradient(loss, [x, layer.trainable_weights[0]])
                total += dx[0, 0, 0, 0] + tf.reshape(dw, [-1])[0]
        return total
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--loop", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", action="store_true", help="forward + input and kernel gradients")
    parser.add_argument("--only", choices=("dx", "dw"), help="with --train: forward + this one gradient")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import kconv
    from kconv._config import cpu_name
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, threads {kconv.get_num_threads()}; "
          f"{('forward + ' + {'dx': 'input gradient', 'dw': 'filter gradient'}.get(args.only, 'both gradients')) if args.train else 'forward'}, batch {args.batch}")
    print("| layer | kconv ms | keras ms | keras / kconv |\n|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    totals = {"kconv": 0.0, "keras": 0.0}
    for name, kind, size, c, k, ks, stride in LAYERS:
        x = tf.constant(rng.standard_normal((args.batch, size, size, c), dtype=np.float32))
        if kind == "conv":
            theirs = keras.layers.Conv2D(k, ks, strides=stride, padding="same", use_bias=False)
            ours = kconv.Conv2D(k, ks, strides=stride, padding="same", use_bias=False)
        else:
            theirs = keras.layers.DepthwiseConv2D(ks, strides=stride, padding="same", use_bias=False)
            ours = kconv.DepthwiseConv2D(ks, strides=stride, padding="same", use_bias=False)
        theirs.build(x.shape)
        ours.build(x.shape)
        ours.set_weights(theirs.get_weights())
        runs = {who: looped(tf, layer, args.loop, args.train, args.only) for who, layer in [("kconv", ours), ("keras", theirs)]}
        for f in runs.values():
            f(x).numpy()
        times = {who: [] for who in runs}
        for _ in range(args.repeats):
            for who, f in runs.items():
                t0 = time.perf_counter()
                f(x).numpy()
                times[who].append((time.perf_counter() - t0) / args.loop)
        ms = {who: 1e3 * float(np.median(t)) for who, t in times.items()}
        for who in totals:
            totals[who] += ms[who]
        print(f"| {name} | {ms['kconv']:.3f} | {ms['keras']:.3f} | {ms['keras'] / ms['kconv']:.2f}x |", flush=True)
    print(f"| sum | {totals['kconv']:.2f} | {totals['keras']:.2f} | {totals['keras'] / totals['kconv']:.2f}x |")


if __name__ == "__main__":
    main()
