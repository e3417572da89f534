"""Timing that survives a noisy, shared machine and threads that outlive calls.

`blocks` is the suite's method (GUIDE section 6, "Fair timing"): contenders run in one process in alternating
blocks; each block starts after a pause (so a contender's leftover threads, spinning or asleep, do not land
on the next one) and one discarded warm call, then times `calls` calls. The figure is the median over rounds,
and a ratio is taken between medians measured side by side.

`interleaved` (call-by-call round robin) and `rotating` are kept for the scripts in benchmarks/.
"""
import math
import time

import numpy as np


def blocks(contenders, rounds=7, calls=1, pause=0.15, alternate=True):
    """Alternating blocks: each round runs every contender in turn, each after a pause of `pause` seconds
    and one discarded warm call, then times `calls` calls (an int, or a dict name -> int). With `alternate`,
    odd rounds run the contenders in reverse order, so neither always follows the other.
    Returns dict name -> array of seconds per call, one value per round."""
    names = list(contenders)
    per = calls if isinstance(calls, dict) else {name: calls for name in names}
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[::-1] if alternate and r % 2 else names
        for name in order:
            fn, n = contenders[name], max(1, int(per[name]))
            time.sleep(pause)
            fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    return {name: np.array(t) for name, t in times.items()}


def calls_for(seconds_per_call, block_seconds, most=50):
    """How many calls make a timed block of about `block_seconds` (at least 1, at most `most`)."""
    if seconds_per_call <= 0:
        return most
    return int(min(most, max(1, round(block_seconds / seconds_per_call))))


def estimate(fn, calls=2):
    """Seconds of one call of fn: the fastest of `calls` calls (after the caller's warm-up)."""
    best = math.inf
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


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
