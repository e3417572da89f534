"""kconv layers under tf.distribute (issue 7, point 5: training past one machine).

Both tests run TensorFlow in fresh subprocesses (this file is also their script: `python
tests/test_distribute.py mirrored|worker`), because logical devices and TF_CONFIG must be in place before
TensorFlow initialises, and so that a hung collective can be killed without taking pytest with it.

* MirroredStrategy, two logical CPU devices in one process: `model.fit` of a model with kconv.Conv2D and
  kconv.Conv1D layers (global batch 16 = 2 replicas x 8) gives the same per-epoch losses and final weights
  as the same model, same initial weights, trained without a strategy on the same global batches; kconv's
  ops (forward, input and filter gradients) are placed on both replica devices; and one step's gradients
  taken eagerly (strategy.run outside tf.function: kconv's eager path, in the replica threads) sum to the
  single-device gradients.
* MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1 (TF_CONFIG, free ports): a custom
  training loop (strategy.run + GradientTape + Keras optimizer) where each worker sees a *different* half
  of every global batch. Both workers finish; their final weights agree bit for bit (the all-reduce hands
  both the same gradient sums), and agree with a single-process run on the whole global batches, which
  shows the gradients really were summed across the workers (each worker alone would drift away).
  Keras 3.15's `model.fit` cannot run under MultiWorkerMirroredStrategy at all, whatever the layers
  (its `_maybe_symbolic_build` calls `strategy.reduce` on an eager PerReplica batch, which
  CollectiveAllReduce cannot convert: "Attempt to convert a value (PerReplica...)"; the same with
  keras.layers.Conv2D), hence the custom loop, which is also how the README tells users to do it.

Tolerance: replicas compute the loss gradient of their half batch and the strategy sums them, while the
single-device run reduces over all 16 samples at once: the same sums in another order, so float32 results
differ by rounding only (a few ulps per step, ~1e-7 relative), growing slowly over the 8 SGD steps. We allow
1e-4 of each weight tensor's max |w| (measured: 4.9e-6 for weights, 2.7e-6 for gradients), and check that training moved the weights by far
more than that (so a run that did not train, or trained on one replica's data, cannot pass).
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 4
EPOCHS = 2
LR = 0.05
RTOL = 1e-4              # of max |w| per weight tensor, see the docstring
TIMEOUT = 90             # seconds for one subprocess / the pair of workers (normally 12 s / 19 s)


# ----------------------------------------------------------------------------------------------------------
# The child side (runs with TensorFlow, in a subprocess).

def _data():
    rng = np.random.default_rng(7)
    n = GLOBAL_BATCH * STEPS_PER_EPOCH
    x = rng.standard_normal((n, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 4, n).astype(np.int64)
    return x, y


def _build_model():
    import keras

    import kconv

    keras.utils.set_random_seed(1)     # same initial weights in every process and under every strategy
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        kconv.Conv2D(16, 3, activation="relu"),                       # direct (3 input channels)
        kconv.Conv2D(16, 3, padding="same", activation="relu"),       # Winograd (16 -> 16, 3x3)
        keras.layers.Reshape((100, 16)),
        kconv.Conv1D(16, 3, padding="causal", activation="relu"),     # Winograd 1-D
        kconv.Conv1D(8, 5, strides=2),                                # direct, strided
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(4),
    ])


def _fit_plain(x, y):
    """The reference: no strategy, the same global batches in the same order."""
    import keras

    model = _build_model()
    model.compile(keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = model.get_weights()
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    return history.history["loss"], initial, model.get_weights()


def _compare(weights, reference, initial):
    """max over tensors of max|w - ref| / max|ref|, and the smallest relative distance trained."""
    diff = max(float(np.max(np.abs(w - r)) / np.max(np.abs(r))) for w, r in zip(weights, reference))
    moved = min(float(np.max(np.abs(r - i)) / np.max(np.abs(r))) for r, i in zip(reference, initial))
    return diff, moved


def child_mirrored():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    x, y = _data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _build_model()
        model.compile(keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)

    # One step's gradients eagerly (strategy.run outside tf.function): kconv's ops run eagerly in the
    # replica threads MirroredStrategy starts.
    with strategy.scope():
        eager = _build_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def replica_grads(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(yb, eager(xb, training=True))) / GLOBAL_BATCH
        return tape.gradient(loss, eager.trainable_variables)

    first = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))))
    eager_grads = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_grads, args=first), axis=None)
    plain = _build_model()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn(y[:GLOBAL_BATCH], plain(x[:GLOBAL_BATCH], training=True)))
    plain_grads = tape.gradient(loss, plain.trainable_variables)
    eager_diff = max(float(np.max(np.abs(a.numpy() - b.numpy())) / np.max(np.abs(b.numpy())))
                     for a, b in zip(eager_grads, plain_grads))

    # Where kconv's ops go in a replica step (forward and both gradients): one copy per replica device.
    @tf.function
    def replica_grads(xb):
        def step(xb):
            with tf.GradientTape() as tape:
                tape.watch(xb)
                out = tf.reduce_sum(model(xb, training=True))
            return tape.gradient(out, [xb] + model.trainable_variables)
        return strategy.run(step, args=(xb,))

    graph = replica_grads.get_concrete_function(tf.TensorSpec((8, 12, 12, 3), tf.float32)).graph
    kconv_ops = [op for op in graph.get_operations() if op.type.startswith("KconvConv")]
    devices = {}
    for op in kconv_ops:
        devices.setdefault(tf.DeviceSpec.from_string(op.device).device_index, []).append(op.type)

    ref_loss, initial, ref_weights = _fit_plain(x, y)
    diff, moved = _compare(model.get_weights(), ref_weights, initial)
    return {"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"], "ref_loss": ref_loss,
            "diff": diff, "moved": moved, "eager_diff": eager_diff,
            "devices": {str(k): sorted(v) for k, v in devices.items()}}


def child_worker():
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    x, y = _data()
    half = GLOBAL_BATCH // 2

    def dataset_fn(context):
        # Worker i takes the i-th half of every global batch, so the two workers see different samples.
        i = context.input_pipeline_id
        idx = np.concatenate([np.arange(b * GLOBAL_BATCH + i * half, b * GLOBAL_BATCH + (i + 1) * half)
                              for b in range(STEPS_PER_EPOCH)])
        return tf.data.Dataset.from_tensor_slices((x[idx], y[idx])).batch(half)

    with strategy.scope():
        model = _build_model()
        optimizer = keras.optimizers.SGD(LR)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def train_step(iterator):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                per_sample = loss_fn(yb, model(xb, training=True))
                loss = tf.reduce_sum(per_sample) / GLOBAL_BATCH     # this replica's share of the global mean
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))   # sums across replicas
            return loss

        per_replica = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses = []
    for _ in range(EPOCHS):
        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        total = 0.0
        for _ in range(STEPS_PER_EPOCH):
            total += float(train_step(iterator))
        losses.append(total / STEPS_PER_EPOCH)
    weights = model.get_weights()

    ref_loss, initial, ref_weights = _fit_plain(x, y)
    diff, moved = _compare(weights, ref_weights, initial)
    return {"index": index, "replicas": strategy.num_replicas_in_sync, "loss": losses, "ref_loss": ref_loss,
            "diff": diff, "moved": moved, "weights": [w.tolist() for w in weights]}


# ----------------------------------------------------------------------------------------------------------
# The pytest side (no TensorFlow imported here).

def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONHASHSEED"] = "0"
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(output):
    for line in reversed(output.splitlines()):
        if line.startswith("KCONV_RESULT "):
            return json.loads(line[len("KCONV_RESULT "):])
    raise AssertionError("the subprocess printed no result; its output ends with:\n" + output[-4000:])


def _free_ports(n):
    """n distinct free loopback ports (bound to port 0, then released; a clash is retried by the caller)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _skip_without_tf():
    import importlib.util

    import pytest

    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
        pytest.skip("needs TensorFlow and Keras")


