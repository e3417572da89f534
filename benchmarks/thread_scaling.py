"""Thread scaling of kconv's kernels (numpy API, no TensorFlow needed): forward, input gradient and
filter gradient of a few layers at 1, 2, 4, ... threads, min of repeats, GFLOP/s and speedup over 1 thread.

    python benchmarks/thread_scaling.py [--threads 1,2,4,8,16] [--layers 16->16,RGB]   (--threads 1: one core)
"""
import argparse
import time

import numpy as np

import kconv
from kconv import ops
from kconv._config import cpu_name

LAYERS = [  # name, N, H (None: a 1-D layer), W, C, K, k, stride, padding
    ("3x3 56x56 64", 8, 56, 56, 64, 64, 3, 1, "SAME"),
    ("3x3 28x28 128", 8, 28, 28, 128, 128, 3, 1, "SAME"),
    ("3x3 32x32 32 b32", 32, 32, 32, 32, 32, 3, 1, "SAME"),
    ("3x3 s2 28x28 128", 8, 28, 28, 128, 128, 3, 2, "SAME"),
    ("1x1 28x28 256->64", 8, 28, 28, 256, 64, 1, 1, "SAME"),
    ("5x5 first C=1", 64, 28, 28, 1, 32, 5, 1, "VALID"),
    # small-channel and first layers (README, How it works: the narrow tile, pointer tables, few channels)
    ("3x3 32x32 16->16 b32", 32, 32, 32, 16, 16, 3, 1, "SAME"),
    ("3x3 RGB 32x32 3->16 b32", 32, 32, 32, 3, 16, 3, 1, "SAME"),
    ("3x3 32x32 8->32 b32", 32, 32, 32, 8, 32, 3, 1, "SAME"),
    ("7x7/2 RGB 128x128 3->32 b16", 16, 128, 128, 3, 32, 7, 2, "SAME"),
    # text: the Kim CNN's branches (Winograd F(4,3) and F(4,5) from 64 channels; k = 6 direct)
    ("kim k3 400x128->100 b32", 32, None, 400, 128, 100, 3, 1, "VALID"),
    ("kim k5 400x128->100 b32", 32, None, 400, 128, 100, 5, 1, "VALID"),
    ("kim k6 400x128->100 b32", 32, None, 400, 128, 100, 6, 1, "VALID"),
]


def tmin(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layers", default="", help="comma-separated parts of layer names (default: all)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    wanted = [part for part in args.layers.split(",") if part]
    layers = [row for row in LAYERS if not wanted or any(part in row[0] for part in wanted)]
    print(f"machine: {cpu_name()}, isa {kconv.config()['isa']}, roof 1 thread {kconv.measure_roof(1):.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    speedups = len(counts) > 1
    print("| layer | pass | " + " | ".join(f"{n} thr" for n in counts) + (" | speedup 1->2 | 1->max |" if speedups
                                                                          else " |"))
    print("|---|---|" + "---|" * (len(counts) + (2 if speedups else 0)))
    for name, n, h, w_, c, k, ks, s, pad in layers:
        spatial, taps = ((w_,), (ks,)) if h is None else ((h, w_), (ks, ks))
        conv, backprop_input, backprop_filter = ((ops.conv1d, ops.conv1d_backprop_input, ops.conv1d_backprop_filter)
                                                 if h is None else (ops.conv2d, ops.conv2d_backprop_input,
                                                                    ops.conv2d_backprop_filter))
        x = rng.standard_normal((n, *spatial, c)).astype(np.float32)
        w = rng.standard_normal((*taps, c, k)).astype(np.float32)
        y = conv(x, w, s, pad)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        flops = 2.0 * y.size * np.prod(taps) * c
        passes = {"forward": lambda t: conv(x, w, s, pad, threads=t),
                  "input grad": lambda t: backprop_input(x.shape, w, dy, s, pad, threads=t),
                  "filter grad": lambda t: backprop_filter(x, w.shape, dy, s, pad, threads=t)}
        for pname, fn in passes.items():
            times = [tmin(lambda: fn(t), args.repeats) for t in counts]
            cells = " | ".join(f"{flops / t / 1e9:.0f} GF/s" for t in times)
            ratios = f" {times[0] / times[1]:.2f}x | {times[0] / times[-1]:.2f}x |" if speedups else ""
            print(f"| {name} | {pname} | {cells} |{ratios}", flush=True)


if __name__ == "__main__":
    main()
