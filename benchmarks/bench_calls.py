"""Two costs around the kernels, as the README quotes them.

    python benchmarks/bench_calls.py

1. Per-call cost on a tiny tensor (1x4x4x1 by a 1x1x1x1 filter), each contender timed alone in its own loop
   (interleaving with TensorFlow inflates everyone's figure on 2 cores: its pool spins after each op):
   kconv.ops.conv2d on numpy, eager kconv.conv2d, eager tf.nn.conv2d. Median of 3000 calls.
2. The Winograd filter cache on 16x7x7x512->512: a forward call whose weights repeat (inference) against
   one whose weights are new every call (training). Medians, interleaved.
"""
import os
import sys
import time

import numpy as np

from kconv.bench.timing import interleaved


def alone(fn, calls=3000, warmup=200):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import kconv
    from kconv import ops

    xn, wn = np.ones((1, 4, 4, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    xt, wt = tf.constant(xn), tf.constant(wn)
    print("per call, 1x4x4x1 * 1x1x1x1, each alone, median of 3000:")
    for name, fn in (("kconv.ops.conv2d (numpy)", lambda: ops.conv2d(xn, wn, 1, "VALID")),
                     ("kconv.conv2d eager", lambda: kconv.conv2d(xt, wt, 1, "VALID")),
                     ("tf.nn.conv2d eager", lambda: tf.nn.conv2d(xt, wt, 1, "VALID"))):
        print(f"  {name:26s} {alone(fn) * 1e6:7.1f} us")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 7, 7, 512), dtype=np.float32)
    w = rng.standard_normal((3, 3, 512, 512), dtype=np.float32)
    fresh = iter([w + np.float32(i) for i in range(40)])
    times = interleaved({"same weights": lambda: ops.conv2d(x, w, 1, "SAME"),
                         "new weights": lambda: ops.conv2d(x, next(fresh), 1, "SAME")}, repeats=13)
    print("Winograd filter cache, 16x7x7x512->512 forward, median of 13 interleaved:")
    for name, t in times.items():
        print(f"  {name:26s} {np.median(t) * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
