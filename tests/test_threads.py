"""Threads: results are bitwise identical for any thread count; get/set_num_threads behave.

Every output element must be reduced in one fixed order whichever thread owns it, so the check is
np.array_equal, not a tolerance.  Every case does at least ~8 MFLOP (kconv gives small calls fewer
threads), is split into many tasks, and the set includes long reductions (the filter gradient over
a big batch reduces over N*Ho*Wo).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import kconv
from cases import Conv1dCase, Conv2dCase
from kconv import _threads, ops
from kconv._backend import core

THREAD_CASES = [
    Conv2dCase(8, 16, 16, 32, 32, 3, 3, padding="SAME"),  # Winograd-shaped
    Conv2dCase(8, 16, 16, 32, 32, 3, 3, padding="SAME", dtype=np.float64),
    Conv2dCase(12, 15, 13, 24, 40, 3, 3, strides=(2, 2), padding="SAME"),
    Conv2dCase(4, 12, 12, 100, 20, 5, 5, padding="SAME"),  # 2500-long reduction in the forward pass
    Conv2dCase(32, 16, 16, 16, 16, 3, 3, padding="SAME"),  # filter gradient reduces over 8192 pixels
    Conv2dCase(32, 16, 16, 16, 16, 3, 3, padding="SAME", dtype=np.float64),
    Conv2dCase(16, 28, 28, 32, 32, 3, 3, strides=(2, 2), dilations=(2, 2), groups=4, padding="SAME",
               data_format="NCHW"),
    Conv2dCase(16, 10, 10, 64, 64, 1, 1),
    Conv2dCase(2, 14, 14, 64, 64, 3, 3, padding="SAME", algorithm="direct"),   # 49 row panels: blocks per thread
    Conv2dCase(8, 14, 14, 32, 64, 5, 5, padding="SAME"),    # F(4x4, 5x5), filter gradient included
    Conv2dCase(1, 7, 7, 256, 1024, 1, 1),   # batch 1 late layer: its filter's columns split between threads
    Conv2dCase(1, 7, 7, 128, 100, 3, 3, padding="SAME", algorithm="direct"),   # ... and a partial last panel
    Conv2dCase(1, 7, 7, 160, 256, 3, 3, padding="SAME", algorithm="direct"),   # ... its slices packed per chunk
    Conv2dCase(1, 7, 7, 1024, 512, 1, 1),   # ... in pieces of rows, more of them on one thread than on two
    Conv2dCase(1, 7, 7, 112, 1024, 3, 3, padding="SAME", algorithm="direct"),   # ... merged taps in pieces
    Conv1dCase(16, 200, 64, 100, 3, padding="SAME"),
    Conv1dCase(32, 120, 33, 17, 5, stride=2, dilation=2, padding="CAUSAL", data_format="NCW", dtype=np.float64),
]  # fmt: skip


@pytest.fixture
def threads(restore_threads):
    """Run a callable under n threads: threads(n, fn, *args)."""

    def run(n, fn, *args):
        kconv.set_num_threads(n)
        cpus = _threads._available_cpus()
        if n > cpus:    # kconv never runs more threads than CPUs: pretend there are n, so n really run
            core.set_thread_config(n, n)
        try:
            return fn(*args)
        finally:
            _threads._push()

    return run


def flops(case):
    out = np.prod(case.output_shape)
    taps = case.kh * case.kw if isinstance(case, Conv2dCase) else case.kw
    return 2 * out * taps * case.c // case.groups


def test_thread_cases_are_big_enough_to_be_split():
    small = [(c.id, flops(c)) for c in THREAD_CASES if flops(c) < 8e6]
    assert not small, small


@pytest.mark.parametrize("case", THREAD_CASES, ids=[c.id for c in THREAD_CASES])
@pytest.mark.parametrize("op", ["forward", "backprop_input", "backprop_filter"])
def test_results_do_not_depend_on_thread_count(case, op, threads, rng):
    """Bitwise the same result with 1, 2 and 3 threads, and from one run to the next."""
    x, f, dy = case.inputs(rng)
    fn, args = {
        "forward": (case.forward, (x, f)),
        "backprop_input": (case.backprop_input, (f, dy)),
        "backprop_filter": (case.backprop_filter, (x, dy)),
    }[op]
    one = threads(1, fn, *args)
    two = threads(2, fn, *args)
    three = threads(3, fn, *args)  # more threads than this machine's 2 cores
    again = threads(2, fn, *args)
    assert np.array_equal(one, two), f"1 vs 2 threads: max diff {np.max(np.abs(one - two)):.3e}"
    assert np.array_equal(one, three), f"1 vs 3 threads: max diff {np.max(np.abs(one - three)):.3e}"
    assert np.array_equal(two, again), "two runs with 2 threads differ"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_does_not_depend_on_thread_count(dtype, threads, rng):
    a = rng.standard_normal((300, 1500)).astype(dtype)
    b = rng.standard_normal((1500, 70)).astype(dtype)
    assert np.array_equal(threads(1, ops.matmul, a, b), threads(2, ops.matmul, a, b))


# ---------------------------------------------------------------------------------------
# get_num_threads / set_num_threads
# ---------------------------------------------------------------------------------------


def test_set_num_threads_is_read_back(restore_threads):
    for n in (1, 2, 1):
        kconv.set_num_threads(n)
        assert kconv.get_num_threads() == n


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_num_threads_rejects_non_positive(bad, restore_threads):
    before = kconv.get_num_threads()
    with pytest.raises(ValueError):
        kconv.set_num_threads(bad)
    assert kconv.get_num_threads() == before, "a rejected value must not change the setting"


def test_set_num_threads_none_restores_the_default(restore_threads):
    kconv.set_num_threads(None)
    default = kconv.get_num_threads()
    assert default >= 1
    kconv.set_num_threads(1 if default != 1 else 2)
    assert kconv.get_num_threads() != default
    kconv.set_num_threads(None)
    assert kconv.get_num_threads() == default


def _in_subprocess(code, omp_num_threads):
    """Run `code` in a fresh interpreter with OMP_NUM_THREADS set (or unset, for None); return stdout."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = str(omp_num_threads)
    kconv_root = os.path.dirname(os.path.dirname(os.path.abspath(kconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([kconv_root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("omp", [1, 2])
def test_omp_num_threads_is_honoured(omp):
    """OMP_NUM_THREADS sets the default; set_num_threads overrides it; None goes back to it."""
    if omp > len(os.sched_getaffinity(0)):
        pytest.skip("fewer CPUs than OMP_NUM_THREADS")
    code = (
        "import kconv\n"
        "a = kconv.get_num_threads()\n"
        "kconv.set_num_threads(3)\n"
        "b = kconv.get_num_threads()\n"
        "kconv.set_num_threads(None)\n"
        "print(a, b, kconv.get_num_threads())\n"
    )
    assert _in_subprocess(code, omp) == f"{omp} 3 {omp}"


def test_default_without_omp_num_threads_uses_the_available_cores():
    code = "import kconv; print(kconv.get_num_threads())"
    assert int(_in_subprocess(code, None)) == len(os.sched_getaffinity(0))
