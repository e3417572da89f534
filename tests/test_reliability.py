"""Reliability: forked children (GCC's OpenMP runtime is not fork-safe), container CPU quotas and
threadpoolctl's limits.

A child forked after kconv had started OpenMP threads runs its kernels on its own thread: same results,
no hang. Spawned and forkserver children are fresh processes with every thread. The parent keeps its threads.
"""
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kconv
from kconv import _threads, ops
from kconv._backend import core

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 32, 32, 32)).astype(np.float32), rng.standard_normal((3, 3, 32, 32)).astype(np.float32)


def _child_conv(queue, x, w):
    y = ops.conv2d(x, w, 1, "SAME")
    dw = ops.conv2d_backprop_filter(x, w.shape, y, 1, "SAME")
    queue.put((y, dw, kconv.get_num_threads()))


@pytest.mark.parametrize("method", METHODS)
def test_child_process_after_kconv_ran_threads_finishes_with_the_right_result(method):
    x, w = _inputs()
    kconv.set_num_threads(2)
    try:
        want = ops.conv2d(x, w, 1, "SAME")                    # the parent runs an OpenMP team first
        want_dw = ops.conv2d_backprop_filter(x, w.shape, want, 1, "SAME")
        ctx = mp.get_context(method)
        queue = ctx.Queue()
        child = ctx.Process(target=_child_conv, args=(queue, x, w))
        child.start()
        y, dw, child_threads = queue.get(timeout=120)
        child.join(60)
        assert child.exitcode == 0
        np.testing.assert_array_equal(y, want)                # thread count never changes results
        np.testing.assert_array_equal(dw, want_dw)
        if method == "fork" and kconv.config()["openmp"]:
            assert child_threads == 1                         # serial: libgomp's team is gone
        # the parent keeps its threads
        assert not core.serial_after_fork() and kconv.get_num_threads() == min(2, _threads._available_cpus())
    finally:
        kconv.set_num_threads(None)


def _run_script(tmp_path, script, timeout, env=None):
    """A script file (spawn and forkserver children re-import __main__, so `python -c` will not do)."""
    path = tmp_path / "script.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout, env=env)


def test_fork_script_from_the_issue_exits_cleanly(tmp_path):
    """The report's script, as a user would run it: the child used to hang forever."""
    script = textwrap.dedent("""
        import numpy as np, multiprocessing as mp
        from kconv import ops
        if __name__ == "__main__":
            x = np.random.rand(8, 32, 32, 32).astype(np.float32); w = np.random.rand(3, 3, 32, 32).astype(np.float32)
            ops.conv2d(x, w, 1, "SAME")
            for method in ("fork", "spawn", "forkserver"):
                p = mp.get_context(method).Process(target=ops.conv2d, args=(x, w, 1, "SAME")); p.start(); p.join(60)
                print(method, p.exitcode, flush=True)
                if p.exitcode is None:
                    p.kill()
    """)
    result = _run_script(tmp_path, script, 300)
    assert result.stdout.split() == ["fork", "0", "spawn", "0", "forkserver", "0"], result.stderr[-2000:]


def test_keras_model_predicts_in_spawned_and_forkserver_children(tmp_path):
    pytest.importorskip("tensorflow")
    script = textwrap.dedent(f"""
        import multiprocessing as mp, numpy as np

        def predict(path, x, queue):
            import keras, kconv.layers  # noqa: F401  (registers kconv's layers for load_model)
            queue.put(keras.models.load_model(path).predict_on_batch(x))

        if __name__ == "__main__":
            import keras, kconv
            model = keras.Sequential([keras.Input((12, 12, 3)), kconv.Conv2D(8, 3, activation="relu"),
                                      keras.layers.GlobalAveragePooling2D()])
            path = {str(tmp_path / 'm.keras')!r}
            model.save(path)
            x = np.random.default_rng(0).standard_normal((4, 12, 12, 3)).astype(np.float32)
            want = model.predict_on_batch(x)
            for method in ("spawn", "forkserver"):
                ctx = mp.get_context(method)
                queue = ctx.Queue()
                p = ctx.Process(target=predict, args=(path, x, queue)); p.start()
                got = queue.get(timeout=240); p.join(60)
                print(method, p.exitcode, float(np.abs(got - want).max()), flush=True)
    """)
    result = _run_script(tmp_path, script, 600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[:2] for line in lines] == [["spawn", "0"], ["forkserver", "0"]], result.stderr[-3000:]
    assert all(float(line[2]) < 1e-6 for line in lines)


def _fake_cgroup(tmp_path, v2=None, v1=None, path="/kubepods/pod1"):
    root = tmp_path / "cgroup"
    folder = root / path.strip("/")
    if v2 is not None:
        folder.mkdir(parents=True)
        (folder / "cpu.max").write_text(v2 + "\n")
        proc = "0::" + path + "\n"
    else:
        folder = root / "cpu" / path.strip("/")
        folder.mkdir(parents=True)
        (folder / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (folder / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
        proc = "4:cpu,cpuacct:" + path + "\n"
    (tmp_path / "proc_cgroup").write_text(proc)
    return str(root), str(tmp_path / "proc_cgroup")


@pytest.mark.parametrize("kind, quota, want", [("v2", "200000 100000", 2), ("v2", "150000 100000", 2),
                                               ("v2", "max 100000", None), ("v1", (50000, 100000), 1),
                                               ("v1", (-1, 100000), None)])
def test_cgroup_cpu_quota_is_read(tmp_path, kind, quota, want):
    root, proc = _fake_cgroup(tmp_path, **({"v2": quota} if kind == "v2" else {"v1": quota}))
    assert _threads.cgroup_cpu_limit(root, proc) == want


def test_a_2_cpu_quota_on_a_larger_machine_gives_2_threads(tmp_path):
    """A container limited to 2 CPUs on a 64-core host: the quota caps the threads, whatever the affinity."""
    root, proc = _fake_cgroup(tmp_path, v2="200000 100000")
    script = textwrap.dedent(f"""
        import os
        os.sched_getaffinity = lambda pid: set(range(64))      # a 64-core host
        from kconv import _threads
        _threads.CGROUP_ROOT = {root!r}
        _threads.cgroup_cpu_limit.__defaults__ = ({root!r}, {proc!r})
        _threads._available_cpus.cache_clear()
        _threads._push()
        import kconv
        print(_threads._available_cpus(), kconv.get_num_threads())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert result.stdout.split() == ["2", "2"], result.stderr[-2000:]


def test_threadpoolctl_limits_reach_kconv():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not kconv.config()["openmp"] or _threads._available_cpus() < 2:
        pytest.skip("needs OpenMP and 2 CPUs")
    kconv.set_num_threads(None)
    assert kconv.get_num_threads() >= 2
    with threadpoolctl.threadpool_limits(1):
        assert kconv.get_num_threads() == 1
        # and the kernels see it: a call then holds one thread (sampled from inside the kernel's claim)
        x, w = _inputs()
        seen = []
        import threading
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                seen.append(_threads.held())
        t = threading.Thread(target=sample)
        t.start()
        for _ in range(5):
            ops.conv2d(x, w, 1, "SAME", algorithm="direct")
        stop.set()
        t.join()
        assert max(seen) <= 1
    assert kconv.get_num_threads() >= 2
