"""Calls running at the same time (Python threads, TensorFlow's inter-op pool) share the cores and agree
with sequential calls.

Each call holds its team while it runs; while calls overlap, each keeps its share of the CPUs and its other
helper threads stand down between tasks (microkernel.h, kc_share and kc_next_task): on 2 CPUs the cores run
one thread per call, on 16 two calls keep 8 each, and a call left alone gets its team back.
"""
import threading

import numpy as np
import pytest

import kconv
from kconv import _threads, ops
from kconv._backend import core

CALLS = 3


def _inputs(seed):
    rng = np.random.default_rng(seed)
    # ~ 30 MFLOP: large enough that a call alone would ask for every core
    return rng.standard_normal((4, 20, 20, 32)).astype(np.float32), rng.standard_normal((3, 3, 32, 32)).astype(np.float32)


def _in_threads(worker, count):
    """worker(0) .. worker(count - 1), each in its own Python thread, all at once; returns when all are done."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def _at_once_equal_sequential(run, cases, repeats=4):
    """run(*case) for every case from its own Python thread, `repeats` times, all at once: each result (an
    array or a tuple of arrays) equals the sequential one bit for bit, some helper stood down while the calls
    overlapped, and every thread is released at the end."""
    def arrays(result):
        return result if isinstance(result, tuple) else (result,)
    sequential = [arrays(run(*c)) for c in cases]
    concurrent = [[] for _ in cases]
    stand_downs = core.stand_downs()

    def worker(i):
        for _ in range(repeats):
            concurrent[i].append(arrays(run(*cases[i])))

    _in_threads(worker, len(cases))
    for got, want in zip(concurrent, sequential):
        assert len(got) == repeats
        for result in got:
            for g, w in zip(result, want):
                np.testing.assert_array_equal(g, w)
    assert core.stand_downs() > stand_downs
    assert _threads.held() == 0


def test_overlapping_calls_stand_their_helpers_down_and_release_every_thread():
    """Calls from several Python threads at once each hold their team; while they overlap, their helper
    threads stand down between tasks (only the callers work, so the cores never hold more busy threads than
    calls), and every thread is released at the end."""
    if not kconv.config()["openmp"] or _threads._available_cpus() < 2:
        pytest.skip("needs OpenMP and 2 CPUs")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((8, 40, 40, 64)).astype(np.float32), rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    stop, seen = threading.Event(), []
    stand_downs = core.stand_downs()

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
    assert max(seen) > _threads._available_cpus()            # the calls did overlap ...
    assert max(seen) <= CALLS * _threads._available_cpus()   # ... each holding at most its team
    assert core.stand_downs() > stand_downs
    assert _threads.held() == 0


@pytest.mark.parametrize("team, cpus, held, share", [
    (2, 2, 2, 2),       # one call alone on 2 CPUs: its whole team
    (2, 2, 4, 1),       # a training step's two gradients on 2 CPUs: one core each
    (2, 2, 3, 1),       # beside a call of one thread
    (1, 2, 3, 1),       # a call of one thread keeps its caller
    (16, 16, 32, 8),    # two calls on 16 CPUs: 8 each, not one
    (16, 16, 48, 5),    # three
    (8, 16, 24, 5),     # a team of 8 beside one of 16
    (4, 2, 4, 4),       # more threads than CPUs, asked for by the user, alone: not cut
])
def test_overlapping_calls_split_the_cpus_between_them(team, cpus, held, share):
    assert core.cpu_share(team, cpus, held) == share


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

    _in_threads(worker, len(cases))
    for got, want in zip(concurrent, sequential):
        for g, w_ in zip(got, want):
            np.testing.assert_array_equal(g, w_)
    assert _threads.held() == 0


def test_winograd_filter_gradients_at_once_equal_sequential_ones():
    """The Winograd filter gradient's helpers leave an overlapping call between its phases (its phase ends
    then wait only for the threads still in it): several chunks of tiles, so several phases, from 3 Python
    threads at once; the results are the sequential ones, bit for bit."""
    if not kconv.config()["openmp"] or _threads._available_cpus() < 2:
        pytest.skip("needs OpenMP and 2 CPUs")
    rng = np.random.default_rng(5)
    cases = [(rng.standard_normal((16, 40, 40, 32)).astype(np.float32),
              rng.standard_normal((16, 40, 40, 32)).astype(np.float32)) for _ in range(3)]
    plan = ops._plan(ops._describe(2, (16, 40, 40, 32), (3, 3, 32, 32), 1, "SAME", "NHWC", 1),
                     np.dtype(np.float32), "winograd", None)
    assert plan.tiles[2] == 4                                  # F(4x4) filter gradient: 1600 tiles, 4 chunks

    def grad(x, dy):
        return ops.conv2d_backprop_filter(x, (3, 3, 32, 32), dy, padding="SAME", algorithm="winograd")
    _at_once_equal_sequential(grad, cases)


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


def test_winograd_forwards_and_input_gradients_at_once_equal_sequential_ones():
    """The Winograd forward and input gradient transform the filter in the tiles' own parallel region, its
    end a barrier; a helper whose CPU an overlapping call needs leaves there and the others run its tiles.
    From 3 Python threads at once, every transform made afresh (no kept filters): the sequential results,
    bit for bit, and every thread released."""
    if not kconv.config()["openmp"] or _threads._available_cpus() < 2:
        pytest.skip("needs OpenMP and 2 CPUs")
    rng = np.random.default_rng(6)
    # Kim k6's shape, smaller batch: 128 channels, 16-channel blocks of the turned filter, 100 filters
    cases = [(rng.standard_normal((8, 200, 128)).astype(np.float32),
              rng.standard_normal((6, 128, 100)).astype(np.float32) * np.float32(0.1),
              rng.standard_normal((8, 195, 100)).astype(np.float32)) for _ in range(3)]

    def run(x, w, dy):
        return (ops.conv1d(x, w, algorithm="winograd"),
                ops.conv1d_backprop_input(x.shape, w, dy, algorithm="winograd"))
    before = ops.set_filter_cache(False)
    try:
        _at_once_equal_sequential(run, cases)
    finally:
        ops.set_filter_cache(before)


def test_winograd_filter_gradients_by_lanes_at_once_equal_sequential_ones():
    """The lanes' filter gradient ends each phase when its tasks are done, not when every thread has arrived;
    a helper standing down for an overlapping call rejoins between tasks. From 3 Python threads at once: the
    sequential results bit for bit, helpers stood down, every thread released."""
    if not kconv.config()["openmp"] or _threads._available_cpus() < 2:
        pytest.skip("needs OpenMP and 2 CPUs")
    rng = np.random.default_rng(7)
    x_shape, f_shape = (8, 400, 48), (6, 48, 40)
    plan = ops._plan(ops._describe(1, x_shape, f_shape, 1, "SAME", "NWC", 1), np.dtype(np.float32), "winograd", None)
    assert plan.filter_lanes >= 2
    cases = [(rng.standard_normal(x_shape).astype(np.float32),
              rng.standard_normal(x_shape[:-1] + f_shape[-1:]).astype(np.float32)) for _ in range(3)]

    def grad(x, dy):
        return ops.conv1d_backprop_filter(x, f_shape, dy, padding="SAME", algorithm="winograd")
    _at_once_equal_sequential(grad, cases)
