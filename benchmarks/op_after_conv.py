"""What a TensorFlow op costs right after kconv's convolution, against right after TensorFlow's own.

    python benchmarks/op_after_conv.py [--op maxpool|batchnorm] [--repeats 21] [--loop 40]

A tf.function runs `--loop` iterations of conv -> op (chained, so nothing overlaps), and another the conv
alone; the op's share is the difference of the two, per iteration, median of `--repeats` alternating runs.
TensorFlow's intra-op threads run oneDNN's convolution and stay awake for the op that follows; through
kconv's convolution (kconv's own OpenMP threads) they sleep, and the next op pays for waking them. README,
Known limits, quotes it, with what was tried: kconv's loops run on TensorFlow's pool shrank the op's share
but slowed the conv more (not kept).
"""
import argparse
import os
import sys

import numpy as np

LAYER = ((64, 28, 28, 32), (3, 3, 32, 32))     # the image CNN's second layer: input NHWC, filter HWCK


def after_ops(tf):
    def batchnorm(y):
        mean = tf.reduce_mean(y, [0, 1, 2])
        var = tf.reduce_mean(tf.math.squared_difference(y, mean), [0, 1, 2])
        return tf.nn.relu((y - mean) * tf.math.rsqrt(var + 1e-3))
    return {"maxpool": lambda y: tf.nn.max_pool2d(y, 2, 2, "VALID"), "batchnorm": batchnorm}


def chained(tf, conv, op, loop):
    """`loop` iterations of conv (and op, when given), each depending on the last."""
    @tf.function
    def run(x, w):
        total = tf.constant(0.0)
        for _ in tf.range(loop):
            y = conv(x, w)
            if op is not None:
                y = op(y)
            total += tf.reduce_sum(y[:1, :1, :1, :1])
            x = x + 0.0 * total
        return total
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("maxpool", "batchnorm"), default="maxpool")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--loop", type=int, default=40)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import kconv
    from kconv import tf_ops
    from kconv._config import cpu_name
    from kconv.bench.timing import interleaved
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(LAYER[0], dtype=np.float32))
    w = tf.constant(rng.standard_normal(LAYER[1], dtype=np.float32))
    convs = {"kconv": lambda x, w: tf_ops.conv2d(x, w, 1, "SAME"),
             "tensorflow": lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")}
    op = after_ops(tf)[args.op]
    runs = {(name, with_op): chained(tf, conv, op if with_op else None, args.loop)
            for name, conv in convs.items() for with_op in (False, True)}
    times = interleaved({k: (lambda f=f: f(x, w).numpy()) for k, f in runs.items()}, repeats=args.repeats, warmup=1)
    ms = {k: float(np.median(v)) / args.loop * 1e3 for k, v in times.items()}
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, kconv threads {kconv.get_num_threads()}, "
          f"TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
          f"3x3 conv {LAYER[0]} -> {LAYER[1][3]} filters, then {args.op}")
    print("| conv | conv ms | conv + op ms | the op's share ms |\n|---|---:|---:|---:|")
    for name in convs:
        alone, both = ms[name, False], ms[name, True]
        print(f"| {name} | {alone:.3f} | {both:.3f} | {both - alone:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
