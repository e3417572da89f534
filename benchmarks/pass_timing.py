"""One 2-D layer's passes through the numpy API, on inputs in cache or not: the A/B timing behind kernel changes.

    python benchmarks/pass_timing.py 2,14,256,256,3 --passes fwd --algorithm direct
    python benchmarks/pass_timing.py 32,28,32,32,3 --passes dw --sets 1,12 --threads 1,2
    python benchmarks/pass_timing.py 8,56,64,128,1,2 --passes dx,dw --algorithm direct
    python benchmarks/pass_timing.py 1d:32,400,128,100,6 --sets 4 --threads 1,2      (Kim's k6 text layer)

A layer is N,H,C,K,k[,stride] (NHWC input H x H, k x k SAME kernel), or 1d:N,L,C,K,k[,stride] (NWC input of
length L, a k-tap VALID kernel: the text layers of `python -m kconv bench`). Weights change every call, as in training
(no filter transform is kept). `--sets 1` reuses one input (and dY): it stays in cache; `--sets 12` rotates 12,
so each call finds its inputs in memory, as a graph step does for X long after the forward wrote it. To compare
two builds, run it from two checkouts in turn (PYTHONPATH=...) and repeat: this VM's phases move single figures
by up to +-30 %. Prints the median ms of --repeats calls and GFLOP/s counted as a direct convolution's.
"""
import argparse
import time

import numpy as np

import kconv
from kconv import ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("layers", nargs="+", help="N,H,C,K,k[,stride]")
    ap.add_argument("--passes", default="fwd,dx,dw")
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts")
    ap.add_argument("--sets", default="1", help="comma-separated input-set counts (1: inputs stay in cache)")
    ap.add_argument("--repeats", type=int, default=25)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"kconv {kconv.config()['version']}, {kconv.config()['isa']} build, algorithm {args.algorithm}; "
          f"median ms of {args.repeats} calls, weights new every call")
    for spec in args.layers:
        one_d = spec.startswith("1d:")
        n, h, c, k, ks, *rest = (int(v) for v in spec.removeprefix("1d:").split(","))
        s = rest[0] if rest else 1
        if one_d:       # NWC, VALID
            ho = (h - ks) // s + 1
            x_shape, y_shape, w_shape, pad = (n, h, c), (n, ho, k), (ks, c, k), "VALID"
            conv, backprop_input, backprop_filter = ops.conv1d, ops.conv1d_backprop_input, ops.conv1d_backprop_filter
        else:           # NHWC, SAME
            ho = (h + s - 1) // s
            x_shape, y_shape, w_shape, pad = (n, h, h, c), (n, ho, ho, k), (ks, ks, c, k), "SAME"
            conv, backprop_input, backprop_filter = ops.conv2d, ops.conv2d_backprop_input, ops.conv2d_backprop_filter
        flops = 2 * int(np.prod(y_shape)) * c * int(np.prod(w_shape[:-2]))
        for sets in (int(v) for v in args.sets.split(",")):
            xs = [rng.standard_normal(x_shape, dtype=np.float32) for _ in range(sets)]
            dys = [rng.standard_normal(y_shape, dtype=np.float32) for _ in range(sets)]
            ws = [rng.standard_normal(w_shape, dtype=np.float32) * np.float32(1 / (ks * np.sqrt(c)))
                  for _ in range(3)]
            calls = {
                "fwd": lambda i: conv(xs[i % sets], ws[i % 3], s, pad, algorithm=args.algorithm),
                "dx": lambda i: backprop_input(xs[0].shape, ws[i % 3], dys[i % sets], s, pad,
                                               algorithm=args.algorithm),
                "dw": lambda i: backprop_filter(xs[i % sets], ws[0].shape, dys[i % sets], s, pad,
                                                algorithm=args.algorithm),
            }
            for threads in (int(v) for v in args.threads.split(",")):
                kconv.set_num_threads(threads)
                cells = []
                for name in args.passes.split(","):
                    fn = calls[name]
                    fn(0)
                    times = []
                    for i in range(args.repeats):
                        t0 = time.perf_counter()
                        fn(i)
                        times.append(time.perf_counter() - t0)
                    t = float(np.median(times))
                    cells.append(f"{name} {t * 1e3:7.3f} ms {flops / t / 1e9:5.0f} GF/s")
                print(f"{spec:>16} sets {sets:<2} threads {threads}: " + " | ".join(cells), flush=True)
    kconv.set_num_threads(None)


if __name__ == "__main__":
    main()
