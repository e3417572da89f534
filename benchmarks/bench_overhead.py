"""Per-call overhead of kconv's TensorFlow op, and a training step next to the Keras twin.

    PYTHONPATH=. python benchmarks/bench_overhead.py [--calls 3000] [--steps 30] [--batch 32]

1. Tiny tensors (1x4x4x1 input, 1x1x1x1 filter): the work is nil, so the time is the per-call overhead.
   Median microseconds per call of
     - kconv.ops.conv2d on numpy arrays (kconv's own floor: argument checks, planning, the kernel call),
     - kconv.tf_ops.conv2d eagerly, eagerly under a GradientTape (records the gradient), and inside a
       tf.function (the numpy_function round trip), and its forward + backward inside a tf.function,
     - tf.nn.conv2d in the same four settings.
   All timed interleaved (round robin, one call of each per round) so that load from other processes hits
   every row alike.
2. A small Sequential CNN (Conv2D, Conv2D strided (groups 1, then 2), Conv1D causal, Dense): median time of
   one train_on_batch step with kconv layers and with keras.layers, same weights, interleaved.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import kconv  # noqa: E402
from kconv import layers as kl  # noqa: E402
from kconv import ops, tf_ops  # noqa: E402


def interleaved_medians(fns, rounds, warmup=50):
    """{name: median seconds} of each callable, called round robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def overhead(calls):
    x_np, w_np = np.ones((1, 4, 4, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    x, w = tf.constant(x_np), tf.constant(w_np)

    def taped(op):
        def run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                op(x, w, 1, "VALID")
        return run

    def fwd_bwd(op):
        @tf.function
        def run(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = op(x, w, 1, "VALID")
            return tape.gradient(y, [x, w])
        return lambda: run(x, w)

    kconv_fn = tf.function(lambda x, w: tf_ops.conv2d(x, w, 1, "VALID"))
    tf_fn = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"))
    rows = {
        "kconv.ops.conv2d (numpy)": lambda: ops.conv2d(x_np, w_np, 1, "VALID"),
        "kconv eager": lambda: tf_ops.conv2d(x, w, 1, "VALID"),
        "tf.nn eager": lambda: tf.nn.conv2d(x, w, 1, "VALID"),
        "kconv eager + tape": taped(tf_ops.conv2d),
        "tf.nn eager + tape": taped(tf.nn.conv2d),
        "kconv tf.function": lambda: kconv_fn(x, w),
        "tf.nn tf.function": lambda: tf_fn(x, w),
        "kconv tf.function fwd+bwd": fwd_bwd(tf_ops.conv2d),
        "tf.nn tf.function fwd+bwd": fwd_bwd(tf.nn.conv2d),
    }
    medians = interleaved_medians(rows, calls)
    print(f"\nPer-call time on 1x4x4x1 * 1x1x1x1 (median of {calls} interleaved calls, microseconds)")
    print(f"{'':32s} {'us/call':>9s}")
    for name, t in medians.items():
        print(f"{name:32s} {t * 1e6:9.1f}")
    print(f"{'kconv eager - tf.nn eager':32s} {(medians['kconv eager'] - medians['tf.nn eager']) * 1e6:9.1f}")
    print(f"{'kconv tf.function - tf.nn':32s} "
          f"{(medians['kconv tf.function'] - medians['tf.nn tf.function']) * 1e6:9.1f}")
    return medians


def cnn(module, groups):
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        module.Conv2D(16, 3, padding="same", activation="relu"),
        module.Conv2D(32, 3, strides=2, groups=groups, activation="relu"),
        keras.layers.Reshape((15 * 15, 32)),
        module.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(10),
    ])


def training_step(steps, batch, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    models = {}
    for name, module in (("kconv", kl), ("keras", keras.layers)):
        keras.utils.set_random_seed(0)
        model = cnn(module, groups)
        model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        models[name] = model
    models["kconv"].set_weights(models["keras"].get_weights())
    medians = interleaved_medians({name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()},
                                  steps, warmup=3)
    print(f"\nTraining step, Sequential CNN (Conv2D 16 same, Conv2D 32 s2 groups {groups}, Conv1D 16 causal d2, "
          f"Dense),"
          f" batch {batch} of 32x32x3, median of {steps} interleaved train_on_batch calls")
    print(f"{'':10s} {'ms/step':>9s}")
    for name, t in medians.items():
        print(f"{name:10s} {t * 1e3:9.2f}")
    print(f"{'ratio':10s} {medians['kconv'] / medians['keras']:9.2f}  (kconv / keras)")
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print(f"kconv {kconv.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"kconv threads {kconv.get_num_threads()}, TF intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    overhead(args.calls)
    # groups=1: TensorFlow's own CPU kernels on the Keras side; groups=2: Keras runs the grouped convolution
    # through XLA (TensorFlow has no grouped CPU kernel).
    training_step(args.steps, args.batch, groups=1)
    training_step(args.steps, args.batch, groups=2)


if __name__ == "__main__":
    main()
