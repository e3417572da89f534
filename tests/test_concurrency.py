"""Calls running at the same time (Python threads, TensorFlow's inter-op pool) share the cores and agree
with sequential calls.

kconv reserves each call's threads while it runs, so concurrent calls never start more helper threads than
there are cores; every call keeps at least its caller's own thread.
"""
import threading

import numpy as np
import pytest

from kconv import _threads, ops
from kconv._backend import core

CALLS = 3


def _inputs(seed):
    rng = np.random.default_rng(seed)
    # ~ 30 MFLOP: large enough that a call alone would ask for every core
    return rng.standard_normal((4, 20, 20, 32)).astype(np.float32), rng.standard_normal((3, 3, 32, 32)).astype(np.float32)


def test_concurrent_calls_never_start_more_helper_threads_than_cores(monkeypatch):
    """Three calls held inside the kernel at once: their thread counts add up to at most the cores plus
    the callers' own threads, and the helper threads (all but each caller's) to at most cores - 1."""
    given, barrier = [], threading.Barrier(CALLS, timeout=30)
    real = core.conv_igemm

    def held(*args):
        given.append(args[-1])      # n_threads is conv_igemm's last argument
        barrier.wait()              # every call has claimed its threads before any returns
        return real(*args)

    monkeypatch.setattr(core, "conv_igemm", held)
    x, w = _inputs(0)
    workers = [threading.Thread(target=ops.conv2d, args=(x, w), kwargs=dict(padding="SAME", algorithm="direct"))
               for _ in range(CALLS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    cpus = _threads._available_cpus()
    assert len(given) == CALLS and min(given) >= 1
    assert sum(n - 1 for n in given) <= cpus - 1, given
    assert _threads._busy == 0


def test_a_call_alone_gets_every_core():
    with _threads.claim(1e9) as n:
        assert n == min(_threads.get_num_threads(), _threads._available_cpus())
    assert _threads._busy == 0


def test_threads_are_released_when_a_kernel_fails(monkeypatch):
    def broken(*args):
        raise MemoryError("no memory")

    monkeypatch.setattr(core, "conv_igemm", broken)
    x, w = _inputs(2)
    with pytest.raises(MemoryError):
        ops.conv2d(x, w, algorithm="direct")
    assert _threads._busy == 0


@pytest.mark.parametrize("algorithm", ["direct", "auto"])
def test_concurrent_results_equal_sequential_ones(algorithm):
    """Forward and both gradients from 4 Python threads at once equal the same calls made one by one."""
    cases = [_inputs(seed) for seed in range(4)]

    def run(x, w):
        y = ops.conv2d(x, w, padding="SAME", algorithm=algorithm)
        return (y, ops.conv2d_backprop_input(x.shape, w, y, padding="SAME", algorithm=algorithm),
                ops.conv2d_backprop_filter(x, w.shape, y, padding="SAME", algorithm=algorithm))

    sequential = [run(*c) for c in cases]
    concurrent = [None] * len(cases)

    def worker(i):
        for _ in range(3):
            concurrent[i] = run(*cases[i])

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    for got, want in zip(concurrent, sequential):
        for g, w_ in zip(got, want):
            np.testing.assert_array_equal(g, w_)
    assert _threads._busy == 0


def test_tensorflow_running_kconv_ops_in_parallel_gives_the_sequential_result():
    """Independent kconv ops of one tf.function, which TensorFlow's inter-op pool may run at once."""
    tf = pytest.importorskip("tensorflow")
    import kconv

    cases = [_inputs(seed) for seed in range(4)]

    @tf.function
    def branches(*arrays):
        return [kconv.conv2d(arrays[2 * i], arrays[2 * i + 1], 1, "SAME") for i in range(len(cases))]

    flat = [tf.constant(a) for pair in cases for a in pair]
    for got, (x, w) in zip(branches(*flat), cases):
        np.testing.assert_array_equal(got.numpy(), ops.conv2d(x, w, 1, "SAME"))
    assert _threads._busy == 0
