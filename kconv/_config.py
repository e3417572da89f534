"""What was built and what it runs on: kconv.show_config() and `python -m kconv info`."""
import os
import platform
import time

import numpy as np

from . import _backend, _runtime, _threads


def config():
    """Build and runtime facts as a dict."""
    core = _backend.core
    return {
        "version": _version(),
        "isa": _backend.isa,
        "isas_built": _backend.built,
        "cpu_avx2": _runtime.cpu_supports_avx2(),
        "cpu_avx512": _runtime.cpu_supports_avx512(),
        "openmp": _runtime.openmp_enabled(),
        "threads": _threads.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "tile_f32": core.tile_shape(np.float32),
        "tile_f64": core.tile_shape(np.float64),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def show_config(roof=False):
    """Prints build and runtime facts; with roof=True also measures the FMA roof (a few seconds)."""
    for key, value in config().items():
        print(f"{key:16s} {value}")
    if roof:
        n = _threads.get_num_threads()
        print(f"{'fma roof':16s} 1 thread {measure_roof(1):.1f} GFLOP/s, {n} threads {measure_roof(n):.1f} GFLOP/s"
              f" (fp32, {_backend.isa} vectors)")


def measure_roof(threads=None, seconds=0.3):
    """This machine's fp32 FMA roof in GFLOP/s at the vector width kconv runs: best of 3 timed runs."""
    n = _threads.resolve(threads)
    iters = 1 << 16
    while True:   # grow until one run takes ~seconds/3
        t0 = time.perf_counter()
        _backend.core.fma_chains(iters, n)
        elapsed = time.perf_counter() - t0
        if elapsed > seconds / 3 or iters > 1 << 34:
            break
        iters *= 4
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        flops, _ = _backend.core.fma_chains(iters, n)
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def cpu_name():
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version():
    try:
        from importlib.metadata import version
        return version("kconv")
    except Exception:
        return "unknown"
