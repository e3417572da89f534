"""The micro-kernel on large panels: kconv.ops.matmul GFLOP/s against this machine's FMA roof.

    python benchmarks/bench_microkernel.py [--threads N] [--repeats R]

The roof is kconv.measure_roof (independent FMA chains at the vector width kconv runs), measured in the same
run. Best-of and median are both shown: on a shared machine the best run is the kernel's capability,
the median what a user sees.
"""
import argparse
import sys

import numpy as np

from kconv.bench.timing import interleaved  # noqa: E402

SHAPES = [(2304, 512, 512), (4096, 256, 256), (1536, 1024, 1024), (784, 4608, 512)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    import kconv
    from kconv import ops

    counts = sorted({1, args.threads or kconv.get_num_threads()})
    roofs = {n: kconv.measure_roof(n) for n in counts}
    print(f"micro-kernel {kconv.config()['tile_f32']} ({kconv.config()['isa']}); roof " +
          ", ".join(f"{n} thread(s) {r:.1f} GFLOP/s" for n, r in roofs.items()))
    print(f"{'M x K x N':>18s} {'threads':>7s} {'best GF/s':>10s} {'median':>8s} {'best % roof':>12s}")
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        flops = 2.0 * m * k * n
        times = interleaved({t: (lambda t=t: ops.matmul(a, b, threads=t)) for t in counts}, repeats=args.repeats)
        for t in counts:
            best, med = flops / times[t].min() / 1e9, flops / np.median(times[t]) / 1e9
            print(f"{f'{m} x {k} x {n}':>18s} {t:7d} {best:10.1f} {med:8.1f} {100 * best / roofs[t]:11.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
