"""Issue 7, point 3: no memory growth over 10,000 forward + backward calls.

Tiny tensors, so the loop measures what every call leaves behind (Python objects, scratch buffers, cached
transforms, TensorFlow tensors and tape records), not the kernels' speed. RSS is read from /proc/self/statm
after a warm-up (caches, thread pools and allocator arenas filled), then again after 10,000 calls; a leak
of one tiny array per call (~400 bytes) would add ~4 MB here, a leaked tensor or tape entry much more.
"""
import os

import numpy as np
import pytest

from kconv import ops

CALLS = 10_000
WARMUP = 1_000
SLACK_MB = 4.0

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def growth_mb(step, calls=CALLS, warmup=WARMUP):
    for i in range(warmup):
        step(i)
    before = rss_mb()
    for i in range(calls):
        step(i)
    return rss_mb() - before


def test_numpy_ops_forward_backward_do_not_grow():
    """Direct 2-D (strided, grouped) and 1-D causal, forward and both gradients."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)        # groups = 2
    x1 = rng.standard_normal((2, 9, 3))
    w1 = rng.standard_normal((3, 3, 5))

    def step(i):
        y = ops.conv2d(x, w, strides=(2, 1), padding="SAME")
        dy = np.ones_like(y)
        ops.conv2d_backprop_input(x.shape, w, dy, strides=(2, 1), padding="SAME")
        ops.conv2d_backprop_filter(x, w.shape, dy, strides=(2, 1), padding="SAME")
        y1 = ops.conv1d(x1, w1, padding="CAUSAL")
        ops.conv1d_backprop_input(x1.shape, w1, y1, padding="CAUSAL")
        ops.conv1d_backprop_filter(x1, w1.shape, y1, padding="CAUSAL")

    grown = growth_mb(step)
    assert grown < SLACK_MB, f"RSS grew by {grown:.1f} MB over {CALLS} forward+backward calls"


def test_numpy_winograd_with_changing_weights_does_not_grow():
    """Winograd (its scratch buffers, and the filter cache's fingerprints: new weights every call, as in
    training) and the NaN fallback to direct."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 6, 16)).astype(np.float32)
    xn = x.copy()
    xn[0, 2, 2, 0] = np.nan
    w0 = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)

    def step(i):
        w = w0 + np.float32(i * 1e-6)
        y = ops.conv2d(xn if i % 100 == 0 else x, w, padding="SAME", algorithm="winograd")
        ops.conv2d_backprop_input(x.shape, w, y, padding="SAME", algorithm="winograd")
        ops.conv2d_backprop_filter(x, w.shape, y, padding="SAME", algorithm="winograd")

    grown = growth_mb(step)
    assert grown < SLACK_MB, f"RSS grew by {grown:.1f} MB over {CALLS} Winograd forward+backward calls"


def test_tf_eager_op_with_gradient_tape_does_not_grow():
    tf = pytest.importorskip("tensorflow")
    import kconv

    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))
    w = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))

    def step(i):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = kconv.conv2d(x, w, 1, "SAME")
            loss = tf.reduce_sum(y * y)
        dx, dw = tape.gradient(loss, [x, w])
        assert dx is not None and dw is not None

    grown = growth_mb(step, warmup=500)
    assert grown < 2 * SLACK_MB, f"RSS grew by {grown:.1f} MB over {CALLS} eager kconv.conv2d + tape.gradient calls"


def test_memory_kconv_holds_between_calls_is_reported_and_bounded():
    """ops.memory_info() accounts for the plans and the transformed filters they keep for inference;
    clear_cache frees them; the number of plans is bounded; a call leaves no scratch behind."""
    ops.clear_cache()
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 12, 12, 32)).astype(np.float32), rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    for _ in range(3):
        ops.conv2d(x, w, padding="SAME", algorithm="winograd4")    # repeated weights: kept
    ops.conv2d(x, w + 1, padding="SAME", algorithm="winograd4")     # new weights: transformed, not kept
    info = ops.memory_info()
    assert info["plans"] == 1
    assert info["filter_cache_entries"] == 1 and info["filter_cache_bytes"] >= w.nbytes
    for size in range(8, 8 + info["plans_limit"] + 5):                # more shapes than plans kept
        ops.conv2d(x[:, :size % 12 + 1], w, padding="SAME", algorithm="direct", threads=1 + size % 2)
    assert ops.memory_info()["plans"] <= info["plans_limit"]
    ops.clear_cache()
    assert ops.memory_info() == dict(plans=0, plans_limit=info["plans_limit"], filter_cache_entries=0,
                                     filter_cache_bytes=0, scratch_bytes=0)


def test_big_scratch_buffers_are_kept_for_the_next_call_and_bounded():
    """A pass's big buffers (here a Winograd filter gradient's tiles) are kept for the next call instead of
    coming fresh from the OS (page faults); at most 256 MiB of them; clear_cache gives them back; results
    do not change when a kept buffer is reused."""
    ops.clear_cache()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 28, 28, 64)).astype(np.float32)
    dy = rng.standard_normal((8, 28, 28, 64)).astype(np.float32)
    first = ops.conv2d_backprop_filter(x, (3, 3, 64, 64), dy, padding="SAME", algorithm="winograd2")
    kept = ops.memory_info()["scratch_bytes"]
    assert 0 < kept <= 256 << 20
    again = ops.conv2d_backprop_filter(x, (3, 3, 64, 64), dy, padding="SAME", algorithm="winograd2")
    np.testing.assert_array_equal(first, again)
    assert ops.memory_info()["scratch_bytes"] == kept      # the same buffers went back
    ops.clear_cache()
    assert ops.memory_info()["scratch_bytes"] == 0
