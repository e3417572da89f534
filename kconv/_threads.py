"""The one place that decides how many threads a kernel runs on.

Order: a call's own `threads=`, else kconv.set_num_threads(n) if set, else OpenMP's setting (OMP_NUM_THREADS,
or threadpoolctl's `threadpool_limits`), always capped at the CPUs this process may use: its affinity mask
and its container's CPU quota (cgroup v2 cpu.max or v1 cpu.cfs_quota_us), so a container limited to 2 CPUs
on a 64-core host runs 2 threads, not 64. Always 1 when kconv was built without OpenMP, and in a child
process forked after kconv had started threads (GCC's OpenMP runtime would hang there): such a child computes
the same results on its own thread.

The setting lives in the compiled kernels (core.set_thread_config), so the numpy API and the TensorFlow op
library, which calls the kernels without Python, resolve it alike. Calls that run at the same time (several
Python threads, or TensorFlow running several kconv ops of a graph at once) share the CPUs: each call holds
its team in the kernels while it runs, and while calls overlap their helper threads stand down between
tasks (pyx/microkernel.h, kc_next_task), so the cores run one kconv thread per call until the others end.
"""
import functools
import math
import os
import threading

from . import _runtime
from ._backend import core

CGROUP_ROOT = "/sys/fs/cgroup"

_requested = None
_lock = threading.Lock()


def cgroup_cpu_limit(root=CGROUP_ROOT, proc_cgroup="/proc/self/cgroup"):
    """The CPUs this process's cgroup quota allows (quota / period, rounded up), or None without a quota.

    Reads cgroup v2 (cpu.max: "quota period" or "max period") or v1 (cpu.cfs_quota_us, cpu.cfs_period_us),
    in the process's own cgroup and its ancestors (the tightest wins); `root` and `proc_cgroup` can point at
    a fake tree for tests."""
    limits = []
    for folder in _cgroup_folders(root, proc_cgroup):
        quota_period = _read_ints(os.path.join(folder, "cpu.max"))
        if quota_period is None:
            quota, period = (_read_ints(os.path.join(folder, name)) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            quota_period = (quota[0], period[0]) if quota and period else None
        if quota_period and quota_period[0] > 0 and quota_period[1] > 0:
            limits.append(max(1, math.ceil(quota_period[0] / quota_period[1])))
    return min(limits) if limits else None


def _cgroup_folders(root, proc_cgroup):
    """The process's cgroup folders under root (v2 unified, or v1's cpu controller), innermost first."""
    paths = []
    try:
        with open(proc_cgroup) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "" or "cpu" in controllers.split(","):
                    base = root if controllers == "" else os.path.join(root, "cpu")
                    paths.append((base, path.strip("/")))
    except (OSError, ValueError):
        pass
    folders = []
    for base, path in paths or [(root, "")]:
        parts = path.split("/") if path else []
        for depth in range(len(parts), -1, -1):
            folders.append(os.path.join(base, *parts[:depth]))
    return folders


def _read_ints(path):
    """The integers of a one-line cgroup file ("max" reads as -1), or None when it cannot be read."""
    try:
        with open(path) as f:
            return tuple(-1 if v == "max" else int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _available_cpus():
    """CPUs this process may run on: affinity, capped by the cgroup quota (read once: a system call is dear
    next to a small convolution)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return min(cpus, quota) if quota else cpus


def _push():
    core.set_thread_config(_requested or 0, _available_cpus())


def check(threads, name="threads"):
    """`threads` (a thread count argument) when it is None or a positive int; else a ValueError naming it."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{name} must be a positive int or None, got {threads!r}")
    return threads


def set_num_threads(n):
    """Sets the threads every kconv kernel uses; None restores the default (OpenMP's setting, all cores)."""
    global _requested
    check(n, "set_num_threads: n")
    with _lock:
        _requested = n
        _push()


def get_num_threads():
    """The threads a kconv kernel called now (from this thread) would use."""
    if not _runtime.openmp_enabled() or core.serial_after_fork():
        return 1
    if _requested is not None:
        return _requested
    return max(1, min(_runtime.omp_max_threads(), _available_cpus()))


def resolve(threads=None):
    """Thread count for one call: an explicit per-call value wins over the global setting."""
    if check(threads) is None:
        return get_num_threads()
    return threads if _runtime.openmp_enabled() else 1


def held():
    """Threads held by kernel calls running now, in every thread of the process (0 when idle)."""
    return core.threads_held()


_push()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=core.after_fork_in_child)
