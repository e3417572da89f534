"""Late layers at batch 1 as a served model runs them: the same weights every call, inside tf.function.

    python benchmarks/serving_late_layers.py [--repeats 15] [--loop 20] [--threads 1,2] [--algorithms auto,direct]

A tf.function runs `--loop` chained forward passes of one layer (each waits for the last), with the same
filter every pass, as `predict` on one image does; kconv's op against tf.nn.conv2d, interleaved, median ms per
pass over `--repeats` calls. The per-pass table of `python -m kconv bench` gives every pass fresh weights
(memory-bound for these layers); this is the other case: weights that stay in cache, where kconv's auto keeps
the Winograd transform of weights that repeat (F(2x2) for the 3x3 layer). `--algorithms` times each of kconv's
algorithms given (auto, direct, winograd2, ...) beside TensorFlow's.
README, How it works ("Few rows, many columns"), quotes it.
"""
import argparse
import os
import sys

import numpy as np

from op_after_conv import chained   # benchmarks/: the chained conv loop (op None: the conv alone)

LAYERS = (  # input NHWC, filter HWCK: ResNet-50's last stage at batch 1
    ((1, 7, 7, 2048), (1, 1, 2048, 512)),
    ((1, 7, 7, 512), (1, 1, 512, 2048)),
    ((1, 7, 7, 512), (3, 3, 512, 512)),
    ((1, 14, 14, 1024), (1, 1, 1024, 256)),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loop", type=int, default=20)
    parser.add_argument("--threads", default="1,2", help="kconv thread counts, comma-separated")
    parser.add_argument("--algorithms", default="auto", help="kconv algorithms, comma-separated")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import kconv
    from kconv import tf_ops
    from kconv._config import cpu_name
    from kconv.bench.timing import interleaved
    rng = np.random.default_rng(0)
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, TensorFlow intra-op "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; forward, same weights each pass")
    print("| layer | kconv threads | kconv algorithm | kconv ms | TensorFlow ms | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for xs, ws in LAYERS:
        x = tf.constant(rng.standard_normal(xs, dtype=np.float32))
        w = tf.constant(rng.standard_normal(ws, dtype=np.float32) * np.float32(1 / np.sqrt(ws[0] * ws[1] * ws[2])))
        for threads in (int(t) for t in args.threads.split(",")):
            algorithms = args.algorithms.split(",")
            runs = {a: chained(tf, lambda x, w, n=threads, a=a: tf_ops.conv2d(x, w, 1, "SAME", threads=n,
                                                                              algorithm=a), None, args.loop)
                    for a in algorithms}
            runs["tf"] = chained(tf, lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), None, args.loop)
            times = interleaved({k: (lambda f=f: f(x, w).numpy()) for k, f in runs.items()}, repeats=args.repeats)
            ms = {k: float(np.median(times[k])) / args.loop * 1e3 for k in runs}
            name = f"{ws[0]}x{ws[1]} {xs[1]}x{xs[2]} {ws[2]}->{ws[3]} b{xs[0]}"
            for a in algorithms:
                print(f"| {name} | {threads} | {a} | {ms[a]:.3f} | {ms['tf']:.3f} | {ms['tf'] / ms[a]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
