"""Small calls on one thread and on all: where waking a second thread costs more than it saves.

    python benchmarks/small_calls.py [--repeats 200]

Each parallel region of a call wakes the OpenMP team and waits for it (futex wake-ups; on a 2-CPU VM
~70-110 us a region). This script times the numpy API, back to back, median ms a call, for the layers the
README's Threads section quotes: 3x3 32x32 16 -> 16 forward at batch 1-32 (direct), and the Winograd
8x8 64 -> 64 batch 8 layer of ResNet-20 (forward, input and filter gradient).
"""
import argparse
import sys

import numpy as np

from gradient_pair import median_ms     # benchmarks/ is on sys.path when a script here runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    import kconv
    from kconv import ops
    from kconv._config import cpu_name
    n = kconv.get_num_threads()
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, threads {n}\n"
          f"| call | MFLOP | 1 thread ms | {n} threads ms |\n|---|---:|---:|---:|")

    def both(f):     # back to back: a warm call first, no pause between calls
        f(1)
        f(n)
        return [median_ms(lambda: f(t), args.repeats, pause=0) for t in (1, n)]
    rng = np.random.default_rng(0)
    w16 = rng.standard_normal((3, 3, 16, 16), dtype=np.float32)
    for batch in (1, 4, 16, 32):
        x = rng.standard_normal((batch, 32, 32, 16), dtype=np.float32)
        times = both(lambda t: ops.conv2d(x, w16, 1, "SAME", threads=t))
        print(f"| 3x3 32x32 16->16 batch {batch} forward | {2 * batch * 1024 * 16 * 16 * 9 / 1e6:.1f} "
              f"| {times[0]:.3f} | {times[1]:.3f} |", flush=True)
    x = rng.standard_normal((8, 8, 8, 64), dtype=np.float32)
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    dy = rng.standard_normal((8, 8, 8, 64), dtype=np.float32)
    passes = {
        "forward": lambda t: ops.conv2d(x, w, 1, "SAME", threads=t),
        "input grad": lambda t: ops.conv2d_backprop_input(x.shape, w, dy, 1, "SAME", threads=t),
        "filter grad": lambda t: ops.conv2d_backprop_filter(x, w.shape, dy, 1, "SAME", threads=t),
    }
    for name, f in passes.items():
        times = both(f)
        print(f"| 3x3 8x8 64->64 batch 8 {name} (auto) | 37.7 | {times[0]:.3f} | {times[1]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