def test_mirrored_strategy_matches_single_device():
    _skip_without_tf()
    try:   # subprocess.run kills the child when the time is up
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "mirrored"], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the MirroredStrategy run did not finish within {TIMEOUT} s:\n"
                             f"{(e.output or '')[-4000:]}") from None
    assert proc.returncode == 0, proc.stdout[-4000:]
    r = _result(proc.stdout)
    assert r["replicas"] == 2
    # kconv's ops were traced once per replica, each on its own logical device.
    # kconv's ops (forward, input and filter gradients of all 4 layers) are placed on both replica devices.
    assert sorted(r["devices"]) == ["0", "1"], r["devices"]
    for ops in r["devices"].values():     # 4 layers: forward, input and filter gradient each
        assert sorted(ops) == sorted(["KconvConv", "KconvConvBackpropInput", "KconvConvBackpropFilter"] * 4), ops
    np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=RTOL)
    assert r["diff"] <= RTOL, f"weights differ from the single-device run by {r['diff']:.2e} of max|w|"
    assert r["moved"] > 20 * RTOL, f"training hardly moved the weights ({r['moved']:.2e})"
    assert r["eager_diff"] <= RTOL, f"eager replica gradients differ by {r['eager_diff']:.2e} of max|g|"


def _run_workers(ports):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for i in range(len(ports)):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            # One kconv/OpenMP thread per worker: two workers share this machine's cores.
            env = _env(TF_CONFIG=tf_config, OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker"], cwd=ROOT,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + TIMEOUT
        outputs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                out = None
            outputs.append(out)
        return [p.returncode for p in procs], outputs
    finally:
        for p in procs:              # stragglers: a worker whose peer died waits on the collective forever
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_multi_worker_mirrored_strategy_two_workers():
    _skip_without_tf()
    for attempt in range(2):
        codes, outputs = _run_workers(_free_ports(2))
        text = "\n".join(o or "" for o in outputs)
        if attempt == 0 and any(c != 0 for c in codes) and ("in use" in text or "Failed to bind" in text):
            continue                 # someone took a port between picking and binding it: pick again
        break
    for i, (code, out) in enumerate(zip(codes, outputs)):
        assert out is not None, f"worker {i} did not finish within {TIMEOUT} s"
        assert code == 0, f"worker {i} failed (exit {code}):\n{out[-4000:]}"
    results = [_result(o) for o in outputs]
    assert [r["index"] for r in results] == [0, 1]
    for r in results:
        assert r["replicas"] == 2
        assert np.all(np.isfinite(r["loss"]))
    # Same all-reduced gradients on both workers: identical weights and identical global losses.
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert results[0]["loss"] == results[1]["loss"]
    # ... and the same training as one process on the whole global batches.
    for r in results:
        np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=RTOL)
        assert r["diff"] <= RTOL, f"worker {r['index']}: weights differ from one process by {r['diff']:.2e}"
        assert r["moved"] > 20 * RTOL


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = {"mirrored": child_mirrored, "worker": child_worker}[sys.argv[1]]()
    print("KCONV_RESULT " + json.dumps(result), flush=True)
