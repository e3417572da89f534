"""Accuracy of every algorithm against a float64 reference: the README's table.

    python benchmarks/accuracy.py

For a 3x3 SAME layer (batch 8, 12x12, K = 32) and a k=3 text layer (batch 4, length 64, K = 32) with
random normal inputs, for C from 16 to 512: max and RMS error of the float32 result relative to max|y|,
y computed in float64 by direct convolution (itself checked against a naive float64 reference by the tests).
kconv's `auto` only picks a Winograd tile whose max error at C = 512 is <= 2e-5.

The batches give every tile size at least 32 tiles: with fewer, tiles x (C + K) < C x K and a plan runs fresh
weights direct (pyx/plan.pxi, the "staged" rule), so a Winograd column would measure direct (batch 2 did,
from C = 64 in 2-D).

The filter gradient sums over every tile of the batch, so its error is tabled separately, on the benchmark's
layers (max error relative to max|dW|, float64 direct as the reference).
"""
import sys

import numpy as np

CHANNELS = (16, 32, 64, 128, 256, 512)
ALGORITHMS = ("direct", "winograd2", "winograd4", "winograd6")


def errors(ops, nd, c, algorithm, seed=0):
    rng = np.random.default_rng(seed)
    if nd == 2:
        x, w, conv = rng.standard_normal((8, 12, 12, c)), rng.standard_normal((3, 3, c, 32)), ops.conv2d
    else:
        x, w, conv = rng.standard_normal((4, 64, c)), rng.standard_normal((3, c, 32)), ops.conv1d
    want = conv(x, w, 1, "SAME", algorithm="direct")
    got = conv(x.astype(np.float32), w.astype(np.float32), 1, "SAME", algorithm=algorithm).astype(np.float64)
    scale = np.abs(want).max()
    return np.abs(got - want).max() / scale, np.sqrt(np.mean((got - want) ** 2)) / scale


FILTER_GRADIENT_LAYERS = [(32, (16, 16), 16, 16), (8, (56, 56), 64, 64), (8, (28, 28), 128, 128),
                          (8, (14, 14), 256, 256), (32, (32, 32), 32, 32), (64, (400,), 128, 100)]


def filter_gradient_errors(ops, layer, algorithms, seed=0):
    n, spatial, c, k = layer
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((n,) + spatial + (c,)), rng.standard_normal((n,) + spatial + (k,))
    shape = (3,) * len(spatial) + (c, k)
    grad = ops.conv2d_backprop_filter if len(spatial) == 2 else ops.conv1d_backprop_filter
    want = grad(x, shape, dy, 1, "SAME", algorithm="direct")
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    return [np.abs(grad(x32, shape, dy32, 1, "SAME", algorithm=a) - want).max() / np.abs(want).max()
            for a in algorithms]


def main():
    from kconv import ops
    for nd, title in ((2, "2-D 3x3"), (1, "1-D k=3")):
        print(f"\n{title}: float32 error relative to max|y| (max / RMS)\n")
        print("| C | " + " | ".join(ALGORITHMS) + " |")
        print("|---|" + "---|" * len(ALGORITHMS))
        for c in CHANNELS:
            cells = ["%.1e / %.1e" % errors(ops, nd, c, a) for a in ALGORITHMS]
            print(f"| {c} | " + " | ".join(cells) + " |")
    algorithms = ("direct", "winograd2", "winograd4")
    print("\nfilter gradient: float32 max error relative to max|dW|\n")
    print("| layer (batch, size, C -> K) | " + " | ".join(algorithms) + " |")
    print("|---|" + "---|" * len(algorithms))
    for layer in FILTER_GRADIENT_LAYERS:
        errs = filter_gradient_errors(ops, layer, algorithms)
        name = f"{layer[0]}, {'x'.join(map(str, layer[1]))}, {layer[2]} -> {layer[3]}"
        print(f"| {name} | " + " | ".join("%.1e" % e for e in errs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
