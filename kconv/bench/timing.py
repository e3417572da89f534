"""Timing that survives a noisy, shared machine (the ideas of benchmarks/timing.py, installed with kconv):
contenders run interleaved in one process, each timed many times after warm-up; the figure is the median,
and a speedup is the ratio of medians measured side by side."""
import time

import numpy as np


def interleaved(contenders, repeats=9, warmup=2):
    """Runs each callable `repeats` times, round-robin, after `warmup` untimed calls of each.
    contenders: dict name -> callable. Returns dict name -> array of seconds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: np.array(t) for name, t in times.items()}


def rotating(arrays_factory, count=3):
    """`count` independent copies of the inputs, handed out in turn so caches do not flatter a figure."""
    sets = [arrays_factory() for _ in range(count)]
    state = {"i": 0}

    def next_set():
        state["i"] = (state["i"] + 1) % count
        return sets[state["i"]]
    return next_set


def blocks(contenders, rounds=7, calls=1, pause=0.15):
    """Alternating blocks: each round runs every contender in turn, each after a pause (so no contender's
    leftover threads land on the next) and one discarded warm call, then times `calls` calls.
    Returns dict name -> array of seconds per call, one value per round (GUIDE section 6, fair timing)."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(pause)
            fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: np.array(t) for name, t in times.items()}
