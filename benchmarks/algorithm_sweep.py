"""Direct against Winograd, pass by pass: the measurements behind `algorithm="auto"`'s rules (pyx/plan.pxi,
choose_algorithms).

For each square map size and channel count (C = K, 3x3 or --kernel 5, SAME, stride 1) every pass runs with
"direct", "winograd4" (F(4x4, k x k)) and "winograd2" (F(2x2, k x k)), interleaved call by call so the machine's drift lands
on all three alike, with weights and inputs rotating as in training (no kept filter transform). The batch
makes about 16k output pixels (at most 64 images). Prints milliseconds (median of --repeats) and the fastest.

    python benchmarks/algorithm_sweep.py                       # maps 7..56, channels 32..256
    python benchmarks/algorithm_sweep.py --maps 8,16 --channels 64 --passes dw --threads 1
    python benchmarks/algorithm_sweep.py --maps 28 --channels 128 --passes dw --batch 8
    python benchmarks/algorithm_sweep.py --kernel 5 --maps 7,14,28 --channels 16,32,64 --passes dw
"""
import argparse
import itertools
import time

import numpy as np

import kconv
from kconv import ops

ALGORITHMS = ("direct", "winograd4", "winograd2")
SHORT = {"direct": "d", "winograd4": "w4", "winograd2": "w2"}


def pass_function(name, xs, ws, dys, algorithm, threads):
    if name == "fwd":
        return lambda i: ops.conv2d(xs[i % 3], ws[i % 3], 1, "SAME", algorithm=algorithm, threads=threads)
    if name == "dx":
        return lambda i: ops.conv2d_backprop_input(xs[0].shape, ws[i % 3], dys[i % 3], 1, "SAME",
                                                   algorithm=algorithm, threads=threads)
    return lambda i: ops.conv2d_backprop_filter(xs[i % 3], ws[0].shape, dys[i % 3], 1, "SAME",
                                                algorithm=algorithm, threads=threads)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", default="7,8,14,16,28,56")
    ap.add_argument("--channels", default="32,64,128,256")
    ap.add_argument("--passes", default="fwd,dx,dw")
    ap.add_argument("--pixels", type=int, default=16384, help="output pixels per call (sets the batch)")
    ap.add_argument("--batch", type=int, default=None, help="a fixed batch instead (overrides --pixels)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kernel", type=int, default=3, choices=(3, 5), help="kernel size (k x k)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"kconv {kconv.config()['version']}, {kconv.config()['isa']} build, threads {args.threads or kconv.get_num_threads()}, "
          f"{args.kernel}x{args.kernel} kernels; "
          f"ms per call, median of {args.repeats}, algorithms interleaved: d = direct, w4 = F(4x4), w2 = F(2x2)")
    for hw, c in itertools.product([int(v) for v in args.maps.split(",")], [int(v) for v in args.channels.split(",")]):
        n = args.batch or max(1, min(64, args.pixels // (hw * hw)))
        xs = [rng.standard_normal((n, hw, hw, c), dtype=np.float32) for _ in range(3)]
        k = args.kernel
        ws = [rng.standard_normal((k, k, c, c), dtype=np.float32) * np.float32(1 / (k * np.sqrt(c))) for _ in range(3)]
        dys = [rng.standard_normal((n, hw, hw, c), dtype=np.float32) for _ in range(3)]
        cells = []
        for name in args.passes.split(","):
            fns = {a: pass_function(name, xs, ws, dys, a, args.threads) for a in ALGORITHMS}
            times = {a: [] for a in ALGORITHMS}
            for i in range(2):
                for fn in fns.values():
                    fn(i)
            for i in range(args.repeats):
                for a, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(i)
                    times[a].append(time.perf_counter() - t0)
            ms = {a: float(np.median(t)) * 1e3 for a, t in times.items()}
            best = min(ms, key=ms.get)
            cells.append(f"{name} " + "/".join(f"{ms[a]:.2f}" for a in ALGORITHMS) + f" [{SHORT[best]}]")
        print(f"{hw:3d}x{hw:<3d} C=K={c:<4d} batch {n:<3d} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
