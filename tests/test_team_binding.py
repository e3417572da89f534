"""Team binding (pyx/team_binding.pxi): a call that takes every CPU pins its caller and workers to distinct
CPUs, gives the caller its own CPU mask back, and frees its team when another call starts beside it.

Binding only moves threads; the results must be the same bits with it on or off.
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import kconv
from kconv import _runtime, ops
from kconv._backend import core

CPUS = len(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(CPUS < 2 or not _runtime.openmp_enabled(),
                                reason="binding needs OpenMP and at least 2 CPUs")


def _big_forward(rng):
    """A forward pass that takes every CPU and is big enough to pin (151 MFLOP)."""
    x = rng.standard_normal((8, 32, 32, 32), dtype=np.float32)
    w = rng.standard_normal((3, 3, 32, 32), dtype=np.float32)
    return lambda: ops.conv2d(x, w, 1, "SAME")


@pytest.fixture
def all_cpus(restore_threads):
    kconv.set_num_threads(None)
    if kconv.get_num_threads() != CPUS:
        pytest.skip("OMP_NUM_THREADS keeps kconv below the CPUs this process has")


def test_a_call_on_every_cpu_pins_its_team_and_gives_the_caller_its_mask_back(all_cpus, rng):
    call = _big_forward(rng)
    before_mask = os.sched_getaffinity(0)
    before = core.binding_counts()
    call()
    assert core.binding_counts()[0] == before[0] + 1
    assert os.sched_getaffinity(0) == before_mask


def test_a_caller_with_a_narrow_mask_gets_that_mask_back(all_cpus, rng):
    call = _big_forward(rng)
    got = {}

    def narrow_caller():
        mine = {sorted(os.sched_getaffinity(0))[-1]}
        os.sched_setaffinity(0, mine)
        call()
        got["mask"], got["want"] = os.sched_getaffinity(0), mine

    t = threading.Thread(target=narrow_caller)
    t.start()
    t.join()
    assert got["mask"] == got["want"]


def test_a_call_with_fewer_threads_than_cpus_pins_nothing(restore_threads, rng):
    call = _big_forward(rng)
    kconv.set_num_threads(1)
    before = core.binding_counts()
    call()
    assert core.binding_counts() == before


def test_a_small_call_pins_nothing(all_cpus, rng):
    """Under 128 MFLOP pinning costs more than it saves (inside a graph, ~0.2 ms a call)."""
    x = rng.standard_normal((8, 8, 8, 64), dtype=np.float32)     # 38 MFLOP: still two threads
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    before = core.binding_counts()
    ops.conv2d(x, w, 1, "SAME")
    assert core.binding_counts() == before


def test_a_call_starting_beside_a_pinned_team_sets_it_free(all_cpus, rng):
    """The second call means more threads than CPUs: only the scheduler can share them, so the first
    call's pinned threads get the whole process mask back while it runs."""
    x = rng.standard_normal((32, 64, 64, 64), dtype=np.float32)   # ~4.8 GFLOP: long enough to start beside
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    small_x = rng.standard_normal((2, 16, 16, 8), dtype=np.float32)
    small_w = rng.standard_normal((3, 3, 8, 8), dtype=np.float32)
    long_call = threading.Thread(target=ops.conv2d, args=(x, w, 1, "SAME"), kwargs=dict(algorithm="direct"))
    pinned, _, freed = core.binding_counts()
    long_call.start()
    deadline = time.monotonic() + 10
    while core.binding_counts()[0] == pinned:     # until the long call has pinned its team
        assert time.monotonic() < deadline, "the long call never pinned its team"
        time.sleep(1e-4)
    beside = ops.conv2d(small_x, small_w, 1, "SAME", threads=1)
    running = long_call.is_alive()
    long_call.join()
    assert running, "the long call ended before the second one started"
    assert core.binding_counts()[2] > freed
    np.testing.assert_array_equal(beside, ops.conv2d(small_x, small_w, 1, "SAME", threads=1))


def _outputs_in_subprocess(env_extra, tmp_path, name):
    code = (
        "import numpy as np, kconv\n"
        "from kconv import ops\n"
        "rng = np.random.default_rng(7)\n"
        "x = rng.standard_normal((8, 32, 32, 32), dtype=np.float32)\n"
        "w = rng.standard_normal((3, 3, 32, 48), dtype=np.float32)\n"
        "dy = rng.standard_normal((8, 32, 32, 48), dtype=np.float32)\n"
        "out = [ops.conv2d(x, w, 1, 'SAME', algorithm=a) for a in ('direct', 'winograd')]\n"
        "out += [ops.conv2d_backprop_input(x.shape, w, dy, 1, 'SAME'),\n"
        "        ops.conv2d_backprop_filter(x, w.shape, dy, 1, 'SAME')]\n"
        f"np.savez({str(tmp_path / name)!r}, *out)\n"
        "from kconv._backend import core\n"
        "print(core.binding_counts()[0])\n"
    )
    env = dict(os.environ, **env_extra)
    env.pop("OMP_NUM_THREADS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(kconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1]), np.load(tmp_path / f"{name}.npz")


def test_results_are_the_same_bits_with_binding_on_and_off(tmp_path):
    pinned, on = _outputs_in_subprocess({"KCONV_BIND_THREADS": "1"}, tmp_path, "on")
    unpinned, off = _outputs_in_subprocess({"KCONV_BIND_THREADS": "0"}, tmp_path, "off")
    assert pinned > 0 and unpinned == 0
    for key in on.files:
        assert np.array_equal(on[key], off[key]), key


def test_openmp_binding_of_the_user_turns_kconvs_off(tmp_path):
    pinned, _ = _outputs_in_subprocess({"OMP_PROC_BIND": "false"}, tmp_path, "omp")
    assert pinned == 0
