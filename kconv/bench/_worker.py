"""Subprocess side of the suite: one fresh Python process per measurement that must not share a process.

    python -m kconv.bench._worker '{"task": "memory", "contender": "kconv", "layer": {...}}'
    python -m kconv.bench._worker '{"task": "scaling", "threads": 1, "layer": {...}, "rounds": 5}'

Prints one JSON object as the last line of stdout.

memory: peak resident memory (RSS) of one training step's convolution work (forward + both gradients) in a
process that runs only one contender. tracemalloc sees numpy's allocations but neither TensorFlow's nor the
C buffers of kconv's kernels, so the suite measures the operating system's figure instead: after imports and
inputs, the peak-RSS counter is reset (Linux: `echo 5 > /proc/self/clear_refs`), the step runs once (cold, as
a model's first step does), and "extra" = VmHWM after the step - VmRSS before it. Where the counter cannot be
reset, the baseline is resource.getrusage's ru_maxrss before the step (a high-water mark, so "extra" may read
low). The kconv process does not import TensorFlow (it runs kconv's numpy API, the kernels the op library
also runs); the TF process runs tf.nn eagerly with a GradientTape. A layer is a kconv.bench.layersets.Layer
as a dict.

scaling: TensorFlow fixes its thread pools when it starts, so each thread count runs in a fresh process with
tf.config.threading intra-op = n (inter-op = 1) and kconv threads = n, both timed there as in the suite's
layer table (kconv.bench.convs.time_layer: each pass in tf.function, alternating blocks). With "interleave":
[1, .., n], that process also times kconv alone at each of those counts in alternating blocks
(kconv.bench.convs.time_threads): kconv's scaling measured within one process.
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
    from kconv.bench.convs import shapes
    from kconv.bench.layersets import Layer
    layer = Layer.from_dict(task["layer"])
    rng = np.random.default_rng(0)
    x_shape, w_shape, y_shape = shapes(layer)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    dy = rng.standard_normal(y_shape, dtype=np.float32)
    geometry = (layer.stride, layer.padding)
    if task["contender"] == "kconv":
        from kconv import ops
        kw = dict(dilations=layer.dilation)
        if layer.nd == 2:
            fwd, bin_, bfil = ops.conv2d, ops.conv2d_backprop_input, ops.conv2d_backprop_filter
        else:
            fwd, bin_, bfil = ops.conv1d, ops.conv1d_backprop_input, ops.conv1d_backprop_filter
        step = lambda: (fwd(x, w, *geometry, **kw), bin_(x_shape, w, dy, *geometry, **kw),  # noqa: E731
                        bfil(x, w_shape, dy, *geometry, **kw))
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from kconv.bench.convs import _tf_conv
        conv = _tf_conv(tf, layer)
        xt, wt, dyt = tf.constant(x), tf.constant(w), tf.constant(dy)

        def step():
            with tf.GradientTape() as tape:
                tape.watch([xt, wt])
                y = conv(xt, wt)
            dx, dw = tape.gradient(y, [xt, wt], output_gradients=dyt)
            return y.numpy(), dx.numpy(), dw.numpy()
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
    import kconv
    from kconv.bench.convs import time_layer
    from kconv.bench.layersets import Layer
    kconv.set_num_threads(n)
    layer = Layer.from_dict(task["layer"])
    rows = time_layer(tf, layer, task.get("rounds", 5), task.get("pause", 0.05), task.get("block", 0.02),
                      algorithm=task.get("algorithm", "auto"))
    interleaved = []
    if task.get("interleave"):      # kconv alone at each of these counts, in this process (convs.time_threads)
        from kconv.bench.convs import time_threads
        interleaved = time_threads(tf, layer, task["interleave"], task.get("rounds", 5), task.get("pause", 0.05),
                                   task.get("block", 0.02), algorithm=task.get("algorithm", "auto"))
    return dict(threads=n, rows=rows, interleaved=interleaved, numpy=np.__version__)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    task = json.loads(argv[0])
    result = {"memory": memory, "scaling": scaling}[task["task"]](task)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
