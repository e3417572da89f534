"""The one place that decides how many threads a kernel runs on.

Order: a call's own `threads=`, else kconv.set_num_threads(n) if set, else OMP_NUM_THREADS / OpenMP's
default capped at the CPUs this process may use; always 1 when kconv was built without OpenMP. The
setting lives in the compiled kernels (core.set_thread_config), so the numpy API and the TensorFlow op
library, which calls the kernels without Python, resolve it alike. Calls that run at the same time (several
Python threads, or TensorFlow running several kconv ops of a graph at once) share the CPUs: each call
claims its threads in the kernels while it runs, and never more than the CPUs not already held (at least
its caller's own thread), so kconv never adds helper threads beyond the cores.
"""
import functools
import os
import threading

from . import _runtime
from ._backend import core

# Below this many flops per thread, another thread costs more to wake than it saves (~20 us of work at
# 100 GFLOP/s a core); the kernels apply the same rule. Splitting never changes results.
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


def _default_threads():
    return max(1, min(_runtime.omp_max_threads(), _available_cpus()))


def _push():
    core.set_thread_config(_requested or 0, _default_threads(), _available_cpus())


def set_num_threads(n):
    """Sets the threads every kconv kernel uses; None restores the default (OMP_NUM_THREADS or all cores)."""
    global _requested
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    with _lock:
        _requested = n
        _push()


def get_num_threads():
    """The threads a kconv kernel called now would use."""
    if not _runtime.openmp_enabled():
        return 1
    return _requested if _requested is not None else _default_threads()


def resolve(threads=None):
    """Thread count for one call: an explicit per-call value wins over the global setting."""
    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads if _runtime.openmp_enabled() else 1


def held():
    """Threads held by kernel calls running now, in every thread of the process (0 when idle)."""
    return core.threads_held()


_push()
