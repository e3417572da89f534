"""A layer's input and filter gradients at once, as a training step runs them, against one after the other.

    python benchmarks/gradient_pair.py [--repeats 15]

TensorFlow runs the two gradients of a layer on two inter-op threads at the same time. This script does the
same with the numpy API (no TensorFlow): two Python threads start the two calls together (a barrier), and the
pair's wall time is set beside the two calls run one after the other from one thread, and beside each pass
alone on one thread and on all. Median ms over repeats, each after a 5 ms pause. README, Threads, quotes it.
When the calls overlap each holds its team and their helpers stand down (pyx/microkernel.h, kc_next_task):
the pair then costs about max(dx on 1 thread, dw on 1 thread) plus the rest of the longer one on all threads.
"""
import argparse
import sys
import threading
import time

import numpy as np

LAYERS = [   # (input NHWC, filter HWCK): the image CNN's second and fourth layers, ResNet-20's 16 -> 16, a wide one
    ((64, 28, 28, 32), (3, 3, 32, 32)),
    ((64, 14, 14, 64), (3, 3, 64, 64)),
    ((32, 32, 32, 16), (3, 3, 16, 16)),
    ((8, 28, 28, 128), (3, 3, 128, 128)),
]


def median_ms(f, repeats, pause=0.005):
    """Median ms of f() over repeats, each after `pause` seconds."""
    out = []
    for _ in range(repeats):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(out))


def pair_ms(dx, dw, repeats):
    """Both calls started together from two threads: the wall time until both are done."""
    start, end = threading.Barrier(2), threading.Barrier(2)

    def other():
        for _ in range(repeats):
            start.wait()
            dw()
            end.wait()
    t = threading.Thread(target=other)
    t.start()
    out = []
    for _ in range(repeats):
        time.sleep(0.005)
        t0 = time.perf_counter()
        start.wait()
        dx()
        end.wait()
        out.append(time.perf_counter() - t0)
    t.join()
    return 1e3 * float(np.median(out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    import kconv
    from kconv import ops
    from kconv._config import cpu_name
    n = kconv.get_num_threads()
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, threads {n}")
    print(f"| input | filter | dx + dw at once | one after the other | dx 1 / {n} threads | dw 1 / {n} threads |")
    print("|---|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for x_shape, w_shape in LAYERS:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        dy = rng.standard_normal(x_shape[:3] + w_shape[3:], dtype=np.float32)

        def dx(threads=None):
            ops.conv2d_backprop_input(x.shape, w, dy, 1, "SAME", threads=threads)

        def dw(threads=None):
            ops.conv2d_backprop_filter(x, w.shape, dy, 1, "SAME", threads=threads)
        for f in (dx, dw):
            f()
            f()
        together = pair_ms(dx, dw, args.repeats)
        apart = median_ms(lambda: (dx(), dw()), args.repeats)
        alone = {(name, t): median_ms(lambda: f(t), args.repeats) for name, f in (("dx", dx), ("dw", dw))
                 for t in (1, n)}
        print(f"| {x_shape} | {w_shape} | {together:.2f} | {apart:.2f} | {alone['dx', 1]:.2f} / {alone['dx', n]:.2f} "
              f"| {alone['dw', 1]:.2f} / {alone['dw', n]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
