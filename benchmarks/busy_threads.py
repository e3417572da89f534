"""How many of this process's threads are running while several Python threads call kconv at once.

    python benchmarks/busy_threads.py

Four Python threads run convolutions for two seconds while a sampler reads the state of every thread of
the process from /proc (Linux) every millisecond; it prints the mean and the 99th percentile of threads in
state R (running or runnable), with kconv's thread sharing on, and with it switched off for comparison.
"""
import contextlib
import glob
import os
import sys
import threading
import time

import numpy as np


def running_threads():
    count = 0
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/stat"):
        try:
            with open(path) as f:
                count += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:
            pass
    return count


def measure(ops, seconds=2.0, callers=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 28, 28, 32)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    stop = time.perf_counter() + seconds
    samples = []

    def work():
        while time.perf_counter() < stop:
            ops.conv2d(x, w, 1, "SAME", algorithm="direct")

    workers = [threading.Thread(target=work) for _ in range(callers)]
    for t in workers:
        t.start()
    while time.perf_counter() < stop:
        samples.append(running_threads() - 1)   # not the sampler itself
        time.sleep(0.001)
    for t in workers:
        t.join()
    return np.mean(samples), np.percentile(samples, 99)


def main():
    import kconv
    from kconv import _threads, ops
    print(f"{os.cpu_count()} CPUs, kconv threads {kconv.get_num_threads()}, 4 Python threads calling conv2d")
    mean, p99 = measure(ops)
    print(f"sharing on : running threads mean {mean:.2f}, 99th percentile {p99:.0f}")
    real = _threads.claim

    @contextlib.contextmanager
    def unshared(flops, threads=None):
        yield _threads.for_work(flops, threads)
    _threads.claim = unshared
    try:
        mean, p99 = measure(ops)
    finally:
        _threads.claim = real
    print(f"sharing off: running threads mean {mean:.2f}, 99th percentile {p99:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
