"""The one place that decides how many threads a kernel runs on.

Order: kconv.set_num_threads(n) if set, else OMP_NUM_THREADS / OpenMP's default, capped at the number of
CPUs this process may use; always 1 when kconv was built without OpenMP. Calls that run at the same time
(several Python threads, or TensorFlow running several kconv ops of a graph at once) share the CPUs: see
claim().
"""
import contextlib
import functools
import os
import threading

from . import _runtime

# Below this many flops per thread, another thread costs more to wake than it saves (~20 us of work at
# 100 GFLOP/s a core). Splitting never changes results: every kernel reduces in a fixed order.
FLOPS_PER_THREAD = 2e6

_requested = None
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _available_cpus():
    """CPUs this process may run on (read once: a system call is dear next to a small convolution)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_num_threads(n):
    """Sets the threads every kconv kernel uses; None restores the default (OMP_NUM_THREADS or all cores)."""
    global _requested
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    with _lock:
        _requested = n


def get_num_threads():
    """The threads a kconv kernel called now would use."""
    if not _runtime.openmp_enabled():
        return 1
    n = _requested if _requested is not None else _runtime.omp_max_threads()
    return max(1, min(n, _available_cpus()) if _requested is None else n)


def resolve(threads=None):
    """Thread count for one call: an explicit per-call value wins over the global setting."""
    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads if _runtime.openmp_enabled() else 1


def for_work(flops, threads=None):
    """Thread count for one call doing `flops` of work: resolve(threads), fewer for small work."""
    n = resolve(threads)
    return int(max(1, min(n, flops // FLOPS_PER_THREAD)))


_busy = 0     # threads held by kernel calls running now, in all Python threads
_busy_lock = threading.Lock()


@contextlib.contextmanager
def claim(flops, threads=None):
    """The thread count for one kernel call, held while it runs (use as `with claim(...) as n:`).

    Concurrent calls share the CPUs instead of each starting a full team: a call gets what it asks for
    (for_work) up to the CPUs not already held, and at least 1, its caller's own thread, so kconv never adds
    helper threads beyond the cores. Results do not depend on the count, so sharing changes no result."""
    global _busy
    want = for_work(flops, threads)
    with _busy_lock:
        n = max(1, min(want, _available_cpus() - _busy))
        _busy += n
    try:
        yield n
    finally:
        with _busy_lock:
            _busy -= n
