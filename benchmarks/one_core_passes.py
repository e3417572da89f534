"""Each pass of a layer on one core, inside a compiled graph, against TensorFlow's own op on one core.

    python benchmarks/one_core_passes.py [--repeats 7] [--loop 20]

In a training step TensorFlow runs a layer's input and filter gradients at the same time, one on each core
(kconv's helpers stand down while both calls hold the team), so a model's backward pass runs at the
one-core speed of its kernels: this is the figure that decides it, more than a pass alone on all cores.
Both contenders get one thread (TensorFlow: intra- and inter-op pools of 1; kconv.set_num_threads(1)); each
pass runs `--loop` times inside one tf.function (no Python between calls), the two alternate `--repeats`
times, and the table shows medians with GFLOP/s and kconv's time over TensorFlow's.
"""
import argparse
import os
import sys
import time

import numpy as np

LAYERS = [   # (name, input NHWC, filter HWCK, padding): ResNet-20's stage 1 and 2, the image CNN's 2nd / 4th
    ("3x3 32x32 16->16 b32", (32, 32, 32, 16), (3, 3, 16, 16), "SAME"),
    ("3x3 16x16 32->32 b32", (32, 16, 16, 32), (3, 3, 32, 32), "SAME"),
    ("3x3 28x28 32->32 b64", (64, 28, 28, 32), (3, 3, 32, 32), "SAME"),
    ("3x3 14x14 64->64 b64", (64, 14, 14, 64), (3, 3, 64, 64), "SAME"),
    ("Kim k4 400x128->100 b32", (32, 1, 400, 128), (1, 4, 128, 100), "VALID"),
]


def pass_loop(tf, conv, which, loop):
    """A tf.function running one pass `loop` times (a sum of one element keeps each call live)."""
    @tf.function
    def run(x, w, dy):
        total = 0.0
        for _ in tf.range(loop):
            with tf.GradientTape() as tape:
                tape.watch(x if which == "input grad" else w)
                y = conv(x, w)
            out = y if which == "forward" else tape.gradient(y, x if which == "input grad" else w,
                                                               output_gradients=dy)
            total += tf.reduce_sum(out[:1, :1, :1, :1])
        return total
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loop", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import kconv
    from kconv import tf_ops
    from kconv._config import cpu_name
    kconv.set_num_threads(1)
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, one thread each, "
          f"FMA roof {kconv.measure_roof(1):.0f} GFLOP/s")
    print("| layer | pass | kconv ms | TF ms | kconv / TF time | kconv GFLOP/s | TF GFLOP/s |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape, padding in LAYERS:
        x = tf.constant(rng.standard_normal(x_shape, dtype=np.float32))
        w = tf.constant(rng.standard_normal(w_shape, dtype=np.float32))
        convs = {"kconv": lambda x, w: tf_ops.conv2d(x, w, 1, padding),
                 "tf": lambda x, w: tf.nn.conv2d(x, w, 1, padding)}
        y_shape = convs["tf"](x, w).shape
        dy = tf.constant(rng.standard_normal(y_shape, dtype=np.float32))
        flops = 2.0 * np.prod(y_shape) * np.prod(w_shape[:3])
        for which in ("forward", "input grad", "filter grad"):
            runs = {k: pass_loop(tf, conv, which, args.loop) for k, conv in convs.items()}
            for f in runs.values():
                f(x, w, dy).numpy()
            times = {k: [] for k in runs}
            for _ in range(args.repeats):
                for k, f in runs.items():
                    t0 = time.perf_counter()
                    f(x, w, dy).numpy()
                    times[k].append((time.perf_counter() - t0) / args.loop)
            ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            print(f"| {name} | {which} | {ms['kconv']:.2f} | {ms['tf']:.2f} | {ms['kconv'] / ms['tf']:.2f} "
                  f"| {flops / ms['kconv'] * 1e-6:.0f} | {flops / ms['tf'] * 1e-6:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
