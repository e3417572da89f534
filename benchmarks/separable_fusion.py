"""How much would fusing SeparableConv's two convolutions save? (README, Known limits.)

kconv runs a separable layer as two ops, the depthwise convolution then the 1x1 pointwise one, so the depthwise
output goes to memory and is read back. A fused kernel would keep it in cache, band by band. This measures
the most that can save, on kconv's own plans (numpy API, kconv's thread setting), forward pass only:

    unfused   depthwise into a buffer that is cold by the time it is written (8 rotate), pointwise reading it
    bound     the same with one intermediate buffer, which stays in cache between the two passes

Usage: python benchmarks/separable_fusion.py [--repeats 40]
"""
import argparse
import time

import numpy as np

from kconv import ops

SIZES = [(8, 112, 32, 64), (8, 56, 64, 128), (8, 28, 128, 256), (8, 14, 256, 512)]   # MobileNet-v1 sizes


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(n, size, c, k, repeats, rng):
    x = rng.standard_normal((n, size, size, c)).astype(np.float32)
    w_depthwise = rng.standard_normal((3, 3, 1, c)).astype(np.float32)
    w_pointwise = rng.standard_normal((1, 1, c, k)).astype(np.float32)
    f32 = np.dtype(np.float32)
    depthwise = ops._plan(ops._describe(2, x.shape, w_depthwise.shape, 1, "SAME", "NHWC", 1), f32, "auto", None)
    pointwise = ops._plan(ops._describe(2, x.shape, w_pointwise.shape, 1, "VALID", "NHWC", 1), f32, "auto", None)
    no_bias = np.zeros(0, np.float32)
    middles = [np.empty_like(x) for _ in range(8)]
    outputs = [np.empty((n, size, size, k), np.float32) for _ in range(8)]
    step = [0]

    def run(middle_of):
        step[0] = (step[0] + 1) % 8
        middle = middles[middle_of(step[0])]
        depthwise.forward(x, w_depthwise, no_bias, middle)
        pointwise.forward(middle, w_pointwise, no_bias, outputs[step[0]])

    unfused = median_time(lambda: run(lambda i: i), repeats)
    bound = median_time(lambda: run(lambda i: 0), repeats)
    return unfused, bound


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| separable 3x3, batch 8 | unfused ms | intermediate in cache ms | saving |")
    print("|---|---|---|---|")
    for n, size, c, k in SIZES:
        unfused, bound = measure(n, size, c, k, args.repeats, rng)
        print(f"| {size}x{size} {c}->{k} | {unfused * 1e3:.2f} | {bound * 1e3:.2f} | {(1 - bound / unfused) * 100:.0f} % |")


if __name__ == "__main__":
    main()
