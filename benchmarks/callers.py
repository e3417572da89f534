"""The same kconv call from one thread and from threads that take turns: what TensorFlow's inter-op pool does.

    python benchmarks/callers.py [--callers 1,2] [--layer winograd|direct] [--rounds 3]

GCC's OpenMP runtime gives every thread that opens a parallel region a team of its own. TensorFlow runs a
graph's ops on several inter-op threads, so kconv's calls come from several callers, each with a team. This
script calls the numpy API (no TensorFlow) from N Python threads in turn, one call at a time, with weights
and inputs rotating as in training, and prints ms per call: the median, and the first calls after a 100 ms
pause (medians over rounds). README, Threads, quotes it: run it with KCONV_BIND_THREADS=0 to see the calls
without kconv's team binding (pyx/team_binding.pxi), and without that variable to see them with it.
"""
import argparse
import queue
import sys
import threading
import time

import numpy as np

LAYERS = {
    "winograd": ((8, 28, 28, 128), (3, 3, 128, 128)),    # auto: Winograd F(4x4)
    "direct": ((64, 28, 28, 32), (3, 3, 32, 32)),        # auto: direct (32 channels)
}


def run(callers, x_shape, w_shape, rounds, calls):
    from kconv import ops
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(x_shape, dtype=np.float32) for _ in range(3)]
    ws = [rng.standard_normal(w_shape, dtype=np.float32) * np.float32(0.03) for _ in range(3)]
    b = rng.standard_normal(w_shape[-1], dtype=np.float32)
    todo = [queue.Queue() for _ in range(callers)]
    done = queue.Queue()

    def caller(q):
        while True:
            i = q.get()
            if i is None:
                return
            t0 = time.perf_counter()
            ops.conv2d(xs[i % 3], ws[i % 3], 1, "SAME", bias=b, activation="relu")
            done.put(time.perf_counter() - t0)

    threads = [threading.Thread(target=caller, args=(q,)) for q in todo]
    for t in threads:
        t.start()

    def call(i):
        todo[i % callers].put(i)
        return done.get()
    try:
        for i in range(2 * callers + 2):
            call(i)
        per_round = []
        for _ in range(rounds):
            time.sleep(0.1)
            per_round.append([call(i) for i in range(calls)])
    finally:
        for q in todo:
            q.put(None)
        for t in threads:
            t.join()
    return np.array(per_round) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", default="1,2", help="comma-separated numbers of caller threads")
    parser.add_argument("--layer", default="winograd,direct", help="winograd, direct or both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="calls per round")
    args = parser.parse_args(argv)
    import kconv
    from kconv._config import cpu_name
    import os
    binding = "off" if os.environ.get("KCONV_BIND_THREADS", "1").startswith("0") else "on"
    print(f"machine: {cpu_name()}, kconv isa {kconv.config()['isa']}, threads {kconv.get_num_threads()}, "
          f"team binding {binding}")
    for name in args.layer.split(","):
        x_shape, w_shape = LAYERS[name]
        for n in (int(c) for c in args.callers.split(",")):
            ms = run(n, x_shape, w_shape, args.rounds, args.calls)
            first = " ".join(f"{v:.1f}" for v in np.median(ms, axis=0)[:6])
            print(f"{name:8s} x {x_shape} w {w_shape}, {n} caller(s) in turn: median {np.median(ms):.2f} ms "
                  f"a call; first calls after a pause {first}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
