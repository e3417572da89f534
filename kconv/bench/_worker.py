"""Subprocess side of the suite: one fresh Python process per measurement that must not share a process.

    python -m kconv.bench._worker '{"task": "memory", "contender": "kconv", "layer": [...]}'
    python -m kconv.bench._worker '{"task": "scaling", "threads": 1, "layer": [...], "repeats": 5}'

Prints one JSON object as the last line of stdout.

memory: peak resident memory (RSS) of one training step's convolution work (forward + both gradients) in a
process that runs only one contender. tracemalloc sees numpy's allocations but neither TensorFlow's nor the
C buffers of kconv's kernels, so the suite measures the operating system's figure instead: after imports and
inputs, the peak-RSS counter is reset (Linux: `echo 5 > /proc/self/clear_refs`), the step runs once (cold, as
a model's first step does), and "extra" = VmHWM after the step - VmRSS before it. Where the counter cannot be
reset, the baseline is resource.getrusage's ru_maxrss before the step (a high-water mark, so "extra" may read
low). The kconv process does not import TensorFlow.

scaling: TensorFlow fixes its thread pools when it starts, so each thread count runs in a fresh process with
tf.config.threading intra-op = n (inter-op = 1) and kconv threads = n, both timed there, interleaved.
"""
import gc
import json
import os
import resource
import sys


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux


def memory(task):
    import numpy as np
    layer = tuple(task["layer"])
    name, batch, spatial, c, k, kernel, stride, padding = layer
    spatial = tuple(spatial)
    layer = (name, batch, spatial, c, k, kernel, stride, padding)
    nd = len(spatial)
    rng = np.random.default_rng(0)
    from kconv.bench.convs import out_spatial
    x_shape, w_shape = (batch,) + spatial + (c,), (kernel,) * nd + (c, k)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    dy = rng.standard_normal((batch,) + out_spatial(layer) + (k,), dtype=np.float32)
    if task["contender"] == "kconv":
        from kconv import ops
        if nd == 2:
            step = lambda: (ops.conv2d(x, w, stride, padding), ops.conv2d_backprop_input(x_shape, w, dy, stride, padding),
                            ops.conv2d_backprop_filter(x, w_shape, dy, stride, padding))
        else:
            step = lambda: (ops.conv1d(x, w, stride, padding), ops.conv1d_backprop_input(x_shape, w, dy, stride, padding),
                            ops.conv1d_backprop_filter(x, w_shape, dy, stride, padding))
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from kconv.bench.convs import _tf_conv1d_grads
        a = dict(xt=tf.constant(x), wt=tf.constant(w), dyt=tf.constant(dy))
        if nd == 2:
            strides = [1, stride, stride, 1]
            step = lambda: (tf.nn.conv2d(a["xt"], a["wt"], stride, padding).numpy(),
                            tf.compat.v1.nn.conv2d_backprop_input(x_shape, a["wt"], a["dyt"], strides, padding).numpy(),
                            tf.compat.v1.nn.conv2d_backprop_filter(a["xt"], w_shape, a["dyt"], strides, padding).numpy())
        else:
            step = lambda: (tf.nn.conv1d(a["xt"], a["wt"], stride, padding).numpy(),) + \
                _tf_conv1d_grads(tf, a, stride, padding)
    gc.collect()
    hwm_before = _status_kib("VmHWM") or 0   # ru_maxrss would carry the parent's peak across fork + exec
    reset = _reset_peak()
    before = _status_kib("VmRSS") if reset else _maxrss_kib()
    out = step()
    peak = _status_kib("VmHWM") if reset else _maxrss_kib()
    if peak is None or before is None:
        before, peak = _maxrss_kib(), _maxrss_kib()
    del out
    return dict(contender=task["contender"], extra_mib=(peak - before) / 1024,
                process_peak_mib=max(peak, hwm_before) / 1024,
                method="VmHWM after clear_refs" if reset else "ru_maxrss")


def scaling(task):
    n = int(task["threads"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kconv.bench.convs import time_layer
    layer = list(task["layer"])
    layer[2] = tuple(layer[2])
    rows = time_layer(tf, tuple(layer), task.get("repeats", 5), task.get("warmup", 1), threads=n)
    return dict(threads=n, rows=rows, numpy=np.__version__)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    task = json.loads(argv[0])
    result = {"memory": memory, "scaling": scaling}[task["task"]](task)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
