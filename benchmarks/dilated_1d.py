"""Dilated 1-D convolution (a TCN / WaveNet layer), direct against Winograd F(4, 3), pass by pass, numpy API.

    python benchmarks/dilated_1d.py [--dilations 1,2,4,16,32] [--threads 2] [--repeats 15]

The layer is 512 positions x 64 -> 64 channels, k = 3, causal padding, batch 16 (kconv/bench/models.py's TCN).
Each pass runs with algorithm="direct" and "winograd4" in turn, call by call; medians in ms.
"""
import argparse
import time

import numpy as np

import kconv
from kconv import ops
from kconv._config import cpu_name


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dilations", default="1,2,4,16,32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 512, 64)).astype(np.float32)
    w = rng.standard_normal((3, 64, 64)).astype(np.float32)
    dy = rng.standard_normal((args.batch, 512, 64)).astype(np.float32)
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, threads "
          f"{args.threads or kconv.get_num_threads()}; ms, median of {args.repeats}, direct / F(4, 3)")
    print("| dilation | forward | input gradient | filter gradient |\n|---:|---|---|---|")
    for d in (int(v) for v in args.dilations.split(",")):
        def passes(algorithm):
            kw = dict(dilations=d, algorithm=algorithm, threads=args.threads)
            return [lambda: ops.conv1d(x, w, 1, "CAUSAL", **kw),
                    lambda: ops.conv1d_backprop_input(x.shape, w, dy, 1, "CAUSAL", **kw),
                    lambda: ops.conv1d_backprop_filter(x, w.shape, dy, 1, "CAUSAL", **kw)]
        direct, winograd = passes("direct"), passes("winograd4")
        cells = []
        for fd, fw in zip(direct, winograd):
            fd(), fw()
            td, tw = [], []
            for _ in range(args.repeats):
                for f, times in ((fd, td), (fw, tw)):
                    t0 = time.perf_counter()
                    f()
                    times.append(time.perf_counter() - t0)
            cells.append(f"{1e3 * np.median(td):.2f} / {1e3 * np.median(tw):.2f}")
        print(f"| {d} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
