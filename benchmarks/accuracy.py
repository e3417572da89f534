"""Accuracy of every algorithm against a float64 reference: the README's table.

    python benchmarks/accuracy.py

For a 3x3 SAME layer (batch 2, 12x12, K = 32) and a k=3 text layer (batch 2, length 64, K = 32) with
random normal inputs, for C from 16 to 512: max and RMS error of the float32 result relative to max|y|,
y computed in float64 by direct convolution (itself checked against a naive float64 reference by the tests).
kconv's `auto` only picks a Winograd tile whose max error at C = 512 is <= 2e-5.
"""
import sys

import numpy as np

CHANNELS = (16, 32, 64, 128, 256, 512)
ALGORITHMS = ("direct", "winograd2", "winograd4", "winograd6")


def errors(ops, nd, c, algorithm, seed=0):
    rng = np.random.default_rng(seed)
    if nd == 2:
        x, w, conv = rng.standard_normal((2, 12, 12, c)), rng.standard_normal((3, 3, c, 32)), ops.conv2d
    else:
        x, w, conv = rng.standard_normal((2, 64, c)), rng.standard_normal((3, c, 32)), ops.conv1d
    want = conv(x, w, 1, "SAME", algorithm="direct")
    got = conv(x.astype(np.float32), w.astype(np.float32), 1, "SAME", algorithm=algorithm).astype(np.float64)
    scale = np.abs(want).max()
    return np.abs(got - want).max() / scale, np.sqrt(np.mean((got - want) ** 2)) / scale


def main():
    from kconv import ops
    for nd, title in ((2, "2-D 3x3"), (1, "1-D k=3")):
        print(f"\n{title}: float32 error relative to max|y| (max / RMS)\n")
        print("| C | " + " | ".join(ALGORITHMS) + " |")
        print("|---|" + "---|" * len(ALGORITHMS))
        for c in CHANNELS:
            cells = ["%.1e / %.1e" % errors(ops, nd, c, a) for a in ALGORITHMS]
            print(f"| {c} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
