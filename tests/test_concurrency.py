"""Calls running at the same time (Python threads, TensorFlow's inter-op pool) share the cores and agree
with sequential calls.

kconv reserves each call's threads while it runs, so concurrent calls never start more helper threads than
there are cores; every call keeps at least its caller's own thread.
"""
import threading

import numpy as np
import pytest

from kconv import _threads, ops

CALLS = 3


def _inputs(seed):
    rng = np.random.default_rng(seed)
    # ~ 30 MFLOP: large enough that a call alone would ask for every core
    return rng.standard_normal((4, 20, 20, 32)).astype(np.float32), rng.standard_normal((3, 3, 32, 32)).astype(np.float32)


def test_concurrent_calls_never_hold_more_threads_than_cores_or_callers():
    """Calls from several Python threads at once: the threads they hold (counted in the kernels) never pass
    the cores, except that every call keeps its caller's own thread; all are released at the end."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((8, 40, 40, 64)).astype(np.float32), rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    stop, seen = threading.Event(), []

    def sample():
        while not stop.is_set():
            seen.append(_threads.held())

    def calls():
        for _ in range(10):
            ops.conv2d(x, w, padding="SAME", algorithm="direct")

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=calls) for _ in range(CALLS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    stop.set()
    sampler.join()
    assert max(seen) >= 1
    assert max(seen) <= _threads._available_cpus() - 1 + CALLS, max(seen)   # helpers <= cores - 1
    assert _threads.held() == 0


def test_threads_are_released_when_a_call_fails():
    x, w = _inputs(2)
    with pytest.raises(ValueError):
        ops.conv2d(x, w[:, :, :5], algorithm="winograd")     # 32 channels, 5 per group: no Winograd
    assert _threads.held() == 0


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
    assert _threads.held() == 0


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
    assert _threads.held() == 0
