"""The cost of a kconv call around its arithmetic, where users run it: inside compiled graphs.

    python benchmarks/bench_calls.py [--chain 50] [--blocks 7]

1. Per-op overhead in a graph: a tf.function that chains `--chain` convolutions of a tiny tensor (1x4x4x1 by
   a 1x1x1x1 filter: the work is nil) with kconv.conv2d and with tf.nn.conv2d; per-op time = step / chain.
   Also the forward + backward of that chain under a GradientTape inside the tf.function. Timed in
   alternating blocks, each after a pause and a discarded warm call (kconv.bench.timing.blocks), medians.
2. Eager per-call figures (footnote only: users run graphs): kconv.ops.conv2d on numpy, kconv.conv2d and
   tf.nn.conv2d called eagerly, each alone in a loop.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=7)
    args = parser.parse_args(argv)
    import tensorflow as tf
    import kconv
    from kconv import ops
    from kconv._config import cpu_name
    from kconv.bench.timing import blocks

    info = kconv.load_op_library()
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, TensorFlow {tf.__version__}, "
          f"kconv op path: {info['path']}")
    x = tf.constant(np.ones((1, 4, 4, 1), np.float32))
    w = tf.constant(np.ones((1, 1, 1, 1), np.float32))
    n = args.chain

    def chain(conv):
        @tf.function
        def forward(x):
            for _ in range(n):
                x = conv(x, w, 1, "VALID")
            return x

        @tf.function
        def train(x):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = forward.python_function(x)
            return tape.gradient(y, [x, w])
        return forward, train

    contenders = {"kconv": chain(kconv.conv2d), "tf.nn": chain(tf.nn.conv2d)}
    for name, (forward, train) in contenders.items():
        forward(x)
        train(x)
    print(f"per op inside a tf.function, chain of {n} tiny convolutions, median of {args.blocks} blocks:")
    for i, what in enumerate(("forward", "forward + backward")):
        times = blocks({name: (lambda f=fns[i]: f(x)) for name, fns in contenders.items()}, rounds=args.blocks)
        k, t = (np.median(times[c]) / n * 1e6 for c in ("kconv", "tf.nn"))
        print(f"  {what:20s} kconv {k:6.1f} us   tf.nn {t:6.1f} us   difference {k - t:+6.1f} us per op")

    xn, wn = x.numpy(), w.numpy()
    eager = {"kconv.ops.conv2d (numpy)": lambda: ops.conv2d(xn, wn, 1, "VALID"),
             "kconv.conv2d eager": lambda: kconv.conv2d(x, w, 1, "VALID"),
             "tf.nn.conv2d eager": lambda: tf.nn.conv2d(x, w, 1, "VALID")}
    print("footnote, eager per call (each alone: 1000 calls after 300 warm ones, median of 3):")
    for name, fn in eager.items():
        for _ in range(300):
            fn()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(1000):
                fn()
            runs.append((time.perf_counter() - t0) / 1000)
        print(f"  {name:26s} {np.median(runs) * 1e6:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
